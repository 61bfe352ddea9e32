"""Kafka administration any client needs: an admin client with the deployment's properties, a quick
check that a broker answers, and topic creation that returns once every partition has a leader."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping


class TopicsNotReady(RuntimeError):
    """Created topics did not get partition leaders in time."""


def admin_client(bootstrap: str, kafka_properties: Mapping[str, str] | None = None, log_level: int = 3):
    """An admin client; `kafka_properties` (clients.kafka_properties: security, SASL, TLS) for other brokers
    than ours, whose only listener is PLAINTEXT on loopback."""
    from confluent_kafka.admin import AdminClient

    from clients.kafka_properties import client_config

    # log_level 3: no librdkafka info lines (e.g. "Disconnected" when the broker stops) on stderr.
    return AdminClient(
        client_config(bootstrap, kafka_properties,
                      **{"socket.connection.setup.timeout.ms": 2000, "log_level": log_level})
    )


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at the bootstrap address."""


PROBE_TIMEOUT_S = 5.0


def require_broker(bootstrap: str, kafka_properties: Mapping[str, str] | None = None,
                   timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Return once a broker at `bootstrap` answers a metadata request; else `BrokerUnreachable` after
    `timeout_s`, saying so plainly (clients would otherwise retry for a minute and fail with
    librdkafka's own words, or a Flink job would wait for ever)."""
    from confluent_kafka import KafkaException

    try:
        # log_level 0: the failure is reported once, below, not as librdkafka's retry lines
        metadata = admin_client(bootstrap, kafka_properties, log_level=0).list_topics(timeout=timeout_s)
    except KafkaException as error:
        raise BrokerUnreachable(
            f"no Kafka broker answers at {bootstrap} within {timeout_s:g} s ({error.args[0].str()}); "
            "is it running (`freshrank kafka start`), and are --bootstrap and the Kafka properties right?"
        ) from None
    if not metadata.brokers:
        raise BrokerUnreachable(f"the Kafka cluster at {bootstrap} lists no brokers")


def create_topics(
    bootstrap: str,
    names: Mapping[str, int],
    compacted: Iterable[str] = frozenset(),
    *,
    config: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
    kafka_properties: Mapping[str, str] | None = None,
) -> None:
    """Create topics `{name: partitions}` (replication 1); those in `compacted` get cleanup.policy=compact.

    Idempotent: an existing topic with the same partition count is left alone (a different count is
    an error: a stale topic from an earlier run). Returns once every partition has a leader, so a
    producer can write straight away.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    compacted = set(compacted)
    unknown = compacted - set(names)
    if unknown:
        raise ValueError(f"compacted topics not in names: {sorted(unknown)}")
    admin = admin_client(bootstrap, kafka_properties)
    new_topics = []
    for name, partitions in names.items():
        topic_config = {"cleanup.policy": "compact"} if name in compacted else {}
        topic_config.update(config or {})
        new_topics.append(
            NewTopic(name, num_partitions=partitions, replication_factor=1, config=topic_config)
        )
    if not new_topics:
        return
    futures = admin.create_topics(new_topics, request_timeout=timeout_s, operation_timeout=timeout_s)
    for future in futures.values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
        pending = []
        for name, partitions in names.items():
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                pending.append(name)
                continue
            if len(topic.partitions) != partitions:
                raise ValueError(
                    f"topic {name} exists with {len(topic.partitions)} partitions, not {partitions}"
                )
            if any(p.leader < 0 or p.error is not None for p in topic.partitions.values()):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicsNotReady(f"topics have no leader after {timeout_s}s: {pending}")
        time.sleep(0.1)
