"""File mode: run the job over event files and write every output as JSON Lines part files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from job.catalog import catalog_from_file
from job.config import JobConfig
from job.event_files import files_of, stage_as_json_lines
from job.files import json_lines_sink, text_lines
from job.flink_env import make_environment
from job.pipeline import OUTPUTS, PipelineInputs, build_pipeline
from udfs.encoding import JsonLinesEncoder
from udfs.model_store import ModelStore


@dataclass
class ReplayResult:
    out_dir: Path
    wall_s: float


def load_catalog(items: Path, dead_letter_file: Path) -> dict[str, list[float]]:
    """Item embeddings from a catalog file; invalid entries are written to the dead letter."""
    embeddings, rejects = catalog_from_file(items)
    if rejects:
        encoder = JsonLinesEncoder()
        dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
        dead_letter_file.write_text("".join(encoder.encode("DeadLetter", r) + "\n" for r in rejects))
    return embeddings


def read_output(out_dir: Path, name: str) -> list[dict[str, Any]]:
    """All committed records of one output folder (in-progress part files are hidden)."""
    folder = out_dir / name
    if not folder.exists():
        return []
    return [orjson.loads(line) for file in files_of(folder) for line in file.read_bytes().splitlines() if line]


def load_snapshots(path: Path) -> ModelStore:
    """The newest model in a snapshot folder (or an output folder holding `snapshots/`)."""
    folder = path / "snapshots" if (path / "snapshots").is_dir() else path
    store = ModelStore().apply_all(read_output(folder.parent, folder.name))
    if not len(store):
        raise FileNotFoundError(f"no snapshot records under {folder}")
    return store


def run_replay(
    impressions: Path,
    clicks: Path,
    out_dir: Path,
    config: JobConfig,
    items: Path | None = None,
    from_snapshot: Path | None = None,
) -> ReplayResult:
    """Run the job to completion over the event files (blocking)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        if (out_dir / name).exists() and any((out_dir / name).iterdir()):
            raise FileExistsError(f"{out_dir / name} is not empty; choose a new --out folder")
    embeddings = load_catalog(items, out_dir / "dead-letter" / "catalog-rejects.jsonl") if items else None
    initial_model = load_snapshots(from_snapshot) if from_snapshot else None
    staging = out_dir / ".staging"
    impressions = stage_as_json_lines(impressions, staging / "impressions")
    clicks = stage_as_json_lines(clicks, staging / "clicks")

    # A replay is a batch of work: a failure should surface, not restart forever.
    env = make_environment({"parallelism.default": str(config.parallelism), "restart-strategy.type": "none"})
    inputs = PipelineInputs(text_lines(env, impressions, "impressions"), text_lines(env, clicks, "clicks"))
    sinks = {name: (lambda stream, n, folder=out_dir / name: json_lines_sink(stream, folder, n)) for name in OUTPUTS}
    build_pipeline(inputs, sinks, config, JsonLinesEncoder(), embeddings, initial_model)
    started = time.time()
    env.execute(f"freshrank-replay-{out_dir.name}")
    return ReplayResult(out_dir, time.time() - started)
