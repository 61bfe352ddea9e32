"""Many flat records as Avro single-object messages in one compiled pass (the job's examples on Kafka).

fastavro's writer costs ~7 us a record here whatever the record's size (its per-call dispatch, not
the bytes); the learner emits one example per impression, so on Kafka that was a quarter of the
interpreter's time. Records whose fields are all primitives (string, bytes, int, long, float,
double, boolean), each optionally in a union with null, are laid out as columns instead: one int64
matrix (string and bytes lengths, integers, the bits of floating-point values), a null mask and
the UTF-8 bytes of every string, which a numba kernel writes as the Avro binary body behind each
record's header. Other schemas (arrays, maps, nested records) are not flat: `flat_encoder` gives
None and the caller keeps fastavro. A batch the columns cannot hold (a wrong type, an integer
beyond 64 bits) raises `NotFlat`, so the caller can let fastavro encode it and report the record.
"""

from __future__ import annotations

import ctypes
import functools
import operator
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any

import numba
import numpy as np

from udfs.native import cached_cfunc, cached_njit
from udfs.schemas import parsed_schema

# Field kinds, as the kernel knows them.
_STRING, _VARINT, _DOUBLE, _FLOAT, _BOOLEAN, _BYTES, _ENUM, _FLOATS, _DOUBLES = range(9)
_ARRAYS = {"float": _FLOATS, "double": _DOUBLES}  # arrays of these: their values' bytes as numpy writes them
_KINDS = {"string": _STRING, "bytes": _BYTES, "int": _VARINT, "long": _VARINT, "double": _DOUBLE,
          "float": _FLOAT, "boolean": _BOOLEAN}
_INT32 = (-(2**31), 2**31 - 1)
_KIND, _NULL_BRANCH, _VALUE_BRANCH = 0, 1, 2  # the rows of a layout
_LAYOUT_ROWS = 3


class NotFlat(ValueError):
    """These records do not fit the columns (the caller encodes them one by one instead)."""


@cached_njit
def _varint_size(value: np.int64) -> int:
    zigzag = np.uint64((value << 1) ^ (value >> 63))
    size = 1
    while zigzag >= np.uint64(0x80):
        zigzag >>= np.uint64(7)
        size += 1
    return size


@cached_njit
def _write_varint(out: np.ndarray, at: int, value: np.int64) -> int:
    zigzag = np.uint64((value << 1) ^ (value >> 63))
    while zigzag >= np.uint64(0x80):
        out[at] = np.uint8((zigzag & np.uint64(0x7F)) | np.uint64(0x80))
        zigzag >>= np.uint64(7)
        at += 1
    out[at] = np.uint8(zigzag)
    return at + 1


@cached_njit
def _record_ends(layout: np.ndarray, values: np.ndarray, nulls: np.ndarray, header_size: int,
                 ends: np.ndarray) -> None:
    """Where each record's message ends in the buffer (`ends`, cumulative)."""
    n, fields = values.shape
    total = 0
    for i in range(n):
        size = header_size
        for f in range(fields):
            if layout[_NULL_BRANCH, f] >= 0:
                if nulls[i, f]:
                    size += _varint_size(layout[_NULL_BRANCH, f])
                    continue
                size += _varint_size(layout[_VALUE_BRANCH, f])
            kind = layout[_KIND, f]
            if kind == _STRING or kind == _BYTES:
                size += _varint_size(values[i, f]) + values[i, f]
            elif kind == _FLOATS or kind == _DOUBLES:  # one block of n items, then the empty block
                n_items = values[i, f]
                size += 1 if n_items == 0 else _varint_size(n_items) + n_items * (4 if kind == _FLOATS else 8) + 1
            elif kind == _VARINT or kind == _ENUM:
                size += _varint_size(values[i, f])
            elif kind == _DOUBLE:
                size += 8
            elif kind == _FLOAT:
                size += 4
            else:  # boolean
                size += 1
        total += size
        ends[i] = total


@cached_njit
def _write_records(layout: np.ndarray, values: np.ndarray, nulls: np.ndarray, header: np.ndarray,
                   text: np.ndarray, out: np.ndarray) -> None:
    """Every record's message, one after the other, into `out` (sized by `_record_ends`)."""
    n, fields = values.shape
    at = 0
    text_at = 0
    for i in range(n):
        for b in range(header.shape[0]):
            out[at] = header[b]
            at += 1
        for f in range(fields):
            if layout[_NULL_BRANCH, f] >= 0:
                if nulls[i, f]:
                    at = _write_varint(out, at, layout[_NULL_BRANCH, f])
                    continue
                at = _write_varint(out, at, layout[_VALUE_BRANCH, f])
            kind = layout[_KIND, f]
            value = values[i, f]
            if kind == _STRING or kind == _BYTES:
                at = _write_varint(out, at, value)
                out[at : at + value] = text[text_at : text_at + value]
                at += value
                text_at += value
            elif kind == _FLOATS or kind == _DOUBLES:
                if value > 0:
                    at = _write_varint(out, at, value)
                    size = value * (4 if kind == _FLOATS else 8)
                    out[at : at + size] = text[text_at : text_at + size]
                    at += size
                    text_at += size
                out[at] = 0
                at += 1
            elif kind == _VARINT or kind == _ENUM:
                at = _write_varint(out, at, value)
            elif kind == _DOUBLE or kind == _FLOAT:
                for b in range(8 if kind == _DOUBLE else 4):
                    out[at] = np.uint8((value >> (8 * b)) & 0xFF)
                    at += 1
            else:
                out[at] = np.uint8(value)
                at += 1


# Native entry points over raw pointers, called through ctypes, as the learner's kernel is (see
# udfs.learner_kernel._run_ops_native: an njit function called from Python hangs under PemJa).
_I64P = numba.types.CPointer(numba.types.int64)
_U8P = numba.types.CPointer(numba.types.uint8)
_I64 = numba.types.int64


@cached_cfunc(numba.types.void(_I64P, _I64, _I64P, _U8P, _I64, _I64, _I64P))
def _record_ends_native(layout_p, fields, values_p, nulls_p, n, header_size, ends_p):
    _record_ends(numba.carray(layout_p, (_LAYOUT_ROWS, fields)), numba.carray(values_p, (n, fields)),
                 numba.carray(nulls_p, (n, fields)), header_size, numba.carray(ends_p, (n,)))


@cached_cfunc(numba.types.void(_I64P, _I64, _I64P, _U8P, _I64, _U8P, _I64, _U8P, _I64, _U8P, _I64))
def _write_records_native(layout_p, fields, values_p, nulls_p, n, header_p, header_size, text_p, text_size, out_p,
                          out_size):
    _write_records(numba.carray(layout_p, (_LAYOUT_ROWS, fields)), numba.carray(values_p, (n, fields)),
                   numba.carray(nulls_p, (n, fields)), numba.carray(header_p, (header_size,)),
                   numba.carray(text_p, (text_size,)), numba.carray(out_p, (out_size,)))


# PYFUNCTYPE keeps the interpreter lock for the call: the learner encodes with it (udfs.learner_kernel._NATIVE_CALL).
_P, _N = ctypes.c_void_p, ctypes.c_int64
_RECORD_ENDS = ctypes.PYFUNCTYPE(None, _P, _N, _P, _P, _N, _N, _P)(_record_ends_native.address)
_WRITE_RECORDS = ctypes.PYFUNCTYPE(None, _P, _N, _P, _P, _N, _P, _N, _P, _N, _P, _N)(_write_records_native.address)


def _encode_columns(layout: np.ndarray, values: np.ndarray, nulls: np.ndarray, header: np.ndarray,
                    text: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(all messages in one buffer, each one's end offset)."""
    n, fields = values.shape
    ends = np.empty(n, dtype=np.int64)
    _RECORD_ENDS(layout.ctypes.data, fields, values.ctypes.data, nulls.ctypes.data, n, header.shape[0],
                 ends.ctypes.data)
    out = np.empty(int(ends[-1]) if n else 0, dtype=np.uint8)
    _WRITE_RECORDS(layout.ctypes.data, fields, values.ctypes.data, nulls.ctypes.data, n, header.ctypes.data,
                   header.shape[0], text.ctypes.data, text.shape[0], out.ctypes.data, out.shape[0])
    return out.tobytes(), ends


class FlatEncoder:
    """Encodes lists of records of one flat schema (see the module doc); `header` goes before each body."""

    def __init__(self, fields: list[tuple[str, int, int, int, dict[str, int] | None]], header: bytes,
                 int32: list[bool]) -> None:
        self.names = [field[0] for field in fields]
        self.symbols = [field[4] for field in fields]  # an enum field's symbol -> index
        # what a null's column holds (the null mask tells the kernel to write the null branch instead)
        self.placeholders = [next(iter(symbols)) if symbols else _PLACEHOLDER[kind]
                             for (_, kind, _, _, symbols) in fields]
        self.int32 = int32  # Avro `int` fields: a value beyond 32 bits is not theirs
        # rows _KIND, _NULL_BRANCH, _VALUE_BRANCH; a column per field
        self.layout = np.ascontiguousarray(np.array([field[1:4] for field in fields], dtype=np.int64).T)
        self.kinds = self.layout[_KIND].tolist()
        self.null_branch = self.layout[_NULL_BRANCH].tolist()
        self.header = np.frombuffer(header, dtype=np.uint8)
        self.row = operator.itemgetter(*self.names)

    def encode_many(self, records: list[dict[str, Any]]) -> list[bytes]:
        """One message per record, byte for byte what fastavro writes; NotFlat if the columns cannot hold them."""
        if not records:
            return []
        try:
            columns = (zip(*map(self.row, records), strict=True) if len(self.names) > 1
                       else [[r[self.names[0]] for r in records]])
            return self._encode(list(columns), len(records))
        except (KeyError, TypeError) as error:
            raise NotFlat(f"{type(error).__name__}: {error}") from error

    def encode_columns(self, columns: Mapping[str, Sequence]) -> list[bytes]:
        """`encode_many` of the records these columns hold (field name -> values)."""
        try:
            ordered = [columns[name] for name in self.names]
        except KeyError as error:
            raise NotFlat(f"no column {error}") from error
        n = len(ordered[0])
        if any(len(column) != n for column in ordered):
            raise NotFlat("columns of different lengths")
        return self._encode([column.tolist() if isinstance(column, np.ndarray) else column for column in ordered], n) \
            if n else []

    def _encode(self, columns: list[Sequence], n: int) -> list[bytes]:
        fields = len(self.names)
        values = np.zeros((n, fields), dtype=np.int64)
        nulls = np.zeros((n, fields), dtype=np.bool_)
        texts = []
        try:
            for f, column in enumerate(columns):
                if self.null_branch[f] >= 0 and None in column:
                    missing = [value is None for value in column]
                    nulls[:, f] = missing
                    column = [self.placeholders[f] if gone else value
                              for value, gone in zip(column, missing, strict=True)]
                values[:, f] = self._column(f, column, texts)
                if self.int32[f] and not _INT32[0] <= values[:, f].min() <= values[:, f].max() <= _INT32[1]:
                    raise NotFlat(f"{self.names[f]}: beyond the 32 bits of an Avro int")
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as error:
            raise NotFlat(f"{type(error).__name__}: {error}") from error
        # The kernel reads string bytes record by record, field by field.
        text = b"".join(chain.from_iterable(zip(*texts, strict=True))) if texts else b""
        data, ends = _encode_columns(self.layout, values, nulls.view(np.uint8), self.header,
                                     np.frombuffer(text, dtype=np.uint8))
        starts = [0, *ends[:-1].tolist()]
        return [data[start:end] for start, end in zip(starts, ends.tolist(), strict=True)]

    def _column(self, f: int, column: Sequence, texts: list[list[bytes]]) -> np.ndarray:
        kind = self.kinds[f]
        if kind == _STRING:  # anything but str has no encode(), or not this one: NotFlat
            encoded = [value.encode() for value in column]
        elif kind == _BYTES:
            encoded = [_as_bytes(value) for value in column]
        elif kind in (_FLOATS, _DOUBLES):
            arrays = [_floats(value, kind == _FLOATS) for value in column]
            texts.append([array.tobytes() for array in arrays])
            return np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        elif kind == _ENUM:
            return np.fromiter(map(self.symbols[f].__getitem__, column), dtype=np.int64, count=len(column))
        if kind in (_STRING, _BYTES):
            texts.append(encoded)
            return np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        if kind == _DOUBLE:
            return _floats(column, single=False).view(np.int64)
        if kind == _FLOAT:
            return _floats(column, single=True).view(np.uint32).astype(np.int64)
        return _checked(column, "b" if kind == _BOOLEAN else "bi").astype(np.int64)


def _checked(values: Any, allowed: str) -> np.ndarray:
    """`values` as a numpy array whose inferred dtype kind is one of `allowed`: numpy converts what it
    is told to ("1.5" to a double, None to NaN, 1.5 to an integer), fastavro may not."""
    inferred = np.asarray(values)
    if inferred.dtype.kind not in allowed:
        raise TypeError(f"{inferred.dtype} values where Avro wants numbers of kinds {allowed!r}")
    return inferred


def _floats(values: Any, single: bool) -> np.ndarray:
    """`values` as float32 (`single`: an Avro float, which must not overflow) or float64."""
    inferred = _checked(values, "bif")
    if not single:
        return inferred.astype(np.float64)
    with np.errstate(over="ignore"):
        narrowed = inferred.astype(np.float32)
    if np.count_nonzero(np.isinf(narrowed)) != np.count_nonzero(np.isinf(inferred)):
        raise OverflowError("a value beyond the range of an Avro float")
    return narrowed


_PLACEHOLDER = {_STRING: "", _BYTES: b"", _VARINT: 0, _DOUBLE: 0.0, _FLOAT: 0.0, _BOOLEAN: False, _FLOATS: (),
                _DOUBLES: ()}


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{type(value).__name__} in a string or bytes field")


def _field_layout(field_type: Any) -> tuple[int, int, int, dict[str, int] | None] | None:
    """(kind, branch of null or -1, branch of the value, an enum's symbol indexes) of a flat field type,
    None if not flat."""
    if isinstance(field_type, list) and len(field_type) == 2 and "null" in field_type:
        value_branch = 1 - field_type.index("null")
        layout = _field_layout(field_type[value_branch])
        return None if layout is None or layout[1] >= 0 else (layout[0], field_type.index("null"), value_branch,
                                                                layout[3])
    if isinstance(field_type, str):
        return (_KINDS[field_type], -1, 0, None) if field_type in _KINDS else None
    if isinstance(field_type, dict):
        if field_type.get("type") == "enum":
            return _ENUM, -1, 0, {symbol: index for index, symbol in enumerate(field_type["symbols"])}
        if field_type.get("type") == "array" and field_type.get("items") in _ARRAYS:
            return _ARRAYS[field_type["items"]], -1, 0, None
    return None


@functools.cache
def flat_encoder(name: str, header: bytes) -> FlatEncoder | None:
    """The column encoder of record schema `name` (messages start with `header`), None unless flat."""
    fields, int32 = [], []
    for field in parsed_schema(name)["fields"]:
        layout = _field_layout(field["type"])
        if layout is None:
            return None
        fields.append((field["name"], *layout))
        int32.append("int" in (field["type"] if isinstance(field["type"], list) else [field["type"]]))
    return FlatEncoder(fields, header, int32)


def warm_up() -> None:
    """Load (or compile) the kernel and run it once, before the first batch needs it (`cfunc` compiles
    when this module is imported, from numba's disk cache when it can)."""
    layout = np.array([[_VARINT], [-1], [0]], dtype=np.int64)
    _encode_columns(layout, np.ones((1, 1), dtype=np.int64), np.zeros((1, 1), dtype=np.uint8),
                    np.zeros(2, dtype=np.uint8), np.zeros(0, dtype=np.uint8))
