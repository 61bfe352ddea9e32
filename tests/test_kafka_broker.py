"""A real KRaft broker (infra.kafka_broker) carrying wire-encoded records (udfs.wire)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from clients.admin import create_topics
from udfs.wire import WireDecoder, encode


def unique(name: str) -> str:
    """Topic/group names unique per test run, so a shared broker (FRESHRANK_KAFKA_BOOTSTRAP) is fine."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0, **config: str) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("test"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            messages.append(message)
    finally:
        consumer.close()
    return messages


def clicks(n: int) -> list[dict]:
    return [
        {"impression_id": f"imp-{i}", "user_id": f"u-{i % 3}", "item_id": f"it-{i}", "event_time": 1_000 * i}
        for i in range(n)
    ]


def test_wire_records_through_a_real_topic(kafka_broker: str) -> None:
    topic = unique("clicks")
    create_topics(kafka_broker, {topic: 2})
    records = clicks(10)

    producer = Producer({"bootstrap.servers": kafka_broker, "enable.idempotence": True})
    for record in records:
        producer.produce(topic, key=record["impression_id"].encode(), value=encode("Click", record))
    assert producer.flush(30) == 0

    messages = consume(kafka_broker, topic, len(records))
    decoder = WireDecoder("Click")
    received = sorted((decoder.decode(m.value()) for m in messages), key=lambda r: r["event_time"])
    assert received == records
    assert {m.partition() for m in messages} <= {0, 1}
    assert all(m.key().decode() == decoder.decode(m.value())["impression_id"] for m in messages)


def test_create_topics_compacted_and_idempotent(kafka_broker: str) -> None:
    items, events = unique("items"), unique("events")
    create_topics(kafka_broker, {items: 1, events: 3}, compacted={items})
    create_topics(kafka_broker, {items: 1, events: 3}, compacted={items})  # again: no error

    admin = AdminClient({"bootstrap.servers": kafka_broker})
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[items].partitions) == 1
    assert len(metadata.topics[events].partitions) == 3
    futures = admin.describe_configs([ConfigResource("topic", items), ConfigResource("topic", events)])
    policies = {resource.name: f.result(10)["cleanup.policy"].value for resource, f in futures.items()}
    assert policies == {items: "compact", events: "delete"}

    with pytest.raises(ValueError, match="partitions"):
        create_topics(kafka_broker, {events: 5})


def test_create_topics_rejects_compacted_outside_names() -> None:
    with pytest.raises(ValueError, match="not in names"):
        create_topics("127.0.0.1:1", {"a": 1}, compacted={"b"})


def test_transactions_with_flinks_default_timeout(kafka_broker: str) -> None:
    """Flink's exactly-once sink: 1 h transactions, read_committed readers see only committed ones."""
    topic = unique("labeled")
    create_topics(kafka_broker, {topic: 1})
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker,
            "transactional.id": unique("txn"),
            "transaction.timeout.ms": 3_600_000,
        }
    )
    producer.init_transactions(30)
    committed, aborted = clicks(3), clicks(6)[3:]
    producer.begin_transaction()
    for record in aborted:
        producer.produce(topic, value=encode("Click", record))
    producer.abort_transaction(30)
    producer.begin_transaction()
    for record in committed:
        producer.produce(topic, value=encode("Click", record))
    producer.commit_transaction(30)

    messages = consume(
        kafka_broker, topic, len(committed), timeout_s=15, **{"isolation.level": "read_committed"}
    )
    more = consume(kafka_broker, topic, 100, timeout_s=2, **{"isolation.level": "read_committed"})

    decoder = WireDecoder("Click")
    assert [decoder.decode(m.value()) for m in messages] == committed
    assert len(more) == len(committed)


@pytest.mark.kafka
def test_command_line_start_status_stop(tmp_path: Path) -> None:
    """`python -m infra.kafka_broker` runs a broker in the background and finds it by its pid file."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "infra.kafka_broker", *args, "--data-dir", str(tmp_path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=180)

    started = cli("start", "--port", "0")
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()
        assert bootstrap.startswith("127.0.0.1:")
        assert (tmp_path / "broker.pid").is_file()
        assert cli("start", "--port", "0").stdout.strip() == bootstrap  # already running: same broker
        status = cli("status")
        assert status.returncode == 0 and status.stdout.strip() == bootstrap
        create_topics(bootstrap, {"cli-topic": 1})
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "broker.pid").exists()
    assert cli("status").returncode == 1
