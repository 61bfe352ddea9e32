"""The item catalog: titles (the model reads them) and embeddings (they seed item vectors), from a file
or from the `items` topic.

The catalog is read when the job starts (on Kafka the job then follows the items topic from where
this read ended: job.kafka_job); entries that fail to decode or validate are returned as DeadLetter
records with their reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from clients.event_files import MalformedRecord, numbered_records
from udfs.parse import DEAD_LETTER_MAX_BYTES, dead_letter
from udfs.records import InvalidRecord, parse_wire, validate_record

Embeddings = dict[str, list[float]]


@dataclass
class Catalog:
    """Titles and embeddings by item id (an item's last entry wins)."""

    embeddings: Embeddings = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    # Read from a topic: partition -> the offset the read ended at (where following it goes on).
    topic_ends: dict[int, int] = field(default_factory=dict)

    def add(self, item: Mapping[str, Any]) -> None:
        item_id = item["item_id"]
        if item.get("title"):
            self.titles[item_id] = item["title"]
        if item.get("embedding"):
            self.embeddings[item_id] = [float(x) for x in item["embedding"]]

    def update(self, other: Catalog) -> None:
        """`other`'s entries over these."""
        self.embeddings.update(other.embeddings)
        self.titles.update(other.titles)


def read_catalog(raw_records: Iterable[Any], decode: Callable[[Any], dict[str, Any]],
                 payload: Callable[[Any], bytes], max_payload_bytes: int = DEAD_LETTER_MAX_BYTES,
                 where: Callable[[Any], str] | None = None) -> tuple[Catalog, list[dict[str, Any]]]:
    """The catalog of these records and DeadLetter records of the rejects (their reason prefixed with
    `where(raw)`, e.g. file and line, when given)."""
    catalog = Catalog()
    rejects = []
    for raw in raw_records:
        try:
            item = decode(raw)
        except InvalidRecord as error:
            reason = f"{where(raw)}: {error}" if where else str(error)
            rejects.append(dead_letter("items", reason, payload(raw), max_payload_bytes))
            continue
        catalog.add(item)
    return catalog, rejects


def catalog_from_file(path: Path, max_payload_bytes: int = DEAD_LETTER_MAX_BYTES,
                      ) -> tuple[Catalog, list[dict[str, Any]]]:
    """A catalog file or folder (JSON Lines or Avro containers); a malformed line is a reject too
    (its reason names file and line), and the lines after it are still read."""
    malformed: list[dict[str, Any]] = []

    def reject_malformed(bad: MalformedRecord) -> None:
        malformed.append(dead_letter("items", str(bad), bad.payload, max_payload_bytes))

    catalog, rejects = read_catalog(
        numbered_records(path, reject_malformed), lambda entry: validate_record("Item", entry[1]),
        lambda entry: orjson.dumps(entry[1], default=str), max_payload_bytes, where=lambda entry: entry[0])
    return catalog, malformed + rejects


def catalog_from_topic(bootstrap: str, topic: str, timeout_s: float = 30.0, *,
                       kafka_properties: Mapping[str, str] | None = None,
                       max_payload_bytes: int = DEAD_LETTER_MAX_BYTES) -> tuple[Catalog, list[dict[str, Any]]]:
    """Every committed message of the items topic, from the beginning to its current end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from clients.kafka_properties import client_config

    consumer = Consumer(client_config(bootstrap, kafka_properties, **{
        "group.id": f"freshrank-catalog-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise RuntimeError(f"cannot read topic {topic}: {metadata.error} (create the topics first: "
                               "`freshrank topics create`, or `freshrank run --create-topics`)")
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in partitions}
        consumer.assign(partitions)
        messages: list[bytes] = []
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            message = consumer.poll(timeout_s)
            if message is None:
                raise TimeoutError(f"reading {topic} stalled with partitions {sorted(remaining)} unfinished")
            if message.error():
                continue
            messages.append(message.value())
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
    finally:
        consumer.close()
    catalog, rejects = read_catalog(messages, lambda m: parse_wire("Item", m),
                                    lambda m: b"" if m is None else bytes(m), max_payload_bytes)
    catalog.topic_ends = ends
    return catalog, rejects
