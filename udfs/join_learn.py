"""The learner operator: a thin Flink shell around `udfs.batch_learner.BatchJoinLearner`.

Keyed by shard (one shard key per subtask, job.routing), it gets one row per block of events
(job.batching) and makes one Python call per block. Its state handles are Flink map and value
states; its timers are a processing-time timer for the snapshot schedule and one event-time timer
at the end of the input (only the end of the input moves the job's watermark that far: the join
watermark the learner decides by travels inside the rows, one per block).

Outputs: main = encoded LabeledExample; side outputs = snapshots, late clicks, orphan clicks and
metric partials (with the learner's join watermark, so the merger knows when an interval is complete);
at parallelism > 1 also the item-side records of each snapshot for the other replicas (udfs.item_loop).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from pyflink.common import Duration, Row, Types
from pyflink.common.time import Time
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig, ValueStateDescriptor

from udfs.avro_batch import warm_up as warm_up_avro
from udfs.batch_learner import END_OF_INPUT, BatchJoinLearner, BatchOutput, LearnerState
from udfs.encoding import RecordEncoder
from udfs.gauges import PushedGauges
from udfs.interpreter import limit_native_threads, tune_garbage_collector
from udfs.item_loop import loop_messages
from udfs.join_logic import JOIN_EVENT_KINDS, ImpressionClickJoin
from udfs.json_batch import warm_up as warm_up_json
from udfs.learner_kernel import compile_kernel
from udfs.learner_math import LearnerConfig
from udfs.model_guard import GuardConfig
from udfs.model_store import ModelStore
from udfs.parse import routes_id
from udfs.records import column_length
from udfs.snapshots import subtask_count, subtask_index
from udfs.text_encoder import make_encoder
from udfs.text_features import TextFeatures

_NOT_USED = Duration(None)  # see JoinAndLearn._expiring
LEARNER_GAUGES = ("model_version", "item_count", "click_lag_ms", "click_stalled", "model_guard_held")


class JoinAndLearn(KeyedProcessFunction):
    """Row(shard, batch) in; examples, snapshots, late/orphan clicks and metric partials out."""

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
        click_stall_limit_ms: int = 0,
        click_stall_report_ms: int = 30_000,
        state_ttl_ms: int = 0,
        guard: GuardConfig | None = None,
        text_encoder: str = "none",
        titles: dict[str, str] | None = None,
        routes: list[str] | None = None,
    ) -> None:
        self.join = join
        self.config = config
        self.snapshot_interval_ms = snapshot_interval_ms
        self.metrics_interval_ms = metrics_interval_ms
        self.tags = tags
        self.encoder = encoder
        self.embeddings = embeddings
        self.initial_model = initial_model
        self.click_stall = (click_stall_limit_ms, click_stall_report_ms)
        self.state_ttl_ms = state_ttl_ms
        self.guard = guard
        self.text_encoder = text_encoder
        self.titles = titles
        self.routes = routes  # the users' routing table (udfs.parse.shard_of), which the state must match

    def open(self, runtime_context: RuntimeContext) -> None:
        compile_kernel()  # once per worker, before the first batch (numba caches it on disk)
        warm_up_avro()  # the examples' encoder on Kafka (udfs.avro_batch), likewise
        warm_up_json()  # and on files (udfs.json_batch)
        # The encoder's model loads once per process (udfs.text_encoder.shared_model).
        encoder = make_encoder(self.text_encoder)
        self.text = TextFeatures(encoder, self.titles) if encoder is not None else None
        if encoder is not None:  # load the model now, not in the first batch (2-3 s for `use`)
            encoder.encode(["freshrank"])
        tune_garbage_collector()
        limit_native_threads()
        # Values are bytes the learner encodes itself; PICKLED_BYTE_ARRAY because PyFlink 2.2's embedded
        # converter fails on a missing value of a PRIMITIVE_ARRAY state.
        raw = Types.PICKLED_BYTE_ARRAY()
        self.state = LearnerState(
            entries=runtime_context.get_map_state(MapStateDescriptor("entries", Types.STRING(), raw)),
            entry_blocks=runtime_context.get_map_state(MapStateDescriptor("entry_blocks", Types.LONG(), raw)),
            users=runtime_context.get_map_state(self._expiring(MapStateDescriptor("users", Types.STRING(), raw))),
            items=runtime_context.get_map_state(self._expiring(MapStateDescriptor("items", Types.STRING(), raw))),
            biases=runtime_context.get_map_state(MapStateDescriptor("biases", Types.LONG(), raw)),
            dirty=runtime_context.get_map_state(MapStateDescriptor("dirty", Types.STRING(), raw)),
            meta=runtime_context.get_state(ValueStateDescriptor("meta", raw)),
            intervals=runtime_context.get_map_state(MapStateDescriptor("metric_intervals", Types.LONG(), raw)),
            catalog=runtime_context.get_map_state(MapStateDescriptor("catalog", Types.STRING(), raw)),
        )
        self.replica = subtask_index(runtime_context)
        # The other replicas' copy of this one's item-side parameters (udfs.item_loop), where there are others.
        self.loop_tag = self.tags.get("item-loop") if subtask_count(runtime_context) > 1 else None
        self.learner: BatchJoinLearner | None = None  # made on the first call: state needs a current key
        self.snapshot_pending = False
        self.next_snapshot_ms = int(time.time() * 1000) + self.snapshot_interval_ms
        group = runtime_context.get_metrics_group().add_group("freshrank")
        self.counters = {kind: group.counter(kind) for kind in JOIN_EVENT_KINDS}
        self.examples_counter = group.counter("examples")
        self.positives_counter = group.counter("positives")
        self.snapshot_counter = group.counter("snapshot_records")
        self.batches_counter = group.counter("batches")
        # model_version, item_count; how far the clicks' watermark trails the impressions' (event-time
        # ms) and whether that is a stall; snapshot versions the stability guard held back since the
        # job started (udfs.model_guard). Set after every call (see udfs.gauges for why not callables).
        self.gauges = PushedGauges(group, LEARNER_GAUGES)

    def _expiring(self, descriptor: MapStateDescriptor) -> MapStateDescriptor:
        """Entities not written (learned or merged) for the state TTL leave state: users who stopped
        coming and items off the catalog must not keep the state growing for ever. An entity that
        returns starts again from its prior (catalog embedding or zero vector)."""
        if self.state_ttl_ms > 0:
            descriptor.enable_time_to_live(
                StateTtlConfig.new_builder(Time.milliseconds(self.state_ttl_ms))
                .update_ttl_on_create_and_write()
                .never_return_expired()
                # Expired entries must also go when never read again (users who never come back):
                # RocksDB drops them when it compacts, the heap backend a few per state access. Both
                # explicit, with the defaults off: PyFlink builds its default RocksDB strategy through
                # the Py4J gateway, which a TaskManager's embedded interpreter does not have (the
                # embedded converter reads only the entry count, so the period is a placeholder).
                .disable_cleanup_in_background()
                .cleanup_incrementally(10, False)
                .cleanup_in_rocksdb_compact_filter(1000, periodic_compaction_time=_NOT_USED)
                .build())
        return descriptor

    def _learner(self, ctx) -> BatchJoinLearner:
        if self.learner is None:
            restored = self.state.meta.value() is not None
            learner = BatchJoinLearner(self.join, self.config, self.metrics_interval_ms, self.replica, self.state,
                                       self.embeddings, self.initial_model, *self.click_stall, self.state_ttl_ms,
                                       self.guard, self.text)
            if self.routes is not None:
                check_routes(learner.meta, self.routes, restored)
            self.learner = learner
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        return self.learner

    def process_element(self, value, ctx) -> Iterator:
        learner = self._learner(ctx)
        # Every event of a block carries the join watermark from before the block (job.batching).
        watermark = value[1]
        rows = [(watermark, event) for event in orjson.loads(b"[" + value[2] + b"]")]
        self.batches_counter.inc()
        yield from self._emit(learner.process_batch(rows, int(time.time() * 1000)))
        if not self.snapshot_pending:  # changed state is published on a wall-clock schedule
            self.snapshot_pending = True
            ctx.timer_service().register_processing_time_timer(
                max(self.next_snapshot_ms, int(time.time() * 1000)))

    def on_timer(self, timestamp: int, ctx) -> Iterator:
        learner = self._learner(ctx)
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.snapshot_pending = False
            self.next_snapshot_ms = timestamp + self.snapshot_interval_ms
        else:  # the input ended: every decision is due, and the input is complete up to its newest event
            yield from self._emit(learner.advance_to(END_OF_INPUT))
            learner.meta["watermark"] = learner.meta["max_event_time"]
        yield from self._snapshot(learner)

    def _snapshot(self, learner: BatchJoinLearner) -> Iterator:
        records = learner.snapshot(int(time.time() * 1000))
        self._push_gauges(learner)  # a snapshot makes a new version
        self.snapshot_counter.inc(len(records))
        for encoded in self.encoder.encode_all("ModelSnapshot", records):
            yield self.tags["snapshots"], encoded
        if self.loop_tag is not None:
            for message in loop_messages(records, self.replica):
                yield self.loop_tag, message

    def _push_gauges(self, learner: BatchJoinLearner) -> None:
        gauges = self.gauges
        gauges.set("model_version", learner.meta["version"])
        gauges.set("item_count", learner.model.n_items)
        gauges.set("click_lag_ms", learner.click_stall.lag_ms)
        gauges.set("click_stalled", learner.click_stall.stalled)
        gauges.set("model_guard_held", learner.guard.held)

    def _emit(self, out: BatchOutput) -> Iterator:
        if self.learner is not None:
            self._push_gauges(self.learner)
        encode = self.encoder.encode
        for kind, count in out.join_events.items():
            self.counters[kind].inc(count)
        columns = out.example_columns
        if columns:
            yield from self.encoder.encode_columns("LabeledExample", columns)
            self.examples_counter.inc(column_length(columns))
            self.positives_counter.inc(int(np.count_nonzero(columns["label"])))  # (not a Python loop per example)
        for click in out.late_clicks:
            yield self.tags["late-clicks"], encode("Click", click)
        for click in out.orphan_clicks:
            yield self.tags["orphan-clicks"], encode("Click", click)
        # One row a call, whatever closed in it: the merger writes its state once for it.
        yield self.tags["partial-metrics"], Row(self.replica, out.partials, out.watermark)


def check_routes(meta: dict[str, Any], routes: list[str], restored: bool) -> None:
    """Record in the learner's `meta` the users' routing table its state is built on, or refuse state
    built on another: restored under another table (another parallelism or --lane-load) a subtask would
    hold users that now go elsewhere, and learn them again from nothing while their old state lingers.
    State from before tables were recorded was routed by crc32 % n, the table of each shard once."""
    expected = routes_id(routes)
    stored = meta.get("user_routes", routes_id(list(dict.fromkeys(routes))) if restored else expected)
    if stored != expected:
        raise ValueError(
            f"this job's state routes users by another table ({stored}) than this run's ({expected}): a savepoint "
            "or checkpoint restores with the --parallelism and --lane-load it was taken with (state from before "
            "freshrank recorded its routing: --lane-load 0); to change them, start a new job from the model "
            "snapshots (--from-snapshot or --from-snapshot-topic)")
    meta["user_routes"] = expected
