"""Routing keys: one per subtask, the same subtask for the learner's key_by and the batcher's JVM keyBy."""

from __future__ import annotations

import orjson
import pytest
from pyflink.java_gateway import get_gateway
from samples import SAMPLES

from job.routing import max_parallelism, routing_keys
from udfs.item_loop import FanOutItemParams, loop_messages
from udfs.records import NO_WATERMARK


@pytest.mark.parametrize("parallelism", [1, 2, 3, 5])
def test_key_i_goes_to_subtask_i_under_both_keyings(parallelism: int) -> None:
    jvm = get_gateway().jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    keys = routing_keys(parallelism)
    assert len(set(keys)) == parallelism
    for index, key in enumerate(keys):
        row_key = jvm.org.apache.flink.types.Row(1)
        row_key.setField(0, key)
        assert assign(row_key, max_parallelism(), parallelism) == index  # PyFlink key_by: Row(key)
        assert assign(key, max_parallelism(), parallelism) == index  # job.batching's JVM keyBy


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_the_item_loop_sends_a_message_to_every_replica_but_its_own(parallelism: int) -> None:
    shards = routing_keys(parallelism)
    fan_out = FanOutItemParams(shards)
    for replica in range(parallelism):
        record = dict(SAMPLES["ModelSnapshot"], replica=replica)
        [message] = loop_messages([record], replica)
        rows = list(fan_out(message))
        assert [row[0] for row in rows] == [shard for index, shard in enumerate(shards) if index != replica]
        assert all(row[1] == NO_WATERMARK and orjson.loads(row[2])[1] == record for row in rows)
