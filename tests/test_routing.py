"""Routing keys: one per subtask, the same subtask for the learner's key_by and the batcher's JVM keyBy."""

from __future__ import annotations

import zlib
from collections import Counter

import orjson
import pytest
from pyflink.java_gateway import get_gateway
from samples import SAMPLES

from job.config import JobConfig
from job.routing import BUCKETS_PER_SHARD, max_parallelism, routing_keys, user_routes, user_shares
from udfs.item_loop import FanOutItemParams, loop_messages
from udfs.join_learn import check_routes
from udfs.parse import shard_of
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


SHARD_NAMES = ["shard-0", "shard-7", "shard-3"]


@pytest.mark.parametrize(("parallelism", "lane_load"), [(1, 0.0), (1, 0.5), (2, 0.0), (2, 0.15), (3, 0.15), (4, 0.4)])
def test_user_shares_give_the_lanes_slot_as_much_work_as_every_other(parallelism: int, lane_load: float) -> None:
    shares = user_shares(parallelism, lane_load)
    assert len(shares) == parallelism and sum(shares) == pytest.approx(1.0) and min(shares) >= 0
    # work per slot, in units of all learners' work: subtask 0 carries the lane besides its users
    work = [shares[0] + lane_load] + shares[1:] if parallelism > 1 else shares
    if shares[0] > 0:
        assert max(work) == pytest.approx(min(work))
    else:  # a lane heavier than a slot's share: its subtask gets no users, the rest share them evenly
        assert len(set(shares[1:])) == 1 and work[0] >= max(work[1:])


@pytest.mark.parametrize(("parallelism", "lane_load"), [(0, 0.0), (2, -0.1), (2, 1.0)])
def test_a_parallelism_or_lane_load_out_of_range_is_refused(parallelism: int, lane_load: float) -> None:
    with pytest.raises(ValueError, match=r"--parallelism\) must be at least 1|--lane-load\) must be at least 0"):
        JobConfig(parallelism=parallelism, lane_load=lane_load)


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_even_shares_route_users_as_crc32_modulo_the_shards(parallelism: int) -> None:
    shards = SHARD_NAMES[:parallelism]
    assert user_routes(shards, 0.0) == shards  # the routing of state written before routing tables
    users = [f"user-{i}" for i in range(2000)]
    assert [shard_of(u, user_routes(shards, 0.0)) for u in users] == [
        shards[zlib.crc32(u.encode()) % parallelism] for u in users]


@pytest.mark.parametrize(("parallelism", "lane_load"), [(2, 0.15), (3, 0.15), (3, 0.5)])
def test_a_weighted_table_routes_each_shard_its_share_moving_as_few_buckets_as_it_must(
        parallelism: int, lane_load: float) -> None:
    shards = SHARD_NAMES[:parallelism]
    routes = user_routes(shards, lane_load)
    buckets = parallelism * BUCKETS_PER_SHARD
    assert len(routes) == buckets
    shares = user_shares(parallelism, lane_load)
    counts = Counter(routes)
    assert all(abs(counts[shard] - share * buckets) <= 1 for shard, share in zip(shards, shares, strict=True))
    moved = sum(route != shards[bucket % parallelism] for bucket, route in enumerate(routes))
    assert moved == sum(max(0, BUCKETS_PER_SHARD - counts[shard]) for shard in shards)
    # users follow the table: many users split about as the shares say
    users = Counter(shard_of(f"user-{i}", routes) for i in range(60_000))
    for shard, share in zip(shards, shares, strict=True):
        assert users[shard] / 60_000 == pytest.approx(share, abs=0.01)


def test_state_is_refused_under_another_routing_table() -> None:
    even, weighted = user_routes(SHARD_NAMES[:2], 0.0), user_routes(SHARD_NAMES[:2], 0.15)
    meta: dict = {}
    check_routes(meta, weighted, restored=False)  # a new job records its table
    check_routes(meta, weighted, restored=True)  # and resumes under the same one
    with pytest.raises(ValueError, match="--parallelism and --lane-load it was taken with"):
        check_routes(meta, even, restored=True)
    with pytest.raises(ValueError, match="routes users by another table"):
        check_routes(dict(meta), SHARD_NAMES[:3], restored=True)  # another parallelism
    # state from before tables were recorded was routed by crc32 % n: the even table resumes it, no other
    old: dict = {"version": 3}
    check_routes(old, even, restored=True)
    assert old["user_routes"] == meta_of(even)
    with pytest.raises(ValueError, match="--lane-load 0"):
        check_routes({"version": 3}, weighted, restored=True)


def meta_of(routes: list[str]) -> str:
    meta: dict = {}
    check_routes(meta, routes, restored=False)
    return meta["user_routes"]
