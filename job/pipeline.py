"""The freshrank dataflow, independent of connectors: raw events in, six output streams out.

    impressions ─ parse ─┐     (Python, a batch of raw records per call: files' lines, or Kafka
                         │      messages with the source watermark they passed, every batch_ms;
                         │      out: a block of events per shard, job.batching)
                         ├─ watermarks, keyBy shard, stamp       (JVM, one row per block, job.batching)
    clicks ────── parse ─┘
      (unbounded: + ticks, stamped with the clicks' own watermark for the click-stall guard)
                                  │
    item-side parameters (Kafka loop, udfs.item_loop) ─┐
                                  ▼                     │
             join + learn (key: shard, one call per block) ◄┘  (Python, udfs.join_learn)
                 ├─ examples, snapshots, late clicks, orphan clicks
                 ├─ item-side parameters for the other replicas ─ Kafka loop
                 └─ metric partials ─ metrics (one subtask)
    parse rejects ─ dead letter
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types
from pyflink.datastream import DataStream, OutputTag
from pyflink.table import StreamTableEnvironment

from job.batching import (
    batch_row_type,
    block_row_type,
    carried_watermark,
    clicks_with_ticks,
    keyed_by_shard,
    line_batches,
    message_batches,
    stamped,
    with_event_time,
    with_key,
)
from job.catalog import Catalog
from job.config import JobConfig
from job.routing import routing_keys, user_routes
from udfs.encoding import RecordEncoder
from udfs.join_learn import JoinAndLearn
from udfs.join_logic import ImpressionClickJoin
from udfs.metrics import ComputeMetrics, partial_metrics_type
from udfs.model_store import ModelStore
from udfs.parse import FanOutCatalog, ParseEventBatches, ParseEvents
from udfs.records import parse_json

# A sink takes an output stream and its name ("examples", "snapshots", ...).
Sink = Callable[[DataStream, str], None]
OUTPUTS = ("examples", "snapshots", "metrics", "dead-letter", "late-clicks", "orphan-clicks")


@dataclass
class ItemLoop:
    """Where the learners publish their item-side parameters for each other, and where they read them."""

    # The learner's loop messages (bytes) -> the loop's topic.
    publish: Callable[[DataStream], None]
    # The loop's topic as batch rows for the learner, given its routing keys (one per subtask).
    rows: Callable[[list[str]], DataStream]


@dataclass
class PipelineInputs:
    """Raw event streams (text or bytes) and how to decode one record."""

    impressions: DataStream
    clicks: DataStream
    decode: Callable[[str, Any], dict[str, Any]] = parse_json
    # Kafka sources generate per-partition watermarks from the record timestamps themselves; file
    # sources need watermarks from the parsed event times.
    timestamps_assigned: bool = False
    # The Kafka loop of item-side parameters between learner replicas (udfs.item_loop).
    item_loop: ItemLoop | None = None
    # Items published while the job runs (raw messages of the items topic): titles and embeddings of
    # new items reach every learner subtask.
    catalog_updates: DataStream | None = None
    # Unbounded inputs get ticks (job.batching.ticks), so quiet shards move on, and processing-time batches.
    unbounded: bool = False
    # Parse a batch of raw records per call: files (job.batching.line_batches, watermarks come after
    # the parse anyway) and sources with their own watermarks (job.batching.message_batches, the
    # watermark carried through the parse by the batches).
    parse_in_batches: bool = False
    # With timestamps_assigned: after how long without records a stream stops holding the watermark
    # back (the sources' idleness, 0: never), once the batch parse has made the watermark again.
    idle_timeout_ms: int = 0


def _off_the_learner(output: DataStream, unbounded: bool) -> DataStream:
    """A learner output for its sink: in a bounded run through an exchange (rescale: subtask i to sink
    subtask i, in order, not chained), so that the sink's JVM work (decoding a batch's records, writing
    them) runs beside the learner's thread, the job's bottleneck, not in it. Unbounded runs keep the
    sink chained: the hop cost a click ~150 ms on its way to a visible snapshot (`freshrank demo
    --kafka`, two rounds each: p50 1.86 / 1.77 s against 1.71 / 1.61 s chained)."""
    return output if unbounded else output.rescale()


def build_pipeline(
    inputs: PipelineInputs,
    sinks: dict[str, Sink],
    config: JobConfig,
    encoder: RecordEncoder,
    catalog: Catalog | None = None,
    initial_model: ModelStore | None = None,
    t_env: StreamTableEnvironment | None = None,
) -> None:
    """Wire the job onto the environment of `inputs`; `sinks` must cover every name in OUTPUTS."""
    env = inputs.impressions.get_execution_environment()
    t_env = t_env or StreamTableEnvironment.create(env)
    t_env.get_config().set("table.optimizer.agg-phase-strategy", "ONE_PHASE")  # one list of raw records per batch
    dead_letter_tag = OutputTag("dead-letter", encoder.flink_type("DeadLetter"))
    tags = {
        "late-clicks": OutputTag("late-clicks", encoder.flink_type("Click")),
        "orphan-clicks": OutputTag("orphan-clicks", encoder.flink_type("Click")),
        "snapshots": OutputTag("snapshots", encoder.batch_type("ModelSnapshot")),
        "partial-metrics": OutputTag("partial-metrics", partial_metrics_type()),
    }
    if inputs.item_loop is not None:
        tags["item-loop"] = OutputTag("item-loop", Types.PRIMITIVE_ARRAY(Types.BYTE()))
    shards = routing_keys(config.parallelism)
    carried = inputs.parse_in_batches and inputs.timestamps_assigned
    # Only a lane (Kafka runs) loads learner subtask 0's slot beyond its users; file runs parse in parallel.
    routes = user_routes(shards, config.lane_load if carried else 0.0)

    # parse: a block of events per shard, Row(shard, event_time, events); rejects to the dead letter
    parsed = {}
    rejects = []
    if inputs.parse_in_batches and inputs.unbounded and not inputs.timestamps_assigned:
        raise ValueError("unbounded inputs parsed in batches need their own watermarks (as Kafka sources have)")
    for source, schema in (("impressions", "Impression"), ("clicks", "Click")):
        parse_args = (source, schema, dead_letter_tag, encoder, routes, inputs.decode, config.max_event_ahead_ms,
                      config.dead_letter_max_bytes)
        raw = getattr(inputs, source)
        if carried:
            stream = (message_batches(env, t_env, raw, config.batch_ms, not inputs.unbounded, source)
                      .process(ParseEventBatches(*parse_args), output_type=block_row_type(with_watermark=True))
                      .set_parallelism(1))  # one lane: see message_batches
        elif inputs.parse_in_batches:
            stream = (line_batches(t_env, raw, config.batch_ms)
                      .process(ParseEventBatches(*parse_args), output_type=block_row_type()))
        else:
            stream = raw.process(ParseEvents(*parse_args), output_type=block_row_type())
        stream = stream.name(f"parse-{source}").uid(f"parse-{source}")
        rejects.append(stream.get_side_output(dead_letter_tag))
        if carried:
            stream = carried_watermark(t_env, stream, inputs.idle_timeout_ms)
        parsed[source] = stream if inputs.timestamps_assigned else with_event_time(t_env, stream,
                                                                                    config.max_disorder_ms)

    # blocks keyed by shard, each with the join watermark from before it: Row(shard, join_watermark, events) (JVM)
    clicks = parsed["clicks"]
    if inputs.unbounded:
        clicks = clicks_with_ticks(env, t_env, clicks, shards)
    events = parsed["impressions"].union(clicks)
    batched = stamped(env, t_env, events)
    if inputs.item_loop is not None:
        batched = batched.union(with_key(inputs.item_loop.rows(shards)))
    if inputs.catalog_updates is not None:
        updates = (
            inputs.catalog_updates
            .process(FanOutCatalog(shards, dead_letter_tag, encoder, inputs.decode, config.dead_letter_max_bytes),
                     output_type=batch_row_type())
            .name("fan-out-catalog")
            .uid("fan-out-catalog")
        )
        rejects.append(updates.get_side_output(dead_letter_tag))
        batched = batched.union(with_key(updates))

    # join + learn, keyed by shard: encoded LabeledExample (scored on arrival), one per impression_id, a
    # batch's examples as one stream record (encoder.batch_type)
    learned = (
        keyed_by_shard(batched)
        .process(
            JoinAndLearn(ImpressionClickJoin(config.window_ms, config.retention_ms), config.learner,
                         config.snapshot_interval_ms, config.metrics_interval_ms, tags, encoder,
                         catalog.embeddings if catalog else None,
                         initial_model, config.click_stall_limit_ms, config.click_stall_report_ms,
                         config.state_ttl_ms, config.guard, config.text_encoder,
                         catalog.titles if catalog else None, routes),
            output_type=encoder.batch_type("LabeledExample"),
        )
        .name("join-and-learn")
        .uid("join-and-learn")
    )

    if inputs.item_loop is not None:
        inputs.item_loop.publish(learned.get_side_output(tags["item-loop"]))

    # metrics: encoded Metric records per event-time interval (one subtask merges the partials)
    metrics = (
        learned.get_side_output(tags["partial-metrics"])
        .key_by(lambda _: 0, key_type=Types.INT())
        .process(ComputeMetrics(config.metrics_interval_ms, config.parallelism, encoder),
                 output_type=encoder.batch_type("Metric"))
        .name("compute-metrics")
        .uid("compute-metrics")
        .set_parallelism(1)
    )

    outputs = {
        "examples": _off_the_learner(learned, inputs.unbounded),
        "snapshots": _off_the_learner(learned.get_side_output(tags["snapshots"]), inputs.unbounded),
        "metrics": metrics,
        "dead-letter": rejects[0].union(*rejects[1:]),
        "late-clicks": _off_the_learner(learned.get_side_output(tags["late-clicks"]), inputs.unbounded),
        "orphan-clicks": _off_the_learner(learned.get_side_output(tags["orphan-clicks"]), inputs.unbounded),
    }
    for name in OUTPUTS:
        sinks[name](outputs[name], name)
