"""Benchmark: end-to-end impressions/s of a replay vs the same learner math in a plain Python loop.

Both are measured in the same run on the same machine, so the ratio is what to compare across
changes; absolute figures depend on the machine.
"""

from __future__ import annotations

import time
from pathlib import Path

from job.config import JobConfig
from job.generate import GeneratorConfig, generate, write_stream
from job.replay import read_output, run_replay
from udfs.learner_math import ItemSide, OnlineRanker


def plain_python_learner(examples: list[dict], config: JobConfig) -> float:
    """Seconds the learner math takes over `examples` with users in a dict (no Flink, no state backend)."""
    ranker = OnlineRanker(config.learner, ItemSide(config.learner))
    users: dict = {}
    started = time.perf_counter()
    for e in examples:
        user = users.get(e["user_id"])
        if user is None:
            user = users[e["user_id"]] = ranker.codec.new()
        ranker.score_then_learn(user, e["item_id"], e["position"], e["label"])
    return time.perf_counter() - started


def run_bench(work_dir: Path, n_impressions: int, config: JobConfig, seed: int = 7) -> dict[str, float]:
    events = work_dir / f"events-{n_impressions}-{seed}"
    if not (events / "clicks.jsonl").exists():
        print(f"generating {n_impressions:,} impressions ...")
        write_stream(generate(GeneratorConfig(n_impressions=n_impressions, seed=seed)), events)
    raw_impressions = sum(1 for _ in open(events / "impressions.jsonl", "rb"))
    run_dir = work_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"replaying {raw_impressions:,} impressions through Flink (parallelism {config.parallelism}) ...")
    result = run_replay(events / "impressions.jsonl", events / "clicks.jsonl", run_dir, config)
    examples = sorted(read_output(run_dir, "examples"), key=lambda e: e["impression_time"])
    plain_s = plain_python_learner(examples, config)
    figures = {
        "impressions": raw_impressions,
        "examples": len(examples),
        "flink_wall_s": result.wall_s,
        "flink_impressions_per_s": raw_impressions / result.wall_s,
        "plain_python_learner_examples_per_s": len(examples) / plain_s,
    }
    plain_rate = figures["plain_python_learner_examples_per_s"]
    figures["ratio_flink_to_plain"] = figures["flink_impressions_per_s"] / plain_rate
    print(f"end to end (Flink MiniCluster, start-up included): {figures['flink_impressions_per_s']:,.0f} impressions/s "
          f"({result.wall_s:.1f} s)")
    print(f"same learner math, plain Python loop (no join, no I/O): "
          f"{figures['plain_python_learner_examples_per_s']:,.0f} examples/s")
    print(f"ratio end-to-end / plain learner: {figures['ratio_flink_to_plain']:.3f}")
    return figures
