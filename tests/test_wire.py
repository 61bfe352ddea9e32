"""Avro single-object encoding (udfs.wire): round trips, schema evolution and undecodable bytes."""

from __future__ import annotations

import copy
import io
import math

import pytest
from fastavro import parse_schema, schemaless_writer
from samples import SAMPLES

from udfs.schemas import RECORD_NAMES, raw_schema
from udfs.wire import HEADER_SIZE, MARKER, WireDecoder, WireError, encode, fingerprint


def message(schema: dict, record: dict) -> bytes:
    """A single-object-encoded message built by hand from the spec, with any writer schema."""
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(schema), record)
    return MARKER + fingerprint(schema) + body.getvalue()


def test_every_schema_has_a_sample() -> None:
    assert set(SAMPLES) == set(RECORD_NAMES)


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_round_trip(name: str) -> None:
    data = encode(name, SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:HEADER_SIZE] == fingerprint(raw_schema(name))
    assert data == message(raw_schema(name), SAMPLES[name])
    assert WireDecoder(name).decode(data) == SAMPLES[name]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode("Click", SAMPLES["Click"])
    decoder = WireDecoder("Click")
    assert decoder.decode(bytearray(data)) == SAMPLES["Click"]
    assert decoder.decode(memoryview(data)) == SAMPLES["Click"]


def test_nan_metric_survives() -> None:
    record = dict(SAMPLES["Metric"], name="auc", value=math.nan)
    assert math.isnan(WireDecoder("Metric").decode(encode("Metric", record))["value"])


def test_fingerprint_matches_avro_reference_values() -> None:
    # CRC-64-AVRO fingerprints from the Avro project's schema test data, as Java's signed longs.
    for schema, expected in (('"null"', 7195948357588979594), ('"int"', 8247732601305521295)):
        assert fingerprint(schema) == expected.to_bytes(8, "little", signed=True)


def test_fingerprint_ignores_docs_and_formatting() -> None:
    schema = copy.deepcopy(raw_schema("Click"))
    schema["doc"] = "another doc"
    schema["fields"][0]["doc"] = "changed"
    assert fingerprint(schema) == fingerprint(raw_schema("Click"))


def test_older_writer_without_optional_field_reads_with_default() -> None:
    old = copy.deepcopy(raw_schema("Impression"))
    old["fields"] = [f for f in old["fields"] if f["name"] != "query"]
    record = {k: v for k, v in SAMPLES["Impression"].items() if k != "query"}
    data = message(old, record)

    decoded = WireDecoder("Impression", extra_writer_schemas=[old]).decode(data)

    assert decoded == dict(record, query=None)


def test_newer_writer_with_added_field_is_read_without_it() -> None:
    new = copy.deepcopy(raw_schema("Click"))
    new["fields"].append({"name": "dwell_ms", "type": "long", "default": 0})
    data = message(new, dict(SAMPLES["Click"], dwell_ms=1234))

    decoded = WireDecoder("Click", extra_writer_schemas=[new]).decode(data)

    assert decoded == SAMPLES["Click"]


def test_extra_writer_schema_as_json_text() -> None:
    import json

    new = copy.deepcopy(raw_schema("Click"))
    new["fields"].append({"name": "dwell_ms", "type": "long", "default": 0})
    decoder = WireDecoder("Click", extra_writer_schemas=[json.dumps(new)])
    assert fingerprint(new) in decoder.fingerprints
    assert decoder.decode(message(new, dict(SAMPLES["Click"], dwell_ms=5))) == SAMPLES["Click"]


def test_unregistered_writer_schema_is_unknown_fingerprint() -> None:
    new = copy.deepcopy(raw_schema("Click"))
    new["fields"].append({"name": "dwell_ms", "type": "long", "default": 0})
    data = message(new, dict(SAMPLES["Click"], dwell_ms=1))

    with pytest.raises(WireError) as error:
        WireDecoder("Click").decode(data)

    assert error.value.reason == f"unknown fingerprint {fingerprint(new).hex()} for Click"


def test_incompatible_writer_schema_is_a_wire_error() -> None:
    old = copy.deepcopy(raw_schema("Click"))
    old["fields"] = [f for f in old["fields"] if f["name"] != "user_id"]  # no default in the reader
    data = message(old, {k: v for k, v in SAMPLES["Click"].items() if k != "user_id"})

    with pytest.raises(WireError, match="Click"):
        WireDecoder("Click", extra_writer_schemas=[old]).decode(data)


def test_other_record_type_is_unknown_fingerprint() -> None:
    with pytest.raises(WireError, match="unknown fingerprint"):
        WireDecoder("Click").decode(encode("Impression", SAMPLES["Impression"]))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"impression_id": "x"}', "bad marker 7b22"),
        (b"\xc3\x02" + bytes(20), "bad marker c302"),
        (b"", "truncated header"),
        (b"\xc3", "truncated header"),
        (b"\xc3\x01\x00\x00", "truncated header"),
    ],
)
def test_bad_header(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as error:
        WireDecoder("Click").decode(data)
    assert reason in error.value.reason
    assert str(error.value) == error.value.reason


@pytest.mark.parametrize("name", RECORD_NAMES)
def test_every_truncation_is_a_wire_error(name: str) -> None:
    data = encode(name, SAMPLES[name])
    decoder = WireDecoder(name)
    for size in range(len(data)):
        with pytest.raises(WireError):
            decoder.decode(data[:size])


def test_truncated_body_reason() -> None:
    data = encode("Click", SAMPLES["Click"])
    with pytest.raises(WireError, match="corrupt or truncated Click body"):
        WireDecoder("Click").decode(data[:-3])


def test_trailing_bytes_are_corrupt() -> None:
    data = encode("Click", SAMPLES["Click"])
    with pytest.raises(WireError, match="1 bytes left over"):
        WireDecoder("Click").decode(data + b"\x00")


def test_bad_enum_index_is_a_wire_error() -> None:
    data = bytearray(encode("ModelSnapshot", dict(SAMPLES["ModelSnapshot"], version=0)))
    assert data[HEADER_SIZE : HEADER_SIZE + 2] == b"\x00\x02"  # version 0, then enum index 1 (ITEM)
    data[HEADER_SIZE + 1] = 0x7E  # zig-zag 63: past the 4 symbols
    with pytest.raises(WireError, match="ModelSnapshot"):
        WireDecoder("ModelSnapshot").decode(bytes(data))


def test_encode_rejects_bad_records() -> None:
    with pytest.raises(WireError, match="cannot encode Click"):
        encode("Click", dict(SAMPLES["Click"], event_time="yesterday"))
    with pytest.raises(WireError, match="cannot encode Click"):
        encode("Click", {"impression_id": "imp-1"})


def test_snapshot_records_written_before_bias_z_still_decode() -> None:
    from udfs.schemas import previous_schemas

    older = previous_schemas("ModelSnapshot")
    assert older and all("bias_z" not in [f["name"] for f in schema["fields"]] for schema in older)
    record = {k: v for k, v in SAMPLES["ModelSnapshot"].items() if k != "bias_z"}
    assert WireDecoder("ModelSnapshot").decode(message(older[-1], record)) == dict(record, bias_z=None)


def test_snapshot_batches_pair_each_key_with_its_record_and_never_repeat_a_key_in_one_row() -> None:
    """Kafka snapshots cross to the JVM as Row(keys, values) and are paired there as a map: a key
    twice in one row would lose a record, so a repeated entity goes into a later row, in order."""
    from udfs.encoding import AvroWireEncoder

    def record(entity_id: str, updates: int) -> dict:
        return {**SAMPLES["ModelSnapshot"], "entity_type": "USER", "entity_id": entity_id, "updates": updates}

    records = [record("a", 1), record("b", 2), record("a", 3), record("c", 4), record("a", 5)]
    rows = AvroWireEncoder().encode_all("ModelSnapshot", records)
    decoder = WireDecoder("ModelSnapshot")
    for keys, _ in rows:
        assert len(set(keys)) == len(keys)
    pairs = [(key, decoder.decode(value)) for keys, values in rows for key, value in zip(keys, values, strict=True)]
    assert all(key == f"USER:{r['entity_id']}" for key, r in pairs)
    assert [r["updates"] for key, r in pairs if key == "USER:a"] == [1, 3, 5]
    assert sorted(r["updates"] for _, r in pairs) == [1, 2, 3, 4, 5]
    assert len(AvroWireEncoder().encode_all("ModelSnapshot", records[:2])) == 1
