"""The core operator, keyed by user_id: join impressions with clicks, then score and learn at once.

Progressive validation: an impression is scored by the model as it is when the impression
arrives (what serving would have predicted), and that score travels with its example; the model
learns from the example when its label is decided. Scoring at impression time, not at label time,
keeps the evaluation honest under delayed feedback: negatives are decided a window later than
positives, so label-time scores would differ by label for reasons that are not the model's.

Why one operator: per-record Python is this job's cost, and every Python operator boundary costs a
serialization, a key-selector call and a contended interpreter lock. Impressions and clicks carry
the user, so keying the join by user_id puts each impression's join state in the same key context
as the user's vector: a decided example is scored and learned in the same call that decides it.

State per user key:
- `impressions`: impression_id -> the `udfs.join_logic.JoinState` of that impression and its
  impression-time score (as a list);
- `due`: timer timestamp -> impression ids whose join decision or cleanup is due then;
- `user`: the user's vector, AdaGrad accumulator and update count (float64 bytes).
A click is matched by (user_id, impression_id): a click whose user differs from its impression's
is an orphan. Item-side parameters live in this subtask (see the README's design section).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from udfs.encoding import RecordEncoder
from udfs.join_logic import (
    CLK_ID,
    CLK_ITEM,
    CLK_TIME,
    CLK_USER,
    IMP_ID,
    IMP_ITEM,
    IMP_POSITION,
    IMP_QUERY,
    IMP_REQUEST,
    IMP_TIME,
    IMP_USER,
    LATE_CLICK,
    ORPHAN_CLICK,
    Effects,
    ImpressionClickJoin,
    JoinState,
)
from udfs.learner_math import LearnerConfig, OnlineRanker
from udfs.metrics import IntervalBuckets, decision_time
from udfs.model_store import GLOBAL, POSITION, USER, ModelStore
from udfs.records import CLICK, IMPRESSION, click_of, impression_of
from udfs.snapshots import END_OF_INPUT, item_record, next_version, snapshot_record, subtask_index

JOIN_EVENT_KINDS = ("duplicate_impression", "duplicate_click", "early_click", "late_click", "orphan_click")


# Type objects are made per pipeline: PyFlink caches a Java object in them on first use, and a
# cached one cannot be pickled into the next job's functions (output tags carry their types).
def join_event_type() -> TypeInformation:
    """Join events (duplicates, early/late/orphan clicks) for the metrics operator."""
    return Types.ROW_NAMED(["kind", "event_time"], [Types.STRING(), Types.LONG()])


def partial_metrics_type() -> TypeInformation:
    """Per-interval metric partials for the metrics merger: Row(interval start, IntervalStats)."""
    return Types.ROW_NAMED(["start", "stats"], [Types.LONG(), Types.PICKLED_BYTE_ARRAY()])


def click_record(click: tuple) -> dict:
    return {
        "impression_id": click[CLK_ID],
        "user_id": click[CLK_USER],
        "item_id": click[CLK_ITEM],
        "event_time": click[CLK_TIME],
    }


class JoinLearnCore:
    """Everything the operator does; the Flink classes below only route their callbacks here.

    Input: event rows (udfs.records.EVENT_FIELDS) keyed by user_id; in Kafka mode also other
    replicas' item-side parameters, read back from the snapshot topic (the loop through Kafka). Main output: encoded
    LabeledExample records. Side outputs: snapshots, metric partials, join events, late clicks,
    orphan clicks.
    """

    def __init__(
        self,
        join: ImpressionClickJoin,
        config: LearnerConfig,
        snapshot_interval_ms: int,
        metrics_interval_ms: int,
        tags: dict[str, OutputTag],
        encoder: RecordEncoder,
        embeddings: dict[str, list[float]] | None = None,
        initial_model: ModelStore | None = None,
    ) -> None:
        self.join = join
        self.config = config
        self.snapshot_interval_ms = snapshot_interval_ms
        self.metrics_interval_ms = metrics_interval_ms
        self.tags = tags
        self.encoder = encoder
        self.embeddings = embeddings
        self.initial_model = initial_model

    def open(self, runtime_context: RuntimeContext) -> None:
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.impressions = runtime_context.get_map_state(MapStateDescriptor("impressions", Types.STRING(), pickled))
        self.due = runtime_context.get_map_state(MapStateDescriptor("due", Types.LONG(), pickled))
        self.user_state = runtime_context.get_state(ValueStateDescriptor("user", pickled))
        initial = self.initial_model or ModelStore()
        self.ranker = OnlineRanker(self.config, initial.item_side(self.config, self.embeddings))
        self.codec = self.ranker.codec
        self.version = initial.version
        self.replica = subtask_index(runtime_context)
        self.dirty_users: dict[str, np.ndarray] = {}
        self.watermark = -(2**63)
        self.max_event_time = -(2**63)
        self.next_snapshot_ms = int(time.time() * 1000) + self.snapshot_interval_ms
        self.end_timer_set = False
        self.snapshot_pending = False
        self.metric_buckets = IntervalBuckets(self.metrics_interval_ms)
        if self.initial_model is None:
            self.warm_up_until = None
        else:  # a hot-started model needs no warm-up
            self.warm_up_until = -(2**63)
        group = runtime_context.get_metrics_group().add_group("freshrank")
        self.counters = {kind: group.counter(kind) for kind in JOIN_EVENT_KINDS}
        self.examples_counter = group.counter("examples")
        self.positives_counter = group.counter("positives")
        self.snapshot_counter = group.counter("snapshot_records")
        self.loop_records_counter = group.counter("item_loop_records")
        group.gauge("model_version", lambda: self.version)
        group.gauge("item_count", lambda: len(self.ranker.item_side.items))

    # Join -----------------------------------------------------------------------------------
    def _load(self, impression_id: str) -> tuple[JoinState | None, float | None, bool]:
        """Join state, impression-time score, and whether learning its positive was deferred."""
        stored = self.impressions.get(impression_id)
        return (None, None, False) if stored is None else (JoinState(*stored[:4]), stored[4], stored[5])

    def _in_warm_up(self, impression: tuple) -> bool:
        """Whether a positive of `impression` must wait for its window's end to be learned.

        In the first window after a cold start no negative can be decided yet, so positives learned
        at click time would drag every bias up; until then they are learned when their window
        closes, in impression-time order like the negatives. (A hot start has no warm-up.)
        """
        return self.warm_up_until is not None and impression[IMP_TIME] < self.warm_up_until

    def _apply(self, impression_id: str, state: JoinState | None, score: float | None, effects: Effects,
               ctx, deferred: bool = False) -> Iterator:
        examples = []
        for impression, label, click_time in effects.examples:
            defer = bool(label) and self._in_warm_up(impression)
            if defer:
                deferred = True
                effects.timers.append(self.join.deadline(impression))  # when to learn it
            examples.append((impression, label, click_time, score, not defer))
        if effects.clear or state is None:
            self.impressions.remove(impression_id)
        else:
            self.impressions.put(
                impression_id, [state.impression, state.status, state.label, state.held_clicks, score, deferred]
            )
        timers = ctx.timer_service()
        for timestamp in effects.timers:
            waiting = self.due.get(timestamp)
            if waiting is None:
                timers.register_event_time_timer(timestamp)
                self.due.put(timestamp, [impression_id])
            else:
                waiting.append(impression_id)
                self.due.put(timestamp, waiting)
        for kind, record in effects.events:
            self.counters[kind].inc()
            if kind == LATE_CLICK:
                yield self.tags["late-clicks"], self.encoder.encode("Click", click_record(record))
            elif kind == ORPHAN_CLICK:
                yield self.tags["orphan-clicks"], self.encoder.encode("Click", click_record(record))
            yield self.tags["join-events"], Row(kind, record[-1])
        if examples:
            yield from self._learn(examples, ctx)

    def _on_event(self, value, ctx) -> Iterator:
        kind = value[0]
        if kind == IMPRESSION:
            yield from self._on_impression(impression_of(value), ctx)
        elif kind == CLICK:
            yield from self._on_click(click_of(value), ctx)
        else:
            self._merge_item_params(value[8], ctx.timer_service())

    def _merge_item_params(self, record: dict, timers) -> None:
        """Kafka loop: another replica's item-side record; merge it and measure how old it is."""
        if record["replica"] == self.replica or not self.ranker.item_side.merge_record(record):
            return
        self.watermark = max(self.watermark, timers.current_watermark())
        stats, new_end = self.metric_buckets.bucket(self.watermark)
        stats.add_loop_staleness(int(time.time() * 1000) - record["created_at"])
        if new_end is not None:
            timers.register_event_time_timer(new_end)
        self.loop_records_counter.inc()

    def _on_impression(self, impression: tuple, ctx) -> Iterator:
        impression_id = impression[IMP_ID]
        if self.warm_up_until is None:
            self.warm_up_until = impression[IMP_TIME] + self.join.window_ms
        state, score, deferred = self._load(impression_id)
        state, effects = self.join.on_impression(state, impression, ctx.timer_service().current_watermark())
        if score is None and state.impression is impression:  # the kept copy: score it now
            score = self.ranker.score(self._user(impression[IMP_USER]), impression[IMP_ITEM], impression[IMP_POSITION])
        yield from self._apply(impression_id, state, score, effects, ctx, deferred)

    def _on_click(self, click: tuple, ctx) -> Iterator:
        impression_id = click[CLK_ID]
        state, score, deferred = self._load(impression_id)
        state, effects = self.join.on_click(state, click, ctx.timer_service().current_watermark())
        yield from self._apply(impression_id, state, score, effects, ctx, deferred)

    def _on_timer(self, timestamp: int, ctx) -> Iterator:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:  # the snapshot schedule
            self.snapshot_pending = False
            self.next_snapshot_ms = timestamp + self.snapshot_interval_ms
            yield from self._snapshot(int(time.time() * 1000))
            return
        # Partials leave before the watermark that closes their interval reaches the merger.
        for start, stats in self.metric_buckets.pop_until(timestamp):
            yield self.tags["partial-metrics"], Row(start, stats)
        due = self.due.get(timestamp)
        if due is not None:
            self.due.remove(timestamp)
            for impression_id in due:
                state, score, deferred = self._load(impression_id)
                if deferred and state is not None and timestamp >= self.join.deadline(state.impression):
                    self._learn_deferred(state.impression)
                    self._schedule_snapshot(ctx.timer_service())
                    deferred = False
                state, effects = self.join.on_timer(state, timestamp)
                if state is not None or effects.clear:
                    yield from self._apply(impression_id, state, score, effects, ctx, deferred)
        if timestamp == END_OF_INPUT:
            # The input is complete up to the newest event learned from.
            self.watermark = max(self.watermark, self.max_event_time)
            yield from self._snapshot(int(time.time() * 1000))

    # Learn ----------------------------------------------------------------------------------
    def _user(self, user_id: str) -> np.ndarray:
        stored = self.user_state.value()
        if stored is not None:
            return self.codec.from_bytes(stored)
        if self.initial_model is not None:
            restored = self.initial_model.user_state(user_id, self.codec)
            if restored is not None:
                return restored
        return self.codec.new()

    def _learn_deferred(self, impression: tuple) -> None:
        """Learn a warm-up positive (already emitted) now that its window has closed."""
        user_id = impression[IMP_USER]
        user = self._user(user_id)
        self.ranker.score_then_learn(user, impression[IMP_ITEM], impression[IMP_POSITION], 1)
        self.user_state.update(user.tobytes())
        self.dirty_users[user_id] = user

    def _learn(self, examples: list, ctx) -> Iterator:
        """Emit each decided example with its impression-time score, then learn from it."""
        user_id = examples[0][0][IMP_USER]
        user = self._user(user_id)
        timers = ctx.timer_service()
        for impression, label, click_time, impression_score, learn_now in examples:
            impression_time = impression[IMP_TIME]
            if learn_now:
                current = self.ranker.score_then_learn(user, impression[IMP_ITEM], impression[IMP_POSITION], label)
            else:
                current = self.ranker.score(user, impression[IMP_ITEM], impression[IMP_POSITION])
            score = current if impression_score is None else impression_score
            self.examples_counter.inc()
            if label:
                self.positives_counter.inc()
            yield self.encoder.encode(
                "LabeledExample",
                {
                    "impression_id": impression[IMP_ID],
                    "request_id": impression[IMP_REQUEST],
                    "user_id": user_id,
                    "item_id": impression[IMP_ITEM],
                    "query": impression[IMP_QUERY],
                    "position": impression[IMP_POSITION],
                    "label": label,
                    "score": score,
                    "impression_time": impression_time,
                    "click_time": click_time,
                    "model_version": self.version,
                },
            )
            decided_at = decision_time(label, impression_time, click_time, self.join.window_ms)
            stats, new_end = self.metric_buckets.bucket(decided_at)
            stats.add_example(score, label)
            if new_end is not None:  # any key's timer will do: it only marks the interval's end
                timers.register_event_time_timer(new_end)
            self.max_event_time = max(self.max_event_time, decided_at if label else impression_time)
        self.user_state.update(user.tobytes())
        self.dirty_users[user_id] = user

        self.watermark = max(self.watermark, timers.current_watermark())
        if not self.end_timer_set:
            timers.register_event_time_timer(END_OF_INPUT)
            self.end_timer_set = True
        self._schedule_snapshot(timers)

    def _schedule_snapshot(self, timers) -> None:
        """Changed state is published on a wall-clock schedule, also when no more events come."""
        if not self.snapshot_pending:
            self.snapshot_pending = True
            timers.register_processing_time_timer(max(self.next_snapshot_ms, int(time.time() * 1000)))

    def _snapshot(self, now_ms: int) -> Iterator:
        """Publish every entity changed since the last snapshot under one new version."""
        self.version = next_version(self.version, now_ms)
        common = {"watermark": self.watermark, "created_at": now_ms, "replica": self.replica}
        records = []
        codec = self.codec
        for user_id, user in self.dirty_users.items():
            records.append(snapshot_record(
                self.version, USER, user_id, codec.vector(user), codec.accum(user), None,
                codec.updates(user), **common,
            ))
        self.dirty_users = {}
        side = self.ranker.item_side
        for item_id, item in side.items.items():
            if item.dirty:
                records.append(item_record(self.version, item_id, item, common))
                item.dirty = False
        for position, term in side.positions.items():
            if term.dirty:
                records.append(snapshot_record(
                    self.version, POSITION, str(position), None, None, term, term.updates, **common
                ))
                term.dirty = False
        glob = side.global_bias
        if glob.dirty:
            records.append(snapshot_record(
                self.version, GLOBAL, "global", None, None, glob, glob.updates, **common
            ))
            glob.dirty = False
        self.snapshot_counter.inc(len(records))
        for record in records:
            yield self.tags["snapshots"], self.encoder.encode("ModelSnapshot", record)


class JoinAndLearn(JoinLearnCore, KeyedProcessFunction):
    """The Flink function: routes callbacks to `JoinLearnCore`."""

    def process_element(self, value, ctx) -> Iterator:
        yield from self._on_event(value, ctx)

    def on_timer(self, timestamp: int, ctx) -> Iterator:
        yield from self._on_timer(timestamp, ctx)
