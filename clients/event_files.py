"""Event files: JSON Lines, or Avro object container files recognised by their magic bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson

from udfs.records import InvalidRecord, json_value

AVRO_MAGIC = b"Obj\x01"


class MalformedRecord(ValueError):
    """A line of an event file that is no record (or a corrupt Avro block); the message names file and line."""

    def __init__(self, where: str, reason: str, payload: bytes) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.payload = where, reason, payload


OnMalformed = Callable[[MalformedRecord], None]


def is_avro_container(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == AVRO_MAGIC


def files_of(path: Path) -> list[Path]:
    """A file, or the visible files of a folder (sorted), as a list."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    if not path.exists():
        raise FileNotFoundError(f"no such event file or folder: {path}")
    return [path]


def _avro_records(file: Path) -> Iterator[tuple[str, Any]]:
    number = 0
    try:
        with open(file, "rb") as handle:
            for number, record in enumerate(fastavro.reader(handle), 1):
                yield f"{file} record {number}", record
    except Exception as error:  # fastavro raises EOFError, ValueError, ... on truncated or corrupt blocks
        # the container's block structure is lost after a corrupt block: the rest of the file with it
        yield "", MalformedRecord(f"{file} after record {number}",
                                  f"corrupt Avro container: {type(error).__name__}: {error}", b"")


def _json_lines_records(file: Path) -> Iterator[tuple[str, Any]]:
    with open(file, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                raw = line.rstrip(b"\r\n")
                where = f"{file} line {number}"
                try:
                    yield where, json_value(raw)
                except InvalidRecord as error:
                    yield where, MalformedRecord(where, str(error), raw)


def numbered_records(path: Path, on_malformed: OnMalformed | None = None) -> Iterator[tuple[str, Any]]:
    """("<file> line <n>" or "<file> record <n>", record) for every record of every file under `path`.

    A line that is not JSON (or a corrupt Avro container, whose remaining records are lost) raises
    `MalformedRecord`, or with `on_malformed` is handed to it and skipped, so one bad line does not
    stop the rest of the file.
    """
    for file in files_of(path):
        for where, record in _avro_records(file) if is_avro_container(file) else _json_lines_records(file):
            if not isinstance(record, MalformedRecord):
                yield where, record
            elif on_malformed is None:
                raise record
            else:
                on_malformed(record)


def read_records(path: Path, on_malformed: OnMalformed | None = None) -> Iterator[dict[str, Any]]:
    """Every record of every file under `path` as dicts (for small inputs: catalogs, tests); malformed
    lines as in `numbered_records`."""
    for _, record in numbered_records(path, on_malformed):
        yield record


def read_lines(path: Path) -> Iterator[bytes]:
    """Raw records of JSON Lines files under `path` (blank lines skipped)."""
    for file in files_of(path):
        with open(file, "rb") as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip(b"\r\n")


def stage_as_json_lines(path: Path, staging_dir: Path) -> Path:
    """`path` itself if it holds only JSON Lines; else a folder where Avro files became JSON Lines.

    Flink's text source reads JSON Lines natively; Avro containers are converted once on the
    client so the job has one input format (their records are still validated in the job).
    """
    files = files_of(path)
    if not any(is_avro_container(f) for f in files):
        return path
    staging_dir.mkdir(parents=True, exist_ok=True)
    for index, file in enumerate(files):
        target = staging_dir / f"{index:05d}-{file.stem}.jsonl"
        with open(target, "wb") as out:
            if is_avro_container(file):
                with open(file, "rb") as handle:
                    for record in fastavro.reader(handle):
                        out.write(orjson.dumps(record) + b"\n")
            else:
                out.write(file.read_bytes())
    return staging_dir
