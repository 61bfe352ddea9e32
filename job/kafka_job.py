"""Kafka mode: the same pipeline with Kafka sources and exactly-once Kafka sinks (Avro on the wire)."""

from __future__ import annotations

from pathlib import Path

from pyflink.common import Duration, Row, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.table import StreamTableEnvironment

from job.catalog import catalog_from_file, catalog_from_topic
from job.config import JobConfig
from job.flink_env import make_environment
from job.flink_types import event_type
from job.jars import flink_kafka_connector_jar
from job.pipeline import OUTPUTS, PipelineInputs, build_pipeline
from job.replay import load_snapshots
from job.topics import DEFAULT_TOPICS, TopicNames
from udfs.encoding import AvroWireEncoder
from udfs.records import ITEM_PARAMS, item_side_snapshots, parse_wire

# Pinned (flink-conf/config.yaml `pipeline.max-parallelism`) because the item loop's routing keys
# depend on it, and a savepoint can only be restored with the same value.
MAX_PARALLELISM = 128
# Flink's sink default (1 h) must not exceed the broker's transaction.max.timeout.ms (15 min default).
TRANSACTION_TIMEOUT_MS = 900_000
OUTPUT_TOPIC_FIELD = {"examples": "examples", "snapshots": "snapshots", "metrics": "metrics",
                      "dead-letter": "dead_letter", "late-clicks": "late_clicks", "orphan-clicks": "orphan_clicks"}


def kafka_events(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str, config: JobConfig,
                 bounded: bool, idleness_s: float) -> DataStream:
    """Raw message bytes of `topic`, timestamped by the Kafka record timestamp (the event time) with
    per-partition bounded-out-of-orderness watermarks; idle partitions do not hold the watermark back."""
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_value_only_deserializer(ByteArraySchema())
        .set_property("isolation.level", "read_committed")
    )
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(config.max_disorder_ms))
    if idleness_s > 0:
        watermarks = watermarks.with_idleness(Duration.of_millis(int(idleness_s * 1000)))
    return env.from_source(builder.build(), watermarks, f"{topic}-kafka").uid(f"source-{topic}")


class FarFuture(TimestampAssigner):
    """Loop records carry no event time the join should wait for: stamp them past any watermark."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return FAR_FUTURE_MS


FAR_FUTURE_MS = 2**63 - 2


def routing_keys(parallelism: int, max_parallelism: int) -> list[str]:
    """One key per subtask of the keyed learner, found with Flink's own key-group assignment (JVM).

    The loop sends each item-side record once per subtask under these keys, so every replica gets it
    through the learner's one keyed input (a broadcast input would be a second operator input).
    """
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    keys: dict[int, str] = {}
    candidate = 0
    while len(keys) < parallelism:
        key = f"__item-loop-{candidate}"
        java_key = jvm.org.apache.flink.types.Row(1)  # PyFlink's key_by keys by Row(key), not the bare key
        java_key.setField(0, key)
        keys.setdefault(assign(java_key, max_parallelism, parallelism), key)
        candidate += 1
    return [keys[index] for index in range(parallelism)]


class FanOutItemParams:
    """Snapshot-topic message -> one ITEM_PARAMS event row per learner subtask and item-side record."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def __call__(self, message: bytes):
        for record in item_side_snapshots(message):
            for key in self.keys:
                yield Row(ITEM_PARAMS, None, None, key, None, None, None, FAR_FUTURE_MS, record)


def item_loop(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str, config: JobConfig,
              bounded: bool) -> DataStream:
    """Item-side snapshot records published from now on by every learner replica, as event rows.

    Its watermark must never hold the join back: records are stamped far in the future and the
    source counts as idle while nothing is published.
    """
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(f"{group_id}-item-loop")
        .set_starting_offsets(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(ByteArraySchema())
        .set_property("isolation.level", "read_committed")
    )
    if bounded:  # a bounded run ends; the loop then carries nothing
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    watermarks = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_idleness(Duration.of_seconds(1))
        .with_timestamp_assigner(FarFuture())
    )
    keys = routing_keys(config.parallelism, MAX_PARALLELISM)
    return (
        env.from_source(builder.build(), watermarks, f"{topic}-loop-kafka").uid("source-item-loop")
        .flat_map(FanOutItemParams(keys), output_type=event_type())
        .name("fan-out-item-loop")
        .uid("fan-out-item-loop")
    )


def kafka_sink(stream: DataStream, bootstrap: str, topic: str, name: str, transactional_prefix: str) -> None:
    """Exactly-once value-only sink of encoded records."""
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(ByteArraySchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"{transactional_prefix}-{name}")
        .set_property("transaction.timeout.ms", str(TRANSACTION_TIMEOUT_MS))
        .build()
    )
    stream.sink_to(sink).name(f"{name}-kafka").uid(f"sink-{name}")


def snapshot_sink(t_env: StreamTableEnvironment, stream: DataStream, bootstrap: str, topic: str,
                  transactional_prefix: str) -> None:
    """Snapshots keyed by entity for the compacted topic (the DataStream Kafka sink cannot set a key
    from a field in Python, the SQL connector can)."""
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE snapshot_sink (`key` STRING, `value` BYTES) WITH (
          'connector' = 'kafka',
          'topic' = '{topic}',
          'properties.bootstrap.servers' = '{bootstrap}',
          'key.format' = 'raw',
          'key.fields' = 'key',
          'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY',
          'sink.delivery-guarantee' = 'exactly-once',
          'sink.transactional-id-prefix' = '{transactional_prefix}-snapshots',
          'properties.transaction.timeout.ms' = '{TRANSACTION_TIMEOUT_MS}'
        )""")
    statements = t_env.create_statement_set()
    statements.add_insert("snapshot_sink", t_env.from_data_stream(stream))
    statements.attach_as_datastream()


def load_kafka_catalog(bootstrap: str, topics: TopicNames, items: Path | None) -> dict[str, list[float]]:
    """Embeddings from the items topic (and a catalog file, which wins); rejects go to dead-letter."""
    from confluent_kafka import Producer

    from job.wire import encode

    embeddings, rejects = catalog_from_topic(bootstrap, topics.items)
    if items is not None:
        from_file, file_rejects = catalog_from_file(items)
        embeddings.update(from_file)
        rejects += file_rejects
    if rejects:
        producer = Producer({"bootstrap.servers": bootstrap})
        for record in rejects:
            producer.produce(topics.dead_letter, encode("DeadLetter", record))
        producer.flush(30)
    return embeddings


def build_kafka_job(
    env: StreamExecutionEnvironment,
    bootstrap: str,
    config: JobConfig,
    topics: TopicNames = DEFAULT_TOPICS,
    group_id: str = "freshrank",
    bounded: bool = False,
    idleness_s: float = 5.0,
    items: Path | None = None,
    from_snapshot: Path | None = None,
) -> None:
    """Wire the pipeline between the Kafka topics onto `env`."""
    env.add_jars(flink_kafka_connector_jar().resolve().as_uri())
    t_env = StreamTableEnvironment.create(env)
    inputs = PipelineInputs(
        kafka_events(env, bootstrap, topics.impressions, group_id, config, bounded, idleness_s),
        kafka_events(env, bootstrap, topics.clicks, group_id, config, bounded, idleness_s),
        decode=parse_wire,
        timestamps_assigned=True,
        item_loop=item_loop(env, bootstrap, topics.snapshots, group_id, config, bounded),
    )
    prefix = f"{group_id}-{topics.examples}"

    def sink(stream: DataStream, name: str) -> None:
        topic = getattr(topics, OUTPUT_TOPIC_FIELD[name])
        if name == "snapshots":
            snapshot_sink(t_env, stream, bootstrap, topic, prefix)
        else:
            kafka_sink(stream, bootstrap, topic, name, prefix)

    embeddings = load_kafka_catalog(bootstrap, topics, items)
    initial_model = load_snapshots(from_snapshot) if from_snapshot else None
    build_pipeline(inputs, dict.fromkeys(OUTPUTS, sink), config, AvroWireEncoder(), embeddings, initial_model)


def kafka_environment(config: JobConfig, checkpoint_interval_s: float, bounded: bool) -> StreamExecutionEnvironment:
    """Exactly-once needs checkpoints; RocksDB with incremental checkpoints holds the keyed state."""
    overrides = {
        "parallelism.default": str(config.parallelism),
        "pipeline.max-parallelism": str(MAX_PARALLELISM),
        "execution.checkpointing.interval": f"{int(checkpoint_interval_s * 1000)} ms",
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
    }
    if bounded:
        overrides["restart-strategy.type"] = "none"
    return make_environment(overrides)
