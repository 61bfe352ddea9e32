"""Putting input events on Kafka: a producer for services, a file replayer and a live generator stream.

Every message is one record in Avro single-object encoding (`udfs.wire`), keyed so the job's join
sees an impression and its clicks in the same partition (key = impression_id; catalog items are keyed
by item_id) and stamped with the record's event time as its Kafka timestamp (items: the send time).

Records are validated before they are encoded: a service that emits an invalid record learns at once
(`ValueError` with the reason) instead of filling the job's dead letter. Delivery is asynchronous and
batched (idempotent producer, lz4, linger 5 ms); delivery failures are raised by the next `send_*` or
`flush()` as `DeliveryError`.

    with Producer("localhost:9092") as producer:
        producer.send_impression({...})
        producer.send_click({...})
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any, NamedTuple, Protocol

import confluent_kafka

from clients.event_files import numbered_records
from clients.topics import DEFAULT_TOPICS, TopicNames
from udfs.records import fast_validator, validate_record
from udfs.wire import encode

log = logging.getLogger(__name__)

# source -> (schema, key field, whether the event time is the Kafka timestamp)
SOURCES: dict[str, tuple[str, str, bool]] = {
    "impressions": ("Impression", "impression_id", True),
    "clicks": ("Click", "impression_id", True),
    "items": ("Item", "item_id", False),
}

DEFAULT_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,  # acks=all, no duplicates or reordering on retries
    "linger.ms": 5,
    "compression.type": "lz4",  # bundled in every librdkafka build
    "partitioner": "murmur2_random",  # Java's default: the same key lands in the same partition as from a JVM
    "delivery.report.only.error": True,  # no callback per delivered message on the fast path
}

_PROGRESS_STEP = 256  # progress bar updates every this many messages



class DeliveryError(RuntimeError):
    """Messages that Kafka did not accept (or a fatal producer error); `errors` lists the reasons."""

    def __init__(self, errors: list[str], total: int) -> None:
        shown = "; ".join(errors[:5]) + (f"; ... ({total - 5} more)" if total > 5 else "")
        super().__init__(f"{total} message(s) failed: {shown}")
        self.errors = errors
        self.total = total


class Message(NamedTuple):
    """A validated, encoded record ready to produce."""

    source: str
    topic: str
    key: str
    value: bytes
    timestamp: int  # ms; 0 = let the client stamp the send time


class Producer:
    """Validating, encoding producer of impressions, clicks and catalog items.

    `conf` is passed to confluent_kafka.Producer over the defaults (`DEFAULT_CONFIG`); librdkafka names
    have dots, so pass them as `**{"linger.ms": 20}`. An `error_cb` or `on_delivery` in `conf` is called
    as well as this class's own. Not thread-safe for concurrent `flush`/`close`; `send_*` from one thread.
    """

    _MAX_KEPT_ERRORS = 100

    def __init__(self, bootstrap: str, topics: TopicNames = DEFAULT_TOPICS, **conf: Any) -> None:
        self.topics = topics
        self._topic_of = {source: getattr(topics, source) for source in SOURCES}
        self._user_error_cb: Callable[[Any], None] | None = conf.pop("error_cb", None)
        self._user_on_delivery: Callable[[Any, Any], None] | None = conf.pop("on_delivery", None)
        config = {"bootstrap.servers": bootstrap, **DEFAULT_CONFIG, **conf}
        config["error_cb"] = self._on_error
        config["on_delivery"] = self._on_delivery
        self._lock = threading.Lock()  # callbacks run in whichever thread polls
        self._errors: list[str] = []
        self._error_count = 0
        self.failed = 0  # messages (or fatal errors) reported as failed over the producer's life
        self.sent = dict.fromkeys(SOURCES, 0)  # messages handed to the client, per source
        self._producer = confluent_kafka.Producer(config)
        self._closed = False

    # --- callbacks -----------------------------------------------------------------------------

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._error_count += 1
            self.failed += 1
            if len(self._errors) < self._MAX_KEPT_ERRORS:
                self._errors.append(text)

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            key = message.key().decode(errors="replace") if message.key() else None
            self._record_error(f"{message.topic()} key={key}: {error.str()}")
        if self._user_on_delivery is not None:
            self._user_on_delivery(error, message)

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self._record_error(f"fatal producer error: {error.str()}")
        else:
            log.warning("kafka producer: %s", error.str())
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def raise_errors(self) -> None:
        """Raise `DeliveryError` for failures reported since the last call (each is raised once)."""
        with self._lock:
            if not self._error_count:
                return
            errors, total = self._errors, self._error_count
            self._errors, self._error_count = [], 0
        raise DeliveryError(errors, total)

    # --- sending -------------------------------------------------------------------------------

    def prepare(self, source: str, record: Mapping[str, Any]) -> Message:
        """Validate and encode one record of `source` (impressions, clicks or items); `ValueError` if invalid."""
        try:
            schema, key_field, event_timestamp = SOURCES[source]
        except KeyError:
            raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}") from None
        valid = record if isinstance(record, dict) else dict(record)
        fast = fast_validator(schema)
        if fast is None or not fast(valid):
            valid = validate_record(schema, valid)
        value = encode(schema, valid)  # WireError (a ValueError) for anything validation let through
        return Message(source, self._topic_of[source], valid[key_field], value,
                       valid["event_time"] if event_timestamp else 0)

    def produce(self, message: Message) -> None:
        """Hand an encoded message to the client (waits while its queue is full)."""
        self.raise_errors()
        while True:
            try:
                self._producer.produce(message.topic, message.value, message.key, timestamp=message.timestamp)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
                self.raise_errors()
        self.sent[message.source] += 1
        self._producer.poll(0)

    def send(self, source: str, record: Mapping[str, Any]) -> None:
        """Validate, encode and produce one record of `source`; `ValueError` with the reason if invalid."""
        self.produce(self.prepare(source, record))

    def send_impression(self, record: Mapping[str, Any]) -> None:
        self.send("impressions", record)

    def send_click(self, record: Mapping[str, Any]) -> None:
        self.send("clicks", record)

    def send_item(self, record: Mapping[str, Any]) -> None:
        self.send("items", record)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery callbacks (waiting up to `timeout_s` for one); raises earlier failures."""
        self._producer.poll(timeout_s)
        self.raise_errors()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every message is delivered; `DeliveryError` on failures, `TimeoutError` if some are left."""
        remaining = self._producer.flush(timeout_s)
        self.raise_errors()
        if remaining:
            raise TimeoutError(f"{remaining} message(s) still undelivered after {timeout_s}s")

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush (raising what failed); the producer is not usable afterwards."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout_s)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # deliver what we can, but do not hide the original error
            try:
                self.close(5.0)
            except (DeliveryError, TimeoutError) as error:
                log.warning("while closing after %s: %s", exc_type.__name__, error)


# --- files and generated streams ---------------------------------------------------------------


def _file_records(path: str | Path) -> list[Any]:
    """Records of the event files under `path` (clients.event_files); a line that is no record is in the
    list as its MalformedRecord, so it is counted and skipped with the invalid ones."""
    malformed: list[Any] = []
    records: list[Any] = [record for _, record in numbered_records(Path(path), on_malformed=malformed.append)]
    return records + malformed


def _prepare_all(producer: Producer, source: str, records: Iterable[Any], counts: dict[str, int]) -> list[Message]:
    """Valid records of `source` as messages, in order; invalid ones are counted, skipped and logged."""
    messages, reasons = [], []
    for record in records:
        try:
            if isinstance(record, Exception):
                raise record
            messages.append(producer.prepare(source, record))
        except ValueError as error:
            reasons.append(str(error))
    counts[source] = 0
    counts[f"invalid_{source}"] = len(reasons)
    if reasons:
        log.warning("skipped %d invalid %s record(s), e.g. %s", len(reasons), source, "; ".join(reasons[:3]))
    return messages


def _emit(
    producer: Producer,
    messages: Iterable[tuple[float | None, Message]],
    total: int,
    counts: dict[str, int],
    *,
    progress: bool,
    desc: str,
    stop: threading.Event | None = None,
) -> None:
    """Produce `(deadline, message)` pairs in order, each not before its monotonic-clock deadline."""
    with _progress_bar(total, desc, progress) as bar:
        pending = 0
        for deadline, message in messages:
            if stop is not None and stop.is_set():
                break
            if deadline is not None:
                wait = deadline - time.monotonic()
                while wait > 0 and not (stop is not None and stop.is_set()):
                    producer.poll(min(wait, 0.1))  # sleeps, serving delivery callbacks meanwhile
                    wait = deadline - time.monotonic()
                if stop is not None and stop.is_set():
                    break
            producer.produce(message)
            counts[message.source] += 1
            pending += 1
            if pending >= _PROGRESS_STEP:
                bar.update(pending)
                pending = 0
        bar.update(pending)


def _progress_bar(total: int, desc: str, wanted: bool) -> Any:
    """tqdm's bar (the `progress` extra), or one that shows nothing when it is not installed."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        if total and wanted:
            log.info("%s: %d events (install freshrank[progress] for a progress bar)", desc, total)
        return contextlib.nullcontext(SimpleNamespace(update=lambda _: None))
    return tqdm(total=total, unit="ev", desc=desc, disable=not wanted, mininterval=0.5, smoothing=0.1)


def _event_time_order(impressions: list[Message], clicks: list[Message]) -> list[Message]:
    """Impressions and clicks merged by event time; stable: ties keep impressions first, then file order."""
    events = impressions + clicks
    events.sort(key=lambda message: message.timestamp)
    return events


def replay_files(
    bootstrap: str,
    impressions: str | Path,
    clicks: str | Path,
    items: str | Path | None = None,
    rate: float | None = None,
    topics: TopicNames = DEFAULT_TOPICS,
    progress: bool = True,
    *,
    flush_timeout_s: float = 60.0,
    **conf: Any,
) -> dict[str, int]:
    """Produce event files (JSON Lines or Avro containers, files or folders) to Kafka; returns counts.

    The catalog goes first (and is flushed), then impressions and clicks merged in event-time order,
    at most `rate` events per second if given. Records that fail validation cannot be Avro-encoded:
    they are counted (`invalid_<source>`), logged and skipped. All records are validated and encoded
    before the first event is sent (memory: about 200 bytes per event).
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    counts: dict[str, int] = {"items": 0, "invalid_items": 0}
    with Producer(bootstrap, topics, **conf) as producer:
        item_messages = _prepare_all(producer, "items", _file_records(items), counts) if items is not None else []
        events = _event_time_order(
            _prepare_all(producer, "impressions", _file_records(impressions), counts),
            _prepare_all(producer, "clicks", _file_records(clicks), counts),
        )
        if items is not None:
            _emit(producer, ((None, m) for m in item_messages), len(item_messages), counts,
                  progress=progress, desc="items")
            producer.flush(flush_timeout_s)

        def paced() -> Iterator[tuple[float | None, Message]]:
            start = time.monotonic()
            for index, message in enumerate(events):
                yield (start + index / rate if rate else None), message

        _emit(producer, paced(), len(events), counts, progress=progress, desc="events")
        producer.flush(flush_timeout_s)
    return counts


class EventStream(Protocol):
    """Records of a world to stream (e.g. tools.generate.generate's): catalog, impressions, clicks."""

    items: list[dict[str, Any]]
    impressions: list[dict[str, Any]]
    clicks: list[dict[str, Any]]


def stream_live(
    bootstrap: str,
    stream: EventStream,
    speedup: float = 1.0,
    topics: TopicNames = DEFAULT_TOPICS,
    progress: bool = True,
    *,
    stop: threading.Event | None = None,
    flush_timeout_s: float = 60.0,
    launches: Mapping[str, int] | None = None,
    **conf: Any,
) -> dict[str, int]:
    """Stream a world of records live: the catalog at once, then each event when its time comes.

    `launches` (item id -> event time): catalog items published when their time comes instead of at
    once, as a shop adds products while the job runs.

    Event times are shifted so the first impression or click happens now; an event `t` ms after the
    first is sent `t / speedup` ms after the start, so with `speedup > 1` event times run ahead of the
    wall clock (by up to the stream's span; topics from `clients.topics.create_all` accept 7 days of that).
    Setting `stop` (from another thread) ends the stream early. Returns counts like `replay_files`.
    """
    if speedup <= 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    counts: dict[str, int] = {}
    with Producer(bootstrap, topics, **conf) as producer:
        launches = launches or {}
        item_messages = _prepare_all(producer, "items", [i for i in stream.items if i["item_id"] not in launches],
                                     counts)
        _emit(producer, ((None, m) for m in item_messages), len(item_messages), counts,
              progress=progress, desc="items")
        producer.flush(flush_timeout_s)

        tagged = ([(r["event_time"], "impressions", r) for r in stream.impressions]
                  + [(r["event_time"], "clicks", r) for r in stream.clicks])
        # A launched item is published just before the first event of its time: stable sort, listed first.
        tagged = [(launches[i["item_id"]], "items", i) for i in stream.items if i["item_id"] in launches] + tagged
        tagged.sort(key=lambda entry: entry[0])  # stable: items, then impressions first on ties
        counts.update({"impressions": 0, "clicks": 0, "invalid_impressions": 0, "invalid_clicks": 0})
        counts.setdefault("invalid_items", 0)
        if not tagged:
            return counts
        first_ms = tagged[0][0]
        offset_ms = int(time.time() * 1000) - first_ms
        start = time.monotonic()

        def timed() -> Iterator[tuple[float | None, Message]]:
            for event_ms, source, record in tagged:
                try:
                    shifted = record if source == "items" else {**record, "event_time": event_ms + offset_ms}
                    message = producer.prepare(source, shifted)
                except ValueError as error:
                    counts[f"invalid_{source}"] += 1
                    log.warning("skipped invalid %s record: %s", source, error)
                    continue
                yield start + (event_ms - first_ms) / 1000.0 / speedup, message

        _emit(producer, timed(), len(tagged), counts, progress=progress, desc="events", stop=stop)
        producer.flush(flush_timeout_s)
    return counts
