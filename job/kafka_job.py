"""Kafka mode: the same pipeline with Kafka sources and exactly-once Kafka sinks (Avro on the wire)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pyflink.common import Duration, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema
from pyflink.common.typeinfo import ObjectArrayTypeInfo
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSource,
    KafkaTopicPartition,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from clients.kafka_properties import client_config, java_properties, librdkafka_properties
from clients.topics import DEFAULT_TOPICS, TopicNames
from job.batching import batch_row_type
from job.catalog import Catalog, catalog_from_file, catalog_from_topic
from job.config import JobConfig
from job.flink_env import flink_settings, make_environment
from job.jars import flink_kafka_connector_jar
from job.pipeline import OUTPUTS, ItemLoop, PipelineInputs, build_pipeline
from job.replay import load_snapshots
from job.sql import sql_identifier, sql_with_options
from udfs.encoding import AvroWireEncoder
from udfs.item_loop import FanOutItemParams
from udfs.model_store import ModelStore, SnapshotError, snapshot_problem
from udfs.parse import DEAD_LETTER_MAX_BYTES
from udfs.records import parse_wire

# Flink's sink default (1 h) must not exceed the broker's transaction.max.timeout.ms (15 min default).
TRANSACTION_TIMEOUT_MS = 900_000
OUTPUT_TOPIC_FIELD = {"examples": "examples", "snapshots": "snapshots", "metrics": "metrics",
                      "dead-letter": "dead_letter", "late-clicks": "late_clicks", "orphan-clicks": "orphan_clicks"}


def _with_properties(builder, kafka_properties: Mapping[str, str] | None):
    """`builder` (a KafkaSource builder) with the run's Java client properties (security, SASL, TLS)."""
    for key, value in java_properties(kafka_properties).items():
        builder = builder.set_property(key, value)
    return builder


def source_name(topic: str) -> str:
    """The name of the Kafka source reading `topic` (the REST API and the benches find it by it)."""
    return f"{topic}-kafka"


def kafka_events(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str, config: JobConfig,
                 bounded: bool, idleness_s: float, kafka_properties: Mapping[str, str] | None = None) -> DataStream:
    """Raw message bytes of `topic`, timestamped by the Kafka record timestamp (the event time) with
    per-partition bounded-out-of-orderness watermarks; idle partitions do not hold the watermark back."""
    builder = _with_properties(
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST))
        .set_property("isolation.level", "read_committed"),
        kafka_properties,
    )
    _keep_tombstones(builder)
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    watermarks = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(config.max_disorder_ms))
    if idleness_s > 0:
        watermarks = watermarks.with_idleness(Duration.of_millis(int(idleness_s * 1000)))
    return env.from_source(builder.build(), watermarks, source_name(topic)).uid(f"source-{topic}")


def _keep_tombstones(builder) -> None:
    """Message values as bytes, a tombstone (null value) as None, so that parsing can dead-letter it.

    PyFlink's value-only deserializer wraps a DeserializationSchema (e.g. ByteArraySchema), whose
    wrapper silently drops null values in the JVM. Flink's wrapper of a Kafka `Deserializer` passes
    them on (and with `pipeline.object-reuse`, flink-conf/config.yaml, no chained copy fails on the
    null); the Kafka client inside the connector jar is shaded, hence the class name.
    """
    gateway = get_gateway()
    jvm = gateway.jvm
    deserializer = jvm.java.lang.Class.forName(
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.serialization.ByteArrayDeserializer", True,
        jvm.java.lang.Thread.currentThread().getContextClassLoader())
    schema = jvm.org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema
    builder._j_builder.setDeserializer(schema.valueOnly(deserializer))


def item_loop(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str,
              bounded: bool, kafka_properties: Mapping[str, str] | None = None) -> Callable[[list[str]], DataStream]:
    """Loop messages (udfs.item_loop) published from now on by every learner replica, as batch rows.

    Its watermark must never hold the learner back: the source counts as idle while nothing is
    published (the learner's own watermark is ingestion time; the join watermark is in the batches).
    """

    def rows(shards: list[str]) -> DataStream:
        builder = _with_properties(
            KafkaSource.builder()
            .set_bootstrap_servers(bootstrap)
            .set_topics(topic)
            .set_group_id(f"{group_id}-item-loop")
            .set_starting_offsets(KafkaOffsetsInitializer.latest())
            .set_value_only_deserializer(ByteArraySchema())
            .set_property("isolation.level", "read_committed"),
            kafka_properties,
        )
        if bounded:  # a bounded run ends; the loop then carries nothing
            builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
        watermarks = WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_seconds(1))
        # (not the uids of the loop that read the snapshot topic: its savepoints hold that topic's splits)
        return (
            env.from_source(builder.build(), watermarks, f"{topic}-kafka").uid("source-item-params")
            .flat_map(FanOutItemParams(shards), output_type=batch_row_type())
            .name("fan-out-item-params")
            .uid("fan-out-item-params")
        )

    return rows


def catalog_updates(env: StreamExecutionEnvironment, bootstrap: str, topic: str, group_id: str,
                    starting_offsets: Mapping[int, int], bounded: bool,
                    kafka_properties: Mapping[str, str] | None = None) -> DataStream:
    """Raw messages of the items topic from where the start-up read of the catalog ended (so no item
    published in between is missed; after a restore, from the checkpointed offsets). Like the item
    loop, its watermark never holds the learner back (idle while nothing is published)."""
    offsets = {KafkaTopicPartition(topic, partition): offset for partition, offset in starting_offsets.items()}
    builder = _with_properties(
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(f"{group_id}-catalog")
        .set_starting_offsets(KafkaOffsetsInitializer.offsets(offsets, KafkaOffsetResetStrategy.EARLIEST))
        .set_property("isolation.level", "read_committed"),
        kafka_properties,
    )
    _keep_tombstones(builder)  # a tombstone on the items topic is a reject with its reason
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    watermarks = WatermarkStrategy.for_monotonous_timestamps().with_idleness(Duration.of_seconds(1))
    return env.from_source(builder.build(), watermarks, source_name(topic)).uid(f"source-{topic}")


def kafka_sink(t_env: StreamTableEnvironment, stream: DataStream, bootstrap: str, topic: str, name: str,
               transactional_prefix: str, kafka_properties: Mapping[str, str] | None = None) -> None:
    """Exactly-once sink of encoded records; snapshots as Row(key, value), keyed by entity for the
    compacted topic (the DataStream Kafka sink cannot set a key from a field in Python, SQL can);
    a stream of message arrays (examples, metrics: one array per Python call; snapshots: Row(keys,
    values), two arrays) unnested in the JVM.

    SQL rather than the DataStream sink for every output: that one writes each record's Flink
    timestamp as the Kafka timestamp, and what the learner emits when the input ends carries the
    final watermark (Long.MAX_VALUE), which brokers reject; here the broker stamps the send time.
    Every option value is quoted (`job.sql`): topic names, prefixes and properties are data.
    """
    keyed = name == "snapshots"
    columns = "`key` STRING, `value` BYTES" if keyed else "`value` BYTES"
    options: dict[str, object] = {
        **{f"properties.{key}": value for key, value in java_properties(kafka_properties).items()},
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": bootstrap,
        "value.format": "raw",
        "sink.delivery-guarantee": "exactly-once",
        "sink.transactional-id-prefix": f"{transactional_prefix}-{name}",
        "properties.transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
    }
    if keyed:
        options.update({"key.format": "raw", "key.fields": "key", "value.fields-include": "EXCEPT_KEY"})
    table = sql_identifier(f"sink_{name.replace('-', '_')}")
    t_env.execute_sql(f"CREATE TEMPORARY TABLE {table} ({columns}) WITH (\n{sql_with_options(options)}\n)")
    source = t_env.from_data_stream(stream)
    # many messages per record (RecordEncoder.encode_all): unnested here, in the JVM
    if isinstance(stream.get_type(), ObjectArrayTypeInfo):
        source = t_env.sql_query(f"SELECT m FROM {source} CROSS JOIN UNNEST({source}.f0) AS x(m)")
    elif keyed and stream.get_type().get_field_names() == ["keys", "values"]:
        # (as a map, not by position: `values[i]` after an UNNEST WITH ORDINALITY costs time in the
        # array's length per message, 34 s against 6 s for ten snapshots of 5,000 records)
        source = t_env.sql_query(
            f"SELECT k AS `key`, v AS `value` FROM {source}"
            f" CROSS JOIN UNNEST(MAP_FROM_ARRAYS({source}.keys, {source}.`values`)) AS x(k, v)")
    statements = t_env.create_statement_set()
    statements.add_insert(table, source)
    statements.attach_as_datastream()


def require_topic(bootstrap: str, topic: str, kafka_properties: Mapping[str, str] | None = None,
                  timeout_s: float = 30.0) -> None:
    """A clear error now for a topic the job will write to but that does not exist (the broker does not
    create topics on use here): the sink would otherwise fail a minute into the job, and again after
    every restart."""
    from confluent_kafka import Consumer

    consumer = Consumer(client_config(bootstrap, kafka_properties, **{"group.id": "freshrank-topic-check"}))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    finally:
        consumer.close()
    if metadata.error is not None:
        raise RuntimeError(f"topic {topic} is missing ({metadata.error}); create the topics first: "
                           "`freshrank topics create`, or `freshrank run --create-topics`")


def load_kafka_catalog(bootstrap: str, topics: TopicNames, items: Path | None,
                       kafka_properties: Mapping[str, str] | None = None,
                       max_payload_bytes: int = DEAD_LETTER_MAX_BYTES) -> Catalog:
    """The catalog on the items topic (and in a catalog file, which wins); rejects go to dead-letter."""
    from confluent_kafka import Producer

    from udfs.wire import encode

    catalog, rejects = catalog_from_topic(bootstrap, topics.items, kafka_properties=kafka_properties,
                                          max_payload_bytes=max_payload_bytes)
    if items is not None:
        from_file, file_rejects = catalog_from_file(items, max_payload_bytes)
        catalog.update(from_file)
        rejects += file_rejects
    if rejects:
        producer = Producer(client_config(bootstrap, kafka_properties))
        for record in rejects:
            producer.produce(topics.dead_letter, encode("DeadLetter", record))
        producer.flush(30)
    return catalog


def load_snapshot_topic(bootstrap: str, topic: str, dim: int,
                        kafka_properties: Mapping[str, str] | None = None) -> ModelStore:
    """The newest record of every entity on the compacted snapshot topic (read_committed, up to its
    end as of now): the hot start of a new job without a savepoint. Every record is checked first."""
    from clients.snapshot_consumer import SnapshotConsumer

    with SnapshotConsumer(bootstrap, topic, **librdkafka_properties(kafka_properties)) as consumer:
        consumer.catch_up(timeout_s=300)
        store = consumer.store
    for (entity_type, entity_id), record in store.records.items():
        problem = snapshot_problem(record, dim)
        if problem is not None:
            raise SnapshotError(f"topic {topic}, {entity_type} {entity_id}: {problem}")
    if not len(store):
        raise SnapshotError(f"topic {topic} holds no snapshot records to start from")
    return store


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
    kafka_properties: Mapping[str, str] | None = None,
    from_snapshot_topic: bool = False,
) -> None:
    """Wire the pipeline between the Kafka topics onto `env`; `kafka_properties` (see clients.kafka_properties)
    reach every source, sink and client of the job."""
    env.add_jars(flink_kafka_connector_jar().resolve().as_uri())
    t_env = StreamTableEnvironment.create(env)
    prefix = f"{group_id}-{topics.examples}"

    def sink(stream: DataStream, name: str) -> None:
        kafka_sink(t_env, stream, bootstrap, getattr(topics, OUTPUT_TOPIC_FIELD[name]), name, prefix,
                   kafka_properties)

    # the snapshot first: a bad snapshot file fails the start before anything is read or written
    if from_snapshot is not None and from_snapshot_topic:
        raise ValueError("hot start from a snapshot folder or from the snapshot topic, not both")
    initial_model = load_snapshots(from_snapshot, config.learner.dim) if from_snapshot else None
    if from_snapshot_topic:
        initial_model = load_snapshot_topic(bootstrap, topics.snapshots, config.learner.dim, kafka_properties)
    catalog = load_kafka_catalog(bootstrap, topics, items, kafka_properties, config.dead_letter_max_bytes)
    if config.parallelism > 1:  # the learners write the item loop (a deployment from before it lacks the topic)
        require_topic(bootstrap, topics.item_loop, kafka_properties)
    inputs = PipelineInputs(
        kafka_events(env, bootstrap, topics.impressions, group_id, config, bounded, idleness_s, kafka_properties),
        kafka_events(env, bootstrap, topics.clicks, group_id, config, bounded, idleness_s, kafka_properties),
        decode=parse_wire,
        timestamps_assigned=True,
        parse_in_batches=True,  # a batch of messages per call (job.batching.message_batches)
        idle_timeout_ms=int(idleness_s * 1000),
        item_loop=ItemLoop(
            publish=lambda stream: kafka_sink(t_env, stream, bootstrap, topics.item_loop, "item-loop", prefix,
                                              kafka_properties),
            rows=item_loop(env, bootstrap, topics.item_loop, group_id, bounded, kafka_properties),
        ),
        catalog_updates=catalog_updates(env, bootstrap, topics.items, group_id, catalog.topic_ends, bounded,
                                        kafka_properties),
        unbounded=not bounded,
    )
    build_pipeline(inputs, dict.fromkeys(OUTPUTS, sink), config, AvroWireEncoder(), catalog, initial_model, t_env)


# How long a live job's network buffers may wait to fill before they are sent on (Flink's default is
# 100 ms). A click crosses about five exchanges on its way to the learner, and at live rates a buffer
# rarely fills: with 100 ms the click -> learner latency was ~450 ms at the median, with 10 ms ~170 ms
# (`freshrank demo --kafka`, docs/performance-log.md). Bounded runs keep Flink's default: no one waits there.
# A value in config.yaml wins, for live runs too.
LIVE_BUFFER_TIMEOUT_MS = 10
BUFFER_TIMEOUT_KEY = "execution.buffer-timeout.interval"


def kafka_environment(config: JobConfig, checkpoint_interval_s: float, bounded: bool,
                      checkpoint_dir: str | None = None,
                      prometheus_ports: str | None = None,
                      rest_port: int | None = None) -> StreamExecutionEnvironment:
    """Exactly-once needs checkpoints; RocksDB with incremental checkpoints holds the keyed state.
    `checkpoint_dir` replaces config.yaml's checkpoint and savepoint dirs (job.flink_env)."""
    overrides = {
        "parallelism.default": str(config.parallelism),
        "execution.checkpointing.interval": f"{int(checkpoint_interval_s * 1000)} ms",
        "state.backend.type": "rocksdb",
        "execution.checkpointing.incremental": "true",
    }
    if bounded:
        overrides["restart-strategy.type"] = "none"
    elif BUFFER_TIMEOUT_KEY not in flink_settings():
        overrides[BUFFER_TIMEOUT_KEY] = f"{LIVE_BUFFER_TIMEOUT_MS} ms"
    return make_environment(overrides, checkpoint_dir, prometheus_ports, rest_port)
