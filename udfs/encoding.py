"""How output records leave the job: JSON Lines text for files (Avro on the wire for Kafka)."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation


class RecordEncoder(Protocol):
    """Turns a record dict of a named schema into what the sink writes."""

    def encode(self, schema_name: str, record: dict[str, Any]) -> Any: ...

    def flink_type(self) -> TypeInformation: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class JsonLinesEncoder:
    """One JSON object per record; NaN becomes null (JSON has no NaN)."""

    def encode(self, schema_name: str, record: dict[str, Any]) -> str:
        return orjson.dumps(record, default=_json_default).decode()

    def flink_type(self) -> TypeInformation:
        return Types.STRING()
