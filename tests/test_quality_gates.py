"""What the model learns, gated on several generator seeds with margins from their spread.

The join-and-learn core (udfs.batch_learner, the job's learner operator without Flink; the Flink tests
show the job gives its examples) runs over one stream per seed. Per seed, after the warm-up (the first
two windows), the learned model must beat the item-popularity baseline in AUC and in normalized
entropy and stay below the oracle. Across seeds, the AUC lift over popularity must be positive
beyond its spread: mean lift > 3 standard errors. A model that only matches popularity on average,
or wins on one seed and loses on another, fails.
"""

from __future__ import annotations

import statistics

import pytest
from dict_state import new_state

from job.config import JobConfig
from tools.evaluate import summarize
from tools.generate import GeneratorConfig, generate
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner
from udfs.join_logic import ImpressionClickJoin
from udfs.records import click_event, impression_event

SEEDS = (3, 5, 8, 13)
BATCH = 500


def learned_examples(seed: int, config: JobConfig) -> tuple[list[dict], dict[str, float]]:
    stream = generate(GeneratorConfig(n_impressions=40_000, n_users=300, n_items=200, seed=seed, requests_per_s=0.5))
    events = sorted([impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks],
                    key=lambda event: event[-1])
    rows, newest = [], None
    for event in events:  # the bounded-out-of-orderness watermark from before each event, as the job's
        rows.append([newest - config.max_disorder_ms - 1 if newest is not None else -(2**63) + 1, event])
        newest = event[-1] if newest is None else max(newest, event[-1])
    state = new_state()
    learner = BatchJoinLearner(ImpressionClickJoin(config.window_ms, config.retention_ms), config.learner,
                               config.metrics_interval_ms, 0, state)
    examples = []
    for start in range(0, len(rows), BATCH):
        examples += learner.process_batch(rows[start:start + BATCH], now_ms=0).examples
    examples += learner.advance_to(END_OF_INPUT).examples
    return examples, stream.oracle


@pytest.fixture(scope="module")
def steady_summaries() -> dict[int, dict]:
    config = JobConfig()
    out = {}
    for seed in SEEDS:
        examples, oracle = learned_examples(seed, config)
        examples.sort(key=lambda e: e["impression_time"])
        warm_up_end = examples[0]["impression_time"] + 2 * config.window_ms
        out[seed] = summarize([e for e in examples if e["impression_time"] >= warm_up_end], oracle)
    return out


def test_the_model_beats_popularity_on_every_seed(steady_summaries) -> None:
    for seed, s in steady_summaries.items():
        assert s["n_examples"] > 10_000, seed
        assert s["popularity_auc"] < s["model_auc"] < s["oracle_auc"], (seed, s)
        assert s["model_ne"] < s["popularity_ne"], (seed, s)


def test_the_lift_over_popularity_is_beyond_the_spread_of_seeds(steady_summaries) -> None:
    lifts = [s["model_auc"] - s["popularity_auc"] for s in steady_summaries.values()]
    standard_error = statistics.stdev(lifts) / len(lifts) ** 0.5
    assert statistics.mean(lifts) > 3 * standard_error, lifts
