"""The freshrank dataflow, independent of connectors: raw events in, six output streams out.

    impressions ─ parse ─ watermarks ─┐
                                      ├─ join (key: impression_id) ─ learn (key: user_id) ─ examples
    clicks ────── parse ─ watermarks ─┘        │                            ├─ snapshots
                                               ├─ late clicks, orphan clicks └─ metric partials ─┐
                                               └─ join events ──────────────────────────────────┴─ metrics
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
from job.flink_types import row_type
from udfs.encoding import RecordEncoder
from udfs.join import JoinImpressionsClicks, join_event_type, joined_type
from udfs.learner import LearnUserVectors, partial_metrics_type
from udfs.metrics import ComputeMetrics
from udfs.model_store import ModelStore
from udfs.parse import ParseEvents
from udfs.records import parse_json

# A sink takes an output stream and its name ("examples", "snapshots", ...).
Sink = Callable[[DataStream, str], None]
OUTPUTS = ("examples", "snapshots", "metrics", "dead-letter", "late-clicks", "orphan-clicks")


class EventTimeField(TimestampAssigner):
    """Event time from a row field (impressions and clicks carry it last)."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[-1]


@dataclass
class PipelineInputs:
    """Raw event streams (text or bytes) and how to decode one record."""

    impressions: DataStream
    clicks: DataStream
    decode: Callable[[str, Any], dict[str, Any]] = parse_json
    # Kafka sources carry event time as the record timestamp and generate per-partition watermarks
    # themselves; file sources need timestamps from the parsed records.
    timestamps_assigned: bool = False


def _parsed(raw: DataStream, source: str, schema: str, config: JobConfig, inputs: PipelineInputs,
            dead_letter_tag: OutputTag, encoder: RecordEncoder) -> tuple[DataStream, DataStream]:
    parsed = (
        raw.process(ParseEvents(source, schema, dead_letter_tag, encoder, inputs.decode),
                    output_type=row_type(schema))
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
    late_tag = OutputTag("late-clicks", encoder.flink_type("Click"))
    orphan_tag = OutputTag("orphan-clicks", encoder.flink_type("Click"))
    join_event_tag = OutputTag("join-events", join_event_type())
    snapshot_tag = OutputTag("snapshots", encoder.flink_type("ModelSnapshot"))
    partial_metrics_tag = OutputTag("partial-metrics", partial_metrics_type())

    # parse + watermarks: Row(Impression) / Row(Click)
    impressions, bad_impressions = _parsed(
        inputs.impressions, "impressions", "Impression", config, inputs, dead_letter_tag, encoder
    )
    clicks, bad_clicks = _parsed(inputs.clicks, "clicks", "Click", config, inputs, dead_letter_tag, encoder)

    # join: Row(impression fields, label, impression_time, click_time), one per impression_id
    joined = (
        impressions.connect(clicks)
        .key_by(lambda imp: imp[0], lambda click: click[0], key_type=Types.STRING())
        .process(
            JoinImpressionsClicks(config.window_ms, config.retention_ms, late_tag, orphan_tag,
                                  join_event_tag, encoder),
            output_type=joined_type(),
        )
        .name("join-impressions-clicks")
        .uid("join-impressions-clicks")
    )

    # learn: encoded LabeledExample (score before update); snapshots and metric partials on the side
    learned = (
        joined.key_by(lambda example: example[2], key_type=Types.STRING())
        .process(
            LearnUserVectors(config.learner, config.snapshot_interval_ms, config.metrics_interval_ms,
                             config.window_ms, snapshot_tag, partial_metrics_tag, encoder, embeddings,
                             initial_model),
            output_type=encoder.flink_type("LabeledExample"),
        )
        .name("learn-user-vectors")
        .uid("learn-user-vectors")
    )

    # metrics: encoded Metric records per event-time interval (one subtask merges the partials)
    metrics = (
        learned.get_side_output(partial_metrics_tag)
        .connect(joined.get_side_output(join_event_tag))
        .key_by(lambda _: 0, lambda _: 0, key_type=Types.INT())
        .process(ComputeMetrics(config.metrics_interval_ms, encoder), output_type=encoder.flink_type("Metric"))
        .name("compute-metrics")
        .uid("compute-metrics")
        .set_parallelism(1)
    )

    outputs = {
        "examples": learned,
        "snapshots": learned.get_side_output(snapshot_tag),
        "metrics": metrics,
        "dead-letter": bad_impressions.union(bad_clicks),
        "late-clicks": joined.get_side_output(late_tag),
        "orphan-clicks": joined.get_side_output(orphan_tag),
    }
    for name in OUTPUTS:
        sinks[name](outputs[name], name)
