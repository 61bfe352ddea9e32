"""Parse operator: raw input records in, validated events out, rejects to the dead letter."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from pyflink.common import Row
from pyflink.datastream import OutputTag, ProcessFunction

from udfs.encoding import RecordEncoder
from udfs.event_blocks import ShardBlocks
from udfs.interpreter import limit_native_threads, tune_garbage_collector
from udfs.records import (
    NO_WATERMARK,
    InvalidRecord,
    catalog_item_event,
    click_event,
    fast_validator,
    impression_event,
    parse_json,
    parse_wire,
    quick_decoder,
)

if TYPE_CHECKING:
    from udfs.event_lines import EventKernel

DEAD_LETTER_MAX_BYTES = 64 * 1024  # --dead-letter-max-bytes
# A reason quotes what it found (unknown field names, bad values): bounded too, or a hostile record
# could make it as large as the payload it describes.
MAX_REASON_CHARS = 2048


def dead_letter(source: str, reason: str, payload: str | bytes | None,
                max_bytes: int = DEAD_LETTER_MAX_BYTES) -> dict[str, Any]:
    """A DeadLetter record (schemas/DeadLetter.avsc) whose payload keeps at most `max_bytes` of the
    rejected record (`payload_size` says how long it was): a rejected message close to the broker's
    limit must not become a dead-letter message over the sink's `max.request.size`."""
    if payload is None:  # a tombstone: there is nothing to keep
        raw = b""
    else:
        raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[:MAX_REASON_CHARS] + f"... ({len(reason)} characters)"
    return {"source": source, "reason": reason, "payload": raw[:max(max_bytes, 0)], "payload_size": len(raw),
            "received_at": int(time.time() * 1000)}


# Event times stay below this whatever --max-event-ahead says: event_time + window + retention and the
# learner's other deadlines must still fit a signed 64-bit long (a record near 2^63 overflowed them).
MAX_EVENT_TIME = 2**62


def event_time_bound(progress_ms: int | None, progress_wall_ms: int, now_ms: int, max_ahead_ms: int) -> int:
    """The latest event time a parse subtask accepts: `min(progress, now) + max_ahead`.

    `progress_ms` is the newest event time it has accepted (None before the first: the wall clock
    stands in). Progress ages with the wall clock since it was reached (`progress_wall_ms`): a live
    stream that pauses for longer than `max_ahead` must not find every event after the pause out of
    bounds; a replay, which runs far faster than the clock, still has its own progress as the bound.
    """
    if progress_ms is None:
        base = now_ms
    else:
        base = min(progress_ms + max(now_ms - progress_wall_ms, 0), now_ms)
    return min(base + max_ahead_ms, MAX_EVENT_TIME)


def event_time_problem(event_time: int, bound_ms: int, max_ahead_ms: int) -> str | None:
    """The dead-letter reason for an event time beyond `bound_ms`, or None if it is within it."""
    if event_time <= bound_ms:
        return None
    return (f"event_time {event_time} is beyond the bound {bound_ms}: more than --max-event-ahead "
            f"{max_ahead_ms / 1000:g} s ahead of min(newest accepted event time, wall clock)")


TO_EVENT: dict[str, Callable[[dict[str, Any]], list]] = {
    "Impression": impression_event,
    "Click": click_event,
}


def shard_of(user_id: str, routes: list[str]) -> str:
    """The learner shard of a user: `routes` is the routing table, the shard of each bucket
    (job.routing.user_routes; plain shards are a table of one bucket each), and a user's bucket a
    stable hash (the same in every process, unlike `hash`)."""
    return routes[zlib.crc32(user_id.encode()) % len(routes)]


def routes_id(routes: list[str]) -> str:
    """A short id of the routing `routes` makes: tables that route every user alike have the same id
    (a table repeated routes as the table itself)."""
    n = len(routes)
    period = next(p for p in range(1, n + 1) if n % p == 0 and routes == routes[:p] * (n // p))
    return f"{period}:{zlib.crc32(chr(10).join(routes[:period]).encode()):08x}"


def parse_event(schema_name: str, value: Any, routes: list[str],
                decode: Callable[[str, Any], dict[str, Any]] = parse_json) -> tuple[str, int, str]:
    """One raw record as (shard, event_time, event JSON), or `InvalidRecord` with the reason: the
    per-record work of `ParseEvents` but the event-time bound, which needs the subtask's progress."""
    record = decode(schema_name, value)
    event = orjson.dumps(TO_EVENT[schema_name](record)).decode()
    return shard_of(record["user_id"], routes), record["event_time"], event


class ParseEvents(ProcessFunction):
    """Raw record -> a block of one event, Row(shard, event_time, event JSON as UTF-8) (job.batching); a
    bad record goes to `dead_letter_tag` with its reason. `routes` is the users' routing table (`shard_of`)."""

    def __init__(
        self,
        source: str,
        schema_name: str,
        dead_letter_tag: OutputTag,
        encoder: RecordEncoder,
        routes: list[str],
        decode: Callable[[str, Any], dict[str, Any]] = parse_json,
        max_event_ahead_ms: int = 86_400_000,
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
    ) -> None:
        self.source = source
        self.schema_name = schema_name
        self.dead_letter_tag = dead_letter_tag
        self.encoder = encoder
        self.routes = routes
        self.shards = list(dict.fromkeys(routes))  # each shard once
        self.decode = decode
        self.max_event_ahead_ms = max_event_ahead_ms
        self.dead_letter_max_bytes = dead_letter_max_bytes

    def open(self, runtime_context) -> None:
        tune_garbage_collector()
        limit_native_threads()
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group(self.source)
        self.accepted = group.counter("accepted")
        self.rejected = group.counter("dead_letter")
        # Newest accepted event time of this subtask, and the wall clock when it was reached. Not
        # state: after a restore the bound starts again from the wall clock.
        self.progress_ms: int | None = None
        self.progress_wall_ms = 0

    def _reject(self, reason: str, value: Any) -> tuple:
        self.rejected.inc()
        record = dead_letter(self.source, reason, value, self.dead_letter_max_bytes)
        return self.dead_letter_tag, self.encoder.encode("DeadLetter", record)

    def process_element(self, value, ctx: ProcessFunction.Context) -> Iterator:
        parsed = self._event_or_reason(value)
        if isinstance(parsed, str):
            yield self._reject(parsed, value)
            return
        self.accepted.inc()
        shard, event_time, event = parsed
        yield Row(shard, event_time, event.encode())

    def _event_or_reason(self, value: Any) -> tuple[str, int, str] | str:
        """(shard, event_time, event JSON) of a valid record within the event-time bound, else the
        reason it is rejected."""
        try:
            shard, event_time, event = parse_event(self.schema_name, value, self.routes, self.decode)
        except InvalidRecord as error:
            return str(error)
        # A far-future event time would move the watermark past every open window (and near 2^63
        # overflow the join's deadlines): beyond the bound it is a reject, not an event.
        if self.progress_ms is None or event_time > self.progress_ms:
            now_ms = int(time.time() * 1000)
            bound = event_time_bound(self.progress_ms, self.progress_wall_ms, now_ms, self.max_event_ahead_ms)
            problem = event_time_problem(event_time, bound, self.max_event_ahead_ms)
            if problem is not None:
                return problem
            self.progress_ms, self.progress_wall_ms = event_time, now_ms
        return shard, event_time, event


class ParseEventBatches(ParseEvents):
    """Row(lines) of raw records (job.batching.line_batches) -> a block per shard with events,
    Row(shard, event_time, events) (job.batching.block_row_type); a bad record goes to `dead_letter_tag`
    with its reason, as with `ParseEvents`, record by record in the order of the batch. One call per
    batch: the per-record crossing between the JVM and Python cost more interpreter time than the parse
    itself. A batch of messages with the watermark it carries (job.batching.message_batches,
    Row(messages, source_watermark)) gives Row(shard, event_time, events, source_watermark) per block,
    and a row without events if the batch had none: the watermark must go on."""

    def open(self, runtime_context) -> None:
        super().open(runtime_context)
        self.compiled = self._compiled_decoder()
        self.blocks = ShardBlocks(self.shards)
        # The newest event time of this subtask's batches so far. Not state: Flink restarts watermarks
        # from nothing after a restore, and the first batch then starts from its own oldest event time.
        self.newest_before: int | None = None

    def _compiled_decoder(self) -> EventKernel | None:
        """The compiled pass from raw records to events (udfs.event_lines) for this parse's format, where
        it applies."""
        # Imported here: each loads (or compiles) its kernel on import, which only its format needs.
        if self.decode is parse_wire:
            from udfs.avro_events import avro_event_kernel

            return avro_event_kernel(self.schema_name, self.routes, TO_EVENT[self.schema_name])
        if self.decode is parse_json:
            from udfs.json_events import json_event_kernel

            return json_event_kernel(self.schema_name, self.routes, TO_EVENT[self.schema_name])
        return None

    def process_element(self, value, ctx: ProcessFunction.Context) -> Iterator:
        if self.compiled is not None:
            yield from self._compiled_batch(value)
            return
        events = []
        # The common case inline (`_event_or_reason` without its layers of calls): a record the fast
        # validator passes, within the event-time bound. Anything else takes the full path below, which
        # gives the reasons; the outcome is the same either way.
        quick, fast = quick_decoder(self.decode, self.schema_name), fast_validator(self.schema_name)
        if fast is None:
            quick = None
        to_event, routes = TO_EVENT[self.schema_name], self.routes
        single = routes[0] if len(routes) == 1 else None
        for line in value[0] or ():  # (a batch of ticks only has no messages)
            if quick is not None and self.progress_ms is not None:
                record = quick(line)  # None where the full path must say why
                if type(record) is dict and fast(record):
                    event_time = record["event_time"]
                    within = event_time <= self.progress_ms
                    if not within:
                        now_ms = int(time.time() * 1000)
                        within = event_time <= event_time_bound(self.progress_ms, self.progress_wall_ms, now_ms,
                                                                self.max_event_ahead_ms)
                        if within:
                            self.progress_ms, self.progress_wall_ms = event_time, now_ms
                    if within:
                        shard = single or shard_of(record["user_id"], routes)
                        events.append(f"{shard}\t{event_time}\t{orjson.dumps(to_event(record)).decode()}")
                        continue
            parsed = self._event_or_reason(line)
            if isinstance(parsed, str):
                yield self._reject(parsed, line)
            else:
                # Neither a shard key nor JSON text (which escapes control characters) holds a tab.
                events.append("\t".join((parsed[0], str(parsed[1]), parsed[2])))
        self.accepted.inc(len(events))
        # (JSON text escapes newlines too, so they can separate the events)
        yield from self._blocks("\n".join(events).encode(), value)

    def _blocks(self, lines: bytes, value) -> Iterator:
        """The block rows of the parse output `lines` of the batch `value` (see the class doc)."""
        blocks = self.blocks.blocks(lines)
        if len(value) > 1:  # a batch of messages: its watermark, from before the batch, goes on, events or not
            for shard, newest, _, events in blocks:
                yield Row(shard, newest, events, value[1])
            if not blocks:
                yield Row(None, None, None, value[1])
            return
        if not blocks:
            return
        # The event-time watermark follows the blocks' event times (job.batching.with_event_time), and a
        # shard's block holds events from all through the batch: one with the batch's newest time ahead
        # of another shard's block would let the watermark overtake that block's events. So every block
        # but the batch's last carries the newest time of the batches before (the first batch: its
        # oldest), and only the last one the batch's newest.
        before = self.newest_before if self.newest_before is not None else min(block[2] for block in blocks)
        newest = max(before, *(block[1] for block in blocks))
        last = len(blocks) - 1
        for at, (shard, _, _, events) in enumerate(blocks):
            yield Row(shard, newest if at == last else before, events)
        self.newest_before = newest

    def _compiled_batch(self, value) -> Iterator:
        """`process_element` through the compiled pass: runs of records it accepts as they are, and each
        record it stops at through the full path (`_event_or_reason`), in the order of the batch."""
        from udfs.event_lines import PackedRecords

        messages = value[0] or ()
        packed = PackedRecords(messages)
        parts: list[bytes] = []
        accepted, at = 0, 0
        while at < packed.count:
            if self.progress_ms is not None:  # (the first message ever sets the bound's progress)
                at, lines, count, self.progress_ms, self.progress_wall_ms = self.compiled.parse(
                    packed, at, self.progress_ms, self.progress_wall_ms, int(time.time() * 1000),
                    self.max_event_ahead_ms)
                parts.append(lines)
                accepted += count
                if at == packed.count:
                    break
            parsed = self._event_or_reason(messages[at])
            if isinstance(parsed, str):
                yield self._reject(parsed, messages[at])
            else:
                parts.append(f"{parsed[0]}\t{parsed[1]}\t{parsed[2]}\n".encode())
                accepted += 1
            at += 1
        self.accepted.inc(accepted)
        yield from self._blocks(b"".join(parts), value)


class FanOutCatalog(ProcessFunction):
    """Items-topic message -> one batch row per learner subtask carrying the catalog event (titles and
    embeddings of items published while the job runs); a bad record goes to `dead_letter_tag`."""

    def __init__(self, shards: list[str], dead_letter_tag: OutputTag, encoder: RecordEncoder,
                 decode: Callable[[str, Any], dict[str, Any]] = parse_json,
                 dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
        self.shards = shards
        self.dead_letter_tag = dead_letter_tag
        self.encoder = encoder
        self.decode = decode
        self.dead_letter_max_bytes = dead_letter_max_bytes

    def open(self, runtime_context) -> None:
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("items")
        self.accepted = group.counter("accepted")
        self.rejected = group.counter("dead_letter")

    def process_element(self, value, ctx: ProcessFunction.Context) -> Iterator:
        try:
            record = self.decode("Item", value)
        except InvalidRecord as error:
            self.rejected.inc()
            yield self.dead_letter_tag, self.encoder.encode(
                "DeadLetter", dead_letter("items", str(error), value, self.dead_letter_max_bytes))
            return
        self.accepted.inc()
        # The learner's join watermark is in its other batches: this row carries none.
        event = orjson.dumps(catalog_item_event(record))
        for shard in self.shards:
            yield Row(shard, NO_WATERMARK, event)
