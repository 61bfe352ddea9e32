"""JSON Lines records straight to parse events in one compiled pass (the file parse's common case).

The record parse loads each line with orjson, checks the dict, and dumps the event again: ~5 us a
record in the interpreter, the replay's largest Python cost after the learner's. The kernel reads a
line as a JSON object whose keys are the schema's field names (in any order, each at most once, a
nullable field with a default may be left out) and whose values are strings, integers or null, and
writes the event as orjson would (udfs.event_lines). Anything else (an unknown or escaped key, a
float, a boolean, a lone surrogate, bad JSON) is where it stops, and the record parse decides.
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
    OPTIONAL,
    OUT_END,
    RULE,
    STOP,
    STRING,
    EventKernel,
    event_kernel,
    kernel_entry,
    name_index,
    utf8_ok,
    value_ok,
    within_bound,
    write_line,
)
from udfs.native import cached_cfunc, cached_njit

_FAIL = -1


@cached_njit
def _skip_space(data: np.ndarray, at: int, end: int) -> int:
    while at < end and (data[at] == 32 or data[at] == 9 or data[at] == 10 or data[at] == 13):
        at += 1
    return at


@cached_njit
def _hex4(data: np.ndarray, at: int, end: int) -> int:
    """The four hex digits at `at` as a number, or -1."""
    if at + 4 > end:
        return -1
    value = 0
    for k in range(4):
        c = data[at + k]
        if 48 <= c <= 57:
            digit = c - 48
        elif 97 <= c <= 102:
            digit = c - 87
        elif 65 <= c <= 70:
            digit = c - 55
        else:
            return -1
        value = value * 16 + digit
    return value


@cached_njit
def _put_utf8(out: np.ndarray, at: int, code: int) -> int:
    if code < 0x80:
        out[at] = code
        return at + 1
    if code < 0x800:
        out[at] = 0xC0 | (code >> 6)
        out[at + 1] = 0x80 | (code & 0x3F)
        return at + 2
    if code < 0x10000:
        out[at] = 0xE0 | (code >> 12)
        out[at + 1] = 0x80 | ((code >> 6) & 0x3F)
        out[at + 2] = 0x80 | (code & 0x3F)
        return at + 3
    out[at] = 0xF0 | (code >> 18)
    out[at + 1] = 0x80 | ((code >> 12) & 0x3F)
    out[at + 2] = 0x80 | ((code >> 6) & 0x3F)
    out[at + 3] = 0x80 | (code & 0x3F)
    return at + 4


@cached_njit
def _read_string(data: np.ndarray, at: int, end: int, scratch: np.ndarray, written: np.ndarray) -> int:
    """The string whose body starts at `at` (after its opening quote), unescaped into `scratch` from
    written[0] on (written[0] then where it ends); the position after the closing quote, or _FAIL."""
    out = written[0]
    while at < end:
        b = data[at]
        if b == 34:  # the closing quote
            written[0] = out
            return at + 1
        if b < 0x20:  # a raw control character: not JSON
            return _FAIL
        if b != 92:
            scratch[out] = b
            out += 1
            at += 1
            continue
        if at + 1 >= end:
            return _FAIL
        e = data[at + 1]
        at += 2
        if e == 34 or e == 92 or e == 47:  # " \ /
            scratch[out] = e
        elif e == 98:
            scratch[out] = 8
        elif e == 102:
            scratch[out] = 12
        elif e == 110:
            scratch[out] = 10
        elif e == 114:
            scratch[out] = 13
        elif e == 116:
            scratch[out] = 9
        elif e == 117:  # \uXXXX, a surrogate pair as two
            code = _hex4(data, at, end)
            at += 4
            if 0xDC00 <= code <= 0xDFFF or code < 0:
                return _FAIL
            if 0xD800 <= code <= 0xDBFF:
                if at + 1 >= end or data[at] != 92 or data[at + 1] != 117:
                    return _FAIL
                low = _hex4(data, at + 2, end)
                if not 0xDC00 <= low <= 0xDFFF:
                    return _FAIL
                at += 6
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            out = _put_utf8(scratch, out, code)
            continue
        else:
            return _FAIL
        out += 1
    return _FAIL


@cached_njit
def _read_integer(data: np.ndarray, at: int, end: int, value: np.ndarray) -> int:
    """A JSON integer at `at` into value[0] (within 64 bits); the position after it, or _FAIL (a float,
    a leading zero, more than 64 bits)."""
    negative = data[at] == 45
    if negative:
        at += 1
    if at >= end or not 48 <= data[at] <= 57:
        return _FAIL
    limit = np.uint64(2**63) if negative else np.uint64(2**63 - 1)
    magnitude = np.uint64(0)
    if data[at] == 48:
        at += 1
    else:
        while at < end and 48 <= data[at] <= 57:
            digit = np.uint64(data[at] - 48)
            if magnitude > (limit - digit) // np.uint64(10):
                return _FAIL
            magnitude = magnitude * np.uint64(10) + digit
            at += 1
    if at < end and (data[at] == 46 or data[at] == 101 or data[at] == 69 or 48 <= data[at] <= 57):
        return _FAIL  # a fraction, an exponent, or digits after a leading zero
    value[0] = -np.int64(magnitude - np.uint64(1)) - 1 if negative and magnitude > 0 else np.int64(magnitude)
    return at


@cached_njit
def _read_record(data: np.ndarray, at: int, end: int, layout: np.ndarray, names: np.ndarray,
                 name_ends: np.ndarray, scratch: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                 seen: np.ndarray, value: np.ndarray, written: np.ndarray) -> bool:
    """One line's object into `starts`/`lengths` (strings unescaped into `scratch`); False where the
    kernel does not accept it as is."""
    fields = layout.shape[1]
    seen[:] = 0
    written[0] = 0
    at = _skip_space(data, at, end)
    if at >= end or data[at] != 123:  # {
        return False
    at = _skip_space(data, at + 1, end)
    closed = at < end and data[at] == 125  # }: no field
    if closed:
        at += 1
    while not closed and at < end:
        if data[at] != 34:
            return False
        key = at + 1
        at = key
        while at < end and data[at] != 34 and data[at] != 92 and data[at] >= 0x20:
            at += 1
        if at >= end or data[at] != 34:  # (an escaped key: the record parse reads it)
            return False
        f = name_index(data, key, at, names, name_ends)
        if f < 0 or seen[f]:
            return False
        seen[f] = 1
        at = _skip_space(data, at + 1, end)
        if at >= end or data[at] != 58:  # :
            return False
        at = _skip_space(data, at + 1, end)
        if at >= end:
            return False
        kind, rule, c = layout[KIND, f], layout[RULE, f], data[at]
        if c == 110:  # null
            if (at + 4 > end or data[at + 1] != 117 or data[at + 2] != 108 or data[at + 3] != 108
                    or layout[NULL_BRANCH, f] < 0 or rule != NO_RULE):
                return False
            lengths[f] = -1
            at += 4
        elif c == 34:
            if kind != STRING:
                return False
            begin = written[0]
            at = _read_string(data, at + 1, end, scratch, written)
            if at == _FAIL:
                return False
            starts[f], lengths[f] = begin, written[0] - begin
            if (rule == ID and lengths[f] == 0) or not utf8_ok(scratch, begin, written[0], rule == ID):
                return False
        elif c == 45 or 48 <= c <= 57:
            if kind == STRING:
                return False
            at = _read_integer(data, at, end, value)
            if at == _FAIL or not value_ok(kind, rule, value[0]):
                return False
            starts[f], lengths[f] = value[0], 0
        else:
            return False
        at = _skip_space(data, at, end)
        if at >= end:
            return False
        if data[at] == 44:  # ,
            at = _skip_space(data, at + 1, end)
            continue
        if data[at] != 125:  # }
            return False
        closed = True
        at += 1
    if not closed or _skip_space(data, at, end) != end:
        return False
    for f in range(fields):
        if not seen[f]:
            if not layout[OPTIONAL, f]:
                return False
            lengths[f] = -1
    return True


@cached_njit
def _parse_lines(layout: np.ndarray, names: np.ndarray, name_ends: np.ndarray, prefix: np.ndarray, user_field: int,
                 time_field: int, shard_names: np.ndarray, shard_ends: np.ndarray, data: np.ndarray,
                 ends: np.ndarray, start: int, progress: np.ndarray, scratch: np.ndarray, out: np.ndarray,
                 report: np.ndarray) -> None:
    fields = layout.shape[1]
    starts = np.empty(fields, dtype=np.int64)  # a string's first byte in `scratch`, or an integer's value
    lengths = np.empty(fields, dtype=np.int64)  # a string's length; -1: null
    seen = np.empty(fields, dtype=np.uint8)
    value = np.empty(1, dtype=np.int64)
    written = np.empty(1, dtype=np.int64)
    at = 0
    accepted = 0
    i = start
    while i < ends.shape[0]:
        begin = 0 if i == 0 else ends[i - 1]
        if not _read_record(data, begin, ends[i], layout, names, name_ends, scratch, starts, lengths, seen,
                            value, written):
            break
        if not within_bound(progress, starts[time_field]):
            break
        at = write_line(out, at, layout, prefix, user_field, time_field, shard_names, shard_ends, scratch, starts,
                        lengths)
        accepted += 1
        i += 1
    report[STOP], report[OUT_END], report[ACCEPTED] = i, at, accepted


# The native entry point (udfs.event_lines.KERNEL_SIGNATURE; the header is Avro's, not used here).
@cached_cfunc(KERNEL_SIGNATURE)
def _parse_lines_native(layout_p, fields, names_p, name_ends_p, header_p, header_size, prefix_p, prefix_size,
                        user_field, time_field, shard_names_p, shard_names_size, shard_ends_p, shards, data_p,
                        ends_p, n, start, progress_p, scratch_p, scratch_size, out_p, out_size, report_p):
    name_ends = numba.carray(name_ends_p, (fields,))
    _parse_lines(numba.carray(layout_p, (4, fields)), numba.carray(names_p, (name_ends[fields - 1],)), name_ends,
                 numba.carray(prefix_p, (prefix_size,)), user_field, time_field,
                 numba.carray(shard_names_p, (shard_names_size,)), numba.carray(shard_ends_p, (shards,)),
                 numba.carray(data_p, (ends_p[n - 1],)), numba.carray(ends_p, (n,)), start,
                 numba.carray(progress_p, (4,)), numba.carray(scratch_p, (scratch_size,)),
                 numba.carray(out_p, (out_size,)), numba.carray(report_p, (3,)))


_PARSE_LINES = kernel_entry(_parse_lines_native)


def json_event_kernel(schema_name: str, routes: Sequence[str],
                      to_event: Callable[[dict[str, Any]], list]) -> EventKernel | None:
    """The compiled pass over `schema_name`'s JSON lines for a parse over the users' routing table `routes`
    (udfs.parse.shard_of) whose events `to_event` makes; None where it does not apply."""
    return event_kernel(_PARSE_LINES, schema_name, b"", routes, to_event)
