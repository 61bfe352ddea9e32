"""Addressing learner subtasks: one routing key per subtask, found with Flink's own key-group assignment.

The learner is keyed by shard, and there is exactly one shard per learner subtask: a shard's key is a
string that Flink's hash partitioning sends to that subtask. One key per subtask lets the learner keep
every user, item and join entry of its subtask under one key's map states, and lets the Kafka item
loop address every replica through the learner's one keyed input.
"""

from __future__ import annotations

from job.flink_env import flink_settings

# Routing buckets per shard: a user's bucket is crc32(user_id) % (parallelism * this) (udfs.parse.shard_of),
# fine enough to weight shards by half a percent of the users.
BUCKETS_PER_SHARD = 100


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


def user_shares(parallelism: int, lane_load: float) -> list[float]:
    """Each learner subtask's share of the users. Subtask 0 shares its TaskManager slot with the job's
    one-lane stages (job.batching.message_batches: the raw records' batching and parse, and the metrics
    merger), which do `lane_load` as much work as all learners together; it takes that much fewer users,
    so that every slot has the same work. A share cannot go below 0."""
    if parallelism < 1:
        raise ValueError(f"parallelism (--parallelism) must be at least 1, not {parallelism}")
    if not 0.0 <= lane_load < 1.0:
        raise ValueError(f"lane_load (--lane-load) must be at least 0 and below 1, not {lane_load}")
    if parallelism == 1:
        return [1.0]
    first = max(0.0, (1.0 - (parallelism - 1) * lane_load) / parallelism)
    return [first] + [(1.0 - first) / (parallelism - 1)] * (parallelism - 1)


def user_routes(shards: list[str], lane_load: float) -> list[str]:
    """The routing table of users (udfs.parse.shard_of): the shard of each bucket, each shard taking
    its `user_shares` of the buckets. Bucket b goes to shard b % n wherever that shard's quota allows,
    so equal shares give exactly the plain crc32 % n (the routing before tables; a table of n buckets),
    and unequal ones move as few buckets as they must."""
    n = len(shards)
    if n == 1:
        return list(shards)
    buckets = n * BUCKETS_PER_SHARD
    exact = [share * buckets for share in user_shares(n, lane_load)]
    quota = [int(x) for x in exact]
    for index in sorted(range(n), key=lambda i: exact[i] - quota[i], reverse=True)[:buckets - sum(quota)]:
        quota[index] += 1  # largest remainders first
    table: list[int | None] = []
    for bucket in range(buckets):
        index = bucket % n
        table.append(index if quota[index] > 0 else None)
        quota[index] -= quota[index] > 0
    spare = iter([index for index in range(n) for _ in range(quota[index])])
    table = [next(spare) if index is None else index for index in table]
    if table == list(range(n)) * BUCKETS_PER_SHARD:
        return list(shards)
    return [shards[index] for index in table]
