"""The metrics operator's state: what a restore finds is what the merger had, progress included."""

from __future__ import annotations

import orjson
from operator_context import KeyedContext, StatefulRuntimeContext

from udfs.encoding import JsonLinesEncoder
from udfs.metrics import ComputeMetrics
from udfs.metrics_intervals import IntervalStats

INTERVAL = 1_000
WALL_CLOCK = {"examples_per_s", "event_time_lag_ms"}  # figures of the wall clock, not of the input


def _stats(*examples: tuple[float, int]) -> IntervalStats:
    stats = IntervalStats()
    for score, label in examples:
        stats.add_example(score, label)
    return stats


# Row(learner, [(interval start, stats)] closed in the call, join watermark), as the learners send them.
ROWS = [(0, [(0, _stats((0.9, 1), (0.2, 0)))], 500), (1, [(0, _stats((0.4, 0)))], 400),
        (0, [], 1_500),  # learner 0 moves on: progress only
        (1, [], 1_200),  # now both passed the end of [0, 1000)
        (0, [(1_000, _stats((0.7, 1))), (1_000, _stats((0.1, 0)))], 2_500), (1, [], 2_600)]


def _operator(store: dict) -> ComputeMetrics:
    operator = ComputeMetrics(INTERVAL, learners=2, encoder=JsonLinesEncoder())
    operator.open(StatefulRuntimeContext(store))
    return operator


def _metrics(encoded: list[bytes]) -> list[tuple]:
    records = [orjson.loads(line) for block in encoded for line in block.splitlines()]
    return [(r["window_start"], r["name"], r["value"]) for r in records if r["name"] not in WALL_CLOCK]


def _run(operator: ComputeMetrics, rows: list[tuple]) -> list[list[tuple]]:
    """What each row made the operator emit."""
    return [_metrics(list(operator.process_element(row, KeyedContext()))) for row in rows]


def test_a_restore_continues_with_the_progress_of_rows_that_only_moved_progress() -> None:
    expected = _run(_operator({}), ROWS)
    assert [bool(emitted) for emitted in expected] == [False, False, False, True, False, True]
    assert (0, "examples", 3.0) in expected[3] and (1_000, "examples_total", 5.0) in expected[5]

    for cut in range(1, len(ROWS)):
        store: dict = {}
        before = _run(_operator(store), ROWS[:cut])
        after = _run(_operator(dict(store)), ROWS[cut:])  # a new operator over the checkpointed state
        assert before + after == expected, f"restored after row {cut}"


def test_rows_that_only_move_progress_leave_the_aggregator_unwritten() -> None:
    store: dict = {}
    operator = _operator(store)
    _run(operator, ROWS[:2])
    aggregator = store["aggregator"]
    assert _run(operator, ROWS[2:3]) == [[]]  # progress only, nothing closes
    assert store["aggregator"] is aggregator
    assert _run(operator, ROWS[3:4])[0]  # the interval closes: the aggregator changed
    assert store["aggregator"] is not aggregator
