"""The Kafka loop between learner replicas (udfs.item_loop): messages of item-side records, fanned out
to every other replica, merged there; without a broker (the cluster test runs it through Kafka)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from dict_state import new_state

from job.routing import routing_keys
from tools.generate import GeneratorConfig, generate
from udfs.batch_learner import BatchJoinLearner
from udfs.item_loop import FanOutItemParams, loop_messages, message_parts
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_math import LearnerConfig
from udfs.model_store import ITEM, USER
from udfs.records import ITEM_PARAMS, NO_WATERMARK, click_event, impression_event

CONFIG = LearnerConfig(dim=8)
WINDOW_MS, RETENTION_MS = 60_000, 600_000


def _rows(seed: int) -> list:
    stream = generate(GeneratorConfig(n_impressions=1500, n_users=60, n_items=40, seed=seed, window_s=60.0))
    events = sorted([impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks],
                    key=lambda e: e[-1])
    return [[events[0][-1] - 1, event] for event in events]


def _learner(replica: int) -> BatchJoinLearner:
    return BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, replica, new_state())


def _events(row) -> list:
    """A batch row's events as the learner operator reads them (udfs.join_learn)."""
    return [(row[1], event) for event in orjson.loads(b"[" + row[2] + b"]")]


def test_a_replicas_item_side_parameters_reach_the_other_replica_exactly() -> None:
    shards = routing_keys(2)
    publisher, receiver = _learner(0), _learner(1)
    publisher.process_batch(_rows(1), now_ms=1_000)
    receiver.process_batch(_rows(2), now_ms=1_000)
    receiver.snapshot(now_ms=1_500)
    records = publisher.snapshot(now_ms=2_000)
    assert {r["entity_type"] for r in records} >= {USER, ITEM}
    published = {r["entity_id"]: r for r in records if r["entity_type"] == ITEM}
    before = {item_id: receiver.model.items[receiver.model.item_rows[item_id]].copy()
              for item_id in published if item_id in receiver.model.item_rows}
    assert before, "the two streams should share items"

    rows = [row for message in loop_messages(records, replica=0) for row in FanOutItemParams(shards)(message)]
    assert rows and {row[0] for row in rows} == {shards[1]}  # only to the other replica
    assert all(row[1] == NO_WATERMARK for row in rows)
    for row in rows:
        receiver.process_batch(_events(row), now_ms=2_100)

    dim = CONFIG.dim
    for item_id, old in before.items():
        merged = receiver.model.items[receiver.model.item_rows[item_id]]
        # float64 on the loop (not the snapshot topic's float32): the average is exact
        np.testing.assert_array_equal(merged[:dim], (old[:dim] + published[item_id]["vector"]) / 2)
        np.testing.assert_array_equal(merged[dim:2 * dim], np.maximum(old[dim:2 * dim],
                                                                      published[item_id]["vector_accum"]))
    assert receiver.snapshot(now_ms=3_000) == []  # merged, not learned: nothing to publish again


def test_messages_hold_every_item_side_record_once_in_order_and_no_user() -> None:
    learner = _learner(1)
    learner.process_batch(_rows(3), now_ms=1_000)
    records = learner.snapshot(now_ms=2_000)
    item_side = [r for r in records if r["entity_type"] != USER]
    assert len(item_side) < len(records)
    whole = loop_messages(records, replica=1)
    small = loop_messages(records, replica=1, max_bytes=2_000)
    assert len(whole) == 1 and len(small) > 3
    for messages in (whole, small):
        carried = []
        for message in messages:
            replica, events = message_parts(message)
            assert replica == 1
            carried += orjson.loads(b"[" + events + b"]")
        assert [kind for kind, _ in carried] == [ITEM_PARAMS] * len(item_side)
        assert [(r["entity_type"], r["entity_id"]) for _, r in carried] == [
            (r["entity_type"], r["entity_id"]) for r in item_side]
    # a message grows past the limit only by a record that would not fit in any
    assert all(len(m) <= 2_000 + len(b"1,") or m.count(b"],[") == 0 for m in small)
    assert loop_messages([r for r in records if r["entity_type"] == USER], replica=1) == []


# Starting like a loop message is not enough: anything a learner could not take as item-side events
# must stop at the fan-out, or the learner's call fails and the job restarts onto the same message.
_LIKE_A_LOOP_MESSAGE = [b"1,[2,{}", b"1,[2,{}],[2,", b"1,[2]", b"1,[2,{}],7", b"1,[2,{},3]",
                        b'1,[0,"i1",1000]', b'1,[2,{}],[1,"i1",1000]', b"1,[\xff]"]


@pytest.mark.parametrize("message", [b"", None, b"x,[2,{}]", b"1", b"1,{}", b"\x00\x00\x00\x00\x01abc",
                                     *_LIKE_A_LOOP_MESSAGE])
def test_bytes_that_are_not_a_loop_message_are_skipped(message, caplog) -> None:
    assert message_parts(message) is None
    fan_out = FanOutItemParams(routing_keys(3))
    with caplog.at_level("WARNING"):
        assert list(fan_out(message)) == []
    assert fan_out.skipped == 1 and "not a loop message" in caplog.text
