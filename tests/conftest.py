"""Shared pytest fixtures, and the test tiers: marks derived from the fixtures a test uses."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

# Tests that reach the JVM gateway directly (routing keys, state descriptors) must not make PyFlink
# start its gRPC worker pool on every interface either: the switch job.flink_env sets for local runs.
os.environ.setdefault("_python_worker_execution_mode", "process")

# Fixture -> the marks of every test that uses it (directly or through another fixture).
FIXTURE_MARKS = {
    "kafka_broker": ("kafka",),
    "shared_cluster": ("flink", "slow"),
    "flink_cluster": ("flink", "slow"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for mark in FIXTURE_MARKS.get(fixture, ()):
                item.add_marker(mark)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """Bootstrap servers of ONE real Kafka broker for the whole session.

    `FRESHRANK_KAFKA_BOOTSTRAP=host:port` uses a broker that is already running (e.g. started by
    `python -m infra.kafka_broker start`); otherwise a KRaft broker is started on a free port in a
    temporary folder (jars fetched by job.jars on first use) and stopped after the session.
    """
    bootstrap = os.environ.get("FRESHRANK_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    from infra.kafka_broker import KafkaBroker

    started = time.monotonic()
    broker = KafkaBroker(port=0).start(timeout_s=120)
    print(f"\nkafka broker {broker.bootstrap_servers} up in {time.monotonic() - started:.1f}s")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()
