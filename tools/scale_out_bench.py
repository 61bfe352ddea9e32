"""`freshrank bench --kafka --scale-out`: what a second TaskManager adds when each has a core of its own.

In thread mode a TaskManager JVM runs all of its Python in one interpreter, so a job's Python work
spreads over cores only through TaskManagers. This measures, on the same pre-produced topics and in
alternating rounds, parallelism 1 on one TaskManager pinned to one CPU against parallelism 2 on two
TaskManagers pinned to one CPU each (`StandaloneCluster(cpus_per_taskmanager=...)`): on a 2-core
machine that is the comparison a machine with a core per TaskManager would make.

Each measured job is what a deployment runs: a live (unbounded) job, here catching up on a backlog
in the topics. Its rate is the impressions source's count over the middle of its run
(tools.job_progress: the start-up of the `flink run` client, 10-15 s here and the most variable part,
is not in it, and the JVMs' JIT compiler, which takes from the one core of each TaskManager, is
mostly done by then in a job of the default 6M impressions); then the job is cancelled. The
broker, the JobManager and the `flink run` client are not pinned: in the parallelism-1 runs they
have a free core, in the parallelism-2 runs they take from the TaskManagers' cores, so where the
cores are few the ratio errs low.

Besides the rates it prints what the TaskManagers' CPU time bounds them to with a core each (the
busiest one sets the pace), and the same without their JIT compiler threads: those compile the same
code once in every JVM, so parallelism 2 pays twice, and each keeps compiling for a minute or two
(3-4 µs per impression in each TaskManager over 40-90% of a 3M backlog, ~1 over 70-93% of a 6M one)
on the one core the TaskManager is pinned to here. A job that has run for a while has its code
compiled, and on a machine with the cores the compiler would not take the task threads' core: that
last figure is the one to compare with a deployment's.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from clients.topics import TopicNames, create_all
from infra.cluster import StandaloneCluster
from job.config import JobConfig
from job.kafka_job import source_name
from job.options import DEMO_CHECKPOINT_INTERVAL_S
from job.routing import user_routes
from tools.job_progress import SourceProgress
from tools.kafka_demo import (
    Broker,
    generated_now,
    job_properties_file,
    produce_in_order,
    run_args,
    unique_suffix,
)
from udfs.parse import shard_of

CANCEL_AT = 0.95  # the share of the backlog read when a job is cancelled: past the measured window


def impressions_per_subtask(user_ids: list[str], parallelism: int, lane_load: float) -> list[float]:
    """Each learner subtask's share of impressions whose users are `user_ids` (one per impression) at
    `parallelism` under the job's routing table: what bounds the learners' balance, whatever the engine."""
    routes = user_routes([str(index) for index in range(parallelism)], lane_load)
    counts = Counter(shard_of(user_id, routes) for user_id in user_ids)
    return [counts[str(index)] / max(1, len(user_ids)) for index in range(parallelism)]


def catch_up_on(cluster: StandaloneCluster, args: list[str], parallelism: int, progress: SourceProgress,
                backlog: int, timeout_s: float = 1800.0) -> float:
    """A live (unbounded) `freshrank run` ARGS submitted to `cluster` over a backlog of `backlog`
    impressions, sampled by `progress` until it has read CANCEL_AT of them, then cancelled:
    seconds from all its tasks running until then."""
    job_id = cluster.submit(args[1:], parallelism=parallelism)  # args[0] is the `run` command
    try:
        cluster.wait_running(job_id)
        running = time.monotonic()
        while not progress.samples or progress.samples[-1].records < CANCEL_AT * backlog:
            state = cluster.job_status(job_id)
            if state != "RUNNING":  # a live job only leaves RUNNING when something went wrong
                raise RuntimeError(f"the job is {state}:\n{cluster.failure(job_id)}")
            if time.monotonic() - running > timeout_s:
                raise TimeoutError(f"the job read {progress.samples[-1].records if progress.samples else 0:,} of "
                                   f"{backlog:,} impressions in {timeout_s:g} s; logs in {cluster.log_dir}")
            progress.sample(job_id)
            time.sleep(0.2)
        return time.monotonic() - running
    finally:
        cluster.cancel(job_id)


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
    round, and the median of the rounds' ratios; prints them as it goes. Raises
    `tools.job_progress.MeasurementError` when the input is read too fast to measure."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    usable = len(os.sched_getaffinity(0))
    if 2 * cpus_per_taskmanager > usable:  # refused now, not after the parallelism-1 runs
        raise ValueError(f"two TaskManagers with {cpus_per_taskmanager} CPU(s) each need {2 * cpus_per_taskmanager} "
                         f"CPUs; this process may use {usable}")
    with Broker(bootstrap, work_dir / "kafka", print) as servers:
        # Two partitions: a source subtask each at parallelism 2.
        suffix = unique_suffix("scale-out")
        topics = TopicNames().suffixed(suffix)
        create_all(servers, topics, partitions=2, kafka_properties=kafka_properties)
        stream = generated_now(n_impressions, seed, heavy_users)
        impressions = produce_in_order(servers, topics, stream, kafka_properties)["impressions"]
        split = impressions_per_subtask([record["user_id"] for record in stream.impressions], 2, job.lane_load)
        print(f"produced {impressions:,} impressions ({heavy_users} heavy users); {rounds} round(s) of parallelism "
              f"1 and 2, each TaskManager on {cpus_per_taskmanager} CPU(s) of its own, checkpoints every "
              f"{checkpoint_interval_s:g} s; at parallelism 2 the learners get "
              f"{' and '.join(f'{share:.1%}' for share in split)} of the impressions (subtask 0 beside the lane, "
              f"--lane-load {job.lane_load:g})")
        work_dir.mkdir(parents=True, exist_ok=True)
        properties_file = job_properties_file(kafka_properties, work_dir)
        rates: dict[int, list[float]] = {1: [], 2: []}
        cpu_us: dict[int, list[float]] = {1: [], 2: []}
        busiest: dict[int, list[float]] = {1: [], 2: []}
        # The same without the JIT compiler's threads (see the module doc)
        compiled_cpu_us: dict[int, list[float]] = {1: [], 2: []}
        compiled_busiest: dict[int, list[float]] = {1: [], 2: []}
        try:
            for number in range(rounds):
                # Alternating which goes first cancels a drift of the machine's speed over the run.
                for parallelism in ((1, 2) if number % 2 == 0 else (2, 1)):
                    with StandaloneCluster(work_dir / f"cluster-p{parallelism}-{number + 1}", slots=1,
                                           taskmanagers=parallelism,
                                           cpus_per_taskmanager=cpus_per_taskmanager) as cluster:
                        name = f"freshrank-scale-out-{uuid.uuid4().hex[:8]}"
                        args = run_args(servers, suffix, replace(job, parallelism=parallelism), group_id=name,
                                        job_name=name, checkpoint_interval_s=checkpoint_interval_s,
                                        kafka_properties_file=properties_file)
                        pids = sorted(cluster.taskmanager_pids())
                        progress = SourceProgress(cluster.rest, source_name(topics.impressions), pids)
                        running_s = catch_up_on(cluster, args, parallelism, progress, impressions)
                        if sorted(cluster.taskmanager_pids()) != pids:  # its CPU time went with it
                            raise RuntimeError(f"a TaskManager died during the job; logs in {cluster.log_dir}")
                    progress.write_csv(work_dir / f"progress-p{parallelism}-{number + 1}.csv")
                    steady = progress.steady(impressions)
                    rates[parallelism].append(steady.records_per_s)
                    # Each TaskManager's CPU per impression over the same window: with a core each, the
                    # busiest one bounds the rate (1e6 / its µs per impression).
                    cpu_us[parallelism].append(sum(steady.cpu_us_per_record))
                    busiest[parallelism].append(max(steady.cpu_us_per_record))
                    compiled = [cpu - jit for cpu, jit in zip(steady.cpu_us_per_record, steady.jit_us_per_record,
                                                              strict=True)]
                    compiled_cpu_us[parallelism].append(sum(compiled))
                    compiled_busiest[parallelism].append(max(compiled))
                    print(f"round {number + 1}, parallelism {parallelism} on {parallelism} TaskManager(s): "
                          f"{steady.records_per_s:,.0f} impressions/s at steady state ({steady.span_s:.1f} s of "
                          f"{running_s:.1f} s running, {steady.points} samples); TaskManager CPU per "
                          f"impression {' + '.join(f'{us:.1f}' for us in steady.cpu_us_per_record)} µs, of "
                          f"which the JIT compiler {' + '.join(f'{us:.1f}' for us in steady.jit_us_per_record)}")
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
        "scale_out_p1_compiled_cpu_us_per_impression": statistics.median(compiled_cpu_us[1]),
        "scale_out_p2_compiled_busiest_cpu_us_per_impression": statistics.median(compiled_busiest[2]),
    }
    # The CPU bound: with a whole core per TaskManager and nothing else on it, each runs at 1e6 / its µs
    # per impression, and the busiest one sets the pace. Wall-clock rates move with the broker and the
    # client, which share the cores here; CPU time per impression moves less. Per round, like the rates'
    # ratio: this machine has minutes when everything takes 1.5x the CPU, and a median of each
    # parallelism's figures alone could pair one of those with a fast one.
    bounds = [one / two for one, two in zip(cpu_us[1], busiest[2], strict=True)]
    compiled_bounds = [one / two for one, two in zip(compiled_cpu_us[1], compiled_busiest[2], strict=True)]
    figures["scale_out_cpu_bound_ratio"] = statistics.median(bounds)
    figures["scale_out_compiled_cpu_bound_ratio"] = statistics.median(compiled_bounds)
    f = figures
    print(f"parallelism 2 / parallelism 1 at steady state, {cpus_per_taskmanager} CPU(s) per TaskManager: "
          f"{f['scale_out_ratio']:.2f}x (median of {rounds} round(s): {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"medians {f['scale_out_p1_impressions_per_s']:,.0f} and {f['scale_out_p2_impressions_per_s']:,.0f} "
          f"impressions/s; TaskManager CPU per impression {f['scale_out_p1_cpu_us_per_impression']:.1f} and "
          f"{f['scale_out_p2_cpu_us_per_impression']:.1f} µs (the busiest TaskManager "
          f"{f['scale_out_p2_busiest_cpu_us_per_impression']:.1f} µs of it)")
    print(f"by CPU time, a core per TaskManager and nothing else on it: {f['scale_out_cpu_bound_ratio']:.2f}x "
          f"(median of {', '.join(f'{r:.2f}' for r in bounds)}); once the JIT compiler is done (its threads "
          f"left out): {f['scale_out_compiled_cpu_bound_ratio']:.2f}x "
          f"(median of {', '.join(f'{r:.2f}' for r in compiled_bounds)})")
    return figures
