"""Parse and validate input events: JSON text in, compact tuples out, or a reason why not.

Field names and types come from the `.avsc` files; the extra rules (position >= 1, times >= 0)
are the ones Avro cannot express.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from fastavro.validation import ValidationError, validate

from udfs.schemas import field_names, parsed_schema, raw_schema


class InvalidRecord(ValueError):
    """A record that cannot enter the job; its message is the dead-letter reason."""


# Schema name per input stream.
SOURCE_SCHEMAS = {"impressions": "Impression", "clicks": "Click", "items": "Item"}


ID_FIELDS = ("impression_id", "request_id", "user_id", "item_id")
# Characters no id may hold: a byte order mark (U+FEFF: an editor's or exporter's BOM glued to the
# first field), the replacement character (U+FFFD: what a lenient UTF-8 decoder, e.g. Flink's text
# file source, makes of invalid bytes) and lone surrogates (invalid UTF-16 from a JVM string). Any of
# them would make two spellings of one user or item.
_BAD_ID_CHARS = re.compile("[\ufeff\ufffd\ud800-\udfff]")
_BAD_ID_REASONS = {"\ufeff": "a byte order mark (U+FEFF)", "\ufffd": "invalid UTF-8 (replacement character U+FFFD)"}
# Embedding values beyond this are garbage, not content features: their projection overflows the
# float math of the item vectors (NaN everywhere after one learning step).
MAX_EMBEDDING_ABS = 1e6


def _check_id_text(schema_name: str, record: dict[str, Any]) -> None:
    for key in ID_FIELDS:
        value = record.get(key)
        if type(value) is str:
            bad = _BAD_ID_CHARS.search(value)
            if bad is not None:
                what = _BAD_ID_REASONS.get(bad.group(), "invalid UTF-8 (a lone surrogate)")
                raise InvalidRecord(f"{schema_name}.{key} contains {what} at character {bad.start()}")


def _check_embedding(embedding: Any) -> None:
    if not embedding:
        return
    for index, value in enumerate(embedding):
        # `not <=` also catches NaN, which compares false with everything
        if not abs(value) <= MAX_EMBEDDING_ABS:
            raise InvalidRecord(f"Item.embedding[{index}] is {value!r}: values must be finite with "
                                f"|x| <= {MAX_EMBEDDING_ABS:g}")


def _check_semantics(schema_name: str, record: dict[str, Any]) -> None:
    if record.get("event_time", 0) < 0:
        raise InvalidRecord(f"{schema_name}.event_time is negative: {record['event_time']}")
    if schema_name == "Impression" and record["position"] < 1:
        raise InvalidRecord(f"Impression.position must be >= 1, got {record['position']}")
    for key in ("impression_id", "request_id", "user_id", "item_id"):
        if key in record and not record[key]:
            raise InvalidRecord(f"{schema_name}.{key} is empty")
    _check_id_text(schema_name, record)
    if schema_name == "Item":
        _check_embedding(record.get("embedding"))


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


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _type_source(avro_type: Any, var: str, helpers: dict[str, Any]) -> str | None:
    """A Python expression that is true exactly when `var` holds a value of `avro_type` (strict: no
    bools for numbers); None for a type it does not handle."""
    if avro_type == "string":
        return f"type({var}) is str"
    if avro_type in ("int", "long"):
        low, high = _INT32 if avro_type == "int" else _INT64
        return f"(type({var}) is int and {low} <= {var} <= {high})"
    if avro_type in ("float", "double"):
        return f"(type({var}) is float or type({var}) is int)"
    if isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null":
        inner = _type_source(avro_type[1], var, helpers)
        return None if inner is None else f"({var} is None or {inner})"
    if isinstance(avro_type, dict) and avro_type.get("type") == "array":
        item = _type_source(avro_type["items"], "x", helpers)
        if item is None:
            return None
        name = f"_item{len(helpers)}"
        helpers[name] = eval(f"lambda x: {item}")  # noqa: S307 - our own expression, from the schema
        return f"(type({var}) is list and all(map({name}, {var})))"
    return None


def _embedding_ok(embedding: Any) -> bool:
    try:
        _check_embedding(embedding)
    except InvalidRecord:
        return False
    return True


@functools.cache
def fast_validator(schema: str) -> Callable[[dict[str, Any]], bool] | None:
    """A check that passes only records `validate_record` would accept (several times faster); None if
    unsupported. Records that fail it go through `validate_record`, which gives the reason (or accepts a
    looser form).

    It is one function generated from the schema: the field checks of Avro and the rules of
    `_check_semantics`, inline (a call per field and rule cost more than the checks themselves).
    """
    fields = raw_schema(schema)["fields"]
    helpers: dict[str, Any] = {"_bad_id": _BAD_ID_CHARS.search, "_embedding_ok": _embedding_ok,
                               "_required": frozenset(f["name"] for f in fields if "default" not in f),
                               "_names": frozenset(f["name"] for f in fields)}
    lines = ["def valid(record):", "    if not (_required <= record.keys() <= _names):", "        return False"]
    for index, field in enumerate(fields):
        name, var = field["name"], f"v{index}"
        check = _type_source(field["type"], var, helpers)
        if check is None:
            return None
        # The rules Avro cannot express: the same as _check_semantics.
        if name in ID_FIELDS:
            if field["type"] != "string":
                return None
            check += f" and {var} != '' and _bad_id({var}) is None"
        elif name == "event_time":
            check = f"{check} and ({var} is None or {var} >= 0)"
        elif name == "position" and schema == "Impression":
            check = f"{check} and ({var} is None or {var} >= 1)"
        elif name == "embedding" and schema == "Item":
            check = f"{check} and _embedding_ok({var})"
        lines += [f"    {var} = record.get({name!r})", f"    if not ({check}):", "        return False"]
    lines.append("    return True")
    exec("\n".join(lines), helpers)  # noqa: S102 - generated above from the schema file
    return helpers["valid"]


TOMBSTONE_REASON = "tombstone: the message has no value (null)"
_BOM = "\ufeff"


def _undecodable_text(line: str | bytes) -> str | None:
    """Why `line` is not text JSON can be read from (a BOM, invalid UTF-8), or None."""
    if isinstance(line, str):
        return "starts with a UTF-8 byte order mark (BOM)" if line.startswith(_BOM) else None
    if line.startswith(_BOM.encode()):
        return "starts with a UTF-8 byte order mark (BOM)"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8: {error}"
    return None


def json_value(line: str | bytes | None) -> Any:
    """One JSON Lines record as a Python value; `InvalidRecord` with a clear reason if it is not one."""
    if line is None:
        raise InvalidRecord(TOMBSTONE_REASON)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        # only on failure: orjson refuses BOMs and invalid UTF-8 itself, but says so less plainly
        raise InvalidRecord(_undecodable_text(line) or f"not valid JSON: {error}") from None


def parse_json(schema_name: str, line: str | bytes | None) -> dict[str, Any]:
    """Decode one JSON Lines record and validate it."""
    record = json_value(line)
    fast = fast_validator(schema_name)
    if fast is not None and type(record) is dict and fast(record):
        return record
    return validate_record(schema_name, record)


def _json_or_none(line: str | bytes | None) -> Any:
    try:
        return orjson.loads(line)
    except (orjson.JSONDecodeError, TypeError):
        return None


def quick_decoder(decode: Callable[[str, Any], dict[str, Any]], schema_name: str) -> Callable[[Any], Any] | None:
    """For a parse that takes records in batches: the decoding part of `decode` (parse_json or
    parse_wire) for the common form of a record, without its checks and reasons; it returns None
    where it cannot decode. What it returns must still pass `fast_validator`; anything else goes
    through `decode`, which accepts or rejects it with the reason. None for other decoders."""
    if decode is parse_json:
        return _json_or_none
    if decode is parse_wire:
        return _wire_decoder(schema_name).decode_current
    return None


# Impressions and clicks travel as one stream of events, each a JSON array whose first element is its
# kind: impressions [IMPRESSION, impression_id, request_id, user_id, item_id, query, position, event_time],
# clicks [CLICK, impression_id, user_id, item_id, event_time] (after the kind: the join's tuples, see
# udfs.join_logic). JSON because the JVM batches them as strings (one Python call per batch, not per
# event). In Kafka mode a third kind, [ITEM_PARAMS, record], carries another replica's item-side
# snapshot record to a learner subtask (udfs.item_loop), [TICK] only carries the join watermark (job.batching.ticks),
# and [CATALOG_ITEM, item_id, title, embedding or null] an item published on the items topic while
# the job runs (to every learner subtask).
IMPRESSION, CLICK, ITEM_PARAMS, TICK, CATALOG_ITEM = 0, 1, 2, 3, 4
NO_WATERMARK = -(2**63) + 1  # a row's join watermark before the first one (Flink's initial watermark, plus one)


def impression_event(record: dict[str, Any]) -> list:
    """An Impression record as an event."""
    return [IMPRESSION, record["impression_id"], record["request_id"], record["user_id"], record["item_id"],
            record.get("query"), record["position"], record["event_time"]]


def click_event(record: dict[str, Any]) -> list:
    """A Click record as an event."""
    return [CLICK, record["impression_id"], record["user_id"], record["item_id"], record["event_time"]]


def catalog_item_event(record: dict[str, Any]) -> list:
    """An Item record as a catalog event."""
    return [CATALOG_ITEM, record["item_id"], record.get("title") or "", record.get("embedding")]


def impression_of(event: list) -> tuple:
    """The impression tuple of `udfs.join_logic` from an impression event."""
    return tuple(event[1:])


def click_of(event: list) -> tuple:
    """The click tuple of `udfs.join_logic` from a click event."""
    return tuple(event[1:])


_WIRE_DECODERS: dict[str, Any] = {}


def _wire_decoder(schema_name: str) -> Any:
    decoder = _WIRE_DECODERS.get(schema_name)
    if decoder is None:
        from udfs.wire import WireDecoder

        decoder = _WIRE_DECODERS[schema_name] = WireDecoder(schema_name)
    return decoder


def parse_wire(schema_name: str, message: bytes | None) -> dict[str, Any]:
    """Decode one Avro single-object message (udfs.wire) and apply the checks Avro cannot express."""
    from udfs.wire import WireError

    if message is None:
        raise InvalidRecord(TOMBSTONE_REASON)
    decoder = _wire_decoder(schema_name)
    try:
        record = decoder.decode(message)
    except WireError as error:
        raise InvalidRecord(f"undecodable {schema_name} message: {error}") from None
    _check_semantics(schema_name, record)
    return record


def column_length(columns: Mapping[str, Sequence]) -> int:
    """How many records columns (field name -> values, of one length) hold; none without columns."""
    return len(next(iter(columns.values()))) if columns else 0


def records_from_columns(columns: Mapping[str, Sequence]) -> list[dict[str, Any]]:
    """Records (dicts) of columns of equal length (field name -> values; numpy arrays as Python values)."""
    if not columns:
        return []
    values = [column.tolist() if hasattr(column, "tolist") else column for column in columns.values()]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
