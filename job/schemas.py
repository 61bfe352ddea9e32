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


def field_names(name: str) -> tuple[str, ...]:
    """Field names of record `name`, in schema order."""
    return tuple(field["name"] for field in raw_schema(name)["fields"])
