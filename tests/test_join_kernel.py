"""The compiled join (udfs.join_kernel, run by udfs.batch_learner) against the per-event Python join
(udfs.join_logic hosted by tests/join_simulator.py, exact timers): the same examples, join events and
learning steps, in the same order, whatever the batches."""

from __future__ import annotations

import random

import numpy as np
import pytest
from join_simulator import EXAMPLE, JoinSimulator

from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner
from udfs.join_kernel import C_OPS, EV_IMPRESSION, S_LIVE, JoinColumns
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_kernel import OP_LEARN_FN, OP_QUERY_HINT
from udfs.learner_math import LearnerConfig
from udfs.memory_state import memory_state
from udfs.records import IMPRESSION, click_event, impression_event

WINDOW_MS, RETENTION_MS, DISORDER_MS = 1_000, 3_000, 400


def stream(seed: int, n: int = 4000) -> list[list]:
    """Impressions and clicks over a small pool of ids (duplicates, early, late and orphan clicks, ids
    back after their retention), every event time distinct so no two timers tie."""
    rng = random.Random(seed)
    times = rng.sample(range(5_000_000, 5_000_000 + 150 * n), n)
    times.sort()
    events = []
    for t in times:
        at = t - rng.randint(0, DISORDER_MS - 1)  # arrival order is `times`, event time up to the bound back
        impression_id = f"imp{rng.randrange(60)}"
        if rng.random() < 0.6:
            events.append(impression_event({"impression_id": impression_id, "request_id": "r", "user_id": "u",
                                            "item_id": impression_id, "position": 1, "event_time": at}))
        else:
            events.append(click_event({"impression_id": impression_id, "user_id": "u", "item_id": impression_id,
                                       "event_time": at}))
    seen: set[int] = set()
    distinct = []
    for event in events:  # drop the rare event whose time collides with another's
        if event[-1] not in seen:
            seen.add(event[-1])
            distinct.append(event)
    return distinct


def expected(events: list[list]) -> tuple[list, list, list]:
    """Examples, join events and impression-mode learning steps of the per-event join, in order."""
    simulator = JoinSimulator(WINDOW_MS, RETENTION_MS, DISORDER_MS)
    steps = []
    for event in events:
        is_impression = event[0] == IMPRESSION
        out = (simulator.impression if is_impression else simulator.click)(tuple(event[1:]))
        # What the call itself emitted comes before the emissions of the watermark advance after it.
        own = [e for e in out if e[0] == "duplicate_impression"] if is_impression else []
        if is_impression and not own:
            steps.append((event[1], 0))  # a kept impression is learned as a negative when it arrives
        steps += [(e[1], 1) for e in out if e[0] == EXAMPLE and e[2] == 1]
    simulator.finish()
    emissions = simulator.emissions
    examples = [(e[1], e[2], e[3]) for e in emissions if e[0] == EXAMPLE]
    join_events = [e for e in emissions if e[0] != EXAMPLE]
    return examples, join_events, steps


def joined(events: list[list], seed: int, config: LearnerConfig) -> tuple[list, list, list]:
    rows, newest = [], None
    for event in events:
        rows.append([-(2**63) + 1 if newest is None else newest - DISORDER_MS - 1, event])
        newest = event[-1] if newest is None else max(newest, event[-1])
    rng = random.Random(seed)
    state = memory_state()
    learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, state)
    examples, orphans_and_late, steps, position = [], [], [], 0
    while True:
        ran: list[np.ndarray] = []
        run_ops = learner.model.run
        learner.model.run = lambda ops, *args, ran=ran, run_ops=run_ops: ran.append(ops.copy()) or run_ops(ops, *args)
        size = rng.randint(1, 300)
        out = (learner.process_batch(rows[position:position + size], now_ms=0) if position < len(rows)
               else learner.advance_to(END_OF_INPUT))
        items = {row: item for item, row in learner.model.item_rows.items()}
        steps += [(items[op[2]], int(op[4])) for ops in ran for op in ops if op[0] == OP_LEARN_FN]
        assert not any(op[0] == OP_QUERY_HINT for ops in ran for op in ops)
        examples += [(e["impression_id"], e["label"], e["click_time"]) for e in out.examples]
        orphans_and_late += [(c["impression_id"], c["event_time"]) for c in out.late_clicks + out.orphan_clicks]
        if position >= len(rows):
            return examples, orphans_and_late, steps
        position += size
        if rng.random() < 0.2:  # restored from state, as after a failure
            learner = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, state)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_compiled_join_decides_and_learns_in_the_order_of_the_per_event_join(seed):
    events = stream(seed)
    want_examples, want_events, want_steps = expected(events)
    kinds = {kind for kind, *_ in want_events}
    assert kinds == {"duplicate_impression", "duplicate_click", "early_click", "late_click", "orphan_click"}
    got_examples, got_clicks, got_steps = joined(events, seed, LearnerConfig())
    assert got_examples == want_examples
    # Late and orphan clicks come out per call, late ones first: compare them within each kind.
    for kind in ("late_click", "orphan_click"):
        want = [(e[1], e[2]) for e in want_events if e[0] == kind]
        assert [c for c in got_clicks if c in set(want)] == [c for c in want if c in set(got_clicks)]
    assert sorted(got_clicks) == sorted((e[1], e[2]) for e in want_events if e[0] in ("late_click", "orphan_click"))
    assert got_steps == want_steps


def test_decided_mode_gives_the_same_examples_in_the_same_order():
    events = stream(4)
    want_examples, _, _ = expected(events)
    got_examples, _, _ = joined(events, 4, LearnerConfig(learning_mode="decided"))
    assert got_examples == want_examples


def test_the_kernel_refuses_events_it_could_not_index():
    """The native call cannot raise and must never index outside its arrays: bad events stop before it."""
    columns = JoinColumns(WINDOW_MS, RETENTION_MS, 60_000, impression_mode=True)
    slot = columns.new_slot()
    for bad in ([EV_IMPRESSION, slot + 1, 5, 0], [EV_IMPRESSION, -1, 5, 0], [7, slot, 5, 0]):
        with pytest.raises(ValueError):
            columns.run(np.array([bad]))
    assert columns.scalars[C_OPS] == 0
    columns.run(np.array([[EV_IMPRESSION, slot, 5, 0]]))
    assert columns.scalars[C_OPS] == 1 and columns.slots[slot, S_LIVE] == 1
