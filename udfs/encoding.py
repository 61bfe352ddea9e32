"""How output records leave the job: JSON Lines text for files, Avro single-object encoding for Kafka."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson
from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation

from udfs.records import column_length, records_from_columns


class RecordEncoder(Protocol):
    """Turns a record dict of a named schema into what the sink writes."""

    def encode(self, schema_name: str, record: dict[str, Any]) -> Any: ...

    def flink_type(self, schema_name: str) -> TypeInformation: ...

    def encode_all(self, schema_name: str, records: list[dict[str, Any]]) -> list[Any]:
        """Many records as few stream records as the sink allows (of `batch_type`): each one handed
        from Python to the JVM costs more than encoding it did."""
        ...

    def batch_type(self, schema_name: str) -> TypeInformation:
        """What `encode_all` makes, as its stream's type."""
        ...

    def encode_columns(self, schema_name: str, columns: Mapping[str, Sequence]) -> list[Any]:
        """`encode_all` of the records these columns hold (field name -> values), without a dict per record."""
        ...


def json_default(value: Any) -> Any:
    """orjson's fallback for our records: bytes (DeadLetter payloads) as text, as the file sinks write them."""
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# numpy arrays (snapshot vectors) as JSON arrays, as their values' lists would be written
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JsonLinesEncoder:
    """One JSON object per record; NaN becomes null (JSON has no NaN)."""

    def encode(self, schema_name: str, record: dict[str, Any]) -> str:
        return orjson.dumps(record, default=json_default, option=_JSON_OPTIONS).decode()

    def flink_type(self, schema_name: str) -> TypeInformation:
        return Types.STRING()

    def encode_all(self, schema_name: str, records: list[dict[str, Any]]) -> list[bytes]:
        """One record of many lines, as UTF-8 bytes (the sink ends it with the last newline). Bytes, not
        str: a large str handed to the JVM costs the learner's thread far more than the same bytes
        (a 600k replay: 13.8-14.8k -> 15.9k impressions/s); the sink decodes them in the JVM
        (job.files.json_lines_sink)."""
        if not records:
            return []
        return [b"\n".join([orjson.dumps(record, default=json_default, option=_JSON_OPTIONS)
                            for record in records])]

    def batch_type(self, schema_name: str) -> TypeInformation:
        return Types.PRIMITIVE_ARRAY(Types.BYTE())

    def encode_columns(self, schema_name: str, columns: Mapping[str, Sequence]) -> list[bytes]:
        """As `encode_all`, byte for byte, in one compiled pass (udfs.json_batch)."""
        from udfs.json_batch import json_lines  # (loads or compiles its kernel on import)

        if not column_length(columns):
            return []
        lines = json_lines(columns, _JSON_OPTIONS, json_default)
        if lines is None:  # a value that is not a JSON scalar: record by record
            return self.encode_all(schema_name, records_from_columns(columns))
        return [lines]


def snapshot_key(record: dict[str, Any]) -> str:
    """The Kafka key of a snapshot record: one per entity, so the compacted topic keeps its newest."""
    return f"{record['entity_type']}:{record['entity_id']}"


def _distinct_key_rows(keys: list[str], values: list[bytes]) -> list[Row]:
    """Row(keys, values) with distinct keys (the sink pairs them as a map): one row, or, should an
    entity ever repeat within a snapshot (the learner makes one record per entity), one row per
    record, in order, so the later record still reaches the topic later, as compaction expects."""
    if len(set(keys)) == len(keys):
        return [Row(keys, values)]
    return [Row([key], [value]) for key, value in zip(keys, values, strict=True)]


class AvroWireEncoder:
    """Avro single-object encoding (udfs.wire); snapshots as Row(key, value) for the compacted topic."""

    def encode(self, schema_name: str, record: dict[str, Any]) -> Any:
        from udfs.wire import encode

        value = encode(schema_name, record)
        if schema_name == "ModelSnapshot":
            return Row(snapshot_key(record), value)
        return value

    def encode_all(self, schema_name: str, records: list[dict[str, Any]]) -> list[Any]:
        """All records as one array of messages, which the Kafka sink unnests in the JVM
        (job.kafka_job.kafka_sink); snapshots as Row(keys, values), two arrays in the same order
        (not an array of keyed rows: PyFlink hands every row of an array from Python to the JVM in
        one reused object), the sink pairing them as a map, so each row's keys are distinct."""
        from udfs.wire import encode_many

        if not records:
            return []
        if schema_name == "ModelSnapshot":
            return _distinct_key_rows([snapshot_key(record) for record in records], encode_many(schema_name, records))
        return [encode_many(schema_name, records)]

    def encode_columns(self, schema_name: str, columns: Mapping[str, Sequence]) -> list[Any]:
        """As `encode_all`, in one compiled pass where the schema is flat (udfs.wire.encode_columns)."""
        from udfs.wire import encode_columns

        if not column_length(columns):
            return []
        if schema_name == "ModelSnapshot":
            return self.encode_all(schema_name, records_from_columns(columns))
        return [encode_columns(schema_name, columns)]

    def batch_type(self, schema_name: str) -> TypeInformation:
        messages = Types.OBJECT_ARRAY(Types.PRIMITIVE_ARRAY(Types.BYTE()))
        if schema_name == "ModelSnapshot":
            return Types.ROW_NAMED(["keys", "values"], [Types.OBJECT_ARRAY(Types.STRING()), messages])
        return messages

    def flink_type(self, schema_name: str) -> TypeInformation:
        if schema_name == "ModelSnapshot":
            return Types.ROW_NAMED(["key", "value"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
        return Types.PRIMITIVE_ARRAY(Types.BYTE())
