"""A batch parse's output lines regrouped as one block per shard: what travels from the parse to the learner.

The parse writes a line per event, "shard<TAB>event_time<TAB>event JSON" (udfs.event_lines). Rows of
single events through the JVM stages between the parse and the learner (a shuffle by shard, the
join-watermark stamp) cost more than the learner's own work per event; a block of a shard's events
passes them as one row. A block is the events' JSON arrays joined by commas (the learner reads the
block as one JSON array), with its newest and oldest event time (from which the parse picks the time
the event-time watermark may follow, udfs.parse.ParseEventBatches).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numba
import numpy as np

from udfs.event_lines import name_index
from udfs.native import cached_cfunc, cached_njit

_TAB, _NEWLINE, _COMMA, _MINUS, _ZERO = 9, 10, 44, 45, 48
NO_EVENT_TIME = -(2**63)


@cached_njit
def _regroup(data, shard_names, shard_ends, out, starts, sizes, counts, newest, oldest, line_shard, json_start,
             json_end, fill):
    """Lines of `data` into `out`, shard by shard in shard order, each event's JSON followed by a comma;
    per shard: where its block starts in `out`, its size with the commas, its event count, its newest and
    its oldest event time. Returns -1, or the byte offset of a line that is not "shard<TAB>time<TAB>JSON"
    with a shard of `shard_names` (nothing is read beyond `data`). (The other arrays are scratch space,
    allocated by the caller: no allocation in the kernel.)"""
    n_shards = shard_ends.shape[0]
    size = data.shape[0]
    # Pass 1: each line's shard and JSON span; the shards' sizes.
    lines = 0
    at = 0
    while at < size:
        start = at
        while at < size and data[at] != _TAB:
            at += 1
        shard = name_index(data, start, at, shard_names, shard_ends)
        if shard < 0 or at + 1 >= size or lines == line_shard.shape[0]:
            return start
        at += 1
        negative = data[at] == _MINUS
        if negative:
            at += 1
        digits = at
        value = np.int64(0)
        while at < size and _ZERO <= data[at] <= _ZERO + 9:
            value = value * 10 + (data[at] - _ZERO)
            at += 1
        if at == digits or at >= size or data[at] != _TAB:
            return start
        if negative:
            value = -value
        at += 1
        begin = at
        while at < size and data[at] != _NEWLINE:
            at += 1
        line_shard[lines] = shard
        json_start[lines] = begin
        json_end[lines] = at
        lines += 1
        sizes[shard] += at - begin + 1
        counts[shard] += 1
        if value > newest[shard]:
            newest[shard] = value
        if value < oldest[shard]:
            oldest[shard] = value
        at += 1
    offset = 0
    for k in range(n_shards):
        starts[k] = offset
        fill[k] = offset
        offset += sizes[k]
    # Pass 2: copy each event's JSON to its shard's block.
    for i in range(lines):
        k = line_shard[i]
        position = fill[k]
        for j in range(json_start[i], json_end[i]):
            out[position] = data[j]
            position += 1
        out[position] = _COMMA
        fill[k] = position + 1
    return -1


_I64P = numba.types.CPointer(numba.types.int64)
_U8P = numba.types.CPointer(numba.types.uint8)
_I64 = numba.types.int64
_SIGNATURE = numba.types.int64(_U8P, _I64, _U8P, _I64, _I64P, _I64, _U8P, _I64P, _I64P, _I64P, _I64P, _I64P, _I64P,
                               _I64P, _I64P, _I64P, _I64)


# The entry point, called through ctypes: an njit function called from Python hangs under PemJa
# (udfs.learner_kernel), and ctypes lets other threads have the interpreter lock meanwhile.
@cached_cfunc(_SIGNATURE)
def _regroup_native(data_p, size, names_p, names_size, shard_ends_p, n_shards, out_p, starts_p, sizes_p, counts_p,
                    newest_p, oldest_p, fill_p, line_shard_p, json_start_p, json_end_p, lines_at_most):
    def shard_array(pointer):
        return numba.carray(pointer, (n_shards,))

    def line_array(pointer):
        return numba.carray(pointer, (lines_at_most,))

    return _regroup(numba.carray(data_p, (size,)), numba.carray(names_p, (names_size,)), shard_array(shard_ends_p),
                    numba.carray(out_p, (size,)), shard_array(starts_p), shard_array(sizes_p), shard_array(counts_p),
                    shard_array(newest_p), shard_array(oldest_p), line_array(line_shard_p), line_array(json_start_p),
                    line_array(json_end_p), shard_array(fill_p))


_REGROUP = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_void_p if arg.__class__.__name__ == "CPointer"
                                              else ctypes.c_int64 for arg in _SIGNATURE.args])(
    _regroup_native.address)


class ShardBlocks:
    """Regroups parse output lines by shard for one parse subtask (the shards of the job)."""

    def __init__(self, shards: Sequence[str]) -> None:
        self.shards = list(shards)
        encoded = [shard.encode() for shard in shards]
        self.shard_names = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
        self.shard_ends = np.cumsum(np.array([len(name) for name in encoded], dtype=np.int64))

    def blocks(self, lines: bytes) -> list[tuple[str, int, int, bytes]]:
        """(shard, newest event time, oldest event time, block) for every shard with events in `lines`, in
        shard order; a block is the events' JSON joined by commas."""
        if not lines:
            return []
        data = np.frombuffer(lines, dtype=np.uint8)
        n = len(self.shards)
        out = np.empty(data.shape[0], dtype=np.uint8)
        starts, sizes, counts, fill = (np.zeros(n, dtype=np.int64) for _ in range(4))
        newest = np.full(n, NO_EVENT_TIME, dtype=np.int64)
        oldest = np.full(n, -(NO_EVENT_TIME + 1), dtype=np.int64)
        lines_at_most = data.shape[0] // 4 + 1  # (a line has a shard, two tabs and "[]" at least)
        line_shard, json_start, json_end = (np.empty(lines_at_most, dtype=np.int64) for _ in range(3))
        bad = _REGROUP(data.ctypes.data, data.shape[0], self.shard_names.ctypes.data, self.shard_names.shape[0],
                       self.shard_ends.ctypes.data, n, out.ctypes.data, starts.ctypes.data, sizes.ctypes.data,
                       counts.ctypes.data, newest.ctypes.data, oldest.ctypes.data, fill.ctypes.data,
                       line_shard.ctypes.data, json_start.ctypes.data, json_end.ctypes.data, lines_at_most)
        if bad >= 0:
            raise ValueError(f"a parse output line is not shard<TAB>time<TAB>event, or names no shard of this job: "
                             f"{lines[bad:bad + 80]!r}")
        return [(self.shards[k], int(newest[k]), int(oldest[k]), out[starts[k]:starts[k] + sizes[k] - 1].tobytes())
                for k in range(n) if counts[k]]

