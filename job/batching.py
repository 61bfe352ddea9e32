"""The JVM half of the batched core: per-shard event blocks for the Python learner, one call per block.

Per-record Python is what a PyFlink job pays for, and so are per-event rows through JVM operators (each
one serialised at every exchange, copied by every SQL stage): so events travel in blocks from the
parse to the learner, and the JVM stages in between handle one row per block:

    raw records, batched per `batch_ms` for the parse (files: `line_batches`; Kafka: `message_batches`,
    which carry the source's own watermark through the parse)
      ─ parse (Python, one call per batch): a block per shard, Row(shard, event_time, events), events
        the shard's events of the batch as JSON arrays joined by commas, event_time how far the
        event-time watermark may move after the block (udfs.parse.ParseEventBatches)
      ─ event-time watermarks per source from the blocks' newest event times (file mode; Kafka
        sources bring their own, made again after the parse: `carried_watermark`)
      ─ union ─ keyBy(shard) in the JVM
      ─ stamp: the join watermark as the block passed (CURRENT_WATERMARK after the shuffle, so the
        minimum over all sources and subtasks)
      = Row(shard, Row(shard, join_watermark, events)) for the learner

Every event of a block carries the watermark from before the block: never ahead of the one a
per-event stamp would have given it (that one could only have moved on within the block), so no
event is late that was not late at its source, and the learner decides each event with a watermark
from before it, which makes its labels those of the per-event design, whatever the block boundaries.

Unbounded inputs add ticks before the shuffle, so that a shard without traffic still receives the
join watermark as it moves on; they travel with the clicks through a first keyBy and stamp, which
gives each tick the clicks' own watermark (the click-stall guard, udfs.click_stall, holds decisions
there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.typeinfo import TypeInformation
from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table
from pyflink.table.types import DataType

from udfs.records import NO_WATERMARK, TICK

# A SQL expression's TIMESTAMP_LTZ(3) as epoch milliseconds (a plain CAST only gives seconds;
# TIMESTAMPDIFF returns INT, so whole minutes, which last until the year 6053, not seconds).
_EPOCH_MS = ("(CAST(TIMESTAMPDIFF(MINUTE, TO_TIMESTAMP_LTZ(0, 3), {x}) AS BIGINT) * 60000"
             " + EXTRACT(SECOND FROM {x}) * 1000 + EXTRACT(MILLISECOND FROM {x}))")
_INGEST_MS = _EPOCH_MS.format(x="CAST(PROCTIME() AS TIMESTAMP_LTZ(3))")  # when a row passes, epoch ms
_NO_MESSAGES = "ARRAY_SLICE(ARRAY[X'00'], 2, 1)"  # an empty ARRAY<BYTES>: Flink SQL has no empty array literal
LATE_INGEST_MS = 2000  # how far a bounded run's batch windows trail the wall clock (see `_batch_clock`)
BLOCK_COLUMNS = ("shard", "event_time", "events")


# The planner options that `_planner_options` sets for a few operators, with Flink's defaults.
_PLANNER_DEFAULTS = {"table.exec.resource.default-parallelism": "-1", "table.exec.source.idle-timeout": "0 ms"}


@contextlib.contextmanager
def _planner_options(t_env: StreamTableEnvironment, options: Mapping[str, str]) -> Iterator[None]:
    """Table options for the operators planned inside the block (`to_append_stream` plans at once),
    then the values from before set again, explicitly: planning copies the table options into the
    environment's configuration, which the table environment falls back on (so removing them would
    leave the block's values in force)."""
    config = t_env.get_config()
    live = config._j_table_config.getConfiguration()  # PyFlink's get_configuration() is a copy
    before = {key: config.get(key, _PLANNER_DEFAULTS[key]) for key in options}
    # Translating with a default parallelism also sets the execution environment's: every operator
    # made after the block (the learner too) would inherit it.
    j_env = t_env._j_tenv.execEnv()
    env_parallelism = j_env.getParallelism()
    for key, value in options.items():
        live.setString(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            live.setString(key, value)
        j_env.setParallelism(env_parallelism)


# One lane for a source that brings its own watermarks (`message_batches`): stamp, batches, parse and
# the watermark made again all at parallelism 1 (see there).
ONE_LANE = {"table.exec.resource.default-parallelism": "1"}


def block_row_type(with_watermark: bool = False) -> TypeInformation:
    """Parsed events as blocks: Row(shard, event_time, events), events a shard's events of one parse call
    as JSON arrays (udfs.records) joined by commas, UTF-8 (one bytes object crosses between Python and
    the JVM much faster than a list of strings), event_time what the event-time watermark follows (the
    newest event time of the batch on its last block, see udfs.parse.ParseEventBatches); with `with_watermark`,
    Row(shard, event_time, events, source_watermark), the watermark the raw batch carried
    (`message_batches`), and a batch without events still gives a row, Row(None, None, None, watermark)."""
    names, types = list(BLOCK_COLUMNS), [Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())]
    if with_watermark:
        names, types = [*names, "source_watermark"], [*types, Types.LONG()]
    return Types.ROW_NAMED(names, types)


def batch_row_type() -> TypeInformation:
    """What the learner gets: Row(shard, join_watermark, events), events as in `block_row_type`, each of them
    with the join watermark `join_watermark` from before the block."""
    return Types.ROW_NAMED(["shard", "join_watermark", "events"],
                           [Types.STRING(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())])


def keyed_batch_row_type() -> TypeInformation:
    """A batch row with its shard in front, Row(shard, Row(shard, join_watermark, events)): what PyFlink's
    keyed operators read (the key, then the record)."""
    return Types.ROW_NAMED(["shard_key", "batch_row"], [Types.STRING(), batch_row_type()])


def keyed_by_shard(batched: DataStream) -> KeyedStream:
    """The learner's input keyed by shard in the JVM. PyFlink's `key_by` would add a Python operator
    that turns every batch row (thousands of events) into Python objects and back just to put its key
    in front; here the JVM blocks come keyed already (`stamped`), and only the rare rows made in
    Python (catalog updates, the Kafka item loop) get their key in Python."""
    gateway = get_gateway()
    j_keyed = batched._j_data_stream.keyBy(gateway.jvm.KeyByKeySelector(),
                                           Types.ROW([Types.STRING()]).get_java_type_info())
    return KeyedStream(j_keyed, batch_row_type(), batched)


def with_key(rows: DataStream) -> DataStream:
    """Batch rows made in Python, keyed as `stamped` keys its own (low volume: one row per update)."""
    return rows.map(lambda row: Row(row[0], row), output_type=keyed_batch_row_type())


def _block_schema(watermark: str) -> Schema:
    return (
        Schema.new_builder()
        .column("shard", DataTypes.STRING())
        .column("event_time", DataTypes.BIGINT())
        .column("events", DataTypes.BYTES())
        .column_by_expression("rt", "TO_TIMESTAMP_LTZ(event_time, 3)")
        .watermark("rt", watermark)
        .build()
    )


def with_event_time(t_env: StreamTableEnvironment, parsed: DataStream, max_disorder_ms: int) -> DataStream:
    """Bounded-out-of-orderness watermarks from the blocks' newest event times, in the JVM (as Flink's
    `for_bounded_out_of_orderness`: the newest event time minus the bound minus 1 ms)."""
    table = t_env.from_data_stream(parsed, _block_schema(f"TO_TIMESTAMP_LTZ(event_time - {max_disorder_ms + 1}, 3)"))
    return t_env.to_append_stream(table.select(*[table.__getattr__(c) for c in BLOCK_COLUMNS]), block_row_type())


TICK_EVENT = f"[{TICK}]"  # carries a join watermark (and, once stamped, the clicks' watermark)


def ticks(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, shards: list[str]) -> DataStream:
    """One tick per shard about twice a second, for unbounded runs: a quiet shard (no events) still
    learns that the join watermark moved on, e.g. past its impressions' windows.

    A tick goes through the same shuffle and stamping as an event, so it carries the join watermark
    of its moment. Its own channel must never move that watermark: it emits no watermark and is
    marked idle after its first pause (a channel without watermarks counts only while active; a
    far-future watermark instead would let the join race ahead whenever every Kafka partition idles).
    The pause between ticks therefore spans several watermark intervals, however they are configured.
    """
    tick_table = _tick_source(env, t_env)
    # One branch per shard over the same source (a cross join with the shard list would plan a
    # VALUES source that finishes at once, leaving the job never fully running).
    table = t_env.sql_query(" UNION ALL ".join(
        f"SELECT CAST('{shard}' AS STRING) AS shard, CAST(0 AS BIGINT) AS event_time,"
        f" ENCODE('{TICK_EVENT}', 'UTF-8') AS events FROM {tick_table}" for shard in shards))
    return _idle_channel(t_env.to_append_stream(table, block_row_type()), "ticks-idle")


def _tick_source(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment) -> str:
    """The table of ticks (about two rows a second, see `ticks`), created once per job: its name."""
    interval_ms = max(env.get_config().get_auto_watermark_interval(), 1)
    # Idleness needs two periodic checks in a row without a tick: a pause of three and a half intervals.
    rows_per_second = min(2, int(1000 / (3.5 * interval_ms)))
    if rows_per_second < 1:
        raise ValueError(f"pipeline.auto-watermark-interval is {interval_ms} ms; unbounded runs need at most "
                         f"{int(1000 / 3.5)} ms (ticks to quiet shards come once a second at the slowest)")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE IF NOT EXISTS freshrank_ticks (n BIGINT) WITH (
          'connector' = 'datagen',
          'rows-per-second' = '{rows_per_second}',
          'scan.parallelism' = '1'
        )""")
    return "freshrank_ticks"


def _idle_channel(ticks: DataStream, uid: str) -> DataStream:
    """`ticks` as a channel that never holds a watermark back: no watermarks of its own, and idle from
    its first pause on (see `ticks`)."""
    return ticks.assign_timestamps_and_watermarks(
        WatermarkStrategy.no_watermarks().with_idleness(Duration.of_millis(1))
    ).name(uid).uid(uid)


def clicks_with_ticks(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, clicks: DataStream,
                      shards: list[str]) -> DataStream:
    """The clicks, plus the ticks of unbounded runs, each tick stamped with the clicks' own watermark.

    The join watermark alone cannot tell a click outage from quiet traffic: once every clicks
    partition is idle it follows the impressions. The clicks' watermark, read where all clicks
    subtasks meet (after a keyBy, like the join watermark) and carried by the ticks to every shard,
    lets the learner hold its decisions there (udfs.click_stall). Ticks read it while their own
    channel is idle or, once active again, not yet aligned, so they never hold it back themselves.
    """
    keyed = _key_by_shard(env, ticks(env, t_env, shards).union(clicks))
    table = t_env.from_data_stream(keyed, _block_schema("SOURCE_WATERMARK()"))
    clicks_ms = _EPOCH_MS.format(x="CURRENT_WATERMARK(rt)")
    stamped = t_env.sql_query(
        f"SELECT shard, event_time, CASE WHEN events = ENCODE('{TICK_EVENT}', 'UTF-8')"
        f" THEN ENCODE('[{TICK},' || CAST(COALESCE({clicks_ms}, {NO_WATERMARK}) AS STRING) || ']', 'UTF-8')"
        f" ELSE events END AS events FROM {table}"
    )
    return t_env.to_append_stream(stamped, block_row_type())


def _key_by_shard(env: StreamExecutionEnvironment, events: DataStream) -> DataStream:
    """A JVM keyBy on the `shard` field (PyFlink's key_by would call Python for every record)."""
    return _key_by_field(env, events, BLOCK_COLUMNS.index("shard"))


def _key_by_field(env: StreamExecutionEnvironment, rows: DataStream, field: int) -> DataStream:
    """A JVM keyBy on field number `field` of a row stream."""
    gateway = get_gateway()
    jvm = gateway.jvm
    j_stream = rows._j_data_stream
    type_info = j_stream.getType()
    fields = gateway.new_array(jvm.int, 1)
    fields[0] = field
    keys = jvm.org.apache.flink.api.common.operators.Keys.ExpressionKeys(fields, type_info)
    selector = jvm.org.apache.flink.streaming.util.keys.KeySelectorUtil.getSelectorForKeys(
        keys, type_info, env._j_stream_execution_environment.getConfig()
    )
    return DataStream(j_stream.keyBy(selector))


def stamped(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, blocks: DataStream) -> DataStream:
    """Row(shard, Row(shard, join_watermark, events)) for every block: the join watermark as it passed the
    shuffle by shard (see module doc), the shard in front for `keyed_by_shard`."""
    keyed = _key_by_shard(env, blocks)
    table = t_env.from_data_stream(keyed, _block_schema("SOURCE_WATERMARK()"))
    watermark_ms = _EPOCH_MS.format(x="CURRENT_WATERMARK(rt)")
    rows = t_env.sql_query(
        f"SELECT shard, CAST(ROW(shard, COALESCE({watermark_ms}, {NO_WATERMARK}), events)"
        f" AS ROW<shard STRING, join_watermark BIGINT, events BYTES>) FROM {table}"
    )
    return t_env.to_append_stream(rows, keyed_batch_row_type())


def _batch_clock(t_env: StreamTableEnvironment, rows: DataStream, columns: dict[str, DataType],
                 bounded: bool) -> Table:
    """`rows` (`columns`, then `ingest` ms) as a table with the time attribute `t` that batch windows
    are cut by: ingestion time for bounded inputs, processing time for unbounded ones."""
    schema = Schema.new_builder()
    for column, data_type in columns.items():
        schema = schema.column(column, data_type)
    schema = schema.column("ingest", DataTypes.BIGINT())
    if bounded:
        # No row may be late, or its window is already fired and the row dropped with a slice of the
        # input; nor may a row land in an earlier window than a row before it, or its batch would
        # overtake theirs. The wall clock steps back at times on these machines (one row in 300,000
        # was lost when the watermark trailed the newest ingestion time by 1 ms; once a batch holding
        # a stream's first rows came out after later ones). So the ingestion times are made monotone
        # first, and the watermark trails them by LATE_INGEST_MS: a bounded input's last
        # windows close at its end anyway, so this delays no result.
        rows = _monotone_ingest(t_env, rows, columns)
        schema = schema.column_by_expression("t", "TO_TIMESTAMP_LTZ(ingest, 3)").watermark(
            "t", f"t - INTERVAL '{LATE_INGEST_MS / 1000:.3f}' SECOND")
    else:
        schema = schema.column_by_expression("t", "PROCTIME()")
    return t_env.from_data_stream(rows, schema.build())


def _monotone_ingest(t_env: StreamTableEnvironment, rows: DataStream, columns: dict[str, DataType]) -> DataStream:
    """`rows` with each `ingest` raised to the newest one before it: a running
    maximum in the JVM (a processing-time OVER, which emits each row at once; about 1 µs a row)."""
    schema = Schema.new_builder()
    for column, data_type in columns.items():
        schema = schema.column(column, data_type)
    table = t_env.from_data_stream(
        rows, schema.column("ingest", DataTypes.BIGINT()).column_by_expression("pt", "PROCTIME()").build())
    monotone = t_env.sql_query(
        f"SELECT {', '.join(columns)}, MAX(ingest) OVER (ORDER BY pt"
        f" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ingest FROM {table}")
    return t_env.to_append_stream(monotone, rows.get_type())


def line_batch_type() -> TypeInformation:
    """Raw lines of a bounded input, batched for the parse: Row(lines)."""
    return Types.ROW_NAMED(["lines"], [Types.OBJECT_ARRAY(Types.STRING())])


def message_batch_type() -> TypeInformation:
    """Raw messages of a source with its own watermarks, batched for the parse: Row(messages, source_watermark)."""
    return Types.ROW_NAMED(["messages", "source_watermark"],
                           [Types.OBJECT_ARRAY(Types.PRIMITIVE_ARRAY(Types.BYTE())), Types.LONG()])


def line_batches(t_env: StreamTableEnvironment, lines: DataStream, batch_ms: int) -> DataStream:
    """The raw lines of a bounded input (files) as Row(lines) per `batch_ms` of ingestion time, in the
    order read, for a parse that takes one batch per call (udfs.parse.ParseEventBatches).

    Parsing one record per call cost the replay more interpreter time than the whole parse's work:
    each call crosses from the JVM into Python and back, while the learner wants the interpreter
    (thread mode: one per JVM). Batches are cut by ingestion time (`_batch_clock`), so the end of
    the input flushes the last one. Before the parse there are no event times yet, so the
    windows span the whole input stream (one window operator; the parse runs at the job's parallelism,
    each subtask with its own event-time progress, as per-record parsing had).
    """
    table = t_env.from_data_stream(lines)
    stamped = t_env.sql_query(f"SELECT f0 AS line, {_INGEST_MS} AS ingest FROM {table}")
    rows = t_env.to_append_stream(stamped, Types.ROW_NAMED(["line", "ingest"], [Types.STRING(), Types.LONG()]))
    cut = _batch_clock(t_env, rows, {"line": DataTypes.STRING()}, bounded=True)
    grouped = t_env.sql_query(
        f"SELECT ARRAY_AGG(line) AS lines FROM TABLE(TUMBLE(TABLE {cut}, DESCRIPTOR(t),"
        f" INTERVAL '{batch_ms / 1000:.3f}' SECOND)) GROUP BY window_start, window_end")
    return t_env.to_append_stream(grouped, line_batch_type())


def carried_watermark(t_env: StreamTableEnvironment, parsed: DataStream, idle_timeout_ms: int = 0) -> DataStream:
    """The blocks of a parse over `message_batches` with the source's watermark made again from the ones
    the batches carried, in the JVM: each row's batch watermark, the newest one seen so far, and the
    stream idle after `idle_timeout_ms` without rows (0: never), as the source's partitions were. The
    rows that only carried a watermark (no events) end here."""
    parsed = parsed.assign_timestamps_and_watermarks(WatermarkStrategy.no_watermarks()).set_parallelism(1)
    with _planner_options(t_env, {**ONE_LANE, "table.exec.source.idle-timeout": f"{idle_timeout_ms} ms"}):
        schema = (
            Schema.new_builder()
            .column("shard", DataTypes.STRING())
            .column("event_time", DataTypes.BIGINT())
            .column("events", DataTypes.BYTES())
            .column("source_watermark", DataTypes.BIGINT())
            # NO_WATERMARK (no source watermark yet) would not fit a timestamp: the epoch holds nothing back either.
            .column_by_expression("wt", "TO_TIMESTAMP_LTZ(GREATEST(source_watermark, 0), 3)")
            .watermark("wt", "wt")
            .build()
        )
        table = t_env.from_data_stream(parsed, schema)
        blocks = t_env.sql_query(f"SELECT {', '.join(BLOCK_COLUMNS)} FROM {table} WHERE events IS NOT NULL")
        return t_env.to_append_stream(blocks, block_row_type())


def _source_watermark_schema() -> Schema.Builder:
    """A schema whose time attribute `rt` carries the stream's own watermarks (a table made from a
    stream drops them unless its schema declares them); only rt's watermark is ever read."""
    return Schema.new_builder().column_by_expression("rt", "TO_TIMESTAMP_LTZ(0, 3)").watermark(
        "rt", "SOURCE_WATERMARK()")


def message_batches(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, messages: DataStream,
                    batch_ms: int, bounded: bool, name: str) -> DataStream:
    """The raw messages of a source that brings its own watermarks (Kafka: per partition, from the
    record timestamps) as Row(messages, source_watermark) per `batch_ms`, in the order read, for a parse
    that takes one batch per call (udfs.parse.ParseEventBatches); `name` names the source.

    The watermark must survive the batching: a window emits its batch after the watermarks that
    passed while it was open, so downstream of the parse the watermark would run ahead of the events.
    Instead every message is stamped with the source's watermark as it passes (where all source
    subtasks meet: their minimum, as the learner's stamp is), each batch keeps the first (smallest)
    stamp of its messages, and `carried_watermark` makes the watermark from the batches again. It then
    trails the source's by up to a batch, which only delays decisions: no event becomes late that was
    not late at the source. Unbounded runs stamp ticks too (`ticks`, about twice a second), so the
    watermark the source reaches after its last message still moves on when no message follows;
    their batches may hold no message (`messages` empty), only the watermark.

    From the stamp to the watermark made again everything runs in one lane (parallelism 1: the
    batches, their parse and `carried_watermark`). Spread over parallel parse subtasks, a subtask that got no
    batch lately would hold the join watermark at its last stamp, without any partition being quiet.
    The lane's parallelism stays inside it (`_planner_options`): what follows, the learner above all,
    runs at the job's.
    """
    # One stamp point, all in the JVM: a keyBy of one key. The messages become rows first (chained to
    # the source), as a null message (a tombstone, dead-lettered by the parse) cannot cross a network
    # exchange, a null field can. (A table made from a stream drops the stream's watermarks unless its
    # schema declares them.)
    row_type = Types.ROW_NAMED(["k", "message", "tick"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()),
                                                         Types.BOOLEAN()])
    table = t_env.from_data_stream(messages, _source_watermark_schema().column("f0", DataTypes.BYTES()).build())
    rows = t_env.to_append_stream(t_env.sql_query(f"SELECT '' AS k, f0 AS message, FALSE AS tick FROM {table}"),
                                  row_type)
    if not bounded:
        ticks = t_env.sql_query(f"SELECT '' AS k, CAST(NULL AS BYTES) AS message, TRUE AS tick"
                                f" FROM {_tick_source(env, t_env)}")
        rows = rows.union(_idle_channel(t_env.to_append_stream(ticks, row_type), f"ticks-idle-{name}"))
    schema = (_source_watermark_schema().column("k", DataTypes.STRING()).column("message", DataTypes.BYTES())
              .column("tick", DataTypes.BOOLEAN()).build())
    table = t_env.from_data_stream(_key_by_field(env, rows, 0), schema)
    watermark_ms = _EPOCH_MS.format(x="CURRENT_WATERMARK(rt)")
    stamped = t_env.sql_query(
        f"SELECT message, tick, COALESCE({watermark_ms}, {NO_WATERMARK}) AS source_watermark,"
        f" {_INGEST_MS} AS ingest FROM {table}")
    # Only the stamp subtask of the one key gets rows; the others must not hold the batch clock of a
    # bounded run back (ingestion time: an idle input only ever delays batches, never drops a row).
    with _planner_options(t_env, ONE_LANE):
        rows = t_env.to_append_stream(stamped, Types.ROW_NAMED(["message", "tick", "source_watermark", "ingest"], [
            Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.BOOLEAN(), Types.LONG(), Types.LONG()]))
        cut = _batch_clock(t_env, rows, {"message": DataTypes.BYTES(), "tick": DataTypes.BOOLEAN(),
                                         "source_watermark": DataTypes.BIGINT()}, bounded)
        grouped = t_env.sql_query(
            # (a batch of ticks only: an empty array, which PyFlink can hand to Python, unlike NULL)
            f"SELECT COALESCE(ARRAY_AGG(message) FILTER (WHERE NOT tick), {_NO_MESSAGES}) AS messages,"
            f" MIN(source_watermark) AS source_watermark"
            f" FROM TABLE(TUMBLE(TABLE {cut}, DESCRIPTOR(t), INTERVAL '{batch_ms / 1000:.3f}' SECOND))"
            f" GROUP BY window_start, window_end")
        return t_env.to_append_stream(grouped, message_batch_type())
