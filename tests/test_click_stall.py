"""The click-stall guard: a click outage holds negative decisions instead of mislabelling them."""

from __future__ import annotations

import logging

import pytest
from dict_state import new_state
from reference_joiner import reference_join

from tools.generate import GeneratorConfig, generate
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner
from udfs.click_stall import ClickStallGuard
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_math import LearnerConfig
from udfs.records import CLICK, TICK, click_event, impression_event

GEN = GeneratorConfig(n_impressions=4000, n_users=100, n_items=80, seed=11, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=8.0, requests_per_s=0.5)
WINDOW_MS, RETENTION_MS, DISORDER_MS = 60_000, 600_000, 3_000
NO_WATERMARK = -(2**63) + 1


def test_guard_caps_the_watermark_at_the_clicks_and_bounds_the_wait(caplog):
    meta: dict = {}
    guard = ClickStallGuard(limit_ms=10_000, report_after_ms=5_000, meta=meta)
    assert guard.effective(1_000, now_ms=0) == 1_000  # no clicks watermark yet: nothing to guard
    guard.observe(500, now_ms=0)
    assert guard.effective(400, now_ms=0) == 400
    assert guard.effective(1_000, now_ms=1_000) == 500 and not guard.stalled
    with caplog.at_level(logging.WARNING, logger="freshrank.click_stall"):
        assert guard.effective(5_000, now_ms=6_000) == 500 and guard.stalled and guard.lag_ms == 4_500
        assert "stalled" in caplog.text
        assert guard.effective(20_500, now_ms=7_000) == 10_500  # past the limit: follows, limit_ms behind
        assert any(r.levelno == logging.ERROR for r in caplog.records)
        guard.observe(20_000, now_ms=8_000)
        assert guard.effective(20_500, now_ms=8_000) == 20_000 and not guard.stalled
        assert "resumed" in caplog.text
    assert meta["clicks_watermark"] == 20_000  # lives in the learner's checkpointed meta
    off = ClickStallGuard(limit_ms=0, report_after_ms=5_000, meta={"clicks_watermark": 0})
    assert off.effective(99_000, now_ms=0) == 99_000


def outage_rows(stream, outage_start: int, outage_end: int) -> list:
    """Arrival order of a Kafka run with a click outage: clicks of [outage_start, outage_end) are held
    back and arrive together at outage_end. Meanwhile the clicks source is idle, so the join
    watermark follows the impressions alone; ticks bring the clicks' own watermark every 20 events."""
    events = [impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks]
    events.sort(key=lambda e: e[-1])
    backlog = [e for e in events if e[0] == CLICK and outage_start <= e[-1] < outage_end]
    held = {id(e) for e in backlog}
    arrival, flushed = [], False
    for event in events:
        if not flushed and event[-1] >= outage_end:
            arrival += backlog
            flushed = True
        if id(event) not in held:
            arrival.append(event)
    rows, newest = [], {"imp": None, "clk": None}

    def mark(kind: str) -> int:
        return NO_WATERMARK if newest[kind] is None else newest[kind] - DISORDER_MS - 1

    for n, event in enumerate(arrival):
        clicks_idle = outage_start + 10_000 <= event[-1] < outage_end and event[0] != CLICK
        join = mark("imp") if clicks_idle else min(mark("imp"), mark("clk"))
        if n % 20 == 0:
            rows.append([join, [TICK, mark("clk")]])
        rows.append([join, event])
        kind = "clk" if event[0] == CLICK else "imp"
        newest[kind] = event[-1] if newest[kind] is None else max(newest[kind], event[-1])
    return rows


def run(rows: list, limit_ms: int) -> list:
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), LearnerConfig(dim=8), 30_000, 0,
                               new_state(), click_stall_limit_ms=limit_ms, click_stall_report_ms=1_000)
    examples = []
    for start in range(0, len(rows), 64):
        examples += learner.process_batch(rows[start:start + 64], now_ms=start * 100).examples
    return examples + learner.advance_to(END_OF_INPUT).examples


@pytest.fixture(scope="module")
def outage():
    stream = generate(GEN)
    times = sorted(r["event_time"] for r in stream.impressions)
    start = times[len(times) // 4]
    end = start + 3 * WINDOW_MS  # several windows (and many multiples of any idleness) without clicks
    assert end < times[-1] - WINDOW_MS
    return stream, outage_rows(stream, start, end)


def test_labels_after_a_click_outage_equal_the_reference(outage):
    stream, rows = outage
    reference = reference_join(stream.impressions, stream.clicks, WINDOW_MS).labels
    guarded = {e["impression_id"]: (e["label"], e["click_time"]) for e in run(rows, limit_ms=3_600_000)}
    assert guarded == reference
    unguarded = {e["impression_id"]: (e["label"], e["click_time"]) for e in run(rows, limit_ms=0)}
    wrong = sum(unguarded[i] != label for i, label in reference.items())
    assert wrong >= 10, "the outage should mislabel positives without the guard"


def test_a_stall_past_the_limit_is_decided_without_clicks(outage, caplog):
    stream, rows = outage
    with caplog.at_level(logging.ERROR, logger="freshrank.click_stall"):
        examples = run(rows, limit_ms=WINDOW_MS)
    assert len({e["impression_id"] for e in examples}) == len({r["impression_id"] for r in stream.impressions})
    assert "raise --click-stall-limit" in caplog.text
