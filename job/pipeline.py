"""The freshrank dataflow, independent of connectors: raw events in, six output streams out.

    impressions ─ parse ─ watermarks ─┐
                                      ├─ join + learn (key: user_id) ─ examples
    clicks ────── parse ─ watermarks ─┘    ▲   ├─ snapshots
    item-side snapshots (Kafka loop) ──────┘   │
                                               ├─ late clicks, orphan clicks
                                               ├─ metric partials ─┐
                                               └─ join events ─────┴─ metrics (one subtask)
    parse rejects ─ dead letter
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, OutputTag

from job.config import JobConfig
from job.flink_types import event_type
from udfs.encoding import RecordEncoder
from udfs.join_learn import JoinAndLearn, join_event_type, partial_metrics_type
from udfs.join_logic import ImpressionClickJoin
from udfs.metrics import ComputeMetrics
from udfs.model_store import ModelStore
from udfs.parse import ParseEvents
from udfs.records import EVENT_FIELDS, parse_json

EVENT_TIME = EVENT_FIELDS.index("event_time")

# A sink takes an output stream and its name ("examples", "snapshots", ...).
Sink = Callable[[DataStream, str], None]
OUTPUTS = ("examples", "snapshots", "metrics", "dead-letter", "late-clicks", "orphan-clicks")


class EventTimeField(TimestampAssigner):
    """Event time from the event row's `event_time` field."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[EVENT_TIME]


@dataclass
class PipelineInputs:
    """Raw event streams (text or bytes) and how to decode one record."""

    impressions: DataStream
    clicks: DataStream
    decode: Callable[[str, Any], dict[str, Any]] = parse_json
    # Kafka sources carry event time as the record timestamp and generate per-partition watermarks
    # themselves; file sources need timestamps from the parsed records.
    timestamps_assigned: bool = False
    # Event rows of kind ITEM_PARAMS: other replicas' item-side parameters, read back from Kafka.
    item_loop: DataStream | None = None


def _parsed(raw: DataStream, source: str, schema: str, config: JobConfig, inputs: PipelineInputs,
            dead_letter_tag: OutputTag, encoder: RecordEncoder) -> tuple[DataStream, DataStream]:
    parsed = (
        raw.process(ParseEvents(source, schema, dead_letter_tag, encoder, inputs.decode),
                    output_type=event_type())
        .name(f"parse-{source}")
        .uid(f"parse-{source}")
    )
    if inputs.timestamps_assigned:
        return parsed, parsed.get_side_output(dead_letter_tag)
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(config.max_disorder_ms)
    ).with_timestamp_assigner(EventTimeField())
    timed = parsed.assign_timestamps_and_watermarks(watermarks).name(f"watermarks-{source}").uid(
        f"watermarks-{source}"
    )
    return timed, parsed.get_side_output(dead_letter_tag)


def build_pipeline(
    inputs: PipelineInputs,
    sinks: dict[str, Sink],
    config: JobConfig,
    encoder: RecordEncoder,
    embeddings: dict[str, list[float]] | None = None,
    initial_model: ModelStore | None = None,
) -> None:
    """Wire the job onto the environment of `inputs`; `sinks` must cover every name in OUTPUTS."""
    dead_letter_tag = OutputTag("dead-letter", encoder.flink_type("DeadLetter"))
    tags = {
        "late-clicks": OutputTag("late-clicks", encoder.flink_type("Click")),
        "orphan-clicks": OutputTag("orphan-clicks", encoder.flink_type("Click")),
        "join-events": OutputTag("join-events", join_event_type()),
        "snapshots": OutputTag("snapshots", encoder.flink_type("ModelSnapshot")),
        "partial-metrics": OutputTag("partial-metrics", partial_metrics_type()),
    }

    # parse + watermarks: event rows (kind, impression_id, ..., event_time)
    impressions, bad_impressions = _parsed(
        inputs.impressions, "impressions", "Impression", config, inputs, dead_letter_tag, encoder
    )
    clicks, bad_clicks = _parsed(inputs.clicks, "clicks", "Click", config, inputs, dead_letter_tag, encoder)
    streams = [clicks] if inputs.item_loop is None else [clicks, inputs.item_loop]
    events = impressions.union(*streams).key_by(lambda event: event[3], key_type=Types.STRING())

    # join + learn, keyed by user: encoded LabeledExample (scored on arrival), one per impression_id
    learned = (
        events.process(
            JoinAndLearn(ImpressionClickJoin(config.window_ms, config.retention_ms), config.learner,
                         config.snapshot_interval_ms, config.metrics_interval_ms, tags, encoder, embeddings,
                         initial_model),
            output_type=encoder.flink_type("LabeledExample"),
        )
        .name("join-and-learn")
        .uid("join-and-learn")
    )

    # metrics: encoded Metric records per event-time interval (one subtask merges the partials)
    metrics = (
        learned.get_side_output(tags["partial-metrics"])
        .connect(learned.get_side_output(tags["join-events"]))
        .key_by(lambda _: 0, lambda _: 0, key_type=Types.INT())
        .process(ComputeMetrics(config.metrics_interval_ms, encoder), output_type=encoder.flink_type("Metric"))
        .name("compute-metrics")
        .uid("compute-metrics")
        .set_parallelism(1)
    )

    outputs = {
        "examples": learned,
        "snapshots": learned.get_side_output(tags["snapshots"]),
        "metrics": metrics,
        "dead-letter": bad_impressions.union(bad_clicks),
        "late-clicks": learned.get_side_output(tags["late-clicks"]),
        "orphan-clicks": learned.get_side_output(tags["orphan-clicks"]),
    }
    for name in OUTPUTS:
        sinks[name](outputs[name], name)
