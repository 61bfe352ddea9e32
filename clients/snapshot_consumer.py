"""The serving side: follow the model-snapshot topic and rank with the newest model.

Every serving replica needs the whole model, so the consumer is *assigned* every partition of the
topic from the beginning (no consumer-group split, no committed offsets) and reads with
`isolation.level=read_committed`: snapshot records of a Flink checkpoint that was aborted are never
seen. Records go into a `ModelStore`, which keeps the highest version per entity whatever the order.

    consumer = SnapshotConsumer("localhost:9092")
    consumer.catch_up(60)            # the model as of now
    while serving:
        consumer.poll(0.1)           # apply what arrived since
        consumer.rank(user_id, candidate_item_ids, k=10)

Thread safety: the store is guarded by a lock, so one thread may `poll` while others `rank`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from udfs.model_store import USER, ModelStore
from udfs.text_features import TextFeatures
from udfs.wire import WireDecoder, WireError

log = logging.getLogger(__name__)

_BATCH = 1000  # messages per consume() call
# Consumer errors that mean the topic cannot be read at all (others are logged and retried by the client).
_FATAL_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)


class SnapshotConsumer:
    """A `ModelStore` kept up to date from the compacted model-snapshot topic.

    `text`: the catalog's titles and the text encoder the job uses (udfs.text_features), so searches
    are ranked with their query and items the model never learned from their titles.
    `on_applied(record, applied_at_ms)`: called (in the polling thread, the lock held) with every record
    that changed the store, e.g. to follow each version of an entity: a poll can apply several versions
    of one entity at once (a checkpoint commits every snapshot made since the one before), and the
    store keeps only the newest.
    `group_id` only names the client (nothing is committed); `conf` is passed to confluent_kafka.Consumer
    over this class's settings, as `**{"fetch.max.bytes": ...}`.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "model-snapshots",
        group_id: str | None = None,
        *,
        metadata_timeout_s: float = 30.0,
        text: TextFeatures | None = None,
        on_applied: Callable[[dict[str, Any], int], None] | None = None,
        **conf: Any,
    ) -> None:
        self.topic = topic
        self.on_applied = on_applied
        self.store = ModelStore(text)
        self.decoder = WireDecoder("ModelSnapshot")
        self.records_read = 0  # decoded snapshot records, including stale ones
        self.stale = 0  # decoded records older than (or as old as) what the store held
        self.undecodable = 0  # messages that were not ModelSnapshot records: skipped
        self.tombstones = 0  # null values (deletes on the compacted topic): skipped
        self.last_error: str | None = None  # reason of the last undecodable message
        self._lock = threading.RLock()
        self._user_seen_at: dict[str, int] = {}  # user_id -> wall ms when its newest record was applied
        self._next: dict[int, int] = {}  # partition -> next offset to read (consumed or reached end)
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id or f"freshrank-serving-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            **conf,
        }
        self._consumer = Consumer(config)
        try:
            metadata = self._consumer.list_topics(topic, timeout=metadata_timeout_s)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                error = described.error if described is not None else "not in metadata"
                raise ValueError(f"snapshot topic {topic!r} is not available: {error}")
            self.partitions = sorted(described.partitions)
            self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in self.partitions])
        except BaseException:
            self._consumer.close()
            raise
        self._closed = False

    # --- consuming -------------------------------------------------------------------------------

    def _handle(self, message: Any) -> bool:
        """Apply one message; True if it changed the store."""
        partition = message.partition()
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._next[partition] = max(self._next.get(partition, 0), message.offset())
                return False
            if error.fatal() or error.code() in _FATAL_CODES:
                raise KafkaException(error)
            log.warning("snapshot consumer: %s", error.str())
            return False
        self._next[partition] = max(self._next.get(partition, 0), message.offset() + 1)
        value = message.value()
        if value is None:
            self.tombstones += 1
            return False
        try:
            record = self.decoder.decode(value)
        except WireError as bad:
            self.undecodable += 1
            self.last_error = f"partition {partition} offset {message.offset()}: {bad.reason}"
            log.warning("skipped undecodable snapshot record at %s", self.last_error)
            return False
        self.records_read += 1
        if not self.store.apply(record):
            self.stale += 1
            return False
        applied_at_ms = int(time.time() * 1000)
        if record["entity_type"] == USER:
            self._user_seen_at[record["entity_id"]] = applied_at_ms
        if self.on_applied is not None:
            self.on_applied(record, applied_at_ms)
        return True

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply what is available, waiting up to `timeout_s` for the first message; returns records applied.

        "Applied" counts records that changed the store (newer than what it held).
        """
        applied = received = 0
        deadline = time.monotonic() + timeout_s
        wait = max(timeout_s, 0.0)
        while True:
            messages = self._consumer.consume(_BATCH, wait)
            if messages:
                with self._lock:
                    for message in messages:
                        applied += self._handle(message)
                        received += message.error() is None
            if len(messages) < _BATCH:  # the local queue is drained
                if received or time.monotonic() >= deadline:
                    return applied
                wait = max(deadline - time.monotonic(), 0.0)
            else:
                wait = 0.0

    def positions(self) -> dict[int, int]:
        """Partition -> next offset this consumer will read (the start of the partition if none yet)."""
        positions = {p: self._next.get(p, 0) for p in self.partitions}
        for tp in self._consumer.position([TopicPartition(self.topic, p) for p in self.partitions]):
            if tp.offset >= 0:  # librdkafka moves past transaction markers and aborted records
                positions[tp.partition] = max(positions[tp.partition], tp.offset)
        return positions

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, tuple[int, int]]:
        """Partition -> (low, high) offsets as of now; under read_committed `high` is the last stable offset."""
        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s, cached=False)
            for p in self.partitions
        }

    def lag(self, timeout_s: float = 10.0) -> int:
        """Messages between this consumer's positions and the ends of the partitions, summed."""
        positions = self.positions()
        return sum(max(0, high - max(positions[p], low)) for p, (low, high) in self.end_offsets(timeout_s).items())

    def catch_up(self, timeout_s: float = 60.0) -> int:
        """Consume until every partition's end as of the call; returns records applied, `TimeoutError` if not."""
        deadline = time.monotonic() + timeout_s
        targets = {p: high for p, (_, high) in self.end_offsets(max(1.0, timeout_s)).items()}
        applied = 0
        while True:
            positions = self.positions()
            behind = {p: target - positions[p] for p, target in targets.items() if positions[p] < target}
            if not behind:
                return applied
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"snapshot topic {self.topic}: still behind after {timeout_s}s (partition: lag) {behind}"
                )
            applied += self.poll(min(remaining, 0.2))

    # --- serving ---------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Newest model version seen (0 before any record)."""
        return self.store.version

    def rank(self, user_id: str, candidates: Iterable[str], k: int = 10,
             query: str | None = None) -> list[tuple[str, float]]:
        """Top-k candidate item ids with predicted click probabilities (unknown items last, NaN); for a
        search request pass its `query` (used when the consumer was given `text`)."""
        with self._lock:
            return self.store.rank(user_id, list(candidates), k, query)

    def score(self, user_id: str, item_id: str, query: str | None = None) -> float | None:
        with self._lock:
            return self.store.score(user_id, item_id, query)

    def user_record(self, user_id: str) -> dict[str, Any] | None:
        """The newest snapshot record of a user, or None."""
        with self._lock:
            return self.store.records.get((USER, user_id))

    def user_vector(self, user_id: str) -> np.ndarray | None:
        with self._lock:
            return self.store.user_vector(user_id)

    def freshness_ms(self, user_id: str, now_ms: int | None = None) -> int | None:
        """How old the user's newest record is: now minus its `created_at` (None for unknown users)."""
        record = self.user_record(user_id)
        if record is None:
            return None
        return (int(time.time() * 1000) if now_ms is None else now_ms) - record["created_at"]

    def seen_at_ms(self, user_id: str) -> int | None:
        """Wall-clock ms when this consumer applied the user's newest record (None for unknown users)."""
        with self._lock:
            return self._user_seen_at.get(user_id)

    def wait_for_user_version(
        self,
        user_id: str,
        min_updates: int | None = None,
        *,
        min_version: int | None = None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout_s: float = 30.0,
    ) -> dict[str, Any]:
        """Poll until the user's newest record meets every condition given; returns that record.

        Conditions: `updates >= min_updates`, `version >= min_version`, `predicate(record)`; none given
        waits for any record of the user. `seen_at_ms(user_id)` then tells when it arrived, for
        freshness measurements. `TimeoutError` (with the newest record held) if not met in time.
        """

        def satisfied(record: dict[str, Any] | None) -> bool:
            return (
                record is not None
                and (min_updates is None or record["updates"] >= min_updates)
                and (min_version is None or record["version"] >= min_version)
                and (predicate is None or predicate(record))
            )

        deadline = time.monotonic() + timeout_s
        while True:
            record = self.user_record(user_id)
            if satisfied(record):
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                held = None if record is None else {k: record[k] for k in ("version", "updates", "created_at")}
                raise TimeoutError(f"user {user_id}: condition not met after {timeout_s}s; newest record {held}")
            self.poll(min(remaining, 0.1))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> SnapshotConsumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
