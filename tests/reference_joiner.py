"""A small, obviously correct reference for the impression/click join, defined purely in event time.

It shares no code with `udfs.join_logic`. Defining the join without watermarks is valid for inputs
with bounded disorder (every record arrives less than `max_disorder` after any record with a larger
event time) and a watermark that lags the newest event time by that bound: then no record is ever
late with respect to the watermark, and the streaming join must agree with this batch definition.

Rules, over dicts with the schema's field names (`impression_id`, `event_time`, ...):
- impression ids: the first occurrence (in list order) is kept, later ones are duplicate impressions;
- per kept impression, its clicks in list order: the first with imp.t <= t <= imp.t + W gives label 1
  with click_time t; later in-window clicks are duplicate clicks; clicks outside [imp.t, imp.t + W]
  are late clicks; no in-window click gives label 0 and click_time None;
- clicks whose impression_id has no impression are orphans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReferenceResult:
    labels: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # impression_id -> (label, click_time)
    duplicate_impressions: int = 0
    duplicate_clicks: int = 0
    late_clicks: int = 0
    orphan_clicks: int = 0
    clicks: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "duplicate_impressions": self.duplicate_impressions,
            "duplicate_clicks": self.duplicate_clicks,
            "late_clicks": self.late_clicks,
            "orphan_clicks": self.orphan_clicks,
            "clicks": self.clicks,
        }


def reference_join(impressions: list[dict[str, Any]], clicks: list[dict[str, Any]], window_ms: int) -> ReferenceResult:
    result = ReferenceResult(clicks=len(clicks))

    impression_time: dict[str, int] = {}
    for impression in impressions:
        impression_id = impression["impression_id"]
        if impression_id in impression_time:
            result.duplicate_impressions += 1
        else:
            impression_time[impression_id] = impression["event_time"]

    for impression_id in impression_time:
        result.labels[impression_id] = (0, None)

    for click in clicks:
        impression_id = click["impression_id"]
        if impression_id not in impression_time:
            result.orphan_clicks += 1
            continue
        start = impression_time[impression_id]
        t = click["event_time"]
        if not start <= t <= start + window_ms:
            result.late_clicks += 1
        elif result.labels[impression_id][0] == 1:
            result.duplicate_clicks += 1
        else:
            result.labels[impression_id] = (1, t)
    return result
