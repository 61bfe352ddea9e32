"""Quality and join counters per event-time interval, as plain Python (the Flink operator is udfs.metrics).

Examples are bucketed by the event time at which their label became known (the click for a
positive, the window's end for a negative), so an interval is complete, and emitted, when the
watermark passes its end. Each learner subtask accumulates its examples' stats per interval and
sends one partial per interval; a single merger (`MetricsAggregator`) closes an interval once every
learner's join watermark has passed its end. Names ending in `_total` are cumulative since the job
started.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from udfs.join_logic import (
    DUPLICATE_CLICK,
    DUPLICATE_IMPRESSION,
    EARLY_CLICK,
    JOIN_EVENT_KINDS,
    LATE_CLICK,
    ORPHAN_CLICK,
)
from udfs.metrics_math import BinnedAUC, ExampleStats

EVENT_KINDS = JOIN_EVENT_KINDS


class IntervalStats:
    """Everything one interval (or the whole run) accumulates."""

    def __init__(self) -> None:
        self.examples = ExampleStats()
        self.auc = BinnedAUC()
        self.events = dict.fromkeys(EVENT_KINDS, 0)
        # Item-side records merged from other replicas through the Kafka loop, and their age on arrival.
        self.loop_records = 0
        self.loop_staleness_sum_ms = 0
        self.loop_staleness_max_ms = 0
        # Microseconds the learner spent per stage, and the events (impressions, clicks) they covered.
        self.costs: dict[str, float] = {}
        self.cost_events = 0

    def add_costs(self, costs: dict[str, float], events: int) -> None:
        for stage, micros in costs.items():
            self.costs[stage] = self.costs.get(stage, 0.0) + micros
        self.cost_events += events

    def add_loop_staleness(self, staleness_ms: int) -> None:
        self.loop_records += 1
        self.loop_staleness_sum_ms += staleness_ms
        self.loop_staleness_max_ms = max(self.loop_staleness_max_ms, staleness_ms)

    def add_example(self, score: float, label: int) -> None:
        self.examples.add(score, label)
        self.auc.add(score, label)

    def add_examples(self, scores: list[float], labels: list[int]) -> None:
        """`add_example` for each pair in order; the AUC histogram in one numpy pass."""
        scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
        self.examples.add_all(scores, labels)
        self.auc.add_all(scores, labels)

    def merge(self, other: IntervalStats) -> None:
        self.examples.merge(other.examples)
        self.auc.merge(other.auc)
        for kind, count in other.events.items():
            self.events[kind] += count
        self.loop_records += other.loop_records
        self.loop_staleness_sum_ms += other.loop_staleness_sum_ms
        self.loop_staleness_max_ms = max(self.loop_staleness_max_ms, other.loop_staleness_max_ms)
        self.add_costs(other.costs, other.cost_events)

    def values(self) -> dict[str, float]:
        """Metric name -> value (NaN when undefined)."""
        ex, ev = self.examples, self.events
        clicks = ex.positives + ev[DUPLICATE_CLICK] + ev[LATE_CLICK] + ev[ORPHAN_CLICK]
        return {
            "impressions": ex.examples + ev[DUPLICATE_IMPRESSION],
            "examples": ex.examples,
            "clicks": clicks,
            "positives": ex.positives,
            "duplicate_impressions": ev[DUPLICATE_IMPRESSION],
            "duplicate_clicks": ev[DUPLICATE_CLICK],
            "early_clicks": ev[EARLY_CLICK],
            "late_clicks": ev[LATE_CLICK],
            "orphan_clicks": ev[ORPHAN_CLICK],
            "click_coverage": ex.positives / clicks if clicks else math.nan,
            "late_click_rate": ev[LATE_CLICK] / clicks if clicks else math.nan,
            "ctr": ex.ctr(),
            "logloss": ex.logloss(),
            "ne": ex.normalized_entropy(),
            "auc": self.auc.value(),
            "calibration": ex.calibration(),
            "item_loop_records": self.loop_records,
            "item_loop_staleness_ms_mean": (self.loop_staleness_sum_ms / self.loop_records
                                            if self.loop_records else math.nan),
            "item_loop_staleness_ms_max": self.loop_staleness_max_ms if self.loop_records else math.nan,
            **{f"cost_{stage}_us_per_event": micros / self.cost_events if self.cost_events else math.nan
               for stage, micros in self.costs.items()},
        }


class IntervalBuckets:
    """Open event-time intervals keyed by their start; an interval closes when the watermark passes its end.

    A record for an interval that already closed counts in the oldest open one, so nothing is lost.
    """

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.open: dict[int, IntervalStats] = {}
        self.closed_until = -(2**63)
        self.touched: set[int] = set()  # starts of the intervals handed out since `take_touched`

    def bucket(self, event_time: int) -> tuple[IntervalStats, int | None]:
        """The stats of the interval holding `event_time`, and its end if it was just opened."""
        start = max(event_time, self.closed_until) // self.interval_ms * self.interval_ms
        self.touched.add(start)
        stats = self.open.get(start)
        if stats is not None:
            return stats, None
        stats = self.open[start] = IntervalStats()
        return stats, start + self.interval_ms

    def take_touched(self) -> set[int]:
        """The starts of the intervals that may have changed since the last call (open or closed since)."""
        touched, self.touched = self.touched, set()
        return touched

    def pop_until(self, watermark: int) -> list[tuple[int, IntervalStats]]:
        """Remove and return (start, stats) of every interval ending at or before `watermark`, oldest first."""
        done = sorted(start for start in self.open if start + self.interval_ms <= watermark)
        if done:
            self.closed_until = max(self.closed_until, done[-1] + self.interval_ms)
        return [(start, self.open.pop(start)) for start in done]


def decision_time(label: int, impression_time: int, click_time: int | None, window_ms: int) -> int:
    """Event time at which an example's label became known (when the join could emit it)."""
    return click_time if label else impression_time + window_ms + 1


class MetricsAggregator:
    """Merges learner partials; an interval is complete once every learner's join watermark passed its end."""

    def __init__(self, interval_ms: int, learners: int) -> None:
        self.buckets = IntervalBuckets(interval_ms)
        self.total = IntervalStats()
        self.started_wall_s = time.time()
        self.progress = [-(2**63)] * learners  # each learner subtask's join watermark

    def add_partial(self, start: int, stats: IntervalStats) -> None:
        """Merge a learner's stats of the interval at `start`."""
        held, _ = self.buckets.bucket(start)
        held.merge(stats)

    def add_progress(self, learner: int, watermark: int) -> None:
        self.progress[learner] = max(self.progress[learner], watermark)

    def complete_until(self) -> int:
        return min(self.progress)

    def close_until(self, watermark: int) -> list[dict[str, Any]]:
        """Metric records of every interval that ends at or before `watermark`, oldest first."""
        records = []
        now_ms = int(time.time() * 1000)
        interval_ms = self.buckets.interval_ms
        for start, stats in self.buckets.pop_until(watermark):
            self.total.merge(stats)
            end = start + interval_ms
            values = stats.values()
            for name, value in self.total.values().items():
                values[f"{name}_total"] = value
            elapsed_s = time.time() - self.started_wall_s
            values["examples_per_s"] = self.total.examples.examples / elapsed_s if elapsed_s > 0 else math.nan
            values["event_time_lag_ms"] = now_ms - end
            records.extend(
                {"name": name, "value": float(value), "window_start": start, "window_end": end,
                 "emitted_at": now_ms}
                for name, value in values.items()
            )
        return records



# Per-interval figures also exported as gauges (Prometheus), with the value of the newest closed interval.
# PyFlink's gauges carry integers only: ratios go out in millionths (`auc_micro` 741800 = AUC 0.7418).
LATEST_INTERVAL_GAUGES = {"auc": 1e6, "ne": 1e6, "logloss": 1e6, "ctr": 1e6, "calibration": 1e6, "examples": 1,
                          "event_time_lag_ms": 1}
UNDEFINED_GAUGE = -1  # no interval closed yet (also after a restore), or the figure is undefined (NaN)


def gauge_value(value: float, scale: float) -> int:
    """An interval figure as the integer a PyFlink gauge can carry (UNDEFINED_GAUGE for NaN)."""
    return round(value * scale) if math.isfinite(value) else UNDEFINED_GAUGE
