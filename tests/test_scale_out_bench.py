"""`freshrank bench --kafka --scale-out` runs live jobs over a backlog on pinned TaskManagers and reports
consistent figures (what they come to is a benchmark's business, printed by the command, not asserted here)."""

from __future__ import annotations

import math
import os
import zlib

import pytest

from job.config import JobConfig
from tools.scale_out_bench import impressions_per_subtask, run_scale_out_bench


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_scale_out_bench_measures_both_parallelisms_on_the_same_topics(kafka_broker, tmp_path, capsys):
    # Big enough that parallelism 2 still has 40-90% of the backlog ahead when its metrics first show
    # (at 600k it had read 431k by then) and reads it over several of their refreshes (1 s).
    figures = run_scale_out_bench(tmp_path, 1_000_000, JobConfig(), rounds=1, bootstrap=kafka_broker)
    one, two = figures["scale_out_p1_impressions_per_s"], figures["scale_out_p2_impressions_per_s"]
    assert math.isfinite(one) and math.isfinite(two)
    assert figures["scale_out_ratio"] == pytest.approx(two / one)
    # Both runs used their TaskManagers' CPU for the measured impressions (a job that read nothing would not).
    assert figures["scale_out_p1_cpu_us_per_impression"] > 0
    assert 0 < figures["scale_out_p2_busiest_cpu_us_per_impression"] < figures["scale_out_p2_cpu_us_per_impression"]
    assert figures["scale_out_cpu_bound_ratio"] == pytest.approx(
        figures["scale_out_p1_cpu_us_per_impression"] / figures["scale_out_p2_busiest_cpu_us_per_impression"])
    # The JVMs' JIT compilers were found, and they took part of it, not all
    assert 0 < figures["scale_out_p1_compiled_cpu_us_per_impression"] < figures["scale_out_p1_cpu_us_per_impression"]
    assert (0 < figures["scale_out_p2_compiled_busiest_cpu_us_per_impression"]
            < figures["scale_out_p2_busiest_cpu_us_per_impression"])
    printed = capsys.readouterr().out
    assert "round 1, parallelism 1 on 1 TaskManager(s)" in printed
    assert "round 1, parallelism 2 on 2 TaskManager(s)" in printed
    assert "parallelism 2 / parallelism 1 at steady state" in printed
    assert "by CPU time" in printed and "once the JIT compiler is done" in printed
    assert "at parallelism 2 the learners get" in printed


def test_the_bench_tells_each_learners_share_of_the_impressions() -> None:
    # Three users of 100 impressions each and one of 300: whose shard gets what is the routing's
    users = [f"u{i}" for i in range(3) for _ in range(100)] + ["heavy"] * 300
    on_first = sum(zlib.crc32(user.encode()) % 2 == 0 for user in users) / len(users)
    assert impressions_per_subtask(users, 2, lane_load=0.0) == pytest.approx([on_first, 1 - on_first])
    assert impressions_per_subtask(users, 1, lane_load=0.15) == [1.0]
    many = [f"user-{i}" for i in range(20_000)]
    assert impressions_per_subtask(many, 2, lane_load=0.15)[0] == pytest.approx(0.425, abs=0.015)


def test_scale_out_needs_rounds() -> None:
    with pytest.raises(ValueError, match="rounds"):
        run_scale_out_bench(None, 1, JobConfig(), rounds=0)  # refused before anything starts


def test_scale_out_refuses_a_machine_without_the_cpus() -> None:
    cpus = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=f"need {2 * cpus} CPUs; this process may use {cpus}"):
        run_scale_out_bench(None, 1, JobConfig(), cpus_per_taskmanager=cpus)
