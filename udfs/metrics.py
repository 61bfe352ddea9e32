"""Metrics operator: progressive-validation quality and join counters per event-time interval.

Examples are bucketed by the event time at which their label became known (the click for a
positive, the window's end for a negative), so an interval is complete, and emitted, when the
watermark passes its end. Each learner subtask accumulates its examples' stats per interval and
sends one partial per interval (not one record per example: per-record Python is the cost that
matters); a single merger adds the join events and emits the Metric records. Names ending in
`_total` are cumulative since the job started (kept in memory: they restart from zero when the
job is restored).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import KeyedCoProcessFunction, RuntimeContext

from udfs.encoding import RecordEncoder
from udfs.join_logic import DUPLICATE_CLICK, DUPLICATE_IMPRESSION, EARLY_CLICK, LATE_CLICK, ORPHAN_CLICK
from udfs.metrics_math import BinnedAUC, ExampleStats

EVENT_KINDS = (DUPLICATE_IMPRESSION, DUPLICATE_CLICK, EARLY_CLICK, LATE_CLICK, ORPHAN_CLICK)


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

    def add_loop_staleness(self, staleness_ms: int) -> None:
        self.loop_records += 1
        self.loop_staleness_sum_ms += staleness_ms
        self.loop_staleness_max_ms = max(self.loop_staleness_max_ms, staleness_ms)

    def add_example(self, score: float, label: int) -> None:
        self.examples.add(score, label)
        self.auc.add(score, label)

    def merge(self, other: IntervalStats) -> None:
        self.examples.merge(other.examples)
        self.auc.merge(other.auc)
        for kind, count in other.events.items():
            self.events[kind] += count
        self.loop_records += other.loop_records
        self.loop_staleness_sum_ms += other.loop_staleness_sum_ms
        self.loop_staleness_max_ms = max(self.loop_staleness_max_ms, other.loop_staleness_max_ms)

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
        }


class IntervalBuckets:
    """Open event-time intervals keyed by their start; an interval closes when the watermark passes its end.

    A record for an interval that already closed counts in the oldest open one, so nothing is lost.
    """

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self.open: dict[int, IntervalStats] = {}
        self.closed_until = -(2**63)

    def bucket(self, event_time: int) -> tuple[IntervalStats, int | None]:
        """The stats of the interval holding `event_time`, and its end if it was just opened."""
        start = max(event_time, self.closed_until) // self.interval_ms * self.interval_ms
        stats = self.open.get(start)
        if stats is not None:
            return stats, None
        stats = self.open[start] = IntervalStats()
        return stats, start + self.interval_ms

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
    """Merges per-learner partial stats and join events; turns closed intervals into Metric records."""

    def __init__(self, interval_ms: int) -> None:
        self.buckets = IntervalBuckets(interval_ms)
        self.total = IntervalStats()
        self.started_wall_s = time.time()

    def add_partial(self, start: int, stats: IntervalStats) -> int | None:
        """Merge a learner's stats of the interval at `start`; returns a newly opened interval's end."""
        held, new_end = self.buckets.bucket(start)
        held.merge(stats)
        return new_end

    def add_event(self, kind: str, event_time: int) -> int | None:
        held, new_end = self.buckets.bucket(event_time)
        held.events[kind] += 1
        return new_end

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


class ComputeMetrics(KeyedCoProcessFunction):
    """Input 1: Row(start, IntervalStats) partials from the learners, input 2: join events;
    output: encoded Metric records, once per interval when the watermark passes its end."""

    def __init__(self, interval_ms: int, encoder: RecordEncoder) -> None:
        self.interval_ms = interval_ms
        self.encoder = encoder

    def open(self, runtime_context: RuntimeContext) -> None:
        self.aggregator = MetricsAggregator(self.interval_ms)
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("quality")
        total = self.aggregator.total
        group.gauge("examples_total", lambda: total.examples.examples)
        group.gauge("positives_total", lambda: total.examples.positives)
        group.gauge("late_clicks_total", lambda: total.events[LATE_CLICK])
        group.gauge("orphan_clicks_total", lambda: total.events[ORPHAN_CLICK])

    def process_element1(self, value, ctx) -> Iterator:
        start, stats = value
        end = self.aggregator.add_partial(start, stats)
        if end is not None:
            ctx.timer_service().register_event_time_timer(end)
        return iter(())

    def process_element2(self, value, ctx) -> Iterator:
        kind, event_time = value
        end = self.aggregator.add_event(kind, event_time)
        if end is not None:
            ctx.timer_service().register_event_time_timer(end)
        return iter(())

    def on_timer(self, timestamp: int, ctx) -> Iterator:
        for record in self.aggregator.close_until(timestamp):
            yield self.encoder.encode("Metric", record)
