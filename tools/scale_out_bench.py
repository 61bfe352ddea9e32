"""`freshrank bench --kafka --scale-out`: what a second TaskManager adds when each has a core of its own.

In thread mode a TaskManager JVM runs all of its Python in one interpreter, so a job's Python work
spreads over cores only through TaskManagers. This measures, on the same pre-produced topics and in
alternating rounds, parallelism 1 on one TaskManager pinned to one CPU against parallelism 2 on two
TaskManagers pinned to one CPU each (`StandaloneCluster(cpus_per_taskmanager=...)`): on a 2-core
machine that is the comparison a machine with a core per TaskManager would make.

The rate is the Kafka bench's steady state: (N_big - N_small) / (T_big - T_small), each T from the
moment all of the bounded job's tasks ran until it finished, so what every job pays once cancels and
the `flink run` client's start-up (10-15 s here, and the most variable part) is left out; both jobs
run after a big one that warmed the cluster's JVMs (their JIT compiler, ~6 s of CPU per
TaskManager in the first 1M impressions, would otherwise take from the one core of each). The
broker, the JobManager and the `flink run` client are not pinned: in the parallelism-1 runs they
have a free core, in the parallelism-2 runs they take from the TaskManagers' cores, so where the
cores are few the ratio errs low.
"""

from __future__ import annotations

import math
import os
import statistics
import uuid
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from clients.topics import TopicNames, create_all
from infra.cluster import StandaloneCluster
from infra.processes import cpu_seconds
from job.config import JobConfig
from job.options import DEMO_CHECKPOINT_INTERVAL_S
from tools.kafka_demo import (
    Broker,
    bounded_on,
    generated_now,
    job_properties_file,
    produce_in_order,
    run_args,
    unique_suffix,
)


def run_scale_out_bench(
    work_dir: Path,
    n_impressions: int,
    job: JobConfig,
    *,
    rounds: int = 3,
    cpus_per_taskmanager: int = 1,
    seed: int = 7,
    heavy_users: int = 3,
    bootstrap: str | None = None,
    checkpoint_interval_s: float = DEMO_CHECKPOINT_INTERVAL_S,
    kafka_properties: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Steady-state impressions/s at parallelism 1 and 2 (one pinned TaskManager per subtask) in each
    round, and the median of the rounds' ratios; prints them as it goes."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    usable = len(os.sched_getaffinity(0))
    if 2 * cpus_per_taskmanager > usable:  # refused now, not after the parallelism-1 runs
        raise ValueError(f"two TaskManagers with {cpus_per_taskmanager} CPU(s) each need {2 * cpus_per_taskmanager} "
                         f"CPUs; this process may use {usable}")
    with Broker(bootstrap, work_dir / "kafka", print) as servers:
        # Two partitions: a source subtask each at parallelism 2.
        sent = {}
        # The small job a fifth of the big one: a job of a few thousand impressions can finish within
        # the poll that would see all of its tasks running, and its running time is then lost.
        for size, count in (("big", n_impressions), ("small", n_impressions // 5)):
            suffix = unique_suffix(f"scale-out-{size}")
            create_all(servers, TopicNames().suffixed(suffix), partitions=2, kafka_properties=kafka_properties)
            produced = produce_in_order(servers, TopicNames().suffixed(suffix),
                                        generated_now(count, seed, heavy_users), kafka_properties)
            sent[size] = (suffix, produced["impressions"])
        extra = sent["big"][1] - sent["small"][1]
        print(f"produced {sent['big'][1]:,} and {sent['small'][1]:,} impressions ({heavy_users} heavy users); "
              f"{rounds} round(s) of parallelism 1 and 2, each TaskManager on {cpus_per_taskmanager} CPU(s) of its "
              f"own, checkpoints every {checkpoint_interval_s:g} s")
        work_dir.mkdir(parents=True, exist_ok=True)
        properties_file = job_properties_file(kafka_properties, work_dir)
        rates: dict[int, list[float]] = {1: [], 2: []}
        cpu_us: dict[int, list[float]] = {1: [], 2: []}
        busiest: dict[int, list[float]] = {1: [], 2: []}
        try:
            for number in range(rounds):
                # Alternating which goes first cancels a drift of the machine's speed over the run.
                for parallelism in ((1, 2) if number % 2 == 0 else (2, 1)):
                    walls, cpus = {}, {}
                    with StandaloneCluster(work_dir / f"cluster-p{parallelism}-{number + 1}", slots=1,
                                           taskmanagers=parallelism,
                                           cpus_per_taskmanager=cpus_per_taskmanager) as cluster:
                        # The JVMs' JIT compiles the job's code for the first million impressions or so
                        # (~6 s of C2 compiler CPU per TaskManager in a 1M job, on the TaskManager's own
                        # CPU), which a job running for days pays once: a first big job warms the JVMs,
                        # and the two measured jobs run on warm JVMs alike.
                        for size, topics_of in (("warm-up", "big"), ("big", "big"), ("small", "small")):
                            cluster.ensure_taskmanagers()  # pinned like the first ones
                            name = f"freshrank-scale-out-{uuid.uuid4().hex[:8]}"
                            args = run_args(servers, sent[topics_of][0], replace(job, parallelism=parallelism),
                                            group_id=name, job_name=name, checkpoint_interval_s=checkpoint_interval_s,
                                            bounded=True, kafka_properties_file=properties_file)
                            pids = sorted(cluster.taskmanager_pids())
                            before = [cpu_seconds([pid]) for pid in pids]
                            wall_s, startup_s = bounded_on(cluster, args, parallelism)
                            walls[size] = wall_s - startup_s
                            if sorted(cluster.taskmanager_pids()) != pids:  # its CPU time went with it
                                raise RuntimeError(f"a TaskManager died during the {size} job; logs in "
                                                   f"{cluster.log_dir}")
                            cpus[size] = [cpu_seconds([pid]) - start for pid, start in zip(pids, before, strict=True)]
                    seconds = walls["big"] - walls["small"]
                    rate = extra / seconds if seconds > 0 else math.nan
                    rates[parallelism].append(rate)
                    # Each TaskManager's CPU for the extra impressions: with a core each, the busiest one
                    # bounds the rate (1e6 / its µs per impression).
                    per_tm = [(big - small) / extra * 1e6
                              for big, small in zip(cpus["big"], cpus["small"], strict=True)]
                    cpu_us[parallelism].append(sum(per_tm))
                    busiest[parallelism].append(max(per_tm))
                    print(f"round {number + 1}, parallelism {parallelism} on {parallelism} TaskManager(s): "
                          f"{rate:,.0f} impressions/s at steady state (jobs running {walls['big']:.1f} s and "
                          f"{walls['small']:.1f} s); TaskManager CPU per impression "
                          f"{' + '.join(f'{us:.1f}' for us in per_tm)} µs")
        finally:
            if properties_file is not None:
                properties_file.unlink(missing_ok=True)
    ratios = [two / one for one, two in zip(rates[1], rates[2], strict=True)]
    figures = {
        "scale_out_rounds": rounds,
        "scale_out_p1_impressions_per_s": statistics.median(rates[1]),
        "scale_out_p2_impressions_per_s": statistics.median(rates[2]),
        "scale_out_ratio": statistics.median(ratios),
        "scale_out_p1_cpu_us_per_impression": statistics.median(cpu_us[1]),
        "scale_out_p2_cpu_us_per_impression": statistics.median(cpu_us[2]),
        "scale_out_p2_busiest_cpu_us_per_impression": statistics.median(busiest[2]),
    }
    # The CPU bound: with a whole core per TaskManager and nothing else on it, each runs at 1e6 / its µs
    # per impression, and the busiest one sets the pace. Wall-clock rates move with the broker and the
    # client, which share the cores here; CPU time per impression moves less.
    figures["scale_out_cpu_bound_ratio"] = (figures["scale_out_p1_cpu_us_per_impression"]
                                            / figures["scale_out_p2_busiest_cpu_us_per_impression"])
    f = figures
    print(f"parallelism 2 / parallelism 1 at steady state, {cpus_per_taskmanager} CPU(s) per TaskManager: "
          f"{f['scale_out_ratio']:.2f}x (median of {rounds} round(s): {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"medians {f['scale_out_p1_impressions_per_s']:,.0f} and {f['scale_out_p2_impressions_per_s']:,.0f} "
          f"impressions/s; TaskManager CPU per impression {f['scale_out_p1_cpu_us_per_impression']:.1f} and "
          f"{f['scale_out_p2_cpu_us_per_impression']:.1f} µs (the busiest TaskManager "
          f"{f['scale_out_p2_busiest_cpu_us_per_impression']:.1f} µs of it)")
    print(f"by CPU time, a core per TaskManager and nothing else on it: parallelism 2 at "
          f"{1e6 / f['scale_out_p2_busiest_cpu_us_per_impression']:,.0f} impressions/s against "
          f"{1e6 / f['scale_out_p1_cpu_us_per_impression']:,.0f}, {f['scale_out_cpu_bound_ratio']:.2f}x")
    return figures
