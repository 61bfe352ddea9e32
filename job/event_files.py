"""Event files: JSON Lines, or Avro object container files recognised by their magic bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson

AVRO_MAGIC = b"Obj\x01"


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


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of every file under `path` as dicts (for small inputs: catalogs, tests)."""
    for file in files_of(path):
        if is_avro_container(file):
            with open(file, "rb") as handle:
                yield from fastavro.reader(handle)
        else:
            with open(file, "rb") as handle:
                for line in handle:
                    if line.strip():
                        yield orjson.loads(line)


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
