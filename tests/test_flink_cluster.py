"""The Kafka job on a real Flink standalone cluster: `flink run -py`, stop with savepoint, resume, exactly once.

One scenario, in order (a real cluster from the pip-installed Flink, a real broker):
1. the first half of a generated stream goes to Kafka; the job is submitted unbounded at parallelism 2
   (checkpoints every 2 s, no idleness: every partition holds the watermark back);
2. once examples are committed on the examples topic, the job stops with a savepoint (impressions
   whose window is still open stay in the savepoint's state);
3. the second half goes to Kafka, plus a sentinel impression and click on every input partition with an
   event time far beyond the stream, so the watermark passes every window; the job resumes from the
   savepoint;
4. every impression of the stream has exactly one example across both runs, labelled as the reference
   joiner labels the full stream.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from confluent_kafka import Consumer
from confluent_kafka import Producer as RawProducer
from reference_joiner import reference_join

from clients.producer import Producer as EventProducer
from clients.topics import TopicNames, create_all
from infra.cluster import ClusterError, StandaloneCluster
from tools.generate import GeneratorConfig, generate
from udfs.learner_math import moderated
from udfs.wire import WireDecoder, encode

WINDOW_S = 20.0
MAX_DISORDER_S = 3.0
PARTITIONS = 2
# ~60 s of event time (2 requests/s, 10 impressions each), ending about now.
GEN = GeneratorConfig(n_impressions=1200, n_users=60, n_items=50, seed=11, window_s=WINDOW_S, max_disorder_s=2.0,
                      click_delay_median_s=5.0, requests_per_s=2.0,
                      start_ms=int(time.time() * 1000) - 120_000)
# The watermark that the sentinels raise: far enough beyond the stream for every window to close.
SENTINEL_AFTER_S = WINDOW_S + MAX_DISORDER_S + 60.0


class TopicReader:
    """Reads a topic from the beginning with read_committed, accumulating decoded records across calls."""

    def __init__(self, bootstrap: str, topic: str, schema: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                                  "enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.decoder = WireDecoder(schema)
        self.records: list[dict] = []

    def poll_until(self, done, timeout_s: float, on_wait=None) -> bool:
        """Poll until `done(records)` or `timeout_s`; `on_wait()` runs about every 5 s (e.g. a job check)."""
        deadline = time.monotonic() + timeout_s
        next_check = time.monotonic() + 5.0
        while not done(self.records):
            if time.monotonic() > deadline:
                return False
            message = self.consumer.poll(0.5)
            if message is not None and not message.error():
                self.records.append(self.decoder.decode(message.value()))
            if on_wait is not None and time.monotonic() > next_check:
                on_wait()
                next_check = time.monotonic() + 5.0
        return True

    def drain(self, quiet_s: float = 3.0) -> None:
        """Read until nothing new arrives for `quiet_s`."""
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < quiet_s:
            message = self.consumer.poll(0.5)
            if message is not None and not message.error():
                self.records.append(self.decoder.decode(message.value()))
                idle_since = time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def send_sentinels(bootstrap: str, topics: TopicNames, event_time: int) -> None:
    """One impression and one click with `event_time` on every partition of the input topics."""
    producer = RawProducer({"bootstrap.servers": bootstrap})
    for partition in range(PARTITIONS):
        impression = {"impression_id": f"sentinel-{partition}", "request_id": "sentinel", "user_id": "sentinel",
                      "item_id": "sentinel", "query": None, "position": 1, "event_time": event_time}
        click = {"impression_id": f"sentinel-click-{partition}", "user_id": "sentinel", "item_id": "sentinel",
                 "event_time": event_time}
        producer.produce(topics.impressions, encode("Impression", impression), key=impression["impression_id"],
                         partition=partition, timestamp=event_time)
        producer.produce(topics.clicks, encode("Click", click), key=click["impression_id"],
                         partition=partition, timestamp=event_time)
    assert producer.flush(30) == 0


def send_events(bootstrap: str, topics: TopicNames, events: list[tuple[str, dict]]) -> None:
    with EventProducer(bootstrap, topics) as producer:
        for kind, record in events:
            (producer.send_impression if kind == "i" else producer.send_click)(record)
        producer.flush(30)


def new_stream(bootstrap: str, topics: TopicNames):
    """Creates `topics`; the generated stream and its events in event-time order as (kind, record)."""
    create_all(bootstrap, topics, partitions=PARTITIONS)
    stream = generate(GEN)
    events = sorted([("i", r) for r in stream.impressions] + [("c", r) for r in stream.clicks],
                    key=lambda e: e[1]["event_time"])
    return stream, events


def job_args(bootstrap: str, name: str, *options: str, suffix: str | None = None, parallelism: int = 2) -> list[str]:
    """`freshrank run` options of the tests' jobs: checkpoints every 2 s, the test window."""
    args = ["--bootstrap", bootstrap, "--group-id", f"job-{uuid.uuid4().hex[:6]}", "--parallelism", str(parallelism),
            "--checkpoint-interval", "2", "--window", str(WINDOW_S), "--max-disorder", str(MAX_DISORDER_S),
            "--retention", "600", "--dim", "8", "--job-name", name, *options]
    return args + [f"--topic-suffix={suffix}"] if suffix else args


@dataclass
class QuietRun:
    """A job that learned from the first half of a new stream and then went quiet (see `quiet_half_run`)."""

    topics: TopicNames
    stream: object
    events: list
    half: int
    args: list[str]
    examples: TopicReader
    snapshots: TopicReader
    job_id: str  # a test that resumes from a savepoint replaces it, so the clean-up cancels the new job


@contextlib.contextmanager
def quiet_half_run(cluster: StandaloneCluster, bootstrap: str, name: str, parallelism: int) -> Iterator[QuietRun]:
    """Submit a job (snapshots every second), feed it the first half of a new stream, wait for examples,
    then for its snapshots to stop: with no input the model stops changing, so its newest snapshot
    records are its state. Closes the readers and cancels the job on the way out."""
    suffix = f"-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().suffixed(suffix)
    stream, events = new_stream(bootstrap, topics)
    args = job_args(bootstrap, name, "--idleness", "0", "--snapshot-interval", "1", suffix=suffix,
                    parallelism=parallelism)
    examples = TopicReader(bootstrap, topics.examples, "LabeledExample")
    snapshots = TopicReader(bootstrap, topics.snapshots, "ModelSnapshot")
    run = QuietRun(topics, stream, events, len(events) // 2, args, examples, snapshots,
                   cluster.submit(args, parallelism=parallelism))
    try:
        cluster.wait_running(run.job_id, timeout_s=180)
        send_events(bootstrap, topics, events[:run.half])
        assert examples.poll_until(lambda records: len(records) >= 20, 180), cluster.failure(run.job_id)
        snapshots.drain(quiet_s=8.0)
        yield run
    finally:
        examples.close()
        snapshots.close()
        with contextlib.suppress(Exception):
            cluster.cancel(run.job_id)


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    started = time.monotonic()
    with StandaloneCluster(tmp_path_factory.mktemp("flink-cluster"), slots=2) as cluster:
        print(f"\nflink cluster {cluster.rest_url} up in {time.monotonic() - started:.1f}s (home {cluster.home})")
        yield cluster


@pytest.fixture
def flink_cluster(shared_cluster):
    """The module's cluster with its TaskManager alive: one test kills it on purpose, and a thread-mode
    TaskManager can also crash in its embedded interpreter when a job is cancelled (seen: SIGSEGV in
    take_gil), which a standalone cluster does not repair by itself."""
    if shared_cluster.ensure_taskmanagers():
        print("\nrestarted a TaskManager that had died")
    yield shared_cluster


def test_job_on_cluster_resumes_from_savepoint_exactly_once(kafka_broker, flink_cluster):
    cluster = flink_cluster
    started = time.monotonic()
    lap = started

    def log(step: str) -> None:
        nonlocal lap
        now = time.monotonic()
        print(f"[{now - started:6.1f}s] {step} (+{now - lap:.1f}s)")
        lap = now

    suffix = f"-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().suffixed(suffix)
    stream, events = new_stream(kafka_broker, topics)
    half = len(events) // 2
    last_event_ms = events[-1][1]["event_time"]
    sentinel_ms = last_event_ms + int(SENTINEL_AFTER_S * 1000)
    args = job_args(kafka_broker, "freshrank-cluster-test", "--idleness", "0", "--metrics-interval", "60",
                    "--snapshot-interval", "2", suffix=suffix)
    examples = TopicReader(kafka_broker, topics.examples, "LabeledExample")
    snapshots = TopicReader(kafka_broker, topics.snapshots, "ModelSnapshot")
    job_id = None
    try:
        send_events(kafka_broker, topics, events[:half])
        log(f"first half produced ({half} events)")

        job_id = cluster.submit(args, parallelism=2)
        log(f"submitted job {job_id}")
        cluster.wait_running(job_id, timeout_s=180)
        log("job running")

        def job_alive() -> None:
            state = cluster.job_status(job_id)
            assert state in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"), (
                f"job {job_id} is {state}:\n{cluster.failure(job_id)}")

        assert examples.poll_until(lambda records: len(records) >= 20, 180, job_alive), (
            f"no examples committed by the first run:\n{cluster.failure(job_id)}")
        log(f"{len(examples.records)} examples committed by the first run")

        savepoint = cluster.stop_with_savepoint(job_id)
        cluster.wait_for_status(job_id, "FINISHED", timeout_s=60)
        log(f"stopped with savepoint {savepoint}")
        examples.drain(quiet_s=2.0)
        first_run = len(examples.records)
        snapshots.drain(quiet_s=2.0)
        snapshots_first_run = len(snapshots.records)

        send_events(kafka_broker, topics, events[half:])
        send_sentinels(kafka_broker, topics, sentinel_ms)
        log(f"second half ({len(events) - half} events) and sentinels produced")

        job_id = cluster.submit_from_savepoint(savepoint, args, parallelism=2)
        log(f"resumed as job {job_id}")
        cluster.wait_running(job_id, timeout_s=180)
        restored = cluster.rest(f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
        assert restored and restored["is_savepoint"] and restored["external_path"] == savepoint, restored

        reference = reference_join(stream.impressions, stream.clicks, int(WINDOW_S * 1000))
        closed_before_ms = sentinel_ms - int((MAX_DISORDER_S + WINDOW_S) * 1000)
        expected = {impression["impression_id"]: reference.labels[impression["impression_id"]]
                    for impression in stream.impressions if impression["event_time"] < closed_before_ms}
        assert len(expected) == len(reference.labels)  # the sentinels close every window of the stream
        complete = examples.poll_until(lambda records: len({r["impression_id"] for r in records}) >= len(expected),
                                       240, job_alive)
        log(f"{len(examples.records)} examples in all ({len(examples.records) - first_run} from the resumed run)")
        assert complete, (f"only {len({r['impression_id'] for r in examples.records})} of {len(expected)} "
                          f"impressions have an example:\n{cluster.failure(job_id)}")
        # Two more checkpoints' worth of commits: any duplicate would show up now.
        examples.drain(quiet_s=5.0)
        snapshots.drain(quiet_s=1.0)
        log("drained")
        # The item loop: each replica merges the other's item-side parameters read back from Kafka, and
        # the metrics report how old they were on arrival. Traffic goes on (later sentinels) so the
        # metric intervals the merges fell into close.
        metrics = TopicReader(kafka_broker, topics.metrics, "Metric")
        loop_records = 0.0
        for round_ in range(1, 10):
            send_sentinels(kafka_broker, topics, sentinel_ms + round_ * 10 * int(WINDOW_S * 1000))
            metrics.drain(quiet_s=3.0)
            loop_records = max((m["value"] for m in metrics.records if m["name"] == "item_loop_records_total"),
                               default=0.0)
            if loop_records > 0:
                break
        metrics.close()
        log(f"item loop: {loop_records:.0f} records merged")
    finally:
        examples.close()
        snapshots.close()
        if job_id is not None:
            with contextlib.suppress(Exception):  # the fixture stops the cluster anyway; keep the real error
                cluster.cancel(job_id)

    ids = [e["impression_id"] for e in examples.records]
    duplicated = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not duplicated, f"{len(duplicated)} impressions have more than one example, e.g. {duplicated[:5]}"
    assert first_run > 0 and len(ids) > first_run, "both runs must have produced examples"
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in examples.records} == expected

    # The model after the resume continues from the savepoint's (items, users, positions, global).
    assert_model_continues(snapshots.records[:snapshots_first_run], snapshots.records[snapshots_first_run:],
                           min_each=1)
    assert loop_records > 0, "no item-side parameters came back through the Kafka loop"
    staleness = [m["value"] for m in metrics.records
                 if m["name"] == "item_loop_staleness_ms_max" and not math.isnan(m["value"])]
    assert staleness and 0 <= max(staleness) < 120_000


@pytest.mark.flink
def test_a_cluster_of_two_taskmanagers_runs_two_jvms(tmp_path):
    """Python scales past one core through TaskManager JVMs (one interpreter each in thread mode)."""
    with StandaloneCluster(tmp_path / "two", slots=1, taskmanagers=2) as cluster:
        overview = cluster.overview()
        assert overview["taskmanagers"] == 2
        assert overview["slots-total"] == 2
        taskmanagers = cluster.rest("/taskmanagers")["taskmanagers"]
        assert len({tm["id"] for tm in taskmanagers}) == 2
        assert StandaloneCluster.attach(cluster.home).taskmanagers == 2
    with pytest.raises(ValueError):
        StandaloneCluster(tmp_path / "none", taskmanagers=0)


def _thread_cpus(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(thread.id)) for thread in psutil.Process(pid).threads()}


@pytest.mark.flink
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_taskmanagers_pinned_to_cpus_of_their_own_keep_them_across_a_restart(tmp_path):
    """Every thread of each TaskManager JVM runs on its own CPU; one started in place of a killed
    TaskManager takes the CPU that was freed, not the other's."""
    first, second = sorted(os.sched_getaffinity(0))[:2]
    with StandaloneCluster(tmp_path / "pinned", slots=1, taskmanagers=2, cpus_per_taskmanager=1) as cluster:
        pids = sorted(cluster.taskmanager_pids())
        assert [_thread_cpus(pid) for pid in pids] == [{frozenset({first})}, {frozenset({second})}]
        assert StandaloneCluster.attach(cluster.home).cpus_per_taskmanager == 1
        killed = cluster.kill_taskmanager()
        freed = {first, second} - {cpu for s in _thread_cpus(next(p for p in pids if p != killed)) for cpu in s}
        assert cluster.ensure_taskmanagers() == 1
        (replacement,) = set(cluster.taskmanager_pids()) - set(pids)
        assert _thread_cpus(replacement) == {frozenset(freed)}
    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(ClusterError, match=f"need {too_many} CPUs"):
        StandaloneCluster(tmp_path / "greedy", taskmanagers=1, cpus_per_taskmanager=too_many).start()
    assert not (tmp_path / "greedy" / "log").exists()


def test_a_click_outage_holds_negatives_until_the_clicks_return(kafka_broker, flink_cluster):
    """Clicks stop for many multiples of --idleness while impressions flow on (their windows close in
    event time meanwhile); then the held-back clicks arrive. Every label equals the reference's: no
    impression of the outage was decided negative while its click was missing."""
    cluster = flink_cluster
    suffix = f"-{uuid.uuid4().hex[:8]}"
    topics = TopicNames().suffixed(suffix)
    stream, events = new_stream(kafka_broker, topics)
    first_ms = events[0][1]["event_time"]
    outage_from, outage_to = first_ms + 15_000, first_ms + 15_000 + int(2 * WINDOW_S * 1000)
    before = [e for e in events if e[1]["event_time"] < outage_from]
    during = [e for e in events if outage_from <= e[1]["event_time"] < outage_to]
    after = [e for e in events if e[1]["event_time"] >= outage_to]
    held_clicks = [e for e in during if e[0] == "c"]
    assert len(held_clicks) >= 10 and any(e[0] == "c" for e in after)
    args = job_args(kafka_broker, "freshrank-click-outage-test", "--idleness", "1", suffix=suffix)
    examples = TopicReader(kafka_broker, topics.examples, "LabeledExample")
    job_id = cluster.submit(args, parallelism=2)
    try:
        cluster.wait_running(job_id, timeout_s=180)
        send_events(kafka_broker, topics, before)
        time.sleep(3)
        impressions = [e for e in during if e[0] == "i"]
        for start in range(0, len(impressions), 40):  # ~10 s of wall clock, clicks silent throughout
            send_events(kafka_broker, topics, impressions[start:start + 40])
            time.sleep(10 / (len(impressions) / 40))
        send_events(kafka_broker, topics, held_clicks)
        send_events(kafka_broker, topics, after)
        send_sentinels(kafka_broker, topics, events[-1][1]["event_time"] + int(SENTINEL_AFTER_S * 1000))
        reference = reference_join(stream.impressions, stream.clicks, int(WINDOW_S * 1000))
        complete = examples.poll_until(
            lambda records: len({r["impression_id"] for r in records} & set(reference.labels)) >= len(reference.labels),
            240, lambda: None)
        assert complete, f"examples incomplete:\n{cluster.failure(job_id)}"
        examples.drain(quiet_s=3.0)
    finally:
        examples.close()
        with contextlib.suppress(Exception):
            cluster.cancel(job_id)
    got = {e["impression_id"]: (e["label"], e["click_time"]) for e in examples.records
           if e["impression_id"] in reference.labels}
    assert len(got) == len([e for e in examples.records if e["impression_id"] in reference.labels])
    wrong = sorted(i for i, label in reference.labels.items() if got[i] != label)
    assert not wrong, f"{len(wrong)} labels differ from the reference, e.g. {[(i, got[i]) for i in wrong[:5]]}"


def latest_by_entity(records: list[dict]) -> dict[tuple[str, str, int], dict]:
    """The newest record of each entity as each replica (learner subtask) published it."""
    latest: dict[tuple[str, str, int], dict] = {}
    for record in records:
        key = (record["entity_type"], record["entity_id"], record["replica"])
        if key not in latest or record["version"] >= latest[key]["version"]:
            latest[key] = record
    return latest


def assert_model_continues(before_records: list[dict], after_records: list[dict], min_each: int = 10) -> None:
    """Every entity published before a failure or stop, and again after it, continues from where it was:
    per replica, its first record after has at least the update count and AdaGrad accumulators of its
    last record before, and a Newton user at most its posterior variance (the trace of its covariance
    only shrinks as it learns): a reset to initialisation would start them over."""
    before = latest_by_entity(before_records)
    first_after: dict[tuple[str, str, int], dict] = {}
    for record in after_records:
        key = (record["entity_type"], record["entity_id"], record["replica"])
        if key in before and record["version"] > before[key]["version"] and key not in first_after:
            first_after[key] = record
    kinds = Counter(kind for kind, _, _ in first_after)
    print(f"\nmodel continuity: {len(first_after)} entities compared before/after, by kind {dict(kinds)}")
    assert kinds["ITEM"] >= min_each and kinds["USER"] >= min_each, kinds
    assert kinds["GLOBAL"] == sum(1 for kind, _, _ in before if kind == "GLOBAL") > 0, kinds
    for key, after in first_after.items():
        old = before[key]
        assert after["updates"] >= old["updates"], (key, old["updates"], after["updates"])
        assert after["bias_accum"] >= old["bias_accum"] - 1e-12, key
        dim = len(after["vector"])
        assert all(a >= b - 1e-12 for a, b in zip(after["vector_accum"][:dim], old["vector_accum"][:dim],
                                                  strict=True)), key
        assert len(after["vector_accum"]) == len(old["vector_accum"]), key
        if len(after["vector_accum"]) > dim:  # a Newton user: its covariance follows (ModelSnapshot.avsc)
            trace_after, trace_before = (sum(r["vector_accum"][dim + k * dim + k] for k in range(dim))
                                         for r in (after, old))
            assert trace_after <= trace_before * (1 + 1e-6), key  # float32 in the record


def test_a_killed_taskmanager_recovers_exactly_once_with_the_whole_model(kafka_broker, flink_cluster):
    """kill -9 of the TaskManager mid-stream (parallelism 2, checkpoints every 2 s): after a new
    TaskManager joins, the job restarts from its latest checkpoint; every impression gets exactly one
    example with the reference's label, and the model continues from the checkpoint: item, position,
    global and user parameters learned before the failure come back (their update counts and AdaGrad
    accumulators only grow; a reset to initialisation would start them over)."""
    cluster = flink_cluster
    with quiet_half_run(cluster, kafka_broker, "freshrank-failover-test", parallelism=2) as run:
        topics, stream, events, half, examples, snapshots, job_id = (
            run.topics, run.stream, run.events, run.half, run.examples, run.snapshots, run.job_id)
        read_before = len(snapshots.records)

        killed = cluster.kill_taskmanager()
        cluster.start_taskmanager()
        assert killed not in cluster.taskmanager_pids()
        deadline = time.monotonic() + 180
        while not (cluster.rest(f"/jobs/{job_id}/checkpoints").get("latest") or {}).get("restored"):
            assert time.monotonic() < deadline, f"the job did not restore:\n{cluster.failure(job_id)}"
            time.sleep(1)
        cluster.wait_running(job_id, timeout_s=180)

        send_events(kafka_broker, topics, events[half:])
        send_sentinels(kafka_broker, topics, events[-1][1]["event_time"] + int(SENTINEL_AFTER_S * 1000))
        reference = reference_join(stream.impressions, stream.clicks, int(WINDOW_S * 1000))
        complete = examples.poll_until(
            lambda records: len({r["impression_id"] for r in records} & set(reference.labels)) >= len(reference.labels),
            240)
        assert complete, f"examples incomplete after the failover:\n{cluster.failure(job_id)}"
        examples.drain(quiet_s=5.0)
        snapshots.drain(quiet_s=3.0)

    ours = [e for e in examples.records if e["impression_id"] in reference.labels]
    duplicated = sorted(i for i, n in Counter(e["impression_id"] for e in ours).items() if n > 1)
    assert not duplicated, f"{len(duplicated)} impressions have more than one example, e.g. {duplicated[:5]}"
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in ours} == reference.labels

    assert_model_continues(snapshots.records[:read_before], snapshots.records[read_before:])


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(flink_cluster, tmp_path):
    """The broker stops (clean shutdown) with the job mid-stream and comes back 10 s later on the same
    port and data: the job fails over and recovers from its checkpoint; every impression of the stream
    has exactly one committed example, labelled as the reference labels it."""
    from infra.kafka_broker import KafkaBroker

    cluster = flink_cluster
    broker = KafkaBroker(port=0, data_dir=tmp_path / "kafka").start(timeout_s=120)
    bootstrap = broker.bootstrap_servers
    try:
        topics = TopicNames()
        stream, events = new_stream(bootstrap, topics)
        half = len(events) // 2
        args = job_args(bootstrap, "freshrank-broker-restart-test", "--idleness", "0")
        job_id = cluster.submit(args, parallelism=2)
        try:
            cluster.wait_running(job_id, timeout_s=180)
            send_events(bootstrap, topics, events[:half])
            examples = TopicReader(bootstrap, topics.examples, "LabeledExample")
            assert examples.poll_until(lambda records: len(records) >= 20, 180), cluster.failure(job_id)
            examples.close()

            broker.stop()
            time.sleep(10)
            broker.start(timeout_s=120)
            send_events(bootstrap, topics, events[half:])
            send_sentinels(bootstrap, topics, events[-1][1]["event_time"] + int(SENTINEL_AFTER_S * 1000))
            reference = reference_join(stream.impressions, stream.clicks, int(WINDOW_S * 1000))
            examples = TopicReader(bootstrap, topics.examples, "LabeledExample")
            complete = examples.poll_until(
                lambda records: len({r["impression_id"] for r in records} & set(reference.labels))
                >= len(reference.labels), 300)
            assert complete, f"examples incomplete after the broker restart:\n{cluster.failure(job_id)}"
            examples.drain(quiet_s=5.0)
            examples.close()
        finally:
            with contextlib.suppress(Exception):
                cluster.cancel(job_id)
    finally:
        broker.stop()
    ours = [e for e in examples.records if e["impression_id"] in reference.labels]
    duplicated = sorted(i for i, n in Counter(e["impression_id"] for e in ours).items() if n > 1)
    assert not duplicated, f"{len(duplicated)} impressions have more than one example, e.g. {duplicated[:5]}"
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in ours} == reference.labels


def test_a_resumed_job_scores_with_exactly_the_model_of_its_savepoint(kafka_broker, flink_cluster):
    """Stop with savepoint once the model is quiet (its last snapshot records are then its state: at
    parallelism 1 there is no other replica to merge), resume, and show the job one new impression:
    its score, taken on arrival before anything is learned, is the one the pre-stop user, item,
    position and global parameters give, to 1e-9. An item side reset to initialisation would not."""
    cluster = flink_cluster
    with quiet_half_run(cluster, kafka_broker, "freshrank-savepoint-model-test", parallelism=1) as run:
        topics, events, half, examples, snapshots = run.topics, run.events, run.half, run.examples, run.snapshots
        # At parallelism 1 there is no other replica to merge: the newest records are the whole model.
        before = {(kind, entity): record for (kind, entity, _), record in latest_by_entity(snapshots.records).items()}
        savepoint = cluster.stop_with_savepoint(run.job_id)
        cluster.wait_for_status(run.job_id, "FINISHED", timeout_s=60)
        run.job_id = job_id = cluster.submit_from_savepoint(savepoint, run.args, parallelism=1)
        cluster.wait_running(job_id, timeout_s=180)

        user = max((r for (kind, _), r in before.items() if kind == "USER"), key=lambda r: r["updates"])
        item = max((r for (kind, _), r in before.items() if kind == "ITEM"), key=lambda r: r["updates"])
        position = max((r for (kind, _), r in before.items() if kind == "POSITION"), key=lambda r: r["updates"])
        last_ms = events[half - 1][1]["event_time"]
        probe = {"impression_id": f"probe-{uuid.uuid4().hex[:8]}", "request_id": "probe",
                 "user_id": user["entity_id"], "item_id": item["entity_id"], "query": None,
                 "position": int(position["entity_id"]), "event_time": last_ms}
        with EventProducer(kafka_broker, topics) as producer:
            producer.send_impression(probe)
            producer.flush(30)
        time.sleep(5)  # scored on arrival; the sentinels then close its window
        send_sentinels(kafka_broker, topics, last_ms + int(SENTINEL_AFTER_S * 1000))
        assert examples.poll_until(lambda records: any(r["impression_id"] == probe["impression_id"] for r in records),
                                   180), cluster.failure(job_id)
    scored = next(r for r in examples.records if r["impression_id"] == probe["impression_id"])
    logit = (sum(u * i for u, i in zip(user["vector"], item["vector"], strict=True)) + item["bias"]
             + position["bias"] + before[("GLOBAL", "global")]["bias"])
    dim = len(user["vector"])
    assert len(user["vector_accum"]) == dim + dim * dim  # a Newton user (the default): its covariance follows
    covariance = np.reshape(user["vector_accum"][dim:], (dim, dim))
    item_vector = np.asarray(item["vector"])
    assert scored["score"] == pytest.approx(moderated(logit, float(item_vector @ covariance @ item_vector)), abs=1e-9)
    assert item["updates"] > 0 and user["updates"] > 0


def test_cluster_jvms_run_with_the_jvm_options_of_flink_conf(flink_cluster):
    from job.flink_env import TASKMANAGER_JVM_OPTIONS_KEY, flink_settings

    options = flink_settings()[TASKMANAGER_JVM_OPTIONS_KEY].split()
    assert options
    pids = flink_cluster.taskmanager_pids()
    assert pids
    for pid in pids:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert set(options) <= set(arguments), (pid, arguments)
        # Added to the distribution's options (Java 17's --add-opens), not instead of them.
        assert any(argument.startswith("--add-opens") for argument in arguments)
