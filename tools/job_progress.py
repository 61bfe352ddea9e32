"""A live job's progress from Flink's REST API: how many records one of its sources has emitted,
sampled while the job runs, and the rate over the middle of the run (`bench --kafka --scale-out`).

A live job's batching windows are cut by processing time, about every 100 ms: a window that cannot
hand its batch on blocks, and so does the source behind it, so the source runs ahead of the learner
by a bounded amount (a window and the network buffers) and its count's slope is the job's rate,
untouched by the start-up. Not so in a bounded job: its windows are cut by ingestion time and close
2 s behind it (job.batching.LATE_INGEST_MS), so the source reads ~2 s at its own speed ahead (a
400k-impression topic within seconds of a 15 s job), and the job's examples are committed only at
its end (examples committed to the topic came in steps of ~10 s under a backlog, as checkpoint
barriers queue behind the blocks in flight). The bounded benches keep the difference of a big and a
small job's running times.

Flink's REST API serves metrics it fetched from the TaskManagers at most every
`metrics.fetcher.update-interval` (flink-conf/config.yaml sets 1 s): only the samples where the count
moved are kept, each at the moment it was first seen.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.processes import JIT_COMPILER_THREADS, cpu_seconds, thread_cpu_seconds

# The share of the input read before the steady-state window opens: before it, the JVMs' JIT compiler
# is busy with the job's code (Flink's SQL operators are generated and compiled for each job, so a
# second job on the same JVMs pays again): over 40-90% of a 1M-impression job it took 7 µs of CPU per
# impression beside the job's ~24, over 40-90% of a 3M job 2.6 µs (3.2-3.9 in each of parallelism
# 2's TaskManagers), over 70-93% of a 6M job 0.35 (0.6 and 1.1). A job running for days pays it once.
STEADY_FROM = 0.4
STEADY_UNTIL = 0.9  # ... and when it closes
MIN_POINTS = 4  # distinct counts inside the window: fewer would make the slope a guess
# The scale-out bench's default backlog: in a smaller one the JIT compiler's share of the window (above)
# falls on parallelism 2 twice, once per JVM, and makes it look worse than a long-running job.
SCALE_OUT_IMPRESSIONS = 6_000_000


class MeasurementError(RuntimeError):
    """A run too short (or a source not found) to measure a steady-state rate from."""


@dataclass(frozen=True)
class Sample:
    at_s: float  # time.monotonic() when the count was first seen
    records: int  # records the source emitted so far, all its subtasks
    cpu_s: tuple[float, ...]  # CPU seconds of each watched process so far
    jit_cpu_s: tuple[float, ...] = ()  # ... of which its JIT compiler threads took (JIT_COMPILER_THREADS)


@dataclass(frozen=True)
class SteadyRate:
    records_per_s: float
    cpu_us_per_record: tuple[float, ...]  # per watched process, fitted over the same window
    jit_us_per_record: tuple[float, ...]  # ... of which its JIT compiler threads took
    span_s: float  # how long the window lasted
    points: int  # distinct counts the slope was fitted to


class SourceProgress:
    """Samples the record count of the source named `source` (`job.kafka_job.source_name`) in a job,
    through `get` (a REST GET of a path, e.g. `StandaloneCluster.rest`), and the CPU time of `pids`."""

    def __init__(self, get: Callable[[str], Any], source: str, pids: Sequence[int] = ()) -> None:
        self.get = get
        self.source = source
        self.pids = list(pids)
        self.samples: list[Sample] = []
        self._metric: tuple[str, str] | None = None  # (vertex id, metric id) once found

    def _find_metric(self, job_id: str) -> tuple[str, str] | None:
        vertex = next((v for v in self.get(f"/jobs/{job_id}")["vertices"] if self.source in v["name"]), None)
        if vertex is None:
            raise MeasurementError(f"no vertex of job {job_id} reads from source {self.source!r}")
        available = [m["id"] for m in self.get(f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics")]
        # The source operator's own output count (its chained successors count theirs): `Source__<name>...`
        # (Flink replaces spaces and dots, and may shorten long names).
        wanted = [m for m in available if m.startswith("Source__") and m.endswith(".numRecordsOut")]
        return (vertex["id"], wanted[0]) if wanted else None  # metrics appear a moment after the task runs

    def sample(self, job_id: str) -> None:
        """Read the count once (call it every few hundred ms while the job runs); keeps it if it moved."""
        if self._metric is None:
            self._metric = self._find_metric(job_id)
            if self._metric is None:
                return
        vertex_id, metric = self._metric
        answer = self.get(f"/jobs/{job_id}/vertices/{vertex_id}/subtasks/metrics?get={metric}&agg=sum")
        if not answer:
            return
        records = int(float(answer[0]["sum"]))
        if not self.samples or records != self.samples[-1].records:
            self.samples.append(Sample(time.monotonic(), records, tuple(cpu_seconds([pid]) for pid in self.pids),
                                       tuple(thread_cpu_seconds(pid, JIT_COMPILER_THREADS) for pid in self.pids)))

    def write_csv(self, path: Path) -> None:
        """The samples as CSV (seconds from the first, records, CPU seconds of each process): to see
        how the count moved, e.g. when a rate looks off."""
        path.parent.mkdir(parents=True, exist_ok=True)
        start = self.samples[0].at_s if self.samples else 0.0
        with open(path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["seconds", "records", *(f"cpu_s_{pid}" for pid in self.pids),
                             *(f"jit_cpu_s_{pid}" for pid in self.pids)])
            for s in self.samples:
                writer.writerow([f"{s.at_s - start:.3f}", s.records, *(f"{c:.3f}" for c in s.cpu_s + s.jit_cpu_s)])

    def steady(self, total: int, low: float = STEADY_FROM, high: float = STEADY_UNTIL) -> SteadyRate:
        """The rate over the samples between `low` and `high` of `total` records (a least-squares
        slope), and each process's CPU per record over the same samples."""
        return steady_rate(self.samples, total, low, high)


def steady_rate(samples: Sequence[Sample], total: int, low: float = STEADY_FROM,
                high: float = STEADY_UNTIL) -> SteadyRate:
    """See `SourceProgress.steady`."""
    window = [s for s in samples if low * total <= s.records <= high * total]
    if len(window) < MIN_POINTS:
        raise MeasurementError(
            f"only {len(window)} distinct record counts between {low:.0%} and {high:.0%} of {total:,} records "
            f"(need {MIN_POINTS}): the job read them too fast to measure a steady rate; give it a larger backlog "
            f"(`--impressions`)")
    slope = _slope([s.at_s for s in window], [s.records for s in window])
    first, last = window[0], window[-1]
    if not (slope > 0 and math.isfinite(slope) and last.records > first.records):
        raise MeasurementError(f"the record count did not grow over the window ({len(window)} samples)")
    # CPU time fitted like the count (a count is a little older than the moment it is first seen, the
    # CPU time read with it is not: two endpoints alone would carry that lag, a slope averages it out).
    times = [s.at_s for s in window]
    cpu_us = tuple(_slope(times, [s.cpu_s[k] for s in window]) / slope * 1e6 for k in range(len(first.cpu_s)))
    jit_us = tuple(_slope(times, [s.jit_cpu_s[k] for s in window]) / slope * 1e6 for k in range(len(first.jit_cpu_s)))
    return SteadyRate(slope, cpu_us, jit_us, last.at_s - first.at_s, len(window))


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ys over xs (nan when the xs do not vary)."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread > 0 else math.nan
