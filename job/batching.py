"""The JVM half of the batched core: per-shard event batches for the Python learner, one call per batch.

Per-record Python is what a PyFlink job pays for; so the events are parsed once, then shuffled,
stamped and grouped entirely in JVM operators (checkpointed state only), and the learner gets one
row per shard and batch:

    parsed events (shard, event_time, event JSON), one stream per source
      ─ event-time watermarks per source (file mode; Kafka sources bring their own)
      ─ union ─ keyBy(shard) in the JVM
      ─ stamp: the join watermark as this event passed (CURRENT_WATERMARK after the shuffle, so the
        minimum over all sources and subtasks: exactly what a per-event keyed operator would have seen)
        and the wall-clock ingestion time
      ─ ingestion-time watermark (replaces the event-time one, which now travels inside the rows)
      ─ TUMBLE(ingestion time, batch_ms) GROUP BY shard: ARRAY_AGG of "[watermark,event]" strings
      = Row(shard, batch)

Why ingestion-time windows: a batch is cut by wall-clock time (freshness does not wait for event
time), yet a window is emitted before the watermark that passes its end, so batches arrive in order,
nothing is held back at the end of the input, and no row is ever late. The learner then decides
each event with the watermark it carries (the watermark "from before" it), which makes its labels
those of the per-event design, whatever the batch boundaries.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment

# A SQL expression's TIMESTAMP_LTZ(3) as epoch milliseconds (a plain CAST only gives seconds).
_EPOCH_MS = ("(CAST(TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), {x}) AS BIGINT) * 1000"
             " + EXTRACT(MILLISECOND FROM {x}))")
NO_WATERMARK = -(2**63) + 1  # before the first watermark (Flink's initial watermark, plus one)
EVENT_COLUMNS = ("shard", "event_time", "event")


def event_row_type() -> TypeInformation:
    """Parsed events: Row(shard, event_time, event JSON) (see udfs.records for the JSON)."""
    return Types.ROW_NAMED(list(EVENT_COLUMNS), [Types.STRING(), Types.LONG(), Types.STRING()])


def batch_row_type() -> TypeInformation:
    """What the learner gets: Row(shard, batch), batch = list of "[join watermark, event]" JSON strings."""
    return Types.ROW_NAMED(["shard", "batch"], [Types.STRING(), Types.OBJECT_ARRAY(Types.STRING())])


def _event_schema(watermark: str) -> Schema:
    return (
        Schema.new_builder()
        .column("shard", DataTypes.STRING())
        .column("event_time", DataTypes.BIGINT())
        .column("event", DataTypes.STRING())
        .column_by_expression("rt", "TO_TIMESTAMP_LTZ(event_time, 3)")
        .watermark("rt", watermark)
        .build()
    )


def with_event_time(t_env: StreamTableEnvironment, parsed: DataStream, max_disorder_ms: int) -> DataStream:
    """Bounded-out-of-orderness watermarks from the `event_time` field, in the JVM (as Flink's
    `for_bounded_out_of_orderness`: the newest event time minus the bound minus 1 ms)."""
    table = t_env.from_data_stream(parsed, _event_schema(f"TO_TIMESTAMP_LTZ(event_time - {max_disorder_ms + 1}, 3)"))
    return t_env.to_append_stream(table.select(*[table.__getattr__(c) for c in EVENT_COLUMNS]), event_row_type())


def _key_by_shard(env: StreamExecutionEnvironment, events: DataStream) -> DataStream:
    """A JVM keyBy on the `shard` field (PyFlink's key_by would call Python for every record)."""
    gateway = get_gateway()
    jvm = gateway.jvm
    j_stream = events._j_data_stream
    type_info = j_stream.getType()
    fields = gateway.new_array(jvm.int, 1)
    fields[0] = EVENT_COLUMNS.index("shard")
    keys = jvm.org.apache.flink.api.common.operators.Keys.ExpressionKeys(fields, type_info)
    selector = jvm.org.apache.flink.streaming.util.keys.KeySelectorUtil.getSelectorForKeys(
        keys, type_info, env._j_stream_execution_environment.getConfig()
    )
    return DataStream(j_stream.keyBy(selector))


def batches(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, events: DataStream,
            batch_ms: int) -> DataStream:
    """Row(shard, batch) every `batch_ms` of wall-clock time per shard that had events (see module doc)."""
    keyed = _key_by_shard(env, events)
    stamped = t_env.from_data_stream(keyed, _event_schema("SOURCE_WATERMARK()"))
    watermark_ms = _EPOCH_MS.format(x="CURRENT_WATERMARK(rt)")
    ingest_ms = _EPOCH_MS.format(x="CAST(PROCTIME() AS TIMESTAMP_LTZ(3))")
    stamped = t_env.sql_query(
        f"SELECT shard, '[' || CAST(COALESCE({watermark_ms}, {NO_WATERMARK}) AS STRING) || ',' || event || ']' AS item,"
        f" {ingest_ms} AS ingest FROM {stamped}"
    )
    stamped_rows = t_env.to_append_stream(
        stamped, Types.ROW_NAMED(["shard", "item", "ingest"], [Types.STRING(), Types.STRING(), Types.LONG()])
    )
    ingested = t_env.from_data_stream(
        stamped_rows,
        Schema.new_builder()
        .column("shard", DataTypes.STRING())
        .column("item", DataTypes.STRING())
        .column("ingest", DataTypes.BIGINT())
        .column_by_expression("it", "TO_TIMESTAMP_LTZ(ingest, 3)")
        .watermark("it", "it")  # ingestion times only grow per subtask: no row is ever late
        .build(),
    )
    grouped = t_env.sql_query(
        f"SELECT shard, ARRAY_AGG(item) AS batch FROM TABLE(TUMBLE(TABLE {ingested}, DESCRIPTOR(it),"
        f" INTERVAL '{batch_ms / 1000:.3f}' SECOND)) GROUP BY shard, window_start, window_end"
    )
    return t_env.to_append_stream(grouped, batch_row_type())
