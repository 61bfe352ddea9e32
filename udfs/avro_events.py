"""Avro messages straight to parse events in one compiled pass (the Kafka parse's common case).

On Kafka the batch parse spent ~10 us a record, most of it fastavro's `schemaless_reader` (its
per-call dispatch) and building the event JSON from the dict it returns. The kernel checks each
message's header (the current schema's: an older writer schema is the record parse's to resolve),
decodes the body and writes the event as orjson would (udfs.event_lines, which also says which
schemas it takes and what happens to a message it does not accept as is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

from udfs.event_lines import (
    ACCEPTED,
    ID,
    KERNEL_SIGNATURE,
    KIND,
    NO_RULE,
    NULL_BRANCH,
    OUT_END,
    RULE,
    STOP,
    STRING,
    EventKernel,
    event_kernel,
    kernel_entry,
    utf8_ok,
    value_ok,
    within_bound,
    write_line,
)
from udfs.native import cached_cfunc, cached_njit
from udfs.wire import current_header


@cached_njit
def _read_varint(data: np.ndarray, at: int, end: int, value: np.ndarray) -> int:
    """A zigzag varint at `at` into value[0]; the position after it, or -1 if it is not one of at most
    64 bits within `end`."""
    result = np.uint64(0)
    shift = 0
    while at < end:
        b = np.uint64(data[at])
        at += 1
        if shift == 63 and b > np.uint64(1):
            return -1
        result |= (b & np.uint64(0x7F)) << np.uint64(shift)
        if b < np.uint64(0x80):
            value[0] = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
            return at
        shift += 7
        if shift > 63:
            return -1
    return -1


@cached_njit
def _read_message(data: np.ndarray, begin: int, end: int, layout: np.ndarray, header: np.ndarray,
                  starts: np.ndarray, lengths: np.ndarray, value: np.ndarray) -> bool:
    """One message's fields into `starts`/`lengths`; False where the kernel does not accept it as is."""
    pos = begin + header.shape[0]
    if pos > end:
        return False
    for k in range(header.shape[0]):
        if data[begin + k] != header[k]:
            return False
    for f in range(layout.shape[1]):
        kind, null_branch, rule = layout[KIND, f], layout[NULL_BRANCH, f], layout[RULE, f]
        if null_branch >= 0:
            pos = _read_varint(data, pos, end, value)
            if pos < 0 or (value[0] != 0 and value[0] != 1):
                return False
            if value[0] == null_branch:
                if rule != NO_RULE:
                    return False
                lengths[f] = -1
                continue
        pos = _read_varint(data, pos, end, value)
        if pos < 0:
            return False
        if kind == STRING:
            if value[0] < 0 or pos + value[0] > end:
                return False
            starts[f], lengths[f] = pos, value[0]
            pos += value[0]
            if (rule == ID and lengths[f] == 0) or not utf8_ok(data, starts[f], pos, rule == ID):
                return False
        else:
            if not value_ok(kind, rule, value[0]):
                return False
            starts[f], lengths[f] = value[0], 0
    return pos == end


@cached_njit
def _parse_messages(layout: np.ndarray, header: np.ndarray, prefix: np.ndarray, user_field: int, time_field: int,
                    shard_names: np.ndarray, shard_ends: np.ndarray, data: np.ndarray, ends: np.ndarray, start: int,
                    progress: np.ndarray, out: np.ndarray, report: np.ndarray) -> None:
    fields = layout.shape[1]
    starts = np.empty(fields, dtype=np.int64)  # a string's first byte, or an integer's value
    lengths = np.empty(fields, dtype=np.int64)  # a string's length; -1: null
    value = np.empty(1, dtype=np.int64)
    at = 0
    accepted = 0
    i = start
    while i < ends.shape[0]:
        begin = 0 if i == 0 else ends[i - 1]
        if not _read_message(data, begin, ends[i], layout, header, starts, lengths, value):
            break
        if not within_bound(progress, starts[time_field]):
            break
        at = write_line(out, at, layout, prefix, user_field, time_field, shard_names, shard_ends, data, starts,
                        lengths)
        accepted += 1
        i += 1
    report[STOP], report[OUT_END], report[ACCEPTED] = i, at, accepted


# The native entry point (udfs.event_lines.KERNEL_SIGNATURE; the field names and the scratch space are
# JSON's, not used here).
@cached_cfunc(KERNEL_SIGNATURE)
def _parse_messages_native(layout_p, fields, names_p, name_ends_p, header_p, header_size, prefix_p, prefix_size,
                           user_field, time_field, shard_names_p, shard_names_size, shard_ends_p, shards, data_p,
                           ends_p, n, start, progress_p, scratch_p, scratch_size, out_p, out_size, report_p):
    _parse_messages(numba.carray(layout_p, (4, fields)), numba.carray(header_p, (header_size,)),
                    numba.carray(prefix_p, (prefix_size,)), user_field, time_field,
                    numba.carray(shard_names_p, (shard_names_size,)), numba.carray(shard_ends_p, (shards,)),
                    numba.carray(data_p, (ends_p[n - 1],)), numba.carray(ends_p, (n,)), start,
                    numba.carray(progress_p, (4,)), numba.carray(out_p, (out_size,)), numba.carray(report_p, (3,)))


_PARSE_MESSAGES = kernel_entry(_parse_messages_native)


def avro_event_kernel(schema_name: str, routes: Sequence[str],
                      to_event: Callable[[dict[str, Any]], list]) -> EventKernel | None:
    """The compiled pass over messages written with `schema_name`'s current schema for a parse over
    the users' routing table `routes` (udfs.parse.shard_of) whose events `to_event` makes; None where it
    does not apply."""
    return event_kernel(_PARSE_MESSAGES, schema_name, current_header(schema_name), routes, to_event)
