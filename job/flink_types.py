"""Flink row types derived from the Avro schemas, so records between operators match the .avsc."""

from __future__ import annotations

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation

from job.schemas import raw_schema
from udfs.records import EVENT_FIELDS

_PRIMITIVES = {
    "string": Types.STRING(),
    "int": Types.INT(),
    "long": Types.LONG(),
    "float": Types.FLOAT(),
    "double": Types.DOUBLE(),
    "boolean": Types.BOOLEAN(),
}


def _flink_type(avro_type) -> TypeInformation:
    if isinstance(avro_type, list):  # ["null", T]: Row fields are nullable anyway
        (inner,) = [t for t in avro_type if t != "null"]
        return _flink_type(inner)
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        return Types.LIST(_flink_type(avro_type["items"]))
    return _PRIMITIVES[avro_type]


def row_type(schema_name: str, only: tuple[str, ...] | None = None) -> TypeInformation:
    """A named Row type with the fields of `schema_name` (or the subset `only`, in that order)."""
    fields = {f["name"]: f["type"] for f in raw_schema(schema_name)["fields"]}
    names = list(only) if only else list(fields)
    return Types.ROW_NAMED(names, [_flink_type(fields[name]) for name in names])


def event_type() -> TypeInformation:
    """Impressions and clicks as one row type (udfs.records.EVENT_FIELDS)."""
    return Types.ROW_NAMED(
        list(EVENT_FIELDS),
        [Types.INT(), *[Types.STRING()] * 5, Types.INT(), Types.LONG(), Types.PICKLED_BYTE_ARRAY()],
    )
