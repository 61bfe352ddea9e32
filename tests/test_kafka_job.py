"""The job on a real Kafka broker: Avro on the wire, exactly-once sinks, dead letters, snapshots served."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import replace

import pytest
from confluent_kafka import Consumer, Producer
from reference_joiner import reference_join

import job.flink_env
import job.kafka_job
from clients.producer import Producer as EventProducer
from clients.snapshot_consumer import SnapshotConsumer
from clients.topics import TopicNames, create_all
from job.config import JobConfig
from job.kafka_job import BUFFER_TIMEOUT_KEY, LIVE_BUFFER_TIMEOUT_MS, build_kafka_job, kafka_environment
from tools.generate import GeneratorConfig, generate
from udfs.learner_math import LearnerConfig
from udfs.wire import WireDecoder, encode

pytestmark = pytest.mark.flink  # runs the job on a local MiniCluster

GEN = GeneratorConfig(n_impressions=3000, n_users=100, n_items=80, seed=3, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=8.0, requests_per_s=2.0,
                      start_ms=int(time.time() * 1000) - 3 * 3600 * 1000)
YEAR_9999_MS = 253_370_764_800_000
JOB = JobConfig(window_s=60.0, max_disorder_s=3.0, retention_s=600.0, metrics_interval_s=60.0,
                learner=LearnerConfig(dim=8))


def read_raw_topic(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list:
    """Every committed message of `topic`, once none came for 3 s (or `timeout_s`)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages, idle_since = [], time.time()
    while time.time() - idle_since < 3.0 and time.time() - idle_since < timeout_s:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        messages.append(message)
        idle_since = time.time()
    consumer.close()
    return messages


def read_topic(bootstrap: str, topic: str, schema: str, timeout_s: float = 20.0) -> list[dict]:
    decoder = WireDecoder(schema)
    return [decoder.decode(message.value()) for message in read_raw_topic(bootstrap, topic, timeout_s)]


@pytest.fixture(scope="module", params=[1, 2], ids=["parallelism-1", "parallelism-2"])
def kafka_run(kafka_broker, request):
    topics = TopicNames().suffixed(f"-{uuid.uuid4().hex[:8]}")
    create_all(kafka_broker, topics, partitions=2)
    stream = generate(GEN)
    with EventProducer(kafka_broker, topics) as producer:
        events = sorted([("i", r) for r in stream.impressions] + [("c", r) for r in stream.clicks],
                        key=lambda e: e[1]["event_time"])
        for item in stream.items:
            producer.send_item(item)
        for kind, record in events:
            (producer.send_impression if kind == "i" else producer.send_click)(record)
        producer.flush(30)
    # malformed bytes and an unknown schema fingerprint, straight onto the input topics
    raw = Producer({"bootstrap.servers": kafka_broker})
    raw.produce(topics.impressions, b"\x00garbage", timestamp=GEN.start_ms)
    raw.produce(topics.clicks, b"\xc3\x01" + b"\xff" * 8 + b"\x02xx", timestamp=GEN.start_ms)
    raw.produce(topics.impressions, encode("Click", stream.clicks[0]), timestamp=GEN.start_ms)
    raw.produce(topics.items, b"not an item")
    # poison records (issue 7): each must reach dead-letter with its reason, and nothing else change
    template = {**stream.impressions[0], "request_id": "poison"}
    raw.produce(topics.impressions, encode("Impression", {**template, "impression_id": "poison-9999",
                                                          "event_time": YEAR_9999_MS}), timestamp=GEN.start_ms)
    raw.produce(topics.impressions, encode("Impression", {**template, "impression_id": "\ufeffpoison-bom"}),
                timestamp=GEN.start_ms)
    raw.produce(topics.impressions, encode("Impression", {**template, "impression_id": "poison-AAAA"}).replace(
        b"AAAA", b"\xff\xfe\xfd\xfc"), timestamp=GEN.start_ms)  # not UTF-8
    raw.produce(topics.clicks, b"\x00" * 900_000, timestamp=GEN.start_ms)  # near the broker's 1 MB limit
    raw.produce(topics.impressions, None, key=b"deleted", timestamp=GEN.start_ms)  # tombstones
    raw.produce(topics.clicks, None, key=b"deleted", timestamp=GEN.start_ms)
    raw.produce(topics.items, encode("Item", {**stream.items[0], "item_id": "poison-nan",
                                              "embedding": [float("nan")] * 4}))
    raw.flush(10)

    # The batch parse runs in one lane whatever the parallelism; the learner behind it at the job's.
    job = replace(JOB, parallelism=request.param)
    env = kafka_environment(job, checkpoint_interval_s=2.0, bounded=True)
    build_kafka_job(env, kafka_broker, job, topics, group_id=f"job-{uuid.uuid4().hex[:6]}", bounded=True)
    # Published after the job read the catalog: the job follows the items topic from there.
    raw.produce(topics.items, encode("Item", {**stream.items[1], "item_id": "launched-later"}))
    raw.produce(topics.items, b"late garbage")
    raw.flush(10)
    env.execute("freshrank-kafka-test")
    return kafka_broker, topics, stream


def test_examples_on_kafka_match_the_reference(kafka_run):
    bootstrap, topics, stream = kafka_run
    examples = read_topic(bootstrap, topics.examples, "LabeledExample")
    ids = [e["impression_id"] for e in examples]
    assert len(ids) == len(set(ids)), "duplicated examples on the examples topic"
    reference = reference_join(stream.impressions, stream.clicks, JOB.window_ms)
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in examples} == reference.labels


def test_undecodable_messages_reach_dead_letter_with_reasons(kafka_run):
    bootstrap, topics, _ = kafka_run
    dead = read_topic(bootstrap, topics.dead_letter, "DeadLetter")
    assert len(dead) == 12
    by_source = Counter(d["source"] for d in dead)
    assert by_source == {"impressions": 6, "clicks": 3, "items": 3}
    assert any(d["payload"] == b"late garbage" for d in dead)  # from the followed items topic
    assert sum("tombstone" in d["reason"] and d["payload"] == b"" for d in dead) == 2
    assert any("beyond the bound" in d["reason"] and b"poison-9999" in d["payload"] for d in dead)
    assert any("BOM" in d["reason"] or "U+FEFF" in d["reason"] for d in dead)
    assert any("utf-8" in d["reason"].lower() and d["source"] == "impressions" for d in dead)
    assert any("finite" in d["reason"] and d["source"] == "items" for d in dead)
    big = [d for d in dead if d["payload_size"] == 900_000]
    assert len(big) == 1 and len(big[0]["payload"]) < 900_000
    reasons = " | ".join(d["reason"] for d in dead)
    assert "unknown" in reasons.lower() and "fingerprint" in reasons.lower()
    assert {d["source"] for d in dead} == {"impressions", "clicks", "items"}
    assert any(d["payload"] == b"not an item" and d["source"] == "items" for d in dead)
    assert any(d["payload"] == b"\x00garbage" for d in dead)


def test_snapshot_consumer_materializes_the_model_and_ranks(kafka_run):
    bootstrap, topics, stream = kafka_run
    with SnapshotConsumer(bootstrap, topics.snapshots) as consumer:
        consumer.catch_up(timeout_s=30)
        assert consumer.version > 0 and consumer.lag() == 0
        user = stream.impressions[0]["user_id"]
        assert consumer.user_vector(user) is not None
        candidates = sorted({i["item_id"] for i in stream.impressions})[:20]
        ranked = consumer.rank(user, candidates, k=5)
        assert len(ranked) == 5
        scores = [score for _, score in ranked]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(consumer.score(user, ranked[0][0]))


def test_snapshot_records_are_keyed_by_their_entity(kafka_run):
    """A snapshot leaves the learner as two arrays, keys and values, paired again in the JVM: every
    record on the compacted topic must carry its own entity's key, or compaction keeps the wrong one."""
    bootstrap, topics, stream = kafka_run
    decoder = WireDecoder("ModelSnapshot")
    messages = read_raw_topic(bootstrap, topics.snapshots)
    records = [(message.key().decode(), decoder.decode(message.value())) for message in messages]
    users = {r["entity_id"] for _, r in records if r["entity_type"] == "USER"}
    assert users >= {i["user_id"] for i in stream.impressions}
    assert all(key == f"{r['entity_type']}:{r['entity_id']}" for key, r in records)


def test_metrics_reach_their_topic(kafka_run):
    bootstrap, topics, stream = kafka_run
    metrics = read_topic(bootstrap, topics.metrics, "Metric")
    last_end = max(m["window_end"] for m in metrics)
    totals = {m["name"]: m["value"] for m in metrics if m["window_end"] == last_end}
    assert totals["examples_total"] == len({i["impression_id"] for i in stream.impressions})


def test_a_new_job_hot_starts_from_the_snapshot_topic(kafka_run):
    """No savepoint, no folder: the newest record of every entity on the compacted topic is the model a
    new job starts from (its examples carry that model's version from the first one on)."""
    from dataclasses import replace

    from job.kafka_job import load_snapshot_topic
    from udfs.model_store import SnapshotError

    bootstrap, topics, stream = kafka_run
    published = read_topic(bootstrap, topics.snapshots, "ModelSnapshot")
    newest: dict = {}
    for record in published:
        key = (record["entity_type"], record["entity_id"])
        if key not in newest or record["version"] > newest[key]["version"]:
            newest[key] = record
    store = load_snapshot_topic(bootstrap, topics.snapshots, JOB.learner.dim)
    assert store.records == newest
    # Whichever record of the wrong dimension is read first (a vector, or the TEXT title map: the
    # topic's partitions interleave in no fixed order) names the job's --dim.
    with pytest.raises(SnapshotError, match=f"the job's --dim is {JOB.learner.dim * 2}"):
        load_snapshot_topic(bootstrap, topics.snapshots, JOB.learner.dim * 2)

    second = replace(TopicNames().suffixed(f"-{uuid.uuid4().hex[:8]}"), snapshots=topics.snapshots)
    create_all(bootstrap, replace(second, snapshots=second.snapshots + "-unused"), partitions=2)
    with EventProducer(bootstrap, second) as producer:
        for impression in stream.impressions[:200]:
            producer.send_impression({**impression, "impression_id": "again-" + impression["impression_id"]})
        producer.flush(30)
    env = kafka_environment(JOB, checkpoint_interval_s=2.0, bounded=True)
    build_kafka_job(env, bootstrap, JOB, second, group_id=f"hot-{uuid.uuid4().hex[:6]}", bounded=True,
                    from_snapshot_topic=True)
    env.execute("freshrank-hot-start-test")
    examples = read_topic(bootstrap, second.examples, "LabeledExample")
    assert len(examples) == len({i["impression_id"] for i in stream.impressions[:200]})  # duplicates dropped
    assert store.version > 0 and min(e["model_version"] for e in examples) == store.version  # cold: 0


def test_live_jobs_send_network_buffers_on_sooner_unless_the_config_says_otherwise(monkeypatch) -> None:
    """A click's latency to the learner is mostly buffers waiting to fill at each exchange (docs/performance-log.md)."""
    flink_default_ms = 100
    assert kafka_environment(JOB, checkpoint_interval_s=2.0, bounded=False).get_buffer_timeout() == \
        LIVE_BUFFER_TIMEOUT_MS
    assert kafka_environment(JOB, checkpoint_interval_s=2.0, bounded=True).get_buffer_timeout() == flink_default_ms
    configured = {**job.flink_env.flink_settings(), BUFFER_TIMEOUT_KEY: "50 ms"}
    for module in (job.flink_env, job.kafka_job):
        monkeypatch.setattr(module, "flink_settings", lambda conf_dir=None: configured)
    assert kafka_environment(JOB, checkpoint_interval_s=2.0, bounded=False).get_buffer_timeout() == 50
