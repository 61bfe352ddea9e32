"""Kafka-side commands: the live demo on a local broker, serving look-ups, and a Kafka benchmark.

`run_kafka_demo` starts a single-node broker (unless one is given), creates the topics, starts the
job (`freshrank run`) in a child process, streams a generated world into Kafka live (sped up, event
times starting now) and meanwhile measures snapshot freshness; then it stops the stream, drains the
job (Flink stop-with-savepoint --drain, so the last attribution windows close and every output is
committed), reads the output topics back and prints the same summary as the embedded demo.

Snapshot freshness of a click = the time from Kafka acknowledging the click (the producer's delivery
report, i.e. produce + linger) to a read_committed `SnapshotConsumer` holding a record of the click's
user that includes the click. Which record includes it is exact, not guessed: the click's positive
example on the examples topic carries `model_version`, the learner's version when it learned the
click, and the learner publishes the user's update under the next version, so the first record of
that user with a version above `model_version` is the one (`SnapshotConsumer.seen_at_ms` tells when
it arrived). It includes the join, the learner, the wait for the next snapshot (`--snapshot-interval`)
and for the checkpoint that commits the Kafka transaction (`--checkpoint-interval`). In the decided
learning mode, clicks of the first window after the cold start are not measured: the learner defers
them to the window's end (at impression time, the default, it does not, and every click counts).

The job runs in a child process (its own MiniCluster and Py4J gateway, so nothing JVM-side leaks into
this process, and its Flink log goes next to ours); it is found and stopped through Flink's REST API,
whose free port the MiniCluster's log names, and recognised there by its unique job name.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson

from clients.kafka_properties import client_config, librdkafka_properties, write_properties_file
from clients.topics import TopicNames, create_all
from infra.flink_rest import flink_rest
from infra.ports import free_port
from infra.processes import log_tail
from infra.waiting import wait_until
from job.catalog import catalog_from_topic
from job.config import JobConfig
from job.options import DEMO_CHECKPOINT_INTERVAL_S, job_option_args
from tools.bench import latest_stage_costs, parse_us_of, plain_python_learner, small_size, where_the_time_goes
from tools.generate import GeneratorConfig, generate, write_stream
from tools.plain_program import run_plain_program
from udfs.encoding import json_default
from udfs.learner_math import DECIDED_MODE
from udfs.model_store import ITEM, USER
from udfs.records import parse_wire
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

if TYPE_CHECKING:
    from infra.cluster import StandaloneCluster

# --- reading topics ------------------------------------------------------------------------------------


def read_topic(
    bootstrap: str, topic: str, schema: str | None = None, timeout_s: float = 60.0, *,
    kafka_properties: Mapping[str, str] | None = None,
) -> list[Any]:
    """Every committed record of `topic` up to its end as of the call (read_committed, all partitions).

    Decoded with `udfs.wire` as records of `schema`, or the raw `confluent_kafka.Message`s without one.
    `TimeoutError` if the end is not reached in time (e.g. a transaction still open).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    from udfs.wire import WireDecoder

    consumer = Consumer(client_config(bootstrap, kafka_properties, **{
        "group.id": f"freshrank-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "log_level": 3,
    }))
    try:
        described = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise ValueError(f"topic {topic!r} is not available: {described.error if described else 'missing'}")
        ends = {}
        for p in sorted(described.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        decoder = WireDecoder(schema) if schema else None
        records: list[Any] = []
        pending = set(ends)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic}: end not reached after {timeout_s}s (partitions {sorted(pending)})")
            for message in consumer.consume(1000, 0.5):
                partition, error = message.partition(), message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.offset() >= ends.get(partition, 0):
                            pending.discard(partition)
                        continue
                    raise KafkaException(error)
                if message.offset() >= ends[partition]:  # written after the call
                    pending.discard(partition)
                    continue
                records.append(decoder.decode(message.value()) if decoder else message)
                if message.offset() + 1 >= ends[partition]:
                    pending.discard(partition)
        return records
    finally:
        consumer.close()


# --- serving ---------------------------------------------------------------------------------------


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000)) if ms > 0 else "none"


def _caught_up_consumer(bootstrap: str, topics: TopicNames, timeout_s: float,
                        kafka_properties: Mapping[str, str] | None = None, text_encoder: str = "none"):
    from clients.snapshot_consumer import SnapshotConsumer

    text = None
    encoder = make_encoder(text_encoder)
    if encoder is not None:  # titles from the items topic, read the way the job reads them
        catalog, _ = catalog_from_topic(bootstrap, topics.items, timeout_s, kafka_properties=kafka_properties)
        text = TextFeatures(encoder, catalog.titles)
    consumer = SnapshotConsumer(bootstrap, topics.snapshots, metadata_timeout_s=min(timeout_s, 30.0), text=text,
                                **librdkafka_properties(kafka_properties))
    try:
        consumer.catch_up(timeout_s)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _model_line(consumer) -> str:
    from collections import Counter

    kinds = Counter(entity_type for entity_type, _ in consumer.store.records)
    entities = ", ".join(f"{kind.lower()}s {count:,}" for kind, count in sorted(kinds.items())) or "none"
    return (f"model version {consumer.version} (snapshot taken {_utc(consumer.store.created_at)})  "
            f"lag {consumer.lag():,}  entities: {entities}")


def _ranking_lines(ranked: list[tuple[str, float]]) -> list[str]:
    return [f"  {rank:>3}. {item_id:<20} {'n/a (item not in the model)' if math.isnan(score) else f'{score:.4f}'}"
            for rank, (item_id, score) in enumerate(ranked, 1)]


def print_ranking(bootstrap: str, topics: TopicNames, user_id: str, candidates: list[str], k: int = 10,
                  timeout_s: float = 60.0, kafka_properties: Mapping[str, str] | None = None,
                  query: str | None = None, text_encoder: str = "use") -> None:
    """Catch up with the snapshot topic, then print the model version, the lag and the user's top-k
    (for a search, `query` ranks with the query-title term, read by the job's `text_encoder`)."""
    with _caught_up_consumer(bootstrap, topics, timeout_s, kafka_properties,
                             text_encoder if query else "none") as consumer:
        print(_model_line(consumer))
        record = consumer.user_record(user_id)
        if record is None:
            print(f"user {user_id}: not in the model (new user): ranked by item and global biases only")
        else:
            print(f"user {user_id}: {record['updates']:,} updates, vector from snapshot version {record['version']} "
                  f"({consumer.freshness_ms(user_id) / 1000:.1f} s old)")
        print(f"top {min(k, len(candidates))} of {len(candidates)} candidates (predicted click probability, "
              "position term left out):")
        print("\n".join(_ranking_lines(consumer.rank(user_id, candidates, k, query=query))))


def serve_demo(bootstrap: str, topics: TopicNames, n_users: int = 3, k: int = 5, timeout_s: float = 60.0,
               kafka_properties: Mapping[str, str] | None = None) -> None:
    """Catch up, then print the top-k of all known items for the `n_users` users with the most updates."""
    with _caught_up_consumer(bootstrap, topics, timeout_s, kafka_properties) as consumer:
        print(_model_line(consumer))
        records = consumer.store.records
        items = sorted(entity_id for entity_type, entity_id in records if entity_type == ITEM)
        users = sorted((r for (entity_type, _), r in records.items() if entity_type == USER),
                       key=lambda r: (-r["updates"], r["entity_id"]))[:n_users]
        if not items or not users:
            print("the snapshot topic holds no items or no users yet: run the job on some traffic first")
            return
        for record in users:
            user_id = record["entity_id"]
            age_s = consumer.freshness_ms(user_id) / 1000
            print(f"\nuser {user_id} ({record['updates']:,} updates, snapshot {age_s:.1f} s old): "
                  f"top {min(k, len(items))} of {len(items):,} items")
            print("\n".join(_ranking_lines(consumer.rank(user_id, items, k))))


# --- the job in a child process ---------------------------------------------------------------------


def _rest(address: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 2.0) -> Any:
    """GET (or POST `body` to) the child job's REST API at `host:port`."""
    return flink_rest(f"http://{address}", path, "GET" if body is None else "POST", body, timeout_s)


_FAILED_STATES = frozenset({"FAILING", "FAILED", "RESTARTING", "CANCELLING", "CANCELED", "SUSPENDED"})


# A live run is drained a few seconds after its stream ends. A source that is idle (no record for
# `--idleness` seconds) when the job is drained drops the final MAX_WATERMARK (Flink 2.2, FLINK-40499:
# outputs stop at the status gate while it is IDLE), so the last windows never close and their
# negatives, metrics and the final snapshot are lost. Live runs therefore declare a partition idle
# only after this long, well past the drain.
LIVE_IDLENESS_S = 60.0


def run_args(bootstrap: str, topics_suffix: str, config: JobConfig, *, group_id: str, job_name: str,
             checkpoint_interval_s: float, items: Path | None = None, bounded: bool = False,
             idleness_s: float = 5.0, kafka_properties_file: Path | None = None,
             checkpoint_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """`freshrank run` options for this configuration (the suffix as `--topic-suffix=...`: it may start with -).

    Kafka properties travel as a file (`write_properties_file`, owner-only): values on a command line
    (passwords) would be visible to every user of the machine.
    """
    args = [
        "run", "--bootstrap", bootstrap, f"--topic-suffix={topics_suffix}", "--group-id", group_id,
        "--job-name", job_name, "--checkpoint-interval", str(checkpoint_interval_s), "--idleness", str(idleness_s),
        *job_option_args(config),
    ]
    if items is not None:
        args += ["--items", str(items)]
    if bounded:
        args.append("--bounded")
    if kafka_properties_file is not None:
        args += ["--kafka-properties", str(Path(kafka_properties_file).resolve())]
    if checkpoint_dir is not None:
        args += ["--checkpoint-dir", str(checkpoint_dir)]
    return args


def job_properties_file(kafka_properties: Mapping[str, str] | None, work_dir: Path) -> Path | None:
    """The run's Kafka properties in an owner-only file of `work_dir` for a child job (None without any)."""
    if not kafka_properties:
        return None
    return write_properties_file(kafka_properties, work_dir / f"kafka-{uuid.uuid4().hex[:8]}.properties")


class LocalJob:
    """`freshrank run ...` in a child process (its own session), found and stopped through Flink's REST API."""

    def __init__(self, args: list[str], job_name: str, log_path: Path, cwd: Path) -> None:
        self.args = args
        self.job_name = job_name
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.address: str | None = None  # host:port of the job's REST endpoint
        self.job_id: str | None = None
        self.started = 0.0

    def start(self) -> LocalJob:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()  # the child's MiniCluster serves its REST API there (`--rest-port`)
        self.address = f"localhost:{port}"
        # Flink's own log next to ours (by default PyFlink writes one file in its package, shared by all runs).
        env = {**os.environ, "FLINK_LOG_DIR": str(self.flink_log_dir.resolve())}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", *self.args, "--rest-port", str(port)], stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT, cwd=self.cwd, env=env, start_new_session=True,
            )
        self.started = time.monotonic()
        return self

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def _check_alive(self) -> None:
        code = self.exited()
        if code is not None:
            raise RuntimeError(f"the job exited with code {code}; log {self.log_path}:\n{self.log_tail()}")

    @property
    def flink_log_dir(self) -> Path:
        return self.log_path.parent / "flink-log"

    def _find(self) -> dict[str, Any] | None:
        """The job's entry in /jobs/overview (None while the cluster or the job is not up yet)."""
        try:
            jobs = _rest(self.address, "/jobs/overview", timeout_s=2.0)["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return next((job for job in jobs if job.get("name") == self.job_name), None)

    def _failure(self, job: dict[str, Any]) -> str:
        """The newest exception of a failing job, shortened to its most telling lines."""
        try:
            history = _rest(self.address, f"/jobs/{job['jid']}/exceptions")
            entries = (history.get("exceptionHistory") or {}).get("entries") or []
            trace = entries[0].get("stacktrace", "") if entries else history.get("root-exception") or ""
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            trace = ""
        lines = [line.strip() for line in trace.splitlines()]
        telling = [line for line in lines if "Exception" in line or "Error" in line][-4:]
        return "\n".join(lines[:1] + telling) or f"(no exception recorded; see {self.flink_log_dir})"

    def check_state(self) -> None:
        """Raise if the child exited or the job failed or restarts (a healthy job stays RUNNING)."""
        self._check_alive()
        job = self._find()
        if job is not None and job["state"] in _FAILED_STATES:
            raise RuntimeError(f"job {self.job_name} is {job['state']}: {self._failure(job)}")

    def wait_running(self, timeout_s: float = 180.0) -> float:
        """Wait until every task of the job runs; returns seconds since `start()`. Raises if it fails."""
        def running() -> bool:
            self._check_alive()
            job = self._find()
            if job is None:
                return False
            self.job_id = job["jid"]
            if job["state"] in _FAILED_STATES:
                raise RuntimeError(f"job {self.job_name} is {job['state']} while starting: {self._failure(job)}")
            tasks = job.get("tasks", {})
            return job["state"] == "RUNNING" and tasks.get("running") == tasks.get("total")

        wait_until(running, timeout_s, 0.5, timeout_error=lambda: TimeoutError(
            f"job {self.job_name} not running after {timeout_s}s; logs in {self.log_path.parent}"))
        return time.monotonic() - self.started

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"job {self.job_name} still running after {timeout_s}s") from None

    def stop_with_drain(self, savepoint_dir: Path, timeout_s: float = 180.0) -> int:
        """Flink stop-with-savepoint --drain: sources end, MAX_WATERMARK closes every window and timer,
        the final savepoint commits the Kafka transactions, the job finishes; returns the exit code."""
        from job.flink_env import private_dir

        self._check_alive()
        if self.address is None or self.job_id is None:
            raise RuntimeError("job not found on the REST API: call wait_running() first")
        private_dir(savepoint_dir)  # the savepoint holds the whole model: owner-only, like checkpoints
        trigger = _rest(self.address, f"/jobs/{self.job_id}/stop",
                        {"drain": True, "targetDirectory": savepoint_dir.resolve().as_uri()}, timeout_s=30)
        def stopped() -> bool:
            if self.exited() is not None:
                return True
            try:
                status = _rest(self.address, f"/jobs/{self.job_id}/savepoints/{trigger['request-id']}")
            except (OSError, ValueError):  # the MiniCluster shuts down once the job has finished
                return False
            cause = (status.get("operation") or {}).get("failure-cause")
            if cause:
                raise RuntimeError(f"stop-with-savepoint failed: {str(cause.get('stack-trace', cause))[:2000]}")
            return False

        wait_until(stopped, timeout_s, 0.5, timeout_error=lambda: TimeoutError(
            f"job {self.job_name} did not stop within {timeout_s}s; log:\n{self.log_tail()}"))
        return self.wait(5)

    def kill(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to the child's process group (the job and its Flink JVM), SIGKILL after `timeout_s`."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout_s)
                return
            except subprocess.TimeoutExpired:
                continue


# --- a live run: stream, follow the snapshots, drain ------------------------------------------------


@dataclass
class LiveRun:
    """What a live run measured; outputs are read from the topics afterwards."""

    topics: TopicNames
    counts: dict[str, int]  # produced, per source
    stream_s: float  # wall seconds the stream took
    startup_s: float  # job start until all tasks ran
    job_wall_s: float  # job start until it finished (drained)
    drain_s: float
    speedup: float
    freshness: Freshness
    examples: list[dict[str, Any]] = field(default_factory=list)


def _sample_clicks(stream, n: int) -> dict[str, str]:
    """Impression id -> user id of up to `n` clicks spread over the stream (clicks on real impressions)."""
    shown = {i["impression_id"] for i in stream.impressions}
    clicks = [c for c in stream.clicks if c["impression_id"] in shown]
    picked: dict[str, str] = {}
    for c in clicks[:: max(1, math.ceil(len(clicks) / max(n, 1)))]:
        picked.setdefault(c["impression_id"], c["user_id"])
    return picked


class Freshness(NamedTuple):
    values_ms: list[float]  # one per sampled click that was measured
    at_drain: int  # sampled clicks whose update was published only by the end-of-stream drain
    warm_up: int  # clicks of the first window after a cold start: learned when it closes, by design
    unmatched: int  # sampled clicks that did not make the positive (late, orphan, another click counted)
    # Of each measured value: ack -> the snapshot record made (its created_at: batch, learning, the snapshot
    # timer); the rest is the wait for the checkpoint that commits the record, and the read.
    made_ms: list[float]
    # The values of clicks acked after the job's warm-up (`WARM_UP_S` into the stream): a job that just
    # started compiles (the JVM's JIT) and meets every query for the first time (the text encoder).
    warm_ms: list[float]


WARM_UP_S = 10.0


def freshness_of(
    acked: dict[str, tuple[int, int]],
    examples: Iterable[dict[str, Any]],
    history: dict[str, list[tuple[int, int, int]]],
    drain_started_ms: int,
    warm_up_until_ms: int | None = None,
    warm_from_ms: int | None = None,
) -> Freshness:
    """Freshness (ms) of each sampled click: ack time -> first user record with version > model_version seen.

    `acked`: impression id -> (wall ms when Kafka acknowledged the click, its timestamp = event time);
    `history`: user id -> [(version, wall ms seen, the record's created_at)] in arrival order. Clicks on
    impressions before `warm_up_until_ms` (event time) are not measured: the learner defers those positives
    to the end of the first window (udfs/join_learn.py), so the next snapshot after them would not include
    them. Clicks acked from `warm_from_ms` on (wall ms; None: all) are also reported apart (`warm_ms`).
    """
    by_id = {e["impression_id"]: e for e in examples if e["impression_id"] in acked}
    values: list[float] = []
    made: list[float] = []
    warm: list[float] = []
    at_drain = warm_up = unmatched = 0
    for impression_id, (acked_ms, click_ms) in acked.items():
        example = by_id.get(impression_id)
        if example is None or example["label"] != 1 or example["click_time"] != click_ms:
            unmatched += 1
            continue
        if warm_up_until_ms is not None and example["impression_time"] < warm_up_until_ms:
            warm_up += 1
            continue
        seen, created = next(((s, c) for v, s, c in history.get(example["user_id"], ())
                              if v > example["model_version"]), (None, None))
        if seen is None or seen >= drain_started_ms:
            at_drain += 1
            continue
        values.append(float(seen - acked_ms))
        made.append(float(created - acked_ms))
        if warm_from_ms is None or acked_ms >= warm_from_ms:
            warm.append(float(seen - acked_ms))
    return Freshness(values, at_drain, warm_up, unmatched, made, warm)


def run_live(
    bootstrap: str,
    topic_suffix: str,
    gen: GeneratorConfig,
    job: JobConfig,
    work_dir: Path,
    *,
    duration_s: float = 60.0,
    checkpoint_interval_s: float = DEMO_CHECKPOINT_INTERVAL_S,
    samples: int = 500,
    progress: bool = True,
    say: Callable[[str], None] = print,
    kafka_properties: Mapping[str, str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> LiveRun:
    """Start the job on the topics with `topic_suffix`, stream `gen` live for about `duration_s` while measuring
    snapshot freshness, then drain the job and read the examples back.

    `kafka_properties` reach every client (clients.kafka_properties); `checkpoint_dir` defaults to
    `work_dir/checkpoints` (the job runs with `work_dir` as its working directory)."""
    from clients.producer import stream_live
    from clients.snapshot_consumer import SnapshotConsumer

    topics = TopicNames().suffixed(topic_suffix)
    create_all(bootstrap, topics, partitions=2, kafka_properties=kafka_properties)
    say(f"topics {', '.join(topics.as_dict().values())} on {bootstrap}")

    stream = generate(gen)
    events = sorted(r["event_time"] for r in stream.impressions + stream.clicks)
    span_s = max((events[-1] - events[0]) / 1000.0, 1e-3)
    speedup = span_s / duration_s
    work_dir.mkdir(parents=True, exist_ok=True)
    catalog = work_dir / "items.jsonl"
    catalog.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in stream.items))

    run_id = uuid.uuid4().hex[:8]
    name = f"freshrank-live-{run_id}"
    properties_file = job_properties_file(kafka_properties, work_dir)
    local = LocalJob(run_args(bootstrap, topic_suffix, job, group_id=name, job_name=name, idleness_s=LIVE_IDLENESS_S,
                              checkpoint_interval_s=checkpoint_interval_s, items=catalog.resolve(),
                              kafka_properties_file=properties_file,
                              checkpoint_dir=checkpoint_dir or (work_dir / "checkpoints").resolve()),
                     name, work_dir / "job.log", work_dir)
    sampled = _sample_clicks(stream, samples)
    watched = set(sampled.values())
    acked: dict[str, tuple[int, int]] = {}

    def on_delivery(error: Any, message: Any) -> None:
        if error is None and message.topic() == topics.clicks:
            key = message.key().decode()
            if key in sampled and key not in acked:
                acked[key] = (int(time.time() * 1000), message.timestamp()[1])

    say(f"starting the job (Flink MiniCluster in a child process; log {local.log_path}) ...")
    local.start()
    try:
        startup_s = local.wait_running()
        say(f"job running after {startup_s:.1f} s (REST {local.address}); streaming {len(stream.impressions):,} "
            f"impressions and {len(stream.clicks):,} clicks live: {span_s:,.0f} s of event time at {speedup:.1f}x "
            f"(~{duration_s:.0f} s) ...")
        history: dict[str, list[tuple[int, int, int]]] = {u: [] for u in watched}

        def record_version(record: dict[str, Any], applied_at_ms: int) -> None:
            # Every version, not only the newest after a poll: one commit makes all the snapshots since
            # the checkpoint before visible at once, and the click's update is in the first of them.
            if record["entity_type"] == USER and record["entity_id"] in history:
                history[record["entity_id"]].append((record["version"], applied_at_ms, record["created_at"]))

        with SnapshotConsumer(bootstrap, topics.snapshots, on_applied=record_version,
                              **librdkafka_properties(kafka_properties)) as consumer:

            def follow(seconds: float | None = None, while_alive: threading.Thread | None = None) -> None:
                until = time.monotonic() + (seconds or 0.0)
                checked = time.monotonic()
                while (while_alive.is_alive() if while_alive is not None else time.monotonic() < until):
                    if time.monotonic() - checked > 5.0:  # a failing job restarts: stop rather than mis-measure
                        local.check_state()
                        checked = time.monotonic()
                    consumer.poll(0.1)
                    local._check_alive()

            stop = threading.Event()
            outcome: dict[str, Any] = {}

            def produce() -> None:
                try:
                    outcome["counts"] = stream_live(
                        bootstrap, stream, speedup, topics, progress=progress, stop=stop,
                        on_delivery=on_delivery,
                        **{**librdkafka_properties(kafka_properties), "delivery.report.only.error": False})
                except BaseException as error:  # re-raised in the main thread
                    outcome["error"] = error

            producer = threading.Thread(target=produce, name="freshrank-demo-producer", daemon=True)
            started = time.monotonic()
            warm_from_ms = int(time.time() * 1000 + WARM_UP_S * 1000)
            producer.start()
            try:
                follow(while_alive=producer)
            finally:
                stop.set()
                producer.join()
            if "error" in outcome:
                raise outcome["error"]
            stream_s = time.monotonic() - started
            # Let the last snapshots' checkpoints commit; what is newer is only published by the drain.
            follow(seconds=2 * checkpoint_interval_s + job.snapshot_interval_s + 1.0)
        say(f"stream done in {stream_s:.1f} s; draining the job (stop-with-savepoint --drain) ...")
        drain_started_ms = int(time.time() * 1000)
        drain_started = time.monotonic()
        code = local.stop_with_drain(work_dir / "savepoints")
        drain_s = time.monotonic() - drain_started
        if code != 0:
            raise RuntimeError(f"the job exited with code {code} after the drain; log:\n{local.log_tail()}")
        job_wall_s = time.monotonic() - local.started
    finally:
        local.kill()
        if properties_file is not None:
            properties_file.unlink(missing_ok=True)

    examples = read_topic(bootstrap, topics.examples, "LabeledExample", kafka_properties=kafka_properties)
    # The first window after the cold start (as the learner saw it: the first impression to arrive).
    # Only the decided mode defers them; at impression time every click is learned when it arrives.
    warm_up_until_ms = None
    if job.learner.learning_mode == DECIDED_MODE:
        first_ms = min((e["impression_time"] for e in examples), default=0)
        warm_up_until_ms = first_ms + job.window_ms + job.max_disorder_ms
    freshness = freshness_of(acked, examples, history, drain_started_ms, warm_up_until_ms, warm_from_ms)
    return LiveRun(topics, outcome["counts"], stream_s, startup_s, job_wall_s, drain_s, speedup, freshness, examples)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def freshness_line(run: LiveRun) -> str:
    f = run.freshness
    v = f.values_ms
    first_window = f"{f.warm_up} in the first window (decided mode: learned when it closes), " if f.warm_up else ""
    skipped = (f"not measured: {first_window}{f.at_drain} published only by the final drain, "
               f"{f.unmatched} not the counted click")
    if not v:
        return f"snapshot freshness: no measurement ({skipped})"
    return (f"snapshot freshness (click acked by Kafka -> updated user vector visible to a read_committed "
            f"SnapshotConsumer): p50 {_percentile(v, 50):,.0f} ms  p99 {_percentile(v, 99):,.0f} ms  "
            f"(min {min(v):,.0f}, max {max(v):,.0f}; {len(v)} sampled clicks; {skipped}); of which until the "
            f"snapshot record was made: p50 {_percentile(f.made_ms, 50):,.0f} ms  "
            f"p99 {_percentile(f.made_ms, 99):,.0f} ms (the rest: its checkpoint's commit, and the read); "
            f"clicks after the first {WARM_UP_S:g} s of the stream: p50 {_percentile(f.warm_ms, 50):,.0f} ms  "
            f"p99 {_percentile(f.warm_ms, 99):,.0f} ms ({len(f.warm_ms)} clicks)")


def freshness_figures(run: LiveRun) -> dict[str, float]:
    f = run.freshness
    return {"p50": _percentile(f.values_ms, 50), "p99": _percentile(f.values_ms, 99), "n": len(f.values_ms),
            "made_p50": _percentile(f.made_ms, 50), "made_p99": _percentile(f.made_ms, 99),
            "warm_p50": _percentile(f.warm_ms, 50), "warm_p99": _percentile(f.warm_ms, 99), "warm_n": len(f.warm_ms),
            "warm_up": f.warm_up, "at_drain": f.at_drain, "unmatched": f.unmatched}


# --- the demo and the benchmark -------------------------------------------------------------------------


# `demo --kafka` sizes and time scale (options typed on the command line win): the stream spans
# `DEMO_WINDOWS` attribution windows of event time and is played in about `duration_s` of wall time.
KAFKA_DEMO_DEFAULTS: dict[str, Any] = {
    "n_impressions": 30_000, "n_users": 300, "n_items": 300, "window": 300.0, "snapshot_interval": 1.0,
}
DEMO_WINDOWS = 10
MAX_DEMO_RATE = 1000.0  # impressions/s the live stream may ask of the pipeline (2 cores: ~2-3k examples/s)


def demo_generator_config(n_impressions: int, n_users: int, n_items: int, seed: int, job: JobConfig) -> GeneratorConfig:
    """The demo's world on the job's time scale: `DEMO_WINDOWS` windows long, its late clicks late for the job."""
    base = GeneratorConfig()
    span_s = DEMO_WINDOWS * job.window_s
    requests = max(1.0, n_impressions / base.items_per_request)
    return replace(base, n_impressions=n_impressions, n_users=n_users, n_items=n_items, seed=seed,
                   window_s=job.window_s, max_disorder_s=min(base.max_disorder_s, job.max_disorder_s),
                   requests_per_s=requests / span_s, start_ms=int(time.time() * 1000))


def unique_suffix(kind: str) -> str:
    return f"-{kind}-{uuid.uuid4().hex[:6]}"


class Broker:
    """The demo's broker: a given one, or a KafkaBroker started on a free port with its data in `data_dir`."""

    def __init__(self, bootstrap: str | None, data_dir: Path, say: Callable[[str], None]) -> None:
        self.bootstrap, self.data_dir, self.say, self.broker = bootstrap, data_dir, say, None

    def __enter__(self) -> str:
        if self.bootstrap:
            return self.bootstrap
        from infra.kafka_broker import KafkaBroker

        started = time.monotonic()
        self.say(f"starting a Kafka broker (KRaft, data in {self.data_dir}) ...")
        self.broker = KafkaBroker(port=0, data_dir=self.data_dir).start(timeout_s=120)
        self.say(f"broker {self.broker.bootstrap_servers} up in {time.monotonic() - started:.1f} s")
        return self.broker.bootstrap_servers

    def __exit__(self, *exc_info: object) -> None:
        if self.broker is not None:
            # Kafka clients awaiting garbage collection (the producer's callbacks make a cycle) would
            # otherwise log the broker's shutdown as connection failures.
            gc.collect()
            self.broker.stop()
            self.say("broker stopped")


def run_kafka_demo(
    out: Path,
    gen: GeneratorConfig,
    job: JobConfig,
    *,
    bootstrap: str | None = None,
    topic_suffix: str | None = None,
    duration_s: float = 60.0,
    checkpoint_interval_s: float = DEMO_CHECKPOINT_INTERVAL_S,
    kafka_properties: Mapping[str, str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The live demo: broker, topics, job, live stream, freshness, drain, summary; returns the summary.

    The output topics are exported to `out/run/<output>/` as JSON Lines (the embedded demo's layout),
    so the summary and the learning curve are the embedded demo's own (`tools.report`).
    """
    from tools.report import describe_plot, format_summary, plot_learning_curve, run_summary

    wall_started = time.monotonic()
    if gen.n_impressions / duration_s > MAX_DEMO_RATE:
        duration_s = gen.n_impressions / MAX_DEMO_RATE
        print(f"{gen.n_impressions:,} impressions: streaming for {duration_s:.0f} s "
              f"(at most {MAX_DEMO_RATE:,.0f} impressions/s on this machine kind)")
    suffix = topic_suffix if topic_suffix is not None else unique_suffix("demo")
    print(f"world: {gen.n_impressions:,} impressions, {gen.n_users:,} users, {gen.n_items:,} items; job: window "
          f"{job.window_s:g} s, snapshots every {job.snapshot_interval_s:g} s, checkpoints every "
          f"{checkpoint_interval_s:g} s, parallelism {job.parallelism}")
    with Broker(bootstrap, out / "kafka", print) as servers:
        live = run_live(servers, suffix, gen, job, out / "job", duration_s=duration_s,
                        checkpoint_interval_s=checkpoint_interval_s, kafka_properties=kafka_properties,
                        checkpoint_dir=checkpoint_dir)
        export_outputs(servers, live.topics, out / "run", kafka_properties)
    oracle = generate(gen).oracle
    summary = run_summary(out / "run", live.job_wall_s, job.window_ms, oracle)
    summary.update({
        "produced": live.counts,
        "stream_s": live.stream_s,
        "speedup": live.speedup,
        "job_startup_s": live.startup_s,
        "drain_s": live.drain_s,
        "freshness_ms": freshness_figures(live),
    })
    png = plot_learning_curve(out / "run", out / "learning-curve.png", oracle)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print()
    print(format_summary(summary))
    print(f"live stream: {live.counts.get('impressions', 0):,} impressions + {live.counts.get('clicks', 0):,} clicks "
          f"in {live.stream_s:.1f} s ({live.speedup:.1f}x event time); job start-up {live.startup_s:.1f} s, "
          f"drain {live.drain_s:.1f} s")
    print(freshness_line(live))
    print(f"\noutputs: topics *{suffix}, exported to {out / 'run'}/{{{','.join(OUTPUT_TOPICS)}}}")
    print(f"{describe_plot(png)}; total {time.monotonic() - wall_started:.0f} s")
    return summary


# Output folder -> (TopicNames field, record schema), as the job writes them.
OUTPUT_TOPICS: dict[str, tuple[str, str]] = {
    "examples": ("examples", "LabeledExample"),
    "snapshots": ("snapshots", "ModelSnapshot"),
    "metrics": ("metrics", "Metric"),
    "dead-letter": ("dead_letter", "DeadLetter"),
    "late-clicks": ("late_clicks", "Click"),
    "orphan-clicks": ("orphan_clicks", "Click"),
}


def export_outputs(bootstrap: str, topics: TopicNames, out_dir: Path,
                   kafka_properties: Mapping[str, str] | None = None) -> dict[str, int]:
    """Every committed record of the output topics as JSON Lines under `out_dir/<output>/`; returns counts."""
    counts = {}
    for name, (topic_field, schema) in OUTPUT_TOPICS.items():
        records = read_topic(bootstrap, getattr(topics, topic_field), schema, kafka_properties=kafka_properties)
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "part-0.jsonl", "wb") as handle:
            for record in records:
                handle.write(orjson.dumps(record, default=json_default) + b"\n")
        counts[name] = len(records)
    return counts


def produce_in_order(bootstrap: str, topics: TopicNames, stream,
                     kafka_properties: Mapping[str, str] | None = None) -> dict[str, int]:
    """Produce a stream's catalog, then its impressions and clicks in event-time order, as fast as possible."""
    from clients.producer import Producer

    with Producer(bootstrap, topics, **librdkafka_properties(kafka_properties)) as producer:
        for item in stream.items:
            producer.send_item(item)
        events = sorted([("impressions", r) for r in stream.impressions] + [("clicks", r) for r in stream.clicks],
                        key=lambda pair: pair[1]["event_time"])
        for source, record in events:
            producer.send(source, record)
        producer.flush(120)
        return dict(producer.sent)


def _bounded_locally(args: list[str], name: str, work_dir: Path, folder: str = "bounded") -> tuple[float, float]:
    """`freshrank run --bounded` on a MiniCluster in a child process: (wall seconds, start-up seconds)."""
    local = LocalJob(args, name, work_dir / folder / "job.log", work_dir)
    local.start()
    try:
        startup_s = local.wait_running()
        code = local.wait(3600)
    finally:
        local.kill()
    if code != 0:
        raise RuntimeError(f"bounded job exited with code {code}; log:\n{local.log_tail()}")
    return time.monotonic() - local.started, startup_s


def _bounded_on_cluster(args: list[str], parallelism: int, taskmanagers: int, home: Path) -> tuple[float, float]:
    """The same job submitted (`flink run`) to a fresh standalone cluster: (wall seconds, start-up seconds)."""
    from infra.cluster import StandaloneCluster

    slots = -(-parallelism // taskmanagers)
    with StandaloneCluster(home, slots=slots, taskmanagers=taskmanagers) as cluster:
        return bounded_on(cluster, args, parallelism)


def bounded_on(cluster: StandaloneCluster, args: list[str], parallelism: int) -> tuple[float, float]:
    """`freshrank run --bounded` ARGS submitted to a running cluster, until it finishes: (wall seconds
    from the submission, start-up seconds)."""
    started = time.monotonic()
    job_id = cluster.submit(args[1:], parallelism=parallelism)  # args[0] is the `run` command
    startup_s = None
    while True:  # start-up ends when every task runs (a bounded source may have finished by then)
        job = cluster.rest(f"/jobs/{job_id}")
        if startup_s is None and all(v["status"] in ("RUNNING", "FINISHED") for v in job["vertices"]):
            startup_s = time.monotonic() - started
        if job["state"] == "FINISHED":
            return time.monotonic() - started, startup_s if startup_s is not None else math.nan
        if job["state"] in ("FAILED", "CANCELED"):
            raise RuntimeError(f"bounded job {job['state']}:\n{cluster.failure(job_id)}")
        time.sleep(0.2)


def _send_closers(bootstrap: str, topics: TopicNames, event_time: int,
                  kafka_properties: Mapping[str, str] | None = None) -> None:
    """An impression and a click at `event_time` on every partition of the input topics: a live job's
    watermark then passes every window of what came before (no partition is left behind)."""
    from confluent_kafka import Producer as RawProducer

    from udfs.wire import encode

    producer = RawProducer(client_config(bootstrap, kafka_properties))
    for topic, schema in ((topics.impressions, "Impression"), (topics.clicks, "Click")):
        for partition in sorted(producer.list_topics(topic, timeout=10).topics[topic].partitions):
            key = f"closer-{schema.lower()}-{partition}"
            record = {"impression_id": key, "user_id": "closer", "item_id": "closer", "event_time": event_time}
            if schema == "Impression":
                record.update(request_id="closer", query=None, position=1)
            producer.produce(topic, encode(schema, record), key=key, partition=partition, timestamp=event_time)
    if producer.flush(30) != 0:
        raise RuntimeError("the closing events were not all delivered")


def _wait_for_committed(bootstrap: str, topic: str, count: int, job: LocalJob, timeout_s: float,
                        kafka_properties: Mapping[str, str] | None = None) -> None:
    """Consume `topic` (read_committed) until `count` records have been committed to it."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(client_config(bootstrap, kafka_properties, **{
        "group.id": f"freshrank-counter-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "log_level": 3}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen, deadline = 0, time.monotonic() + timeout_s
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {seen:,} of {count:,} records committed after {timeout_s:g} s")
            job.check_state()
            seen += sum(1 for message in consumer.consume(10_000, 0.2) if message.error() is None)
    finally:
        consumer.close()


def _live_catch_up(servers: str, stream, job: JobConfig, expected: int, work_dir: Path, *,
                   checkpoint_interval_s: float, kafka_properties: Mapping[str, str] | None,
                   checkpoint_dir: str | os.PathLike[str] | None) -> tuple[float, float]:
    """A live (unbounded) job started over the stream as a backlog, closed by one late event per
    partition: (seconds from running until its `expected` examples are committed, start-up seconds)."""
    suffix = unique_suffix("bench-catch-up")
    topics = TopicNames().suffixed(suffix)
    create_all(servers, topics, partitions=2, kafka_properties=kafka_properties)
    produce_in_order(servers, topics, stream, kafka_properties)
    last_ms = max(r["event_time"] for r in stream.impressions + stream.clicks)
    _send_closers(servers, topics, last_ms + job.window_ms + job.max_disorder_ms + 1000, kafka_properties)
    name = f"freshrank-catch-up-{uuid.uuid4().hex[:8]}"
    properties_file = job_properties_file(kafka_properties, work_dir)
    args = run_args(servers, suffix, job, group_id=name, job_name=name, checkpoint_interval_s=checkpoint_interval_s,
                    kafka_properties_file=properties_file,
                    checkpoint_dir=checkpoint_dir or (work_dir / "catch-up-checkpoints").resolve())
    local = LocalJob(args, name, work_dir / "catch-up" / "job.log", work_dir)
    local.start()
    try:
        startup_s = local.wait_running()
        running = time.monotonic()
        _wait_for_committed(servers, topics.examples, expected, local, 1800, kafka_properties)
        return time.monotonic() - running, startup_s
    finally:
        local.kill()
        if properties_file is not None:
            properties_file.unlink(missing_ok=True)


def generated_now(n_impressions: int, seed: int, heavy_users: int):
    """A generated stream whose event times end now: retention (measured against the wall clock) keeps them."""
    stream = generate(GeneratorConfig(n_impressions=n_impressions, seed=seed, heavy_users=heavy_users))
    records = stream.impressions + stream.clicks
    offset = int(time.time() * 1000) - max(r["event_time"] for r in records)
    for record in records:
        record["event_time"] += offset
    return stream


def run_kafka_bench(
    work_dir: Path,
    n_impressions: int,
    job: JobConfig,
    *,
    seed: int = 7,
    heavy_users: int = 3,
    bootstrap: str | None = None,
    checkpoint_interval_s: float = DEMO_CHECKPOINT_INTERVAL_S,
    live_impressions: int = 20_000,
    live_duration_s: float = 45.0,
    taskmanagers: int = 0,
    kafka_properties: Mapping[str, str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> dict[str, float]:
    """Kafka impressions/s of a bounded run over pre-produced topics (with start-up, once running, and at
    steady state), the learner's stage costs, a live job catching up, and live snapshot freshness.

    The bounded run goes to a local MiniCluster (one JVM), or with `taskmanagers` to a standalone
    cluster of that many TaskManager JVMs: in thread mode each embeds one interpreter, so that is how
    Python work spreads over cores. The steady state is the file bench's (tools.bench): a second,
    small bounded run, and (N_big - N_small) / (T_big - T_small) from running, so what every job pays
    once (the JIT compiling the JVM operators, the final checkpoint and commit) cancels out."""
    figures: dict[str, float] = {}
    with Broker(bootstrap, work_dir / "kafka", print) as servers:
        suffix = unique_suffix("bench")
        topics = TopicNames().suffixed(suffix)
        create_all(servers, topics, partitions=2, kafka_properties=kafka_properties)
        stream = generated_now(n_impressions, seed, heavy_users)
        # The baseline, on the same events: the plain single-process program reading them from files.
        files = write_stream(stream, work_dir / "events")
        plain = run_plain_program(files["impressions"], files["clicks"], job.window_ms, job.learner)
        figures["plain_program_impressions_per_s"] = plain.impressions_per_s
        print(f"plain single-process program over the same events: {plain.impressions_per_s:,.0f} impressions/s")
        print(f"producing {len(stream.impressions):,} impressions and {len(stream.clicks):,} clicks "
              f"({heavy_users} heavy users) ...")
        started = time.monotonic()
        sent = produce_in_order(servers, topics, stream, kafka_properties)
        figures["produce_events_per_s"] = (sent["impressions"] + sent["clicks"]) / (time.monotonic() - started)
        n_small = small_size(n_impressions)
        small_suffix = unique_suffix("bench-small")
        small_topics = TopicNames().suffixed(small_suffix)
        create_all(servers, small_topics, partitions=2, kafka_properties=kafka_properties)
        sent_small = produce_in_order(servers, small_topics, generated_now(n_small, seed, heavy_users),
                                      kafka_properties)
        work_dir.mkdir(parents=True, exist_ok=True)
        properties_file = job_properties_file(kafka_properties, work_dir)
        # On a standalone cluster without --checkpoint-dir, its own config (its home) names the dirs.
        local_dir = None if taskmanagers else (work_dir / "checkpoints").resolve()

        def bounded(topic_suffix: str, folder: str) -> tuple[float, float]:
            name = f"freshrank-bench-{uuid.uuid4().hex[:8]}"
            args = run_args(servers, topic_suffix, job, group_id=name, job_name=name,
                            checkpoint_interval_s=checkpoint_interval_s, bounded=True,
                            kafka_properties_file=properties_file, checkpoint_dir=checkpoint_dir or local_dir)
            if taskmanagers:
                return _bounded_on_cluster(args, job.parallelism, taskmanagers, work_dir / f"cluster-{folder}")
            return _bounded_locally(args, name, work_dir, folder)

        where = (f"a standalone cluster of {taskmanagers} TaskManager(s)" if taskmanagers
                 else "a local MiniCluster")
        print(f"bounded job over them on {where} (parallelism {job.parallelism}, checkpoints every "
              f"{checkpoint_interval_s:g} s) ...")
        try:
            wall_s, startup_s = bounded(suffix, "bounded")
            print(f"bounded job over {sent_small['impressions']:,} impressions (for the steady state) ...")
            small_wall_s, small_startup_s = bounded(small_suffix, "bounded-small")
        finally:
            if properties_file is not None:
                properties_file.unlink(missing_ok=True)
        examples = read_topic(servers, topics.examples, "LabeledExample", kafka_properties=kafka_properties)
        n_examples = len(examples)
        costs = latest_stage_costs(read_topic(servers, topics.metrics, "Metric", kafka_properties=kafka_properties))
        # The learner math alone in a Python loop over the job's own examples (no parse, no join, no I/O).
        learner_s = plain_python_learner(sorted(examples, key=lambda e: e["impression_time"]), job)
        del examples
        figures["plain_python_learner_examples_per_s"] = n_examples / learner_s if learner_s > 0 else math.nan
        # The parse's Python work per message, timed outside Flink on the messages the job read.
        raw = [(schema, [m.value() for m in read_topic(servers, topic, kafka_properties=kafka_properties)])
               for schema, topic in (("Impression", topics.impressions), ("Click", topics.clicks))]
        parse_us = parse_us_of(raw, parse_wire)
        del raw
        running_s, small_running_s = wall_s - startup_s, small_wall_s - small_startup_s
        extra_s = running_s - small_running_s
        steady = (sent["impressions"] - sent_small["impressions"]) / extra_s if extra_s > 0 else math.nan
        figures.update({
            "impressions": sent["impressions"], "examples": n_examples, "job_wall_s": wall_s, "startup_s": startup_s,
            "kafka_impressions_per_s": sent["impressions"] / wall_s,
            "kafka_impressions_per_s_after_startup": sent["impressions"] / running_s,
            "impressions_small": sent_small["impressions"], "small_running_s": small_running_s,
            "kafka_steady_impressions_per_s": steady,
        })
        figures.update(costs)
        print(f"end to end on Kafka (start-up included): {figures['kafka_impressions_per_s']:,.0f} impressions/s "
              f"({sent['impressions']:,} in {wall_s:.1f} s; {n_examples:,} examples); from running: "
              f"{figures['kafka_impressions_per_s_after_startup']:,.0f} impressions/s (start-up {startup_s:.1f} s)")
        figures["ratio_kafka_to_plain_program"] = (figures["kafka_impressions_per_s_after_startup"]
                                                   / figures["plain_program_impressions_per_s"])
        figures["ratio_kafka_steady_to_plain_program"] = steady / figures["plain_program_impressions_per_s"]
        learner_rate = figures["plain_python_learner_examples_per_s"]
        print(f"ratio, running Kafka job / plain program: {figures['ratio_kafka_to_plain_program']:.3f}; the plain "
              f"learner-math loop over the job's examples: {learner_rate:,.0f} examples/s (running job / it: "
              f"{figures['kafka_impressions_per_s_after_startup'] / learner_rate:.3f})")
        print(f"steady state: {steady:,.0f} impressions/s, {figures['ratio_kafka_steady_to_plain_program']:.3f} of "
              f"the plain program ((N_big - N_small) / (T_big - T_small) from running, with a second bounded job "
              f"over {sent_small['impressions']:,} impressions: {small_running_s:.1f} s)")
        split = where_the_time_goes(steady, (sent["impressions"] + sent["clicks"]) / sent["impressions"], parse_us,
                                    costs)
        figures.update({f"us_per_impression {stage}": value for stage, value in split.items()})
        print("where an impression's microseconds go at steady state (the learner's stages as it reports them, "
              "the parse timed on the same messages outside the job; the rest: the JVM operators, the crossings, "
              "the sinks, the broker): " + ", ".join(f"{stage} {value:.1f}" for stage, value in split.items()))
        print(f"producer (validate + Avro-encode + send): {figures['produce_events_per_s']:,.0f} events/s")

        print("live (unbounded) job started over the same events as a backlog, closed by one later event "
              "per partition ...")
        catch_up_s, catch_up_startup_s = _live_catch_up(
            servers, stream, job, n_examples, work_dir, checkpoint_interval_s=checkpoint_interval_s,
            kafka_properties=kafka_properties, checkpoint_dir=checkpoint_dir)
        figures["live_catch_up_impressions_per_s"] = sent["impressions"] / catch_up_s
        ratio = figures["live_catch_up_impressions_per_s"] / figures["plain_program_impressions_per_s"]
        print(f"live job catching up: {figures['live_catch_up_impressions_per_s']:,.0f} impressions/s once running "
              f"({n_examples:,} examples committed {catch_up_s:.1f} s after it ran; start-up "
              f"{catch_up_startup_s:.1f} s), {ratio:.3f} of the plain program")

        live_job = replace(job, window_s=KAFKA_DEMO_DEFAULTS["window"],
                           snapshot_interval_s=KAFKA_DEMO_DEFAULTS["snapshot_interval"])
        live_gen = demo_generator_config(live_impressions, KAFKA_DEMO_DEFAULTS["n_users"],
                                         KAFKA_DEMO_DEFAULTS["n_items"], seed, live_job)
        print(f"live run for freshness: {live_impressions:,} impressions over ~{live_duration_s:.0f} s, "
              f"snapshots every {live_job.snapshot_interval_s:g} s ...")
        live = run_live(servers, unique_suffix("bench-live"), live_gen, live_job,
                        work_dir / "live", duration_s=live_duration_s, checkpoint_interval_s=checkpoint_interval_s,
                        kafka_properties=kafka_properties, checkpoint_dir=checkpoint_dir)
        figures.update({f"freshness_{k}": v for k, v in freshness_figures(live).items()})
        print(freshness_line(live))
    return figures
