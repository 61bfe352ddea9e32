"""File mode: run the job over event files and write every output as JSON Lines part files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pyflink.table import StreamTableEnvironment

from clients.event_files import MalformedRecord, files_of, numbered_records, stage_as_json_lines
from job.catalog import Catalog, catalog_from_file
from job.config import JobConfig
from job.files import json_lines_sink, text_lines
from job.flink_env import make_environment
from job.pipeline import OUTPUTS, PipelineInputs, build_pipeline
from udfs.encoding import JsonLinesEncoder
from udfs.model_store import ModelStore, SnapshotError, snapshot_problem
from udfs.parse import DEAD_LETTER_MAX_BYTES


@dataclass
class ReplayResult:
    out_dir: Path
    wall_s: float


def load_catalog(items: Path, dead_letter_file: Path,
                 max_payload_bytes: int = DEAD_LETTER_MAX_BYTES) -> Catalog:
    """The catalog in a file; invalid entries and malformed lines are written to the
    dead letter (read with the job's other dead-letter records: `read_output(out, "dead-letter")`)."""
    catalog, rejects = catalog_from_file(items, max_payload_bytes)
    if rejects:
        encoder = JsonLinesEncoder()
        dead_letter_file.parent.mkdir(parents=True, exist_ok=True)
        dead_letter_file.write_text("".join(encoder.encode("DeadLetter", r) + "\n" for r in rejects))
    return catalog


def read_output(out_dir: Path, name: str) -> list[dict[str, Any]]:
    """All committed records of one output folder (in-progress part files are hidden)."""
    folder = out_dir / name
    if not folder.exists():
        return []
    return [orjson.loads(line) for file in files_of(folder) for line in file.read_bytes().splitlines() if line]


def load_snapshots(path: Path, dim: int | None = None) -> ModelStore:
    """The newest model in a snapshot folder (or an output folder holding `snapshots/`).

    Every record is checked before the job starts (udfs.model_store.snapshot_problem; with `dim`,
    USER and ITEM vectors must have that length): a truncated or garbage file, a missing or null
    field, a non-finite value raise `SnapshotError` naming file and line, instead of failing (or
    hanging) later inside the job.
    """
    folder = path / "snapshots" if (path / "snapshots").is_dir() else path
    store = ModelStore()
    try:
        for where, record in numbered_records(folder):
            problem = snapshot_problem(record, dim)
            if problem is not None:
                raise SnapshotError(f"{where}: {problem}")
            store.apply(record)
    except MalformedRecord as malformed:
        raise SnapshotError(f"{malformed.where}: not a snapshot record: {malformed.reason}") from None
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
    checkpoint_dir: str | None = None,
    prometheus_ports: str | None = None,
    rest_port: int | None = None,
) -> ReplayResult:
    """Run the job to completion over the event files (blocking); `checkpoint_dir` replaces config.yaml's
    checkpoint and savepoint dirs, `prometheus_ports` exposes the metrics, `rest_port` fixes the REST
    endpoint (job.flink_env.make_environment).

    Inputs are checked before anything is written: a missing file or a bad snapshot leaves no output folder.
    """
    for path in (impressions, clicks, items, from_snapshot):
        if path is not None:
            files_of(path)  # FileNotFoundError naming the path
    for name in OUTPUTS:
        if (out_dir / name).exists() and any((out_dir / name).iterdir()):
            raise FileExistsError(f"{out_dir / name} is not empty; choose a new --out folder")
    initial_model = load_snapshots(from_snapshot, config.learner.dim) if from_snapshot else None
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(items, out_dir / "dead-letter" / "catalog-rejects.jsonl",
                           config.dead_letter_max_bytes) if items else None
    staging = out_dir / ".staging"
    impressions = stage_as_json_lines(impressions, staging / "impressions")
    clicks = stage_as_json_lines(clicks, staging / "clicks")

    # A replay is a batch of work: a failure should surface, not restart forever.
    env = make_environment({"parallelism.default": str(config.parallelism), "restart-strategy.type": "none"},
                           checkpoint_dir, prometheus_ports, rest_port)
    inputs = PipelineInputs(text_lines(env, impressions, "impressions"), text_lines(env, clicks, "clicks"),
                            parse_in_batches=True)
    t_env = StreamTableEnvironment.create(env)  # one for the pipeline and its sinks
    sinks = {name: (lambda stream, n, folder=out_dir / name: json_lines_sink(stream, folder, n, t_env))
             for name in OUTPUTS}
    build_pipeline(inputs, sinks, config, JsonLinesEncoder(), catalog, initial_model, t_env)
    started = time.time()
    env.execute(f"freshrank-replay-{out_dir.name}")
    return ReplayResult(out_dir, time.time() - started)
