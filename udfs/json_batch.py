"""Records held as columns, written as JSON lines in one compiled pass (the job's examples on files).

The learner emits one example per impression. Built as a dict and written by orjson one at a time,
an example cost the learner's thread more than its share of the learning math (a py-spy profile of a
1M replay: 17% of the learner's time against 13% for the math). Here orjson writes each column as one
JSON array (one call per column, escaping and number formatting its own), and a numba kernel deals
the arrays' values out into one object per record: the lines are byte for byte those orjson writes
for each record's dict, keys in the columns' order. A value that is not a JSON scalar (a list, a
dict) makes `json_lines` give None: the caller then writes the records one by one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numba
import numpy as np
import orjson

from udfs.native import cached_cfunc, cached_njit

_QUOTE, _BACKSLASH, _COMMA, _CLOSE, _OPEN_ARRAY, _OPEN_OBJECT = 34, 92, 44, 93, 91, 123


@cached_njit
def _deal(keys: np.ndarray, key_ends: np.ndarray, text: np.ndarray, starts: np.ndarray, n: int,
          out: np.ndarray) -> int:
    """Record i as the object of every column's i-th value, lines joined by newlines, into `out`; the
    length written, or -1 at a value that is not a scalar. `text` holds the columns' JSON arrays, column
    f's from `starts[f]`; `keys` each field's '{"name":' or ',"name":'."""
    fields = starts.shape[0]
    cursors = starts + 1  # past each array's '['
    at = 0
    for i in range(n):
        if i:
            out[at] = 10  # '\n'
            at += 1
        for f in range(fields):
            for k in range(key_ends[f - 1] if f else 0, key_ends[f]):
                out[at] = keys[k]
                at += 1
            c = cursors[f]
            b = text[c]
            if b == _QUOTE:  # a string: to its closing quote, escapes copied as they are
                out[at] = b
                at += 1
                c += 1
                while True:
                    b = text[c]
                    out[at] = b
                    at += 1
                    c += 1
                    if b == _BACKSLASH:
                        out[at] = text[c]
                        at += 1
                        c += 1
                    elif b == _QUOTE:
                        break
            elif b == _OPEN_ARRAY or b == _OPEN_OBJECT:
                return -1
            else:  # a number, true, false or null: to the separator
                while b != _COMMA and b != _CLOSE:
                    out[at] = b
                    at += 1
                    c += 1
                    b = text[c]
            cursors[f] = c + 1  # past the ',' (or the closing ']' after the last value)
        out[at] = 125  # '}'
        at += 1
    return at


# A native entry point over raw pointers, called through ctypes, as udfs.avro_batch's are (an njit
# function called from Python hangs under PemJa); PYFUNCTYPE keeps the interpreter lock, as the
# learner's kernels do (udfs.learner_kernel).
_I64P = numba.types.CPointer(numba.types.int64)
_U8P = numba.types.CPointer(numba.types.uint8)
_I64 = numba.types.int64


@cached_cfunc(_I64(_U8P, _I64, _I64P, _U8P, _I64, _I64P, _I64, _I64, _U8P, _I64))
def _deal_native(keys_p, keys_size, key_ends_p, text_p, text_size, starts_p, fields, n, out_p, out_size):
    return _deal(numba.carray(keys_p, (keys_size,)), numba.carray(key_ends_p, (fields,)),
                 numba.carray(text_p, (text_size,)), numba.carray(starts_p, (fields,)), n,
                 numba.carray(out_p, (out_size,)))


_P, _N = ctypes.c_void_p, ctypes.c_int64
_DEAL = ctypes.PYFUNCTYPE(_N, _P, _N, _P, _P, _N, _P, _N, _N, _P, _N)(_deal_native.address)


def json_lines(columns: Mapping[str, Sequence], options: int = 0, default: Callable[[Any], Any] | None = None
               ) -> bytes | None:
    """The records these columns hold (field name -> values, lists or numpy arrays of one length), as
    orjson writes each record's dict with `options` and `default`, lines joined by newlines (none after
    the last); None if a value is not a JSON scalar. orjson's own errors (a value it cannot write) are
    its own: the records would raise them too."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    if any(len(column) != n for column in columns.values()):
        raise ValueError("columns of different lengths")
    if n == 0:
        return b""
    arrays = [orjson.dumps(np.ascontiguousarray(column) if isinstance(column, np.ndarray) else column,
                           default=default, option=options | orjson.OPT_SERIALIZE_NUMPY)
              for column in columns.values()]
    if any(array[:1] != b"[" for array in arrays):  # (a numpy array of another shape, say)
        return None
    keys = [("{" if f == 0 else ",").encode() + orjson.dumps(name) + b":" for f, name in enumerate(names)]
    key_text = np.frombuffer(b"".join(keys), dtype=np.uint8)
    key_ends = np.cumsum([len(key) for key in keys]).astype(np.int64)
    text = np.frombuffer(b"".join(arrays), dtype=np.uint8)
    starts = np.cumsum([0, *map(len, arrays[:-1])]).astype(np.int64)
    out = np.empty(len(text) + n * (len(key_text) + 2), dtype=np.uint8)
    size = _DEAL(key_text.ctypes.data, len(key_text), key_ends.ctypes.data, text.ctypes.data, len(text),
                 starts.ctypes.data, len(names), n, out.ctypes.data, len(out))
    return None if size < 0 else out[:size].tobytes()


def warm_up() -> None:
    """Load (or compile) the kernel and run it once, before the first batch needs it."""
    json_lines({"warm": [1]})
