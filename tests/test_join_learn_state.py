"""The learner operator's state descriptors: users and items expire, and their TTL config can be built
where a TaskManager builds it (an embedded interpreter without a Py4J gateway)."""

from __future__ import annotations

import pyflink.common.time as pyflink_time
from pyflink.common import Types
from pyflink.datastream.state import MapStateDescriptor

from udfs.join_learn import JoinAndLearn
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_math import LearnerConfig


def operator(state_ttl_ms: int) -> JoinAndLearn:
    return JoinAndLearn(ImpressionClickJoin(60_000, 600_000), LearnerConfig(dim=8), 1_000, 60_000, {}, None,
                        state_ttl_ms=state_ttl_ms)


def test_users_and_items_expire_after_the_state_ttl(monkeypatch):
    def no_gateway():
        raise AssertionError("the TTL config asked for the Py4J gateway, which a TaskManager does not have")

    monkeypatch.setattr(pyflink_time, "get_gateway", no_gateway)
    descriptor = operator(86_400_000)._expiring(MapStateDescriptor("users", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
    ttl = descriptor._ttl_config
    assert ttl is not None and ttl.get_ttl().to_milliseconds() == 86_400_000
    strategies = ttl.get_cleanup_strategies()
    assert strategies.get_rocksdb_compact_filter_cleanup_strategy().get_query_time_after_num_entries() == 1000
    assert strategies.get_incremental_cleanup_strategy() is not None


def test_a_zero_ttl_keeps_state_for_ever():
    descriptor = operator(0)._expiring(MapStateDescriptor("items", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
    assert descriptor._ttl_config is None
