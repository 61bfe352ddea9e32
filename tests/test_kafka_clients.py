"""Kafka clients on a real broker: topics, producers and replay (clients.producer), serving (snapshot_consumer)."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from samples import SAMPLES

from clients.admin import create_topics
from clients.producer import DeliveryError, replay_files, stream_live
from clients.producer import Producer as EventProducer
from clients.snapshot_consumer import SnapshotConsumer
from clients.topics import TopicNames, create_all, snapshot_key
from tools.generate import GeneratorConfig, generate, write_stream
from udfs.model_store import ModelStore
from udfs.records import InvalidRecord, fast_validator, validate_record
from udfs.schemas import RECORD_NAMES
from udfs.wire import WireDecoder, encode

NOW_MS = int(time.time() * 1000)
FOREVER = dict.fromkeys(("impressions", "clicks", "items", "examples", "metrics", "dead_letter"), -1)



def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def topic_names() -> TopicNames:
    return TopicNames().suffixed(f"-{uuid.uuid4().hex[:8]}")


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0, settle_s: float = 0.5) -> list:
    """Every message of `topic` from the beginning: waits for `expected`, then `settle_s` for extras."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("test"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    messages = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(500, 0.2)
            for message in batch:
                assert message.error() is None, message.error()
            messages.extend(batch)
            if len(messages) >= expected:
                deadline = min(deadline, time.monotonic() + settle_s)
    finally:
        consumer.close()
    return messages


def canonical(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


# --- wire records and topics --------------------------------------------------------------------------


def test_every_schema_round_trips_through_a_topic(kafka_broker: str) -> None:
    assert set(SAMPLES) == set(RECORD_NAMES)
    topic = unique("records")
    create_topics(kafka_broker, {topic: 2})
    producer = Producer({"bootstrap.servers": kafka_broker, "enable.idempotence": True})
    for name in RECORD_NAMES:
        producer.produce(topic, key=name, value=encode(name, SAMPLES[name]))
    assert producer.flush(30) == 0

    messages = consume_all(kafka_broker, topic, len(RECORD_NAMES))
    received = {m.key().decode(): WireDecoder(m.key().decode()).decode(m.value()) for m in messages}
    assert len(messages) == len(RECORD_NAMES)
    assert received == SAMPLES  # the float (float32) fields of the samples are exact in float32


def test_create_all_sets_policies_and_is_idempotent(kafka_broker: str) -> None:
    names = topic_names()
    create_all(kafka_broker, names, partitions=3, retention_ms={"metrics": 3_600_000})
    create_all(kafka_broker, names, partitions=3)  # again: no error

    admin = AdminClient({"bootstrap.servers": kafka_broker})
    metadata = admin.list_topics(timeout=10)
    topics = names.as_dict()
    assert all(len(metadata.topics[topic].partitions) == 3 for topic in topics.values())
    futures = admin.describe_configs([ConfigResource("topic", topic) for topic in topics.values()])
    configs = {resource.name: f.result(10) for resource, f in futures.items()}
    assert configs[names.snapshots]["cleanup.policy"].value == "compact"
    for key, topic in topics.items():
        if key != "snapshots":
            assert configs[topic]["cleanup.policy"].value == "delete"
    # Forever by default (Kafka deletes by record timestamp = event time, and replays carry old ones).
    assert configs[names.impressions]["retention.ms"].value == "-1"
    assert configs[names.snapshots]["retention.ms"].value == "-1"
    assert configs[names.metrics]["retention.ms"].value == "3600000"
    # Event times may run ahead of the wall clock (sped-up streams): Kafka 4's default allows only 1 h.
    producer = Producer({"bootstrap.servers": kafka_broker})
    producer.produce(names.impressions, b"x", timestamp=int(time.time() * 1000) + 6 * 3_600_000)
    assert producer.flush(30) == 0
    (message,) = consume_all(kafka_broker, names.impressions, 1, settle_s=0.2)
    assert message.timestamp()[1] > time.time() * 1000 + 5 * 3_600_000

    with pytest.raises(ValueError, match="partitions"):
        create_all(kafka_broker, names, partitions=2)
    with pytest.raises(ValueError, match="unknown or compacted"):
        create_all(kafka_broker, names, retention_ms={"snapshots": 1})


# --- producer -----------------------------------------------------------------------------------------


def impression(i: int, **changes: object) -> dict:
    record = {
        "impression_id": f"imp-{i}",
        "request_id": f"req-{i // 3}",
        "user_id": f"u-{i % 4}",
        "item_id": f"it-{i % 7}",
        "query": None,
        "position": 1 + i % 3,
        "event_time": NOW_MS - 60_000 + i,
    }
    record.update(changes)
    return record


def test_producer_rejects_invalid_records_with_the_reason(kafka_broker: str) -> None:
    names = topic_names()
    create_all(kafka_broker, names, partitions=2)
    with EventProducer(kafka_broker, names) as producer:
        with pytest.raises(ValueError, match="position must be >= 1"):
            producer.send_impression(impression(1, position=0))
        with pytest.raises(ValueError, match="missing field.*user_id"):
            producer.send_impression({k: v for k, v in impression(2).items() if k != "user_id"})
        with pytest.raises(ValueError, match="unknown field"):
            producer.send_click({"impression_id": "imp-1", "user_id": "u", "item_id": "i", "event_time": 1, "x": 2})
        with pytest.raises(ValueError, match="boolean"):
            producer.send_item({"item_id": "it", "title": "t", "category": True})
        assert producer.sent == {"impressions": 0, "clicks": 0, "items": 0}

        good = impression(3)
        producer.send_impression(good)
        producer.send_click({"impression_id": good["impression_id"], "user_id": "u-3", "item_id": "it-3",
                             "event_time": good["event_time"] + 500})
        producer.send_item({"item_id": "it-3", "title": "Lamp", "category": "lamps"})
    (imp,) = consume_all(kafka_broker, names.impressions, 1)
    (click,) = consume_all(kafka_broker, names.clicks, 1)
    (item,) = consume_all(kafka_broker, names.items, 1)
    assert WireDecoder("Impression").decode(imp.value()) == good
    assert imp.key() == click.key() == b"imp-3"
    assert imp.partition() == click.partition()  # a click lands with its impression
    assert imp.timestamp() == (TIMESTAMP_CREATE_TIME, good["event_time"])
    assert click.timestamp() == (TIMESTAMP_CREATE_TIME, good["event_time"] + 500)
    assert item.key() == b"it-3"
    assert abs(item.timestamp()[1] - time.time() * 1000) < 60_000  # items: stamped when sent
    assert WireDecoder("Item").decode(item.value())["embedding"] is None


def test_fast_validation_never_accepts_what_validate_record_rejects() -> None:
    stream = generate(GeneratorConfig(n_users=5, n_items=12, n_impressions=20, seed=2))
    odd_values = (None, "", "x", 0, -1, 7, 1.5, True, 2**40, 2**70, [], [1.0, 2], ["a"], {"a": 1}, 2**31, -(2**31) - 1,
                  "\ufeffu-1", "u\ufffd1", "u\ud8001", [1e300], [float("nan")], [True])
    click = {"impression_id": "imp-1", "user_id": "u-1", "item_id": "it-1", "event_time": 1_000}
    for schema, record in (("Impression", stream.impressions[0]), ("Click", click), ("Item", stream.items[0])):
        fast = fast_validator(schema)
        assert fast is not None and fast(record)
        variants = [{k: v for k, v in record.items() if k != drop} for drop in record]
        variants += [{**record, key: value} for key in [*record, "extra"] for value in odd_values]
        for variant in variants:
            try:
                validate_record(schema, dict(variant))
                accepted = True
            except InvalidRecord:
                accepted = False
            assert accepted or not fast(variant), variant


def test_delivery_errors_are_raised(kafka_broker: str) -> None:
    producer = EventProducer(kafka_broker, topic_names(), **{"message.timeout.ms": 1500})  # topics do not exist
    producer.send_impression(impression(1))
    with pytest.raises(DeliveryError, match="1 message"):
        producer.flush(10)


def write_lines(path: Path, records: list, extra_lines: list[bytes]) -> None:
    lines = [orjson.dumps(r) for r in records]
    for index, line in enumerate(extra_lines):  # bad records spread through the file
        lines.insert(min(len(lines), 7 * (index + 1)), line)
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_replay_files_delivers_each_valid_record_once_in_event_time_order(
    kafka_broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream = generate(GeneratorConfig(n_users=40, n_items=30, n_impressions=300, seed=11, start_ms=NOW_MS - 86_400_000))
    write_lines(tmp_path / "impressions.jsonl", stream.impressions,
                [b'{"impression_id": "broken', orjson.dumps(impression(1, position=0)),
                 orjson.dumps(impression(2, event_time=-5))])
    write_lines(tmp_path / "clicks.jsonl", stream.clicks, [orjson.dumps({"impression_id": "imp-x", "user_id": "u"})])
    write_stream(stream, tmp_path / "clean")  # the catalog, as the generator writes it

    names = topic_names()
    create_all(kafka_broker, names, partitions=2, retention_ms=FOREVER)
    counts = replay_files(kafka_broker, tmp_path / "impressions.jsonl", tmp_path / "clicks.jsonl",
                          tmp_path / "clean" / "items.jsonl", topics=names, progress=False)
    assert counts == {
        "items": len(stream.items), "impressions": len(stream.impressions), "clicks": len(stream.clicks),
        "invalid_items": 0, "invalid_impressions": 3, "invalid_clicks": 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("3 invalid impressions" in w and "not valid JSON" in w and "position" in w for w in warnings)

    for source, schema, records in (("impressions", "Impression", stream.impressions),
                                    ("clicks", "Click", stream.clicks)):
        messages = consume_all(kafka_broker, getattr(names, source), len(records))
        decoder = WireDecoder(schema)
        decoded = [decoder.decode(m.value()) for m in messages]
        assert Counter(map(canonical, decoded)) == Counter(map(canonical, records))  # each exactly once
        by_partition = defaultdict(list)
        for message, record in zip(messages, decoded, strict=True):
            assert message.timestamp() == (TIMESTAMP_CREATE_TIME, record["event_time"])
            assert message.key().decode() == record["impression_id"]
            by_partition[message.partition()].append((message.offset(), record["event_time"]))
        assert len(by_partition) == 2
        for rows in by_partition.values():
            times = [t for _, t in sorted(rows)]
            assert times == sorted(times)
    items = consume_all(kafka_broker, names.items, len(stream.items))
    assert sorted(WireDecoder("Item").decode(m.value())["item_id"] for m in items) == sorted(
        i["item_id"] for i in stream.items
    )


def test_replay_files_rate_limit(kafka_broker: str, tmp_path: Path) -> None:
    records = [impression(i) for i in range(60)]
    (tmp_path / "imp.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    (tmp_path / "clicks.jsonl").write_bytes(b"")
    names = topic_names()
    create_all(kafka_broker, names, partitions=1)
    started = time.monotonic()
    counts = replay_files(kafka_broker, tmp_path / "imp.jsonl", tmp_path / "clicks.jsonl", rate=200.0,
                          topics=names, progress=False)
    assert time.monotonic() - started >= 59 / 200.0
    assert counts["impressions"] == 60 and counts["clicks"] == 0
    messages = consume_all(kafka_broker, names.impressions, 60)
    assert [WireDecoder("Impression").decode(m.value()) for m in messages] == records


def test_stream_live_shifts_event_times_to_now(kafka_broker: str) -> None:
    config = GeneratorConfig(n_users=20, n_items=20, n_impressions=100, seed=5, late_click_rate=0.0,
                             click_delay_median_s=2.0, click_delay_sigma=0.5)
    stream = generate(config)
    names = topic_names()
    create_all(kafka_broker, names, partitions=2)
    speedup = 50.0
    first = min(r["event_time"] for r in stream.impressions + stream.clicks)
    span_ms = max(r["event_time"] for r in stream.impressions + stream.clicks) - first
    started_ms = time.time() * 1000
    started = time.monotonic()
    counts = stream_live(kafka_broker, stream, speedup, topics=names, progress=False)
    elapsed = time.monotonic() - started
    assert counts["impressions"] == len(stream.impressions) and counts["clicks"] == len(stream.clicks)
    assert elapsed >= 0.9 * span_ms / 1000 / speedup

    messages = consume_all(kafka_broker, names.impressions, len(stream.impressions))
    decoded = [WireDecoder("Impression").decode(m.value()) for m in messages]
    offset = min(r["event_time"] for r in decoded) - first
    assert abs(first + offset - started_ms) < 10_000  # the stream starts now
    shifted = [{**r, "event_time": r["event_time"] + offset} for r in stream.impressions]
    assert Counter(map(canonical, decoded)) == Counter(map(canonical, shifted))
    assert all(m.timestamp()[1] == r["event_time"] for m, r in zip(messages, decoded, strict=True))


# --- snapshot consumer --------------------------------------------------------------------------------


def snapshot(entity_type: str, entity_id: str, version: int, vector: list[float], bias: float = 0.0,
             updates: int = 1) -> dict:
    return {
        "version": version,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "vector": vector,
        "bias": bias,
        "vector_accum": [1.0] * len(vector),
        "bias_accum": 0.5,
        "updates": updates,
        "watermark": version - 1000,
        "created_at": NOW_MS - 5_000 + version % 1000,
        "replica": 0,
        "bias_z": None,
    }


def transaction(producer: Producer, topic: str, records: list, commit: bool = True) -> None:
    producer.begin_transaction()
    for record in records:
        if isinstance(record, dict):
            producer.produce(topic, key=snapshot_key(record["entity_type"], record["entity_id"]),
                             value=encode("ModelSnapshot", record))
        else:  # (key, raw value): garbage or a tombstone
            producer.produce(topic, key=record[0], value=record[1])
    if commit:
        producer.commit_transaction(30)
    else:  # written to the log first: abort_transaction would just drop records still queued in the client
        assert producer.flush(30) == 0
        producer.abort_transaction(30)


def test_snapshot_consumer_newest_committed_versions_win(kafka_broker: str) -> None:
    names = topic_names()
    topic = names.snapshots
    create_all(kafka_broker, names, partitions=2)
    items = [f"it-{i}" for i in range(12)]
    v1, v2, v3 = NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000
    newer = (
        [
            snapshot("ITEM", item, v2, [0.25 * (i % 5) - 0.5, 0.5 - 0.125 * i], bias=0.0625 * i)
            for i, item in enumerate(items)
        ]
        + [snapshot("USER", f"u-{u}", v2, [1.0 - u, 0.5 * u], updates=10 + u) for u in range(3)]
        + [snapshot("GLOBAL", "global", v2, [], bias=-2.0), snapshot("POSITION", "1", v2, [], bias=0.0)]
    )
    older = [snapshot("USER", f"u-{u}", v1, [9.0, 9.0], updates=1) for u in range(3)] + [
        snapshot("ITEM", "it-0", v1, [8.0, 8.0], bias=5.0),
        snapshot("USER", "u-late", v1, [0.5, 0.5], updates=3),  # only an old version: still taken
    ]
    aborted = [snapshot("USER", "u-0", v3, [-7.0, -7.0], updates=99), snapshot("ITEM", "it-ghost", v3, [1.0, 1.0])]

    producer = Producer({"bootstrap.servers": kafka_broker, "transactional.id": unique("learner")})
    producer.init_transactions(30)
    transaction(producer, topic, newer)
    transaction(producer, topic, aborted, commit=False)
    transaction(producer, topic, older + [("USER:u-bad", b"\xc3\x01garbage"), ("USER:u-gone", None)])
    transaction(producer, topic, [snapshot("ITEM", "it-ghost-2", v3, [1.0, 1.0])], commit=False)

    expected = ModelStore().apply_all(newer + older)
    applied: list[tuple[str, str, int]] = []

    def on_applied(record: dict, applied_at_ms: int) -> None:
        assert abs(applied_at_ms - time.time() * 1000) < 5_000
        applied.append((record["entity_type"], record["entity_id"], record["version"]))

    with SnapshotConsumer(kafka_broker, topic, on_applied=on_applied) as consumer:
        assert consumer.catch_up(30) == len(newer) + 1  # the older records do not change the store (but u-late)
        # Every record that changed the store, each once, none of the stale, aborted or undecodable ones.
        assert sorted(applied) == sorted((r["entity_type"], r["entity_id"], r["version"]) for r in newer + older[-1:])
        assert consumer.lag() == 0
        # The aborted records are in the log (one marker at least per transaction), just not read.
        written = len(newer) + len(aborted) + len(older) + 2 + 1
        assert sum(high for _, high in consumer.end_offsets().values()) >= written + 4
        assert consumer.undecodable == 1 and consumer.tombstones == 1 and consumer.stale == len(older) - 1
        assert consumer.version == v2
        assert consumer.store.records.keys() == expected.records.keys()
        assert ("ITEM", "it-ghost") not in consumer.store.records  # aborted
        assert ("ITEM", "it-ghost-2") not in consumer.store.records
        for key, record in expected.records.items():
            assert consumer.store.records[key] == record, key
        assert consumer.user_vector("u-0").tolist() == [1.0, 0.0]
        assert consumer.user_vector("nobody") is None

        for user in ("u-0", "u-1", "u-2", "u-late", "nobody"):
            top = consumer.rank(user, items + ["unknown-item"], k=5)
            scores = {item: expected.score(user, item) for item in items}
            best = sorted(items, key=lambda item: -scores[item])[:5]
            assert [item for item, _ in top] == best
            assert [s for _, s in top] == pytest.approx([scores[item] for item in best])
        tail = consumer.rank("u-0", ["unknown-item", "it-1"], k=2)
        assert tail[0][0] == "it-1" and tail[1][0] == "unknown-item" and math.isnan(tail[1][1])

        freshness = consumer.freshness_ms("u-1")
        age = time.time() * 1000 - expected.records[("USER", "u-1")]["created_at"]
        assert freshness is not None and abs(freshness - age) < 5_000
        assert consumer.freshness_ms("nobody") is None
        assert consumer.wait_for_user_version("u-1", min_updates=11, timeout_s=1)["version"] == v2
        with pytest.raises(TimeoutError, match="u-1"):
            consumer.wait_for_user_version("u-1", min_updates=12, timeout_s=0.3)

        # A live update: seen by wait_for_user_version while the consumer follows the topic.
        update = snapshot("USER", "u-1", v3, [0.0, 1.0], updates=12)
        sent_ms = time.time() * 1000
        transaction(producer, topic, [update])
        record = consumer.wait_for_user_version("u-1", min_updates=12, timeout_s=15)
        assert record == update and consumer.version == v3
        assert consumer.seen_at_ms("u-1") >= sent_ms - 1
        assert consumer.lag() == 0

        # Two versions of a user committed together (two snapshots in one checkpoint): the store keeps
        # the newer, and on_applied reports both, oldest first.
        applied.clear()
        transaction(producer, topic, [snapshot("USER", "u-2", v3, [0.5, 0.5], updates=20),
                                      snapshot("USER", "u-2", v3 + 1, [0.25, 0.25], updates=21)])
        assert consumer.wait_for_user_version("u-2", min_updates=21, timeout_s=15)["version"] == v3 + 1
        assert applied == [("USER", "u-2", v3), ("USER", "u-2", v3 + 1)]


def test_snapshot_consumer_missing_topic(kafka_broker: str) -> None:
    with pytest.raises(ValueError, match="not available"):
        SnapshotConsumer(kafka_broker, unique("no-such-topic"), metadata_timeout_s=5)
