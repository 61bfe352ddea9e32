"""The stability guard: a burst of corrupted labels never reaches the snapshots, and publishing resumes.

The learner core runs with dict-backed state over a generated stream in which, for a stretch of
event time, every impression gets a click (a bot, a tracking bug). A snapshot is attempted after
every call, as the job's snapshot timer does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dict_state import new_state

from tools.generate import GeneratorConfig, generate
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_math import LearnerConfig
from udfs.model_guard import GuardConfig, ModelGuard
from udfs.records import NO_WATERMARK, click_event, impression_event

WINDOW_MS, RETENTION_MS, DISORDER_MS = 60_000, 600_000, 2_000
GEN = GeneratorConfig(n_impressions=20_000, n_users=300, n_items=200, seed=4, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=5.0, requests_per_s=5.0)
BATCH = 300


def rows_with_a_burst(stream) -> tuple[list, set[str]]:
    times = sorted(r["event_time"] for r in stream.impressions)
    start, end = times[int(0.45 * len(times))], times[int(0.55 * len(times))]
    burst = {r["impression_id"] for r in stream.impressions if start <= r["event_time"] <= end}
    fake = [click_event({"impression_id": r["impression_id"], "user_id": r["user_id"], "item_id": r["item_id"],
                         "event_time": r["event_time"] + 500})
            for r in stream.impressions if r["impression_id"] in burst]
    events = [impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks] + fake
    events.sort(key=lambda e: e[-1])
    rows, newest = [], None
    for event in events:
        rows.append([newest - DISORDER_MS - 1 if newest is not None else -(2**63) + 1, event])
        newest = event[-1] if newest is None else max(newest, event[-1])
    return rows, burst


@pytest.fixture(scope="module")
def run():
    stream = generate(GEN)
    rows, burst = rows_with_a_burst(stream)
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), LearnerConfig(dim=8), 60_000, 0,
                               new_state(), guard=GuardConfig(min_examples=200, min_class_examples=10))
    calls = []  # per call: (published version or None, burst examples decided in it)
    examples = []
    for index, start in enumerate(range(0, len(rows), BATCH)):
        out = learner.process_batch(rows[start:start + BATCH], now_ms=index * 1000)
        examples += out.examples
        published = learner.snapshot(now_ms=index * 1000)
        calls.append((published[0]["version"] if published else None,
                      sum(e["impression_id"] in burst for e in out.examples)))
    examples += learner.advance_to(END_OF_INPUT).examples
    return calls, examples, learner, stream


def test_no_version_is_published_while_the_burst_lasts(run) -> None:
    """Held from the call after the burst's first examples (the call where it starts may have too little
    of it to tell from noise) until after its last example."""
    calls, _, learner, _ = run
    burst_calls = [i for i, (_, n) in enumerate(calls) if n]
    first, last = burst_calls[0], burst_calls[-1]
    assert sum(version is not None for version, _ in calls[:first]) >= 5, "the guard held normal traffic"
    assert all(version is None for version, _ in calls[first + 1:last + 2])
    assert learner.guard.held >= last - first + 1


def test_publishing_resumes_after_the_burst_and_examples_kept_flowing(run) -> None:
    calls, examples, _, stream = run
    last = max(i for i, (_, n) in enumerate(calls) if n)
    assert any(version is not None for version, _ in calls[last + 1:])
    assert {e["impression_id"] for e in examples} == {r["impression_id"] for r in stream.impressions}


def test_non_finite_or_huge_parameters_are_held() -> None:
    guard = ModelGuard(GuardConfig(max_norm=10.0), {})
    record = {"entity_type": "USER", "entity_id": "u", "vector": [1.0, 2.0], "vector_accum": [1.0, 1.0],
              "bias": 0.0, "bias_accum": 0.0}
    assert guard.problem([record]) is None
    assert "not finite" in guard.problem([{**record, "bias": math.nan}])
    assert "norm" in guard.problem([{**record, "vector": [30.0, 0.0]}])
    assert guard.held == 2
    assert ModelGuard(GuardConfig(logloss_margin=0.0), {}).problem([{**record, "bias": math.inf}]) is None  # off


def test_the_first_record_at_fault_is_named_among_many_as_the_learner_makes_them() -> None:
    """The learner's records carry numpy arrays (a USER's covariance: ~1,100 values), checked all at
    once; a bad value deep in one record's accumulator, or a vector too long, names that record, and
    the first at fault in order wins."""
    guard = ModelGuard(GuardConfig(max_norm=10.0), {})
    records = [{"entity_type": "ITEM", "entity_id": f"i{n}", "vector": np.full(4, 0.5), "vector_accum": np.ones(4),
                "bias": 0.0, "bias_accum": 1.0} for n in range(50)]
    records += [{"entity_type": "GLOBAL", "entity_id": "global", "vector": np.zeros(0), "vector_accum": np.zeros(0),
                 "bias": 0.1, "bias_accum": 1.0}]
    assert guard.problem(records) is None
    accum = np.ones(4)
    accum[3] = math.nan
    bad_accum = [*records[:20], {**records[20], "vector_accum": accum}, *records[21:]]
    assert guard.problem(bad_accum) == "ITEM i20 has a value that is not finite"
    long_vector = [*records[:7], {**records[7], "vector": np.full(4, 6.0)}, *records[8:]]
    assert guard.problem(long_vector) == "ITEM i7 has a vector of norm 12.0, above 10"
    assert guard.problem([*long_vector[:5], {**records[5], "bias": math.inf}, *long_vector[6:]]).startswith("ITEM i5 ")


def test_a_nan_score_does_not_poison_the_baselines() -> None:
    guard = ModelGuard(GuardConfig(min_examples=40, min_class_examples=10), {})
    guard.arrive([40, 10], {}, watermark=0)
    guard.observe([0.1] * 20 + [math.nan] + [0.05] * 19, [1] * 10 + [0] * 30)
    assert guard.problem([]) is None
    baseline = guard.state["baseline"]
    assert {"positive_loss", "negative_loss", "ctr"} <= set(baseline) and all(map(math.isfinite, baseline.values()))


def test_clicks_read_far_ahead_of_their_impressions_are_counted_by_event_time() -> None:
    """A file replay reads its small clicks file long before the impressions it belongs with: all clicks
    arrive first (the clicks input ends, so the join watermark follows the impressions). Counted as
    they arrived, every later period had impressions and no clicks, and the guard held every version
    after the first; counted by event time, the ratio is the stream's own and versions keep coming."""
    stream = generate(GEN)
    clicks = sorted((click_event(r) for r in stream.clicks), key=lambda e: e[-1])
    impressions = sorted((impression_event(r) for r in stream.impressions), key=lambda e: e[-1])
    rows, newest = [[NO_WATERMARK, event] for event in clicks], None
    for event in impressions:
        rows.append([newest - DISORDER_MS - 1 if newest is not None else NO_WATERMARK, event])
        newest = event[-1] if newest is None else max(newest, event[-1])
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), LearnerConfig(dim=8), 60_000, 0,
                               new_state(), guard=GuardConfig(min_examples=200, min_class_examples=10))
    published = 0
    for index, start in enumerate(range(0, len(rows), BATCH)):
        learner.process_batch(rows[start:start + BATCH], now_ms=index * 1000)
        published += bool(learner.snapshot(now_ms=index * 1000))
    assert learner.guard.held == 0, learner.guard.state["problem"]
    assert published > len(impressions) // BATCH // 2
    assert learner.guard.state["baseline"]["ctr"] == pytest.approx(len(clicks) / len(impressions), rel=0.5)
