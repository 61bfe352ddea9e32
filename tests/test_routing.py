"""Routing keys: one per subtask, the same subtask for the learner's key_by and the batcher's JVM keyBy."""

from __future__ import annotations

import pytest
from pyflink.java_gateway import get_gateway

from job.routing import max_parallelism, routing_keys


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
