"""What the compiled parse passes share (udfs.avro_events, udfs.json_events): which records they take,
and how they write a parse output line, "shard<TAB>event_time<TAB>event JSON\\n", as the record parse
would (udfs.parse.shard_of: zlib's CRC-32 picks the routing table's bucket, orjson writes the event).

A kernel applies to a record schema whose fields are all strings, ints and longs, each optionally in
a union with null, and whose event is [kind, every field in schema order] (impressions and clicks).
It applies the fast validator's rules (udfs.records.fast_validator): ids non-empty, valid UTF-8
without a byte order mark or a replacement character, event_time >= 0, position >= 1, an `int`
within 32 bits; and the parse subtask's event-time bound (udfs.parse.event_time_bound).

A kernel never rejects: at the first record it does not accept as is it stops and says where, so the
parse takes that one record through its full path, which accepts it or gives the reason, and goes on
with the kernel after it. The outcome is the record parse's, record for record and in order.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

from udfs.native import cached_njit
from udfs.records import ID_FIELDS
from udfs.schemas import parsed_schema

# Field kinds, and the fast validator's rules.
STRING, INT, LONG = range(3)
_KINDS = {"string": STRING, "int": INT, "long": LONG}
NO_RULE, ID, NOT_NEGATIVE, POSITIVE = range(4)
# The rows of a layout: kind, null branch (-1: not nullable), rule, and whether a record may leave the
# field out (nullable with a default: the record parse reads it as null).
KIND, NULL_BRANCH, RULE, OPTIONAL = range(4)
LAYOUT_ROWS = 4
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_EVENT_TIME = 2**62  # udfs.parse.MAX_EVENT_TIME (udfs.parse imports the kernels, not the other way)
# Progress of the event-time bound, in and out of a kernel.
PROGRESS, PROGRESS_WALL, NOW, MAX_AHEAD = range(4)
# What a kernel reports: the record it stopped at, where its output ends, how many it accepted.
STOP, OUT_END, ACCEPTED = range(3)
REPORT_SIZE = 3


def _crc32_table() -> np.ndarray:
    table = np.empty(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


CRC32_TABLE = _crc32_table()
HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# orjson's short escapes for control characters (the others are \u00XX)
SHORT_ESCAPES = np.zeros(32, dtype=np.uint8)
for _byte, _letter in {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r"}.items():
    SHORT_ESCAPES[_byte] = ord(_letter)


@cached_njit
def utf8_ok(data: np.ndarray, start: int, end: int, is_id: bool) -> bool:
    """Strict UTF-8 (what Python's decoder accepts: no surrogates, no overlong forms); an id must hold
    neither U+FEFF nor U+FFFD either (see udfs.records._BAD_ID_CHARS)."""
    at = start
    while at < end:
        b = data[at]
        if b < 0x80:
            at += 1
            continue
        if 0xC2 <= b <= 0xDF:
            size, low, high = 2, 0x80, 0xBF
        elif b == 0xE0:
            size, low, high = 3, 0xA0, 0xBF
        elif b == 0xED:
            size, low, high = 3, 0x80, 0x9F
        elif 0xE1 <= b <= 0xEF:
            size, low, high = 3, 0x80, 0xBF
        elif b == 0xF0:
            size, low, high = 4, 0x90, 0xBF
        elif 0xF1 <= b <= 0xF3:
            size, low, high = 4, 0x80, 0xBF
        elif b == 0xF4:
            size, low, high = 4, 0x80, 0x8F
        else:
            return False
        if at + size > end or not low <= data[at + 1] <= high:
            return False
        for k in range(2, size):
            if not 0x80 <= data[at + k] <= 0xBF:
                return False
        if is_id and b == 0xEF and ((data[at + 1] == 0xBB and data[at + 2] == 0xBF)
                                    or (data[at + 1] == 0xBF and data[at + 2] == 0xBD)):
            return False
        at += size
    return True


@cached_njit
def value_ok(kind: int, rule: int, value: np.int64) -> bool:
    """An integer field's value as the fast validator checks it."""
    if kind == INT and not INT32_MIN <= value <= INT32_MAX:
        return False
    return not ((rule == NOT_NEGATIVE and value < 0) or (rule == POSITIVE and value < 1))


@cached_njit
def within_bound(progress: np.ndarray, event_time: np.int64) -> bool:
    """udfs.parse.event_time_bound with the batch's wall clock; progress moves on when it is."""
    if event_time > progress[PROGRESS]:
        now = progress[NOW]
        base = min(progress[PROGRESS] + max(now - progress[PROGRESS_WALL], 0), now)
        if event_time > min(base + progress[MAX_AHEAD], MAX_EVENT_TIME):
            return False
        progress[PROGRESS], progress[PROGRESS_WALL] = event_time, now
    return True


@cached_njit
def _crc32(data: np.ndarray, start: int, end: int, table: np.ndarray) -> np.uint32:
    crc = np.uint32(0xFFFFFFFF)
    for at in range(start, end):
        crc = table[(crc ^ data[at]) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
    return crc ^ np.uint32(0xFFFFFFFF)


@cached_njit
def _write_int(out: np.ndarray, at: int, value: np.int64) -> int:
    if value < 0:
        out[at] = 45  # '-'
        at += 1
        magnitude = np.uint64(-(value + 1)) + np.uint64(1)  # no overflow at the int64 minimum
    else:
        magnitude = np.uint64(value)
    digits = 1
    rest = magnitude // np.uint64(10)
    while rest > np.uint64(0):
        digits += 1
        rest //= np.uint64(10)
    for k in range(digits - 1, -1, -1):
        out[at + k] = np.uint8(48 + magnitude % np.uint64(10))
        magnitude //= np.uint64(10)
    return at + digits


@cached_njit
def _write_json_string(data: np.ndarray, start: int, end: int, out: np.ndarray, at: int) -> int:
    out[at] = 34  # '"'
    at += 1
    for k in range(start, end):
        b = data[k]
        if b == 34 or b == 92:  # '"' or '\'
            out[at] = 92
            out[at + 1] = b
            at += 2
        elif b < 0x20:
            out[at] = 92
            if SHORT_ESCAPES[b] != 0:
                out[at + 1] = SHORT_ESCAPES[b]
                at += 2
            else:
                out[at + 1] = 117  # 'u'
                out[at + 2] = 48
                out[at + 3] = 48
                out[at + 4] = HEX_DIGITS[b >> 4]
                out[at + 5] = HEX_DIGITS[b & 15]
                at += 6
        else:
            out[at] = b
            at += 1
    out[at] = 34
    return at + 1


@cached_njit
def name_index(data: np.ndarray, start: int, end: int, names: np.ndarray, name_ends: np.ndarray) -> int:
    """The index of the name data[start:end] among `names` (concatenated, each ending at `name_ends`), or -1."""
    for f in range(name_ends.shape[0]):
        begin = 0 if f == 0 else name_ends[f - 1]
        if name_ends[f] - begin != end - start:
            continue
        same = True
        for k in range(end - start):
            if names[begin + k] != data[start + k]:
                same = False
                break
        if same:
            return f
    return -1


@cached_njit
def write_line(out: np.ndarray, at: int, layout: np.ndarray, prefix: np.ndarray, user_field: int, time_field: int,
               shard_names: np.ndarray, shard_ends: np.ndarray, text: np.ndarray, starts: np.ndarray,
               lengths: np.ndarray) -> int:
    """One record's output line at `at` in `out`; where it ends. A field is null where its length is -1,
    a string `lengths[f]` bytes of `text` from `starts[f]`, an integer the value in `starts[f]`."""
    bucket = 0  # of the routing table (udfs.parse.shard_of)
    if shard_ends.shape[0] > 1:
        user = starts[user_field]
        crc = _crc32(text, user, user + lengths[user_field], CRC32_TABLE)
        bucket = np.int64(crc % np.uint32(shard_ends.shape[0]))
    for k in range(0 if bucket == 0 else shard_ends[bucket - 1], shard_ends[bucket]):
        out[at] = shard_names[k]
        at += 1
    out[at] = 9  # tab
    at = _write_int(out, at + 1, starts[time_field])
    out[at] = 9
    at += 1
    for k in range(prefix.shape[0]):
        out[at] = prefix[k]
        at += 1
    for f in range(layout.shape[1]):
        if f > 0:
            out[at] = 44  # ','
            at += 1
        if lengths[f] < 0:
            for b in (110, 117, 108, 108):  # null
                out[at] = b
                at += 1
        elif layout[KIND, f] == STRING:
            at = _write_json_string(text, starts[f], starts[f] + lengths[f], out, at)
        else:
            at = _write_int(out, at, starts[f])
    out[at] = 93  # ']'
    out[at + 1] = 10  # newline
    return at + 2


def _rule(schema_name: str, field_name: str) -> int:
    """The fast validator's rule for a field (udfs.records.fast_validator)."""
    if field_name in ID_FIELDS:
        return ID
    if field_name == "event_time":
        return NOT_NEGATIVE
    if field_name == "position" and schema_name == "Impression":
        return POSITIVE
    return NO_RULE


@functools.cache
def _layout(schema_name: str) -> np.ndarray | None:
    """The rows above, a column per field. None unless every field is a string, int or long, alone or in
    a union with null, and every rule's field is not nullable."""
    columns = []
    for field in parsed_schema(schema_name)["fields"]:
        field_type, null_branch = field["type"], -1
        if isinstance(field_type, list):
            if len(field_type) != 2 or "null" not in field_type:
                return None
            null_branch = field_type.index("null")
            field_type = field_type[1 - null_branch]
        if not isinstance(field_type, str) or field_type not in _KINDS:
            return None
        rule = _rule(schema_name, field["name"])
        if rule != NO_RULE and null_branch >= 0:
            return None
        columns.append((_KINDS[field_type], null_branch, rule, null_branch >= 0 and "default" in field))
    return np.ascontiguousarray(np.array(columns, dtype=np.int64).T)


def _event_kind(names: list[str], to_event: Callable[[dict[str, Any]], list]) -> int | None:
    """The kind of the events `to_event` makes if they are [kind, each field in schema order] (what the
    kernels write), else None."""
    probe = {name: f"<{name}>" for name in names}
    event = to_event(probe)
    return event[0] if type(event[0]) is int and event[1:] == list(probe.values()) else None


# The native entry point of every compiled pass, over raw pointers (udfs.avro_events and udfs.json_events
# each take the arguments they need), called through ctypes like the other kernels: an njit function
# called from Python hangs under PemJa (udfs.learner_kernel). The arguments are EventKernel.parse's call.
_I64P = numba.types.CPointer(numba.types.int64)
_U8P = numba.types.CPointer(numba.types.uint8)
_I64 = numba.types.int64
KERNEL_SIGNATURE = numba.types.void(_I64P, _I64, _U8P, _I64P, _U8P, _I64, _U8P, _I64, _I64, _I64, _U8P, _I64, _I64P,
                                    _I64, _U8P, _I64P, _I64, _I64, _I64P, _U8P, _I64, _U8P, _I64, _I64P)


def kernel_entry(native: Any) -> Any:
    """A `cached_cfunc(KERNEL_SIGNATURE)` function as a ctypes function that releases the interpreter lock
    for the call, so the learner (the job's bottleneck, which keeps it for its own kernels: see
    udfs.learner_kernel._NATIVE_CALL) runs meanwhile. Safe: the kernel touches no Python object, only the
    memory of buffers the caller keeps alive and no other thread writes."""
    pointer, number = ctypes.c_void_p, ctypes.c_int64
    types = [pointer if arg.__class__.__name__ == "CPointer" else number for arg in KERNEL_SIGNATURE.args]
    return ctypes.CFUNCTYPE(None, *types)(native.address)


class PackedRecords:
    """A batch of raw records (bytes, or text as the file source gives it) as one buffer and each one's
    end. A tombstone (None) is an empty record, which no kernel accepts."""

    def __init__(self, records: Sequence[bytes | str | None]) -> None:
        try:
            data = b"".join(records)
        except TypeError:  # text, tombstones, or both, in any order
            # (surrogatepass: a lone surrogate becomes bytes no kernel accepts, so the full path says why)
            records = [record.encode("utf-8", "surrogatepass") if type(record) is str
                       else b"" if record is None else record for record in records]
            data = b"".join(records)
        self.data = np.frombuffer(data, dtype=np.uint8)
        self.ends = np.cumsum(np.fromiter(map(len, records), dtype=np.int64, count=len(records)))
        self.count = len(records)


class EventKernel:
    """A compiled parse pass over one record schema: a kernel with udfs.json_events' or
    udfs.avro_events' signature, and what it needs besides the records."""

    def __init__(self, kernel: Any, schema_name: str, kind: int, routes: Sequence[str], header: bytes) -> None:
        self.kernel = kernel
        self.layout = _layout(schema_name)
        fields = parsed_schema(schema_name)["fields"]
        names = [field["name"] for field in fields]
        self.user_field, self.time_field = names.index("user_id"), names.index("event_time")
        # The JSON kernel matches keys against the names, and fills in a missing nullable field's default.
        self.names = np.frombuffer("".join(names).encode() or b"\0", dtype=np.uint8)
        self.name_ends = np.cumsum(np.array([len(name.encode()) for name in names], dtype=np.int64))
        self.header = np.frombuffer(header or b"\0", dtype=np.uint8)
        self.header_size = len(header)
        self.prefix = np.frombuffer(f"[{kind},".encode(), dtype=np.uint8)
        # The routing table: the shard name of each bucket, one after the other.
        encoded = [shard.encode() for shard in routes]
        self.shard_names = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
        self.shard_ends = np.cumsum(np.array([len(name) for name in encoded], dtype=np.int64))
        # Per record at most: the shard, two tabs, a sign and 20 digits, the prefix, per field a comma and
        # a sign and 20 digits or "null" or quotes, and ']' and a newline; a string's byte as \u00XX.
        self._fixed = max(map(len, encoded)) + 2 + 21 + len(self.prefix) + 24 * self.layout.shape[1] + 2
        self.progress = np.zeros(4, dtype=np.int64)
        self.report = np.zeros(REPORT_SIZE, dtype=np.int64)

    def parse(self, packed: PackedRecords, start: int, progress_ms: int, progress_wall_ms: int, now_ms: int,
              max_ahead_ms: int) -> tuple[int, bytes, int, int, int]:
        """From record `start` on, until the first the kernel does not accept: (where it stopped, the output
        lines of the accepted ones, how many, the new progress_ms and progress_wall_ms)."""
        if start >= packed.count:
            return start, b"", 0, progress_ms, progress_wall_ms
        begin = int(packed.ends[start - 1]) if start else 0
        size = 6 * (int(packed.ends[-1]) - begin) + self._fixed * (packed.count - start)
        out = np.empty(size, dtype=np.uint8)
        # (the JSON kernel unescapes a record's strings here: never longer than the record)
        scratch = np.empty(max(int(packed.ends[-1]) - begin, 1), dtype=np.uint8)
        self.progress[:] = (progress_ms, progress_wall_ms, now_ms, max_ahead_ms)
        layout = self.layout
        self.kernel(layout.ctypes.data, layout.shape[1], self.names.ctypes.data, self.name_ends.ctypes.data,
                    self.header.ctypes.data, self.header_size, self.prefix.ctypes.data, self.prefix.shape[0],
                    self.user_field, self.time_field, self.shard_names.ctypes.data, self.shard_names.shape[0],
                    self.shard_ends.ctypes.data, self.shard_ends.shape[0], packed.data.ctypes.data,
                    packed.ends.ctypes.data, packed.count, start, self.progress.ctypes.data,
                    scratch.ctypes.data, scratch.shape[0], out.ctypes.data, size, self.report.ctypes.data)
        stop, out_end, accepted = self.report.tolist()
        progress_ms, progress_wall_ms = self.progress[:2].tolist()
        return stop, out[:out_end].tobytes(), accepted, progress_ms, progress_wall_ms


def event_kernel(kernel: Any, schema_name: str, header: bytes, routes: Sequence[str],
                 to_event: Callable[[dict[str, Any]], list]) -> EventKernel | None:
    """`kernel` over `schema_name`'s records for a parse over the routing table `routes` whose events
    `to_event` makes; None where a kernel does not apply (then the parse decodes record by record)."""
    layout = _layout(schema_name)
    if layout is None or not routes:
        return None
    names = [field["name"] for field in parsed_schema(schema_name)["fields"]]
    if "user_id" not in names or "event_time" not in names:
        return None
    if layout[RULE, names.index("user_id")] != ID or layout[KIND, names.index("event_time")] != LONG:
        return None
    kind = _event_kind(names, to_event)
    return None if kind is None else EventKernel(kernel, schema_name, kind, routes, header)
