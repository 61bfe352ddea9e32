"""The click-stream stall guard: a click outage must not turn into a flood of false negatives.

A Kafka source whose partitions all go quiet for `--idleness` is marked idle, and the join watermark
then follows the impressions alone: without a guard every impression shown during a click outage
would be decided negative and learned (the failure the online joiner of He et al. 2014 stops
training for). Unbounded runs therefore also carry the clicks' own watermark to every learner shard
(job.batching: the ticks read it), and the learner never decides past it: impressions wait in state
until the clicks catch up, so when the clicks come back with their backlog the labels are exactly
those of an uninterrupted stream.

Waiting is bounded: once the impressions are more than `limit_ms` of event time ahead of the clicks,
decisions follow the impressions again, `limit_ms` behind them, and the job says so in an error log
line and a metric. A limit of 0 turns the guard off. Bounded inputs (files, bounded Kafka reads)
never go idle and carry no clicks watermark, so the guard stays inactive for them.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("freshrank.click_stall")

NO_CLICKS_WATERMARK = -(2**63) + 1  # job.batching.NO_WATERMARK: the clicks have no watermark yet


class ClickStallGuard:
    """Caps the join watermark at the clicks' progress; reports stalls (wall clock) and overruns."""

    def __init__(self, limit_ms: int, report_after_ms: int, meta: dict[str, Any]) -> None:
        self.limit_ms = limit_ms
        self.report_after_ms = report_after_ms
        # The clicks' watermark lives in the learner's checkpointed meta, so a restored job keeps
        # holding exactly where it held; None until the first tick of an unbounded run brings it.
        self.meta = meta
        meta.setdefault("clicks_watermark", None)
        self.progress_at_ms: int | None = None  # wall clock of the last progress (reporting only)
        self.stalled_since_ms: int | None = None
        self.overrun = False
        self.lag_ms = 0  # how far the join watermark is ahead of the clicks' (event time)

    @property
    def stalled(self) -> bool:
        return self.stalled_since_ms is not None

    @property
    def clicks_watermark(self) -> int | None:
        return self.meta["clicks_watermark"]

    def observe(self, clicks_watermark: int, now_ms: int) -> None:
        """The clicks' watermark as a tick saw it."""
        current = self.meta["clicks_watermark"]
        if current is None or clicks_watermark > current:
            self.meta["clicks_watermark"] = clicks_watermark
            self.progress_at_ms = now_ms
        elif self.progress_at_ms is None:
            self.progress_at_ms = now_ms

    def effective(self, watermark: int, now_ms: int) -> int:
        """The watermark the join may decide with, given the join watermark `watermark`."""
        clicks = self.meta["clicks_watermark"]
        if clicks is None or self.limit_ms <= 0:
            return watermark
        self.lag_ms = max(0, watermark - clicks) if clicks > NO_CLICKS_WATERMARK else 0
        self._report(watermark, clicks, now_ms)
        if watermark <= clicks:
            return watermark
        return max(clicks, watermark - self.limit_ms)

    def _report(self, watermark: int, clicks: int, now_ms: int) -> None:
        quiet_ms = now_ms - (self.progress_at_ms if self.progress_at_ms is not None else now_ms)
        stalled = watermark > clicks and quiet_ms >= self.report_after_ms
        if stalled and self.stalled_since_ms is None:
            self.stalled_since_ms = now_ms - quiet_ms
            log.warning("click stream stalled: no progress for %.0f s while impressions moved %.0f s ahead; "
                        "holding negative decisions at the clicks' watermark (up to %.0f s)",
                        quiet_ms / 1000, self.lag_ms / 1000, self.limit_ms / 1000)
        elif not stalled and self.stalled_since_ms is not None:
            log.warning("click stream resumed after %.0f s", (now_ms - self.stalled_since_ms) / 1000)
            self.stalled_since_ms = None
        # Ticks report the clicks' watermark with a delay; only a stall can overrun the limit.
        overrun = stalled and watermark - clicks > self.limit_ms
        if overrun and not self.overrun:
            log.error("click stream stalled for more than %.0f s of event time: deciding impressions without "
                      "their clicks from here on (raise --click-stall-limit to wait longer)", self.limit_ms / 1000)
        self.overrun = overrun
