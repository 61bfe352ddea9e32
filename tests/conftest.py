"""Shared pytest fixtures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """Bootstrap servers of ONE real Kafka broker for the whole session.

    `FRESHRANK_KAFKA_BOOTSTRAP=host:port` uses a broker that is already running (e.g. started by
    `python -m job.kafka_broker start`); otherwise a KRaft broker is started on a free port in a
    temporary folder (jars fetched by job.jars on first use) and stopped after the session.
    """
    bootstrap = os.environ.get("FRESHRANK_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    from job.kafka_broker import KafkaBroker

    started = time.monotonic()
    broker = KafkaBroker(port=0).start(timeout_s=120)
    print(f"\nkafka broker {broker.bootstrap_servers} up in {time.monotonic() - started:.1f}s")
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()
