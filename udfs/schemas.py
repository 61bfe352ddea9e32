"""The Avro schemas in `schemas/`: the one source of truth for record field names and types."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

RECORD_NAMES = (
    "Impression",
    "Click",
    "Item",
    "LabeledExample",
    "ModelSnapshot",
    "Metric",
    "DeadLetter",
)


@functools.cache
def raw_schema(name: str) -> dict[str, Any]:
    """The schema `name` exactly as written in `schemas/<name>.avsc`."""
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())


@functools.cache
def parsed_schema(name: str) -> dict[str, Any]:
    """The schema `name` parsed by fastavro (for readers, writers and validation)."""
    return fastavro.parse_schema(raw_schema(name))


@functools.cache
def previous_schemas(name: str) -> tuple[dict[str, Any], ...]:
    """Earlier versions of schema `name` (`schemas/previous/<name>.<n>.avsc`), oldest first: messages
    they wrote stay readable after the schema evolves (udfs.wire resolves them to the current one)."""
    files = sorted((SCHEMA_DIR / "previous").glob(f"{name}.*.avsc"), key=lambda f: int(f.name.split(".")[1]))
    return tuple(json.loads(f.read_text()) for f in files)


def field_names(name: str) -> tuple[str, ...]:
    """Field names of record `name`, in schema order."""
    return tuple(field["name"] for field in raw_schema(name)["fields"])
