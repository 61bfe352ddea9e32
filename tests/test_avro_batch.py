"""The compiled batch encoder (udfs.avro_batch) against fastavro, message by message."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from samples import SAMPLES

from udfs.avro_batch import _field_layout, flat_encoder
from udfs.schemas import RECORD_NAMES, parsed_schema
from udfs.wire import WireDecoder, WireError, _writer, encode, encode_columns, encode_many

FLAT = [name for name in RECORD_NAMES if flat_encoder(name, _writer(name)[1]) is not None]

_TEXTS = ["", "a", "cheap toys", "便宜玩具", "emoji 🛒", "x" * 200, "tab\tnewline\n", "\x00"]
_LONGS = [0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 1767225611679]
_INTS = [0, 1, -1, 63, 64, -65, 127, 128, 2**31 - 1, -(2**31)]
_DOUBLES = [0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, math.inf, -math.inf, math.nan, 0.1]


def _value(kind: str, rng: random.Random):
    if kind == "string":
        return rng.choice(_TEXTS) + str(rng.random())[: rng.randrange(6)]
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(20)))
    if kind == "int":
        return rng.choice(_INTS + [rng.randrange(-1000, 1000)])
    if kind == "long":
        return rng.choice(_LONGS + [rng.randrange(-(2**40), 2**40)])
    if kind in ("double", "float"):
        return rng.choice(_DOUBLES + [rng.uniform(-1e6, 1e6)])
    assert kind == "boolean", kind
    return rng.random() < 0.5


def _typed(kind, rng: random.Random, in_union: bool):
    if kind == "null":
        return None
    if isinstance(kind, dict) and kind["type"] == "enum":
        return rng.choice(kind["symbols"])
    if isinstance(kind, dict):  # an array; numpy arrays too (the learner's snapshot records hold them),
        # except in a union, where fastavro does not take them
        items = [_value(kind["items"], rng) for _ in range(rng.choice([0, 1, 3, 40]))]
        return np.array(items) if not in_union and rng.random() < 0.3 else items
    return _value(kind, rng)


def _record(name: str, rng: random.Random) -> dict:
    record = {}
    for field in parsed_schema(name)["fields"]:
        kinds = field["type"] if isinstance(field["type"], list) else [field["type"]]
        record[field["name"]] = _typed(rng.choice(kinds), rng, in_union=len(kinds) > 1)
    return record


def _same(a: list[bytes], b: list[bytes]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", FLAT)
def test_random_records_encode_byte_for_byte_as_fastavro(name: str) -> None:
    rng = random.Random(name)
    records = [_record(name, rng) for _ in range(3000)]
    assert _same(encode_many(name, records), [encode(name, record) for record in records])
    decoder = WireDecoder(name)
    back = decoder.decode(encode_many(name, records[:1])[0])
    assert back.keys() == records[0].keys()


@pytest.mark.parametrize("name", FLAT)
def test_records_as_columns_encode_as_the_records_do(name: str) -> None:
    """The learner hands its examples over as columns (lists, or numpy arrays for numbers)."""
    rng = random.Random(f"columns {name}")
    records = [_record(name, rng) for _ in range(500)]
    columns = {field: [record[field] for record in records] for field in records[0]}
    for field, values in list(columns.items()):
        if all(type(value) in (int, float) for value in values):
            columns[field] = np.array(values)
    assert _same(encode_columns(name, columns), [encode(name, record) for record in records])
    # a column the flat encoder cannot hold goes the records' way, and fastavro names the field
    bad = {**columns, next(iter(columns)): [object()] * len(records)}
    with pytest.raises(ValueError):
        encode_columns(name, bad)


def test_the_job_outputs_are_flat_and_a_batch_of_one_or_none_works() -> None:
    assert {"LabeledExample", "Metric", "ModelSnapshot"} <= set(FLAT)
    assert encode_many("LabeledExample", []) == []
    sample = SAMPLES["LabeledExample"]
    assert encode_many("LabeledExample", [sample]) == [encode("LabeledExample", sample)]


@pytest.mark.parametrize("name, field, bad", [
    ("LabeledExample", "score", "0.5"),         # numpy would parse the text as a double
    ("LabeledExample", "position", 2.5),        # and truncate a double into an int
    ("LabeledExample", "position", 2**31),      # beyond an Avro int
    ("LabeledExample", "impression_time", 2**63),
    ("LabeledExample", "user_id", 7),
    ("LabeledExample", "user_id", None),        # null in a field that is not nullable
    ("LabeledExample", "label", None),
    ("ModelSnapshot", "vector", [1.0, None]),   # numpy would read None as NaN
    ("ModelSnapshot", "vector", [1e300]),       # beyond an Avro float
    ("ModelSnapshot", "vector", ["0.5"]),
    ("ModelSnapshot", "entity_type", "PERSON"),  # not a symbol
])
def test_a_record_the_columns_cannot_hold_is_left_to_fastavro(name: str, field: str, bad) -> None:
    """Whatever fastavro does with a bad value (encode it its way or raise WireError), encode_many
    does the same for the whole batch: the columns never write their own reading of it."""
    records = [dict(SAMPLES[name]) for _ in range(5)]
    records[3][field] = bad
    try:
        expected = [encode(name, record) for record in records]
    except WireError:
        with pytest.raises(WireError):
            encode_many(name, records)
        return
    assert encode_many(name, records) == expected


@pytest.mark.parametrize("field_type", [
    {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]},
    {"type": "map", "values": "long"},
    {"type": "array", "items": "string"},
    ["null", "string", "long"],
    ["string", "long"],
    "freshrank.v1.EntityType",  # a named type used again
])
def test_types_that_are_not_flat_are_left_to_fastavro(field_type) -> None:
    assert _field_layout(field_type) is None
