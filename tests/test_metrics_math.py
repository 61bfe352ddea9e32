"""Streaming metric accumulators (BinnedAUC, ExampleStats) and the interval bookkeeping of the metrics operator."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from tools.evaluate import auc, calibration, logloss
from udfs.join_logic import DUPLICATE_CLICK, DUPLICATE_IMPRESSION, EARLY_CLICK, LATE_CLICK, ORPHAN_CLICK
from udfs.metrics_intervals import IntervalBuckets, IntervalStats, MetricsAggregator, decision_time
from udfs.metrics_math import BinnedAUC, ExampleStats


def random_scored(n: int, seed: int, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.1).astype(int)
    logits = rng.normal(-2.5, 1.5, n) + signal * labels
    return labels, 1.0 / (1.0 + np.exp(-logits))


def binned(labels, scores, **kwargs) -> BinnedAUC:
    acc = BinnedAUC(**kwargs)
    for y, s in zip(labels.tolist(), scores.tolist(), strict=True):
        acc.add(s, y)
    return acc


@pytest.mark.parametrize(("seed", "signal"), [(0, 1.0), (1, 0.0), (2, 3.0), (3, -1.0)])
def test_binned_auc_close_to_exact_auc(seed: int, signal: float) -> None:
    labels, scores = random_scored(20_000, seed, signal)
    exact = auc(labels, scores)
    assert binned(labels, scores).value() == pytest.approx(exact, abs=1e-3)
    # A coarse histogram is measurably worse, so the comparison above has teeth.
    assert abs(binned(labels, scores, bins=8).value() - exact) > 1e-3


def test_binned_auc_keeps_resolution_at_low_scores() -> None:
    """Bins are equally spaced in logit: scores around 1e-4 are still told apart."""
    rng = np.random.default_rng(6)
    labels = (rng.random(20_000) < 0.2).astype(int)
    logits = rng.normal(-9.0, 0.5, labels.size) + 0.5 * labels
    scores = 1.0 / (1.0 + np.exp(-logits))
    exact = auc(labels, scores)
    assert exact > 0.7
    assert binned(labels, scores).value() == pytest.approx(exact, abs=1e-3)
    acc = BinnedAUC()
    assert acc.bin_of(0.5) == acc.bins // 2
    assert acc.bin_of(1e-9) == 0 and acc.bin_of(1 - 1e-9) == acc.bins - 1
    width = 2 * acc.logit_limit / acc.bins
    assert acc.bin_of(1 / (1 + math.exp(8.0))) == int((12.0 - 8.0) / width)


def test_binned_auc_exact_with_ties_in_distinct_bins() -> None:
    rng = np.random.default_rng(5)
    levels = np.array([0.01, 0.05, 0.2, 0.5, 0.9])
    scores = levels[rng.integers(0, levels.size, 2_000)]
    labels = (rng.random(2_000) < scores).astype(int)
    assert binned(labels, scores).value() == pytest.approx(auc(labels, scores), abs=1e-12)


def test_binned_auc_merge_and_edge_cases() -> None:
    labels, scores = random_scored(5_000, 9)
    whole = binned(labels, scores)
    first, second = binned(labels[:2_000], scores[:2_000]), binned(labels[2_000:], scores[2_000:])
    first.merge(second)
    assert first.value() == whole.value()
    assert math.isnan(binned(np.zeros(10, dtype=int), scores[:10]).value())
    assert math.isnan(BinnedAUC().value())
    # Scores at and beyond the clip points still rank: 0 below everything, 1 above.
    extreme = BinnedAUC()
    for s, y in [(0.0, 0), (1e-12, 0), (0.3, 1), (0.3, 0), (1.0, 1)]:
        extreme.add(s, y)
    assert extreme.value() == pytest.approx(auc([0, 0, 1, 0, 1], [0.0, 1e-12, 0.3, 0.3, 1.0]))


def stats_of(labels, scores) -> ExampleStats:
    stats = ExampleStats()
    for y, s in zip(list(labels), list(scores), strict=True):
        stats.add(float(s), int(y))
    return stats


def test_example_stats_base_rate_predictor_has_ne_one() -> None:
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0] * 30)
    stats = stats_of(labels, np.full(labels.size, labels.mean()))
    assert stats.ctr() == pytest.approx(0.2)
    assert stats.normalized_entropy() == pytest.approx(1.0, abs=1e-12)
    assert stats.calibration() == pytest.approx(1.0, abs=1e-12)


def test_example_stats_matches_offline_metrics() -> None:
    labels, scores = random_scored(3_000, 4)
    stats = stats_of(labels, scores)
    assert stats.examples == 3_000 and stats.positives == int(labels.sum())
    assert stats.logloss() == pytest.approx(logloss(labels, scores), rel=1e-9)
    assert stats.calibration() == pytest.approx(calibration(labels, scores), rel=1e-9)
    half = stats_of(labels[:1_000], scores[:1_000])
    half.merge(stats_of(labels[1_000:], scores[1_000:]))
    assert (half.examples, half.positives) == (stats.examples, stats.positives)
    assert half.logloss() == pytest.approx(stats.logloss(), rel=1e-12)
    # A confident mistake is clipped, not infinite.
    assert stats_of([1], [0.0]).logloss() == pytest.approx(-math.log(1e-7))
    empty = ExampleStats()
    assert all(math.isnan(x) for x in (empty.ctr(), empty.logloss(), empty.normalized_entropy(), empty.calibration()))
    assert math.isnan(stats_of([0, 0], [0.1, 0.2]).normalized_entropy())


# --- interval bookkeeping of the metrics operator -----------------------------------------------
# Learners bucket each scored example by `decision_time` (and each join event by its event time) in
# their own `IntervalBuckets` and send one pickled partial per interval when their join watermark
# passes its end; `MetricsAggregator` merges the partials and emits Metric records once every
# learner's reported watermark has passed an interval's end.

INTERVAL, WINDOW = 1_000, 500


def by_interval(records: list[dict]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for record in records:
        assert record["window_end"] == record["window_start"] + INTERVAL
        out.setdefault(record["window_start"], {})[record["name"]] = record["value"]
    return out


def test_decision_time() -> None:
    assert decision_time(1, impression_time=100, click_time=300, window_ms=WINDOW) == 300  # the click
    assert decision_time(0, impression_time=100, click_time=None, window_ms=WINDOW) == 601  # the window's end


def test_buckets_close_only_when_the_watermark_passes_the_end() -> None:
    buckets = IntervalBuckets(INTERVAL)
    first, end = buckets.bucket(300)
    assert end == 1_000  # new interval [0, 1000): the caller sets a timer at its end
    assert buckets.bucket(999) == (first, None)  # same interval, no new timer
    second, end = buckets.bucket(1_000)
    assert end == 2_000 and second is not first
    assert buckets.pop_until(999) == []
    assert buckets.pop_until(1_000) == [(0, first)]
    assert buckets.pop_until(1_999) == []
    # Late: [0, 1000) is closed, so a record for it counts in the oldest open interval.
    assert buckets.bucket(400) == (second, None)
    assert buckets.pop_until(2_000) == [(1_000, second)]
    # Late again, with no interval open: it opens the one after the last closed one.
    third, end = buckets.bucket(10)
    assert end == 3_000
    assert buckets.pop_until(10**9) == [(2_000, third)] and buckets.open == {}


def test_aggregator_closes_only_when_every_learner_passed_the_end() -> None:
    agg = MetricsAggregator(INTERVAL, learners=2)
    partial = IntervalStats()
    partial.add_example(0.8, 1)
    partial.add_example(0.1, 0)
    partial.events[DUPLICATE_CLICK] += 1
    agg.add_partial(0, pickle.loads(pickle.dumps(partial)))  # as it crosses Flink
    other = IntervalStats()
    other.add_example(0.3, 0)
    agg.add_partial(0, other)  # another learner's partial of the same interval
    later = IntervalStats()
    later.events[ORPHAN_CLICK] += 1
    agg.add_partial(1_000, later)
    agg.add_progress(0, 5_000)
    assert agg.complete_until() == -(2**63)  # learner 1 has not reported
    agg.add_progress(1, 999)
    assert agg.close_until(agg.complete_until()) == []
    agg.add_progress(1, 1_000)
    closed = by_interval(agg.close_until(agg.complete_until()))
    assert list(closed) == [0]
    values = closed[0]
    assert (values["examples"], values["positives"], values["duplicate_clicks"], values["clicks"]) == (3, 1, 1, 2)
    assert (values["impressions"], values["orphan_clicks"]) == (3, 0)
    assert values["auc"] == 1.0 and values["ctr"] == pytest.approx(1 / 3)
    assert values["logloss"] == pytest.approx(-(math.log(0.8) + math.log(0.9) + math.log(0.7)) / 3)
    assert values["calibration"] == pytest.approx(1.2)
    agg.add_progress(0, 1_500)  # progress never goes back
    assert agg.progress[0] == 5_000
    agg.add_progress(1, 2_000)
    closed = by_interval(agg.close_until(agg.complete_until()))
    assert list(closed) == [1_000] and closed[1_000]["orphan_clicks"] == 1 and closed[1_000]["examples"] == 0
    assert closed[1_000]["clicks"] == 1 and closed[1_000]["click_coverage"] == 0.0  # an orphan is a click
    assert math.isnan(closed[1_000]["auc"])
    assert closed[1_000]["examples_total"] == 3 and closed[1_000]["orphan_clicks_total"] == 1


def test_aggregator_puts_late_partials_into_the_open_interval() -> None:
    agg = MetricsAggregator(INTERVAL, learners=1)
    early = IntervalStats()
    early.events[EARLY_CLICK] += 1
    agg.add_partial(0, early)
    agg.close_until(1_000)
    late = IntervalStats()
    late.add_example(0.5, 1)
    late.events[LATE_CLICK] += 1
    agg.add_partial(0, late)  # a partial for the emitted interval counts in the next one
    closed = by_interval(agg.close_until(2_000))
    assert list(closed) == [1_000]
    assert (closed[1_000]["late_clicks"], closed[1_000]["examples"], closed[1_000]["positives"]) == (1, 1, 1)
    assert (closed[1_000]["clicks"], closed[1_000]["late_click_rate"], closed[1_000]["click_coverage"]) == (2, 0.5, 0.5)
    assert closed[1_000]["early_clicks_total"] == 1


def test_totals_add_up_over_intervals_and_learners() -> None:
    rng = np.random.default_rng(3)
    labels, scores = random_scored(3_000, 8, signal=1.5)
    times = np.sort(rng.integers(0, 30_000, labels.size))
    kinds = [DUPLICATE_IMPRESSION, DUPLICATE_CLICK, EARLY_CLICK, LATE_CLICK, ORPHAN_CLICK]
    learners = [IntervalBuckets(INTERVAL) for _ in range(3)]
    agg = MetricsAggregator(INTERVAL, learners=3)
    records: list[dict] = []
    expected: dict[int, int] = {}

    def advance(watermark: int) -> None:
        for learner in learners:  # partials leave the learners before the watermark reaches the merger
            for start, stats in learner.pop_until(watermark):
                agg.add_partial(start, pickle.loads(pickle.dumps(stats)))
        for index in range(3):
            agg.add_progress(index, watermark)
        records.extend(agg.close_until(agg.complete_until()))

    for i, (y, s, t) in enumerate(zip(labels.tolist(), scores.tolist(), times.tolist(), strict=True)):
        decided = decision_time(y, t, t + 40 if y else None, WINDOW)
        expected[decided // INTERVAL * INTERVAL] = expected.get(decided // INTERVAL * INTERVAL, 0) + 1
        learner = learners[int(rng.integers(3))]
        stats, _ = learner.bucket(decided)
        stats.add_example(s, y)
        event_stats, _ = learner.bucket(t)  # join events count where their record's event time falls
        event_stats.events[kinds[i % len(kinds)]] += 1
        if i % 100 == 99:  # a watermark well behind the newest time: nothing arrives late
            advance(t - WINDOW - 100)
    advance(2**62)

    intervals = by_interval(records)
    assert {start: int(v["examples"]) for start, v in intervals.items() if v["examples"]} == expected
    last = intervals[max(intervals)]
    for name in ("examples", "positives", "duplicate_impressions", "duplicate_clicks", "early_clicks",
                 "late_clicks", "orphan_clicks", "clicks", "impressions"):
        assert last[f"{name}_total"] == sum(v[name] for v in intervals.values()), name
    assert last["examples_total"] == labels.size and last["positives_total"] == labels.sum()
    assert last["duplicate_impressions_total"] == len(range(0, labels.size, 5))
    assert last["auc_total"] == pytest.approx(auc(labels, scores), abs=1e-3)
    assert last["logloss_total"] == pytest.approx(logloss(labels, scores), rel=1e-9)
    # Each interval is emitted once, oldest first, with cumulative totals.
    starts = [r["window_start"] for r in records if r["name"] == "examples"]
    assert starts == sorted(set(starts))
    running = np.cumsum([intervals[s]["examples"] for s in starts])
    assert [intervals[s]["examples_total"] for s in starts] == running.tolist()


def test_binned_auc_add_all_counts_as_add_one_by_one() -> None:
    """The learner adds a call's examples at once (numpy); the histogram must be the one-by-one one,
    extremes, the clipping limits and a NaN included."""
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.uniform(0, 1, 5000), 1 / (1 + np.exp(-rng.normal(0, 8, 5000))),
                             [0.0, 1.0, 1e-12, 1 - 1e-12, 0.5, float("nan")]])
    labels = (rng.uniform(0, 1, scores.size) < 0.3).astype(np.int64)
    one_by_one, at_once = BinnedAUC(), BinnedAUC()
    for score, label in zip(scores.tolist(), labels.tolist(), strict=True):
        one_by_one.add(score, label)
    at_once.add_all(scores, labels)
    assert at_once.positives == one_by_one.positives and at_once.negatives == one_by_one.negatives


def test_binned_auc_survives_pickling_and_reads_the_dict_layout_of_older_state() -> None:
    """Metric intervals live in Flink state (pickled): the dense counts must come back exact, an
    empty histogram too, and state written before the dense counts (bin -> count dicts) must load."""
    rng = np.random.default_rng(5)
    scores = rng.uniform(0, 1, 3000)
    labels = (rng.uniform(0, 1, scores.size) < scores * 0.4).astype(np.int64)
    acc = binned(labels, scores)
    back = pickle.loads(pickle.dumps(acc))
    assert (back.positives, back.negatives, back.value()) == (acc.positives, acc.negatives, acc.value())
    assert math.isnan(pickle.loads(pickle.dumps(BinnedAUC())).value())
    older = BinnedAUC.__new__(BinnedAUC)
    older.__setstate__((None, {"bins": 4800, "logit_limit": 12.0, "positives": acc.positives,
                               "negatives": acc.negatives, "_scale": 200.0}))
    assert (older.positives, older.negatives, older.value()) == (acc.positives, acc.negatives, acc.value())
