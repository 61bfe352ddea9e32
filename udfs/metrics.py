"""Metrics operator: progressive-validation quality and join counters per event-time interval.

Examples are bucketed by the event time at which their label became known (the click for a
positive, the window's end for a negative), so an interval is complete, and emitted, when the
watermark passes its end. Join events that arrive for an interval already emitted count in the
open one. Names ending in `_total` are cumulative since the job started (kept in memory: they
restart from zero when the job is restored).
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

    def add_example(self, score: float, label: int) -> None:
        self.examples.add(score, label)
        self.auc.add(score, label)

    def merge(self, other: IntervalStats) -> None:
        self.examples.merge(other.examples)
        self.auc.merge(other.auc)
        for kind, count in other.events.items():
            self.events[kind] += count

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
        }


class MetricsAggregator:
    """The interval bookkeeping, free of Flink: add records, then `close_until(watermark)`."""

    def __init__(self, interval_ms: int, window_ms: int) -> None:
        self.interval_ms = interval_ms
        self.window_ms = window_ms
        self.open: dict[int, IntervalStats] = {}
        self.total = IntervalStats()
        self.closed_until = -(2**63)
        self.started_wall_s: float | None = None

    def _bucket(self, event_time: int) -> tuple[int, bool]:
        """Start of the interval for `event_time` and whether that interval is new."""
        start = max(event_time, self.closed_until) // self.interval_ms * self.interval_ms
        return start, start not in self.open

    def add_example(self, label: int, score: float, impression_time: int, click_time: int | None) -> int | None:
        """Add one scored example; returns the end of a newly opened interval (to set a timer for)."""
        if self.started_wall_s is None:
            self.started_wall_s = time.time()
        decided_at = click_time if label else impression_time + self.window_ms + 1
        start, new = self._bucket(decided_at)
        self.open.setdefault(start, IntervalStats()).add_example(score, label)
        return start + self.interval_ms if new else None

    def add_event(self, kind: str, event_time: int) -> int | None:
        start, new = self._bucket(event_time)
        self.open.setdefault(start, IntervalStats()).events[kind] += 1
        return start + self.interval_ms if new else None

    def close_until(self, watermark: int) -> list[dict[str, Any]]:
        """Metric records of every interval that ends at or before `watermark`, oldest first."""
        records = []
        now_ms = int(time.time() * 1000)
        for start in sorted(s for s in self.open if s + self.interval_ms <= watermark):
            stats = self.open.pop(start)
            self.total.merge(stats)
            end = start + self.interval_ms
            self.closed_until = max(self.closed_until, end)
            values = stats.values()
            for name, value in self.total.values().items():
                values[f"{name}_total"] = value
            elapsed_s = time.time() - (self.started_wall_s or time.time())
            values["examples_per_s"] = self.total.examples.examples / elapsed_s if elapsed_s > 0 else math.nan
            values["event_time_lag_ms"] = now_ms - end
            records.extend(
                {"name": name, "value": float(value), "window_start": start, "window_end": end,
                 "emitted_at": now_ms}
                for name, value in values.items()
            )
        return records


class ComputeMetrics(KeyedCoProcessFunction):
    """Input 1: scored examples, input 2: join events; output: encoded Metric records."""

    def __init__(self, interval_ms: int, window_ms: int, encoder: RecordEncoder) -> None:
        self.interval_ms = interval_ms
        self.window_ms = window_ms
        self.encoder = encoder

    def open(self, runtime_context: RuntimeContext) -> None:
        self.aggregator = MetricsAggregator(self.interval_ms, self.window_ms)
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("quality")
        total = self.aggregator.total
        group.gauge("examples_total", lambda: total.examples.examples)
        group.gauge("positives_total", lambda: total.examples.positives)
        group.gauge("late_clicks_total", lambda: total.events[LATE_CLICK])
        group.gauge("orphan_clicks_total", lambda: total.events[ORPHAN_CLICK])

    def process_element1(self, value, ctx) -> Iterator:
        label, score, impression_time, click_time = value
        end = self.aggregator.add_example(label, score, impression_time, click_time)
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
