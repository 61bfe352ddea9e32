"""Parse and validate input events: JSON text in, compact tuples out, or a reason why not.

Field names and types come from the `.avsc` files; the extra rules (position >= 1, times >= 0)
are the ones Avro cannot express.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastavro.validation import ValidationError, validate

from job.schemas import field_names, parsed_schema


class InvalidRecord(ValueError):
    """A record that cannot enter the job; its message is the dead-letter reason."""


# Schema name per input stream.
SOURCE_SCHEMAS = {"impressions": "Impression", "clicks": "Click", "items": "Item"}


def _check_semantics(schema_name: str, record: dict[str, Any]) -> None:
    if record.get("event_time", 0) < 0:
        raise InvalidRecord(f"{schema_name}.event_time is negative: {record['event_time']}")
    if schema_name == "Impression" and record["position"] < 1:
        raise InvalidRecord(f"Impression.position must be >= 1, got {record['position']}")
    for key in ("impression_id", "user_id", "item_id"):
        if key in record and not record[key]:
            raise InvalidRecord(f"{schema_name}.{key} is empty")


def _reject_bool(schema_name: str, record: dict[str, Any]) -> None:
    # JSON true/false are Python bools, which are ints to Avro validation.
    for key, value in record.items():
        if isinstance(value, bool):
            raise InvalidRecord(f"{schema_name}.{key} is a boolean, not a number or string")


def validate_record(schema_name: str, record: Any) -> dict[str, Any]:
    """Check `record` against schema `schema_name`; return it with exactly the schema's fields."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"{schema_name} must be a JSON object, got {type(record).__name__}")
    names = field_names(schema_name)
    unknown = set(record) - set(names)
    if unknown:
        raise InvalidRecord(f"{schema_name} has unknown field(s): {', '.join(sorted(unknown))}")
    missing = [n for n in names if n not in record and n != "query" and n != "embedding"]
    if missing:
        raise InvalidRecord(f"{schema_name} is missing field(s): {', '.join(missing)}")
    _reject_bool(schema_name, record)
    try:
        validate(record, parsed_schema(schema_name), raise_errors=True)
    except ValidationError as error:
        raise InvalidRecord(f"{schema_name} does not match its schema: {'; '.join(map(str, error.errors))}") from None
    _check_semantics(schema_name, record)
    return record


def parse_json(schema_name: str, line: str | bytes) -> dict[str, Any]:
    """Decode one JSON Lines record and validate it."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise InvalidRecord(f"not valid JSON: {error}") from None
    return validate_record(schema_name, record)


# Impressions and clicks travel as one stream of event rows (one key-by, one operator input):
# (kind, impression_id, request_id, user_id, item_id, query, position, event_time, payload), where
# clicks leave request_id, query and position empty. In Kafka mode a third kind, ITEM_PARAMS, carries
# another replica's item-side snapshot record (payload) to one learner subtask, routed by user_id.
IMPRESSION, CLICK, ITEM_PARAMS = 0, 1, 2
EVENT_FIELDS = ("kind", "impression_id", "request_id", "user_id", "item_id", "query", "position", "event_time",
                "payload")


def impression_event(record: dict[str, Any]) -> tuple:
    """An Impression record as an event row."""
    return (
        IMPRESSION,
        record["impression_id"],
        record["request_id"],
        record["user_id"],
        record["item_id"],
        record.get("query"),
        record["position"],
        record["event_time"],
        None,
    )


def click_event(record: dict[str, Any]) -> tuple:
    """A Click record as an event row."""
    return (CLICK, record["impression_id"], None, record["user_id"], record["item_id"], None, None,
            record["event_time"], None)


def impression_of(event: tuple) -> tuple:
    """The impression tuple of `udfs.join_logic` (schema field order) from an event row."""
    return tuple(event[1:8])


def click_of(event: tuple) -> tuple:
    """The click tuple of `udfs.join_logic` (schema field order) from an event row."""
    return (event[1], event[3], event[4], event[7])


_WIRE_DECODERS: dict[str, Any] = {}


def parse_wire(schema_name: str, message: bytes) -> dict[str, Any]:
    """Decode one Avro single-object message (job.wire) and apply the checks Avro cannot express."""
    from job.wire import WireDecoder, WireError

    decoder = _WIRE_DECODERS.get(schema_name)
    if decoder is None:
        decoder = _WIRE_DECODERS[schema_name] = WireDecoder(schema_name)
    try:
        record = decoder.decode(message)
    except WireError as error:
        raise InvalidRecord(f"undecodable {schema_name} message: {error}") from None
    _check_semantics(schema_name, record)
    return record


def item_side_snapshots(message: bytes) -> list[dict[str, Any]]:
    """The item-side parameters in one snapshot-topic message (none for user vectors or bad bytes).

    This is the return path of the Kafka loop; an undecodable message here is not an input record
    and is skipped (the snapshot topic is written by the job itself).
    """
    from job.wire import WireError

    decoder = _WIRE_DECODERS.get("ModelSnapshot")
    if decoder is None:
        from job.wire import WireDecoder

        decoder = _WIRE_DECODERS["ModelSnapshot"] = WireDecoder("ModelSnapshot")
    try:
        record = decoder.decode(message)
    except WireError:
        return []
    return [] if record["entity_type"] == "USER" else [record]
