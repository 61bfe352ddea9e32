"""Addressing learner subtasks: one routing key per subtask, found with Flink's own key-group assignment.

The learner is keyed by shard, and there is exactly one shard per learner subtask: a shard's key is a
string that Flink's hash partitioning sends to that subtask. One key per subtask lets the learner keep
every user, item and join entry of its subtask under one key's map states, and lets the Kafka item
loop address every replica through the learner's one keyed input.
"""

from __future__ import annotations

from job.flink_env import flink_settings


def max_parallelism() -> int:
    """`pipeline.max-parallelism` of flink-conf/config.yaml (the routing keys depend on it)."""
    return int(flink_settings()["pipeline.max-parallelism"])


def routing_keys(parallelism: int) -> list[str]:
    """Key i is one that Flink sends to subtask i both as PyFlink's `key_by` keys it (by Row(key)) and
    as the JVM `keyBy` of job.batching keys it (by the bare string), so that the batching stages
    before the learner are balanced the same way (needs the JVM gateway)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    limit = max_parallelism()
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < parallelism:
        key = f"shard-{candidate}"
        row_key = jvm.org.apache.flink.types.Row(1)
        row_key.setField(0, key)
        index = assign(row_key, limit, parallelism)
        if assign(key, limit, parallelism) == index:
            keys.setdefault(index, key)
        candidate += 1
    return [keys[index] for index in range(parallelism)]
