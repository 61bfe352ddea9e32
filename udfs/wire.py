"""Records on the wire: Avro single-object encoding, with schema evolution and no registry server.

A message is `C3 01` (the marker), the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form, then the Avro binary body (Avro spec, "Single object encoding").
The fingerprint lets a reader tell which schema wrote a message: a `WireDecoder` knows the current
schema of its record and any older or newer writer schemas it is given, and resolves each message
from its writer schema to the current one (fields added with a default, fields removed, ...).
Anything it cannot decode raises `WireError` whose `reason` suits a dead-letter record.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from io import BytesIO
from typing import Any

import fastavro
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from udfs.schemas import parsed_schema, previous_schemas

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8

SchemaLike = Mapping[str, Any] | str


class WireError(ValueError):
    """Bytes that are not a decodable message (or a record that cannot be encoded); `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fingerprint(schema: SchemaLike) -> bytes:
    """The 8 bytes that identify `schema` on the wire: CRC-64-AVRO of its Parsing Canonical Form.

    fastavro gives the fingerprint as hex of the little-endian bytes, as the spec and Java write it.
    """
    return bytes.fromhex(_fastavro_fingerprint(to_parsing_canonical_form(_parse(schema)), "CRC-64-AVRO"))


def _parse(schema: SchemaLike) -> Any:
    """A parsed fastavro schema from a dict, a parsed schema or JSON text."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as error:
            raise ValueError(f"schema text is not JSON: {error}") from error
    if isinstance(schema, Mapping):
        if schema.get("__fastavro_parsed"):
            return schema
        schema = dict(schema)
    return fastavro.parse_schema(schema)


@functools.cache
def _writer(name: str) -> tuple[dict[str, Any], bytes]:
    """The parsed current schema of record `name` and the 10-byte header of messages it writes."""
    schema = parsed_schema(name)
    return schema, MARKER + fingerprint(schema)


def current_header(name: str) -> bytes:
    """The 10 bytes before the body of every message written with record `name`'s current schema."""
    return _writer(name)[1]


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """`record` (a dict with the fields of schema `name`) as one single-object-encoded message."""
    schema, header = _writer(name)
    # A fresh BytesIO per record measured faster (3.0 vs 3.3 us) than a reused thread-local one.
    buffer = BytesIO()
    buffer.write(header)
    try:
        schemaless_writer(buffer, schema, record)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as error:
        raise WireError(f"cannot encode {name}: {type(error).__name__}: {error}") from error
    return buffer.getvalue()


def encode_many(name: str, records: list[Mapping[str, Any]]) -> list[bytes]:
    """`encode` for each record, in one compiled pass when schema `name` is flat (udfs.avro_batch)."""
    # Imported here: it compiles its kernel on import, which the clients that only decode never need.
    from udfs.avro_batch import NotFlat, flat_encoder

    schema, header = _writer(name)
    encoder = flat_encoder(name, header)
    if encoder is not None:
        try:
            return encoder.encode_many(records)
        except NotFlat:
            pass  # one by one: fastavro encodes what it can and names what it cannot
    return [encode(name, record) for record in records]


def encode_columns(name: str, columns: Mapping[str, Sequence]) -> list[bytes]:
    """`encode_many` of the records these columns hold (field name -> values), without a dict per record
    where schema `name` is flat."""
    from udfs.avro_batch import NotFlat, flat_encoder
    from udfs.records import records_from_columns  # (records decodes through this module)

    encoder = flat_encoder(name, _writer(name)[1])
    with contextlib.suppress(NotFlat):
        if encoder is not None:
            return encoder.encode_columns(columns)
    return encode_many(name, records_from_columns(columns))  # as records: fastavro names what it cannot write


class WireDecoder:
    """Decodes messages of one record type into dicts shaped by its current schema (`reader_name`).

    Messages written with the current schema decode directly; those written with one of its
    `schemas/previous/` versions or of `extra_writer_schemas` (an older or newer version of the
    record, as a dict or JSON text) are resolved to the current schema by Avro's rules. Any other
    fingerprint is a `WireError`.
    """

    def __init__(self, reader_name: str, extra_writer_schemas: Iterable[SchemaLike] = ()) -> None:
        self.reader_name = reader_name
        self._reader = parsed_schema(reader_name)
        # fingerprint -> (writer schema, reader schema or None when the writer is the reader)
        self._writers: dict[bytes, tuple[dict[str, Any], dict[str, Any] | None]] = {
            fingerprint(self._reader): (self._reader, None)
        }
        for schema in (*previous_schemas(reader_name), *extra_writer_schemas):
            writer = _parse(schema)
            self._writers.setdefault(fingerprint(writer), (writer, self._reader))
        self._current_header = MARKER + fingerprint(self._reader)

    def decode_current(self, data: bytes | None) -> dict[str, Any] | None:
        """`decode`'s common case, with fewer checks: a whole message written with the current schema
        as a dict, None for anything else (`decode` then says why, or reads an older schema)."""
        if data is None or data[:HEADER_SIZE] != self._current_header:
            return None
        body = BytesIO(data)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, self._reader, None)
        except Exception:  # noqa: BLE001 - bad bytes of any kind: decode gives the reason
            return None
        return record if body.tell() == len(data) and type(record) is dict else None

    @property
    def fingerprints(self) -> frozenset[bytes]:
        """Fingerprints of every writer schema this decoder can read."""
        return frozenset(self._writers)

    def decode(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """One message as a dict of the current schema's fields; `WireError` if it cannot be."""
        if len(data) < HEADER_SIZE:
            if len(data) >= 2 and data[:2] != MARKER:
                raise WireError(f"bad marker {bytes(data[:2]).hex()} (expected c301)")
            raise WireError(f"truncated header: {len(data)} bytes, a message has at least {HEADER_SIZE}")
        if data[:2] != MARKER:
            raise WireError(f"bad marker {bytes(data[:2]).hex()} (expected c301)")
        key = bytes(data[2:HEADER_SIZE])
        schemas = self._writers.get(key)
        if schemas is None:
            raise WireError(f"unknown fingerprint {key.hex()} for {self.reader_name}")
        writer, reader = schemas
        body = BytesIO(data)  # shares a bytes object's buffer, no copy
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, reader)
        except Exception as error:  # fastavro raises EOFError, ValueError, IndexError, ... on bad bytes
            detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise WireError(f"corrupt or truncated {self.reader_name} body: {detail}") from error
        if body.tell() != len(data):
            raise WireError(
                f"corrupt {self.reader_name} body: {len(data) - body.tell()} bytes left over "
                f"after the record ({len(data)} bytes in all)"
            )
        if not isinstance(record, dict):
            raise WireError(f"corrupt {self.reader_name} body: decoded to {type(record).__name__}")
        return record
