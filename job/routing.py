"""Addressing subtasks: one key per subtask, found with Flink's own key-group assignment.

The learner is keyed by shard, and there is exactly one shard per learner subtask: a shard's key is a
string that Flink's hash partitioning sends to that subtask. One key per subtask lets the learner keep
every user, item and join entry of its subtask under one key's map states, and lets the Kafka item
loop address every replica through the learner's one keyed input. The Kafka sources' batching lanes
(job.lanes) are addressed the same way, through a JVM keyBy and then SQL's own hash exchanges.
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
    jvm = _jvm()

    def as_row(key: str):
        row_key = jvm.org.apache.flink.types.Row(1)
        row_key.setField(0, key)
        return row_key

    return _keys_by_subtask("shard-", parallelism, (as_row, lambda key: key))


def lane_keys(lanes: int) -> list[str]:
    """Key i is one that Flink sends to subtask i both as the JVM `keyBy` of job.batching keys it (by
    the bare string) and as a SQL stage's hash exchange on that one STRING column keys it (by a
    BinaryRowData of it), so that every stage of a batching lane runs in the subtask of its number."""
    jvm = _jvm()

    def as_sql_key(key: str):
        row = jvm.org.apache.flink.table.data.binary.BinaryRowData(1)
        writer = jvm.org.apache.flink.table.data.writer.BinaryRowWriter(row)
        writer.writeString(0, jvm.org.apache.flink.table.data.binary.BinaryStringData.fromString(key))
        writer.complete()
        return row

    return _keys_by_subtask("lane-", lanes, (lambda key: key, as_sql_key))


def _jvm():
    from pyflink.java_gateway import get_gateway

    return get_gateway().jvm


def _keys_by_subtask(prefix: str, parallelism: int, keyings) -> list[str]:
    """For each subtask, the first key `prefix`N that every one of `keyings` (key -> the JVM object
    Flink hashes) assigns to that subtask."""
    assign = _jvm().org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    limit = max_parallelism()
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < parallelism:
        key = f"{prefix}{candidate}"
        indexes = {assign(keying(key), limit, parallelism) for keying in keyings}
        if len(indexes) == 1:
            keys.setdefault(indexes.pop(), key)
        candidate += 1
    return [keys[index] for index in range(parallelism)]
