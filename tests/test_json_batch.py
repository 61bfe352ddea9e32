"""JSON lines written from columns (udfs.json_batch) against orjson writing each record's dict."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest

from udfs.encoding import JsonLinesEncoder
from udfs.json_batch import json_lines
from udfs.records import records_from_columns

_TEXTS = ["", "a", "cheap toys", "便宜玩具", "emoji 🛒", 'quote " and \\ backslash', "\\", '\\"', 'a",', "a,b]",
          '"]', "tab\tnewline\n", "\x00\x01\x1f\x7f", "\u2028", "x" * 300]


def _double(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.2:  # any bit pattern: subnormals, huge, NaN payloads
        return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
    if pick < 0.4:
        return rng.choice([0.0, -0.0, 1.0, 0.1, 1 / 3, 1e-300, 5e-324, 1e308, math.nan, math.inf, -math.inf])
    return rng.random() ** rng.randint(1, 40)


def _columns(rng: random.Random, n: int) -> dict:
    return {
        "impression_id": [rng.choice(_TEXTS) + str(k) for k in range(n)],
        "query": [rng.choice([*_TEXTS, None]) for _ in range(n)],
        "position": [rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(100)]) for _ in range(n)],
        "label": np.array([rng.randrange(2) for _ in range(n)]),
        "score": np.array([_double(rng) for _ in range(n)]),
        "python_float": [_double(rng) for _ in range(n)],
        "flag": [rng.random() < 0.5 for _ in range(n)],
        "click_time": [None if rng.random() < 0.7 else rng.randrange(2**62) for _ in range(n)],
    }


def _dict_path(columns: dict) -> list[bytes]:
    return JsonLinesEncoder().encode_all("LabeledExample", records_from_columns(columns))


@pytest.mark.parametrize("seed", range(3))
def test_columns_give_the_lines_orjson_writes_for_each_record(seed: int) -> None:
    rng = random.Random(seed)
    for n in (1, 2, 17, 3000):
        columns = _columns(rng, n)
        expected = _dict_path(columns)
        assert JsonLinesEncoder().encode_columns("LabeledExample", columns) == expected
        assert json_lines(columns, 0, None) is not None
    # the stream held what needs care: escapes, non-finite numbers (null), both kinds of float
    lines = expected[0].decode()
    assert '\\"' in lines and "\\u0000" in lines and "null" in lines and "便宜玩具" in lines


def test_a_column_view_of_a_matrix_is_written_as_its_values() -> None:
    matrix = np.arange(12).reshape(4, 3)
    columns = {"a": matrix[:, 1], "b": ["w", "x", "y", "z"]}
    assert JsonLinesEncoder().encode_columns("X", columns) == _dict_path(columns)


def test_values_that_are_not_scalars_go_record_by_record() -> None:
    columns = {"a": [1, 2], "b": [[1, 2], {"k": "v"}]}
    assert json_lines(columns) is None
    assert JsonLinesEncoder().encode_columns("X", columns) == [b'{"a":1,"b":[1,2]}\n{"a":2,"b":{"k":"v"}}']


def test_no_records_and_ragged_columns() -> None:
    assert JsonLinesEncoder().encode_columns("X", {}) == []
    assert JsonLinesEncoder().encode_columns("X", {"a": []}) == []
    with pytest.raises(ValueError, match="different lengths"):
        json_lines({"a": [1, 2], "b": [1]})
