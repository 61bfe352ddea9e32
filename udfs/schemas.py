"""The Avro schemas in `schemas/`: the one source of truth for record field names and types."""

from __future__ import annotations

import functools
import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro

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
def schema_files() -> Traversable:
    """The `.avsc` files: package data of an install (the package `freshrank_schemas` is the repository's
    `schemas/` folder, pyproject.toml). A Flink worker's embedded interpreter sees a checkout through
    PYTHONPATH without running the editable install's import hook: there, the folder itself."""
    try:
        return resources.files("freshrank_schemas")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def raw_schema(name: str) -> dict[str, Any]:
    """The schema `name` exactly as written in `schemas/<name>.avsc`."""
    return json.loads((schema_files() / f"{name}.avsc").read_text(encoding="utf-8"))


@functools.cache
def parsed_schema(name: str) -> dict[str, Any]:
    """The schema `name` parsed by fastavro (for readers, writers and validation)."""
    return fastavro.parse_schema(raw_schema(name))


@functools.cache
def previous_schemas(name: str) -> tuple[dict[str, Any], ...]:
    """Earlier versions of schema `name` (`schemas/previous/<name>.<n>.avsc`), oldest first: messages
    they wrote stay readable after the schema evolves (udfs.wire resolves them to the current one)."""
    files = [f for f in (schema_files() / "previous").iterdir()
             if f.name.startswith(f"{name}.") and f.name.endswith(".avsc")]
    files.sort(key=lambda f: int(f.name.split(".")[1]))
    return tuple(json.loads(f.read_text(encoding="utf-8")) for f in files)


def field_names(name: str) -> tuple[str, ...]:
    """Field names of record `name`, in schema order."""
    return tuple(field["name"] for field in raw_schema(name)["fields"])
