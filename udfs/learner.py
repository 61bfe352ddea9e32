"""Learner operator, keyed by user_id: score every example, then learn from it.

Per-user vectors and their AdaGrad state live in Flink keyed state as one float64 array's raw
bytes (PyFlink's primitive-array converter copies element by element; a bytes pickle is one
copy). Item-side parameters live in this subtask's `ItemSide` (see the README's design section
for why, and the staleness this implies). Changed entities are published as snapshot records
every `snapshot_interval_ms` of wall-clock time and once more when the input ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from pyflink.common import Row, Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from udfs.encoding import RecordEncoder
from udfs.learner_math import Bias, ItemParams, LearnerConfig, OnlineRanker
from udfs.metrics import IntervalBuckets, decision_time
from udfs.model_store import GLOBAL, ITEM, POSITION, USER, ModelStore

END_OF_INPUT = 2**63 - 1  # Flink's final watermark at the end of bounded input


def partial_metrics_type() -> TypeInformation:
    """Per-interval metric partials for the metrics merger: Row(interval start, IntervalStats)."""
    return Types.ROW_NAMED(["start", "stats"], [Types.LONG(), Types.PICKLED_BYTE_ARRAY()])


def subtask_index(runtime_context: RuntimeContext) -> int:
    """This subtask's index; PyFlink 2.2's wrapper still calls a method Flink 2.x moved to TaskInfo."""
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:
        return runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask()


def next_version(previous: int, now_ms: int) -> int:
    """Versions are wall-clock based so they keep growing across restarts, and strictly increase."""
    return max(previous + 1, now_ms)


def snapshot_record(
    version: int,
    entity_type: str,
    entity_id: str,
    vector: np.ndarray | None,
    accum: np.ndarray | None,
    bias: Bias | None,
    updates: int,
    watermark: int,
    created_at: int,
    replica: int,
) -> dict[str, Any]:
    """A ModelSnapshot record (schemas/ModelSnapshot.avsc), Python types only."""
    return {
        "version": version,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "vector": [] if vector is None else vector.tolist(),
        "bias": 0.0 if bias is None else float(bias.value),
        "vector_accum": [] if accum is None else accum.tolist(),
        "bias_accum": 0.0 if bias is None else float(bias.accum),
        "updates": int(updates),
        "watermark": int(watermark),
        "created_at": created_at,
        "replica": replica,
    }


class LearnUserVectors(KeyedProcessFunction):
    """Joined examples in; scored LabeledExample records out, snapshots and metric partials on the side."""

    def __init__(
        self,
        config: LearnerConfig,
        snapshot_interval_ms: int,
        metrics_interval_ms: int,
        window_ms: int,
        snapshot_tag: OutputTag,
        partial_metrics_tag: OutputTag,
        encoder: RecordEncoder,
        embeddings: dict[str, list[float]] | None = None,
        initial_model: ModelStore | None = None,
    ) -> None:
        self.config = config
        self.snapshot_interval_ms = snapshot_interval_ms
        self.metrics_interval_ms = metrics_interval_ms
        self.window_ms = window_ms
        self.snapshot_tag = snapshot_tag
        self.partial_metrics_tag = partial_metrics_tag
        self.encoder = encoder
        self.embeddings = embeddings
        self.initial_model = initial_model

    def open(self, runtime_context: RuntimeContext) -> None:
        self.user_state = runtime_context.get_state(
            ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY())
        )
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
        self.metric_buckets = IntervalBuckets(self.metrics_interval_ms)
        group = runtime_context.get_metrics_group().add_group("freshrank").add_group("learner")
        self.examples_counter = group.counter("examples")
        self.snapshot_counter = group.counter("snapshot_records")
        group.gauge("model_version", lambda: self.version)
        group.gauge("item_count", lambda: len(self.ranker.item_side.items))

    def _user(self, user_id: str) -> np.ndarray:
        stored = self.user_state.value()
        if stored is not None:
            return self.codec.from_bytes(stored)
        if self.initial_model is not None:
            restored = self.initial_model.user_state(user_id, self.codec)
            if restored is not None:
                return restored
        return self.codec.new()

    def process_element(self, value, ctx: KeyedProcessFunction.Context) -> Iterator:
        (impression_id, request_id, user_id, item_id, query, position, label, impression_time, click_time) = value
        user = self._user(user_id)
        score = self.ranker.score_then_learn(user, item_id, position, label)
        self.user_state.update(user.tobytes())
        self.dirty_users[user_id] = user
        self.max_event_time = max(self.max_event_time, click_time or impression_time)
        self.examples_counter.inc()
        yield self.encoder.encode(
            "LabeledExample",
            {
                "impression_id": impression_id,
                "request_id": request_id,
                "user_id": user_id,
                "item_id": item_id,
                "query": query,
                "position": position,
                "label": label,
                "score": score,
                "impression_time": impression_time,
                "click_time": click_time,
                "model_version": self.version,
            },
        )
        timers = ctx.timer_service()
        stats, new_end = self.metric_buckets.bucket(decision_time(label, impression_time, click_time, self.window_ms))
        stats.add_example(score, label)
        if new_end is not None:  # any key's timer will do: it only marks the interval's end
            timers.register_event_time_timer(new_end)

        self.watermark = max(self.watermark, timers.current_watermark())
        if not self.end_timer_set:
            timers.register_event_time_timer(END_OF_INPUT)
            self.end_timer_set = True
        now_ms = int(time.time() * 1000)
        if now_ms >= self.next_snapshot_ms:
            self.next_snapshot_ms = now_ms + self.snapshot_interval_ms
            yield from self._snapshot(now_ms)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator:
        # Partials leave before the watermark that closes their interval reaches the merger.
        for start, stats in self.metric_buckets.pop_until(timestamp):
            yield self.partial_metrics_tag, Row(start, stats)
        if timestamp == END_OF_INPUT:
            # The input is complete up to the newest event learned from.
            self.watermark = max(self.watermark, self.max_event_time)
            yield from self._snapshot(int(time.time() * 1000))

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
                records.append(_item_record(self.version, item_id, item, common))
                item.dirty = False
        for position, term in side.positions.items():
            if term.dirty:
                records.append(snapshot_record(
                    self.version, POSITION, str(position), None, None, term, term.updates, **common
                ))
                term.dirty = False
        glob = side.global_bias
        if glob.dirty:
            records.append(snapshot_record(self.version, GLOBAL, "global", None, None, glob, glob.updates, **common))
            glob.dirty = False
        self.snapshot_counter.inc(len(records))
        for record in records:
            yield self.snapshot_tag, self.encoder.encode("ModelSnapshot", record)


def _item_record(version: int, item_id: str, item: ItemParams, common: dict[str, Any]) -> dict[str, Any]:
    return snapshot_record(version, ITEM, item_id, item.vector, item.accum, item.bias, item.updates, **common)
