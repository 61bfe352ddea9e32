"""Metrics operator: the Flink shell that merges the learners' interval partials into Metric records.

The bookkeeping (intervals, partials, totals) is plain Python in udfs.metrics_intervals; this module
adds Flink state, timers and gauges. Names ending in `_total` are cumulative since the job started
(the aggregator is kept in Flink state, so they continue after a restore).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs.encoding import RecordEncoder
from udfs.gauges import PushedGauges
from udfs.join_logic import LATE_CLICK, ORPHAN_CLICK

# IntervalStats, IntervalBuckets and MetricsAggregator are also named here: state pickled before they
# moved to udfs.metrics_intervals refers to them by this module.
from udfs.metrics_intervals import (  # noqa: F401
    LATEST_INTERVAL_GAUGES,
    IntervalBuckets,
    IntervalStats,
    MetricsAggregator,
    gauge_value,
)


def partial_metrics_type() -> TypeInformation:
    """Learner -> merger, one row a learner call: Row(learner subtask, pickled [(interval start,
    IntervalStats)] of the intervals that closed in the call, join watermark after it)."""
    return Types.ROW_NAMED(["learner", "partials", "watermark"],
                           [Types.INT(), Types.PICKLED_BYTE_ARRAY(), Types.LONG()])


END_OF_INPUT = 2**63 - 1
TOTAL_GAUGES = ("examples_total", "positives_total", "late_clicks_total", "orphan_clicks_total")


def interval_gauge_name(name: str, scale: float) -> str:
    """The gauge of a latest-interval figure: ratios in millionths carry `_micro` in their name."""
    return f"{name}_micro" if scale == 1e6 else name


class ComputeMetrics(KeyedProcessFunction):
    """Partials and progress from the learners in; encoded Metric records out, once per interval.

    The aggregator (open intervals and the run's totals) is kept in Flink state, so `_total` metrics
    continue across restores. Most rows only move a learner's progress: those write the progress
    alone (a few numbers), not the whole aggregator with its AUC histograms.
    """

    def __init__(self, interval_ms: int, learners: int, encoder: RecordEncoder) -> None:
        self.interval_ms = interval_ms
        self.learners = learners
        self.encoder = encoder

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("aggregator", Types.PICKLED_BYTE_ARRAY()))
        # Each learner's join watermark, newer than the aggregator's copy when only progress moved.
        self.progress = runtime_context.get_state(ValueStateDescriptor("progress", Types.PICKLED_BYTE_ARRAY()))
        self.aggregator: MetricsAggregator | None = None
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("quality")
        # Set whenever an interval closes (see udfs.gauges for why not callables).
        self.latest = dict.fromkeys(LATEST_INTERVAL_GAUGES, math.nan)
        self.totals = PushedGauges(group, TOTAL_GAUGES)
        self.interval_gauges = PushedGauges(group.add_group("interval"), [
            interval_gauge_name(name, scale) for name, scale in LATEST_INTERVAL_GAUGES.items()])
        self._push_gauges()

    def _total(self) -> IntervalStats:
        return self.aggregator.total if self.aggregator is not None else IntervalStats()

    def _load(self, ctx) -> MetricsAggregator:
        if self.aggregator is None:
            self.aggregator = self.state.value() or MetricsAggregator(self.interval_ms, self.learners)
            progress = self.progress.value()
            if progress is not None:
                for learner, watermark in enumerate(progress[: len(self.aggregator.progress)]):
                    self.aggregator.add_progress(learner, watermark)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self._push_gauges()  # totals restored from state
        return self.aggregator

    def process_element(self, value, ctx) -> Iterator:
        aggregator = self._load(ctx)
        learner, partials, watermark = value
        for start, stats in partials:
            aggregator.add_partial(start, stats)
        aggregator.add_progress(learner, watermark)
        records = aggregator.close_until(aggregator.complete_until())
        if partials or records:
            self.state.update(aggregator)
        else:
            self.progress.update(aggregator.progress)
        yield from self._emit(records)

    def _push_gauges(self) -> None:
        total = self._total()
        totals = self.totals
        totals.set("examples_total", total.examples.examples)
        totals.set("positives_total", total.examples.positives)
        totals.set("late_clicks_total", total.events[LATE_CLICK])
        totals.set("orphan_clicks_total", total.events[ORPHAN_CLICK])
        for name, scale in LATEST_INTERVAL_GAUGES.items():
            self.interval_gauges.set(interval_gauge_name(name, scale), gauge_value(self.latest[name], scale))

    def _emit(self, records: list[dict[str, Any]]) -> Iterator:
        for record in records:
            if record["name"] in self.latest:
                self.latest[record["name"]] = record["value"]
        if records:
            self._push_gauges()
        yield from self.encoder.encode_all("Metric", records)

    def on_timer(self, timestamp: int, ctx) -> Iterator:
        # The input ended: learners that never got a batch report no progress, so close everything.
        aggregator = self._load(ctx)
        records = aggregator.close_until(END_OF_INPUT)
        self.state.update(aggregator)
        yield from self._emit(records)
