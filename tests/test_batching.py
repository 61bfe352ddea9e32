"""The JVM half of the batched core on a real MiniCluster: every record reaches exactly one batch, and
every block the join watermark from before it.

Hundreds of thousands of rows arrive within a few seconds, so many share an ingestion millisecond
with a window's end: the ingestion-time windows of a bounded run must not drop any of them.
"""

from __future__ import annotations

import json

import pytest
from pyflink.common import Row, Types
from pyflink.table import DataTypes, StreamTableEnvironment

from job.batching import (
    _batch_clock,
    block_row_type,
    carried_watermark,
    line_batches,
    message_batches,
    stamped,
    with_event_time,
)
from job.flink_env import make_environment
from udfs.records import NO_WATERMARK

pytestmark = pytest.mark.flink  # runs the job on a local MiniCluster

ROWS = 300_000
SHARDS = ("s0", "s1", "s2")


def test_a_fast_bounded_stream_loses_no_record_to_its_batches() -> None:
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE numbers (n BIGINT) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '{ROWS // 3}',
          'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '{ROWS}'
        )""")
    lines = t_env.to_append_stream(t_env.sql_query("SELECT CAST(n AS STRING) AS f0 FROM numbers"),
                                   Types.ROW_NAMED(["f0"], [Types.STRING()]))
    # 1 ms batches: every watermark the ingestion clock emits is then the last millisecond of a window
    batched = line_batches(t_env, lines, batch_ms=1)

    # Collected by the JVM's collect sink: a Python operator over every line would slow the stream down
    # and hide the race.
    with batched.execute_and_collect() as results:
        sizes = [len(row[0]) for row in results]
    assert len(sizes) > 3  # several batches, or the test proves nothing
    assert sum(sizes) == ROWS


def test_each_block_carries_the_join_watermark_from_before_it() -> None:
    """Blocks of parsed events through the event-time watermark and the stamp (job.batching.stamped): every
    block reaches the learner's input once, keyed by its shard, whole, and with a join watermark below
    every event time of blocks still to come (bounded disorder 0: the newest time before it, minus 1)."""
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    blocks, per_block = 3_000, 5
    rows = [Row(SHARDS[b % len(SHARDS)], (b + 1) * per_block - 1,
                ",".join(f"[0,{n}]" for n in range(b * per_block, (b + 1) * per_block)).encode())
            for b in range(blocks)]
    parsed = with_event_time(t_env, env.from_collection(rows, block_row_type()), max_disorder_ms=0)
    with stamped(env, t_env, parsed).execute_and_collect() as results:
        seen = [(row[0], row[1][0], row[1][1], json.loads(b"[" + bytes(row[1][2]) + b"]")) for row in results]
    assert sorted(n for _, _, _, events in seen for _, n in events) == list(range(blocks * per_block))
    assert all(key == shard == SHARDS[events[0][1] // per_block % len(SHARDS)] for key, shard, _, events in seen)
    stamps = [watermark for _, _, watermark, _ in seen]
    assert any(watermark != NO_WATERMARK for watermark in stamps)  # (a table drops watermarks unless declared)
    for (_, _, watermark, events), _ in zip(seen, stamps, strict=True):
        # event times are the numbers: the watermark never passes one of the block's own events
        assert watermark < min(n for _, n in events)
    assert stamps == sorted(stamps)


def test_message_batches_carry_the_source_watermark() -> None:
    """Kafka's batch parse (job.batching.message_batches): every message in exactly one batch, and each
    batch stamped with a source watermark that had been reached before any of its messages passed."""
    rows, disorder_ms = 60_000, 5
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    # growing times n * 10 with a bounded-disorder watermark (the minimum over several source subtasks
    # is tested through Kafka: tests/test_flink_cluster.py)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE messages (
          n BIGINT, rt AS TO_TIMESTAMP_LTZ(n * 10, 3), WATERMARK FOR rt AS rt - INTERVAL '0.00{disorder_ms}' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rows // 2}',
          'fields.n.kind' = 'sequence', 'fields.n.start' = '0', 'fields.n.end' = '{rows - 1}'
        )""")
    as_rows = t_env.to_append_stream(t_env.sql_query("SELECT CAST(CAST(n AS STRING) AS BYTES) FROM messages"),
                                     Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE())]))
    messages = as_rows.map(lambda row: row[0], output_type=Types.PRIMITIVE_ARRAY(Types.BYTE()))
    batched = message_batches(env, t_env, messages, batch_ms=20, bounded=True, name="test")
    with batched.execute_and_collect() as results:
        seen = [([int(bytes(m)) for m in row[0]], row[1]) for row in results]
    assert sorted(n for numbers, _ in seen for n in numbers) == list(range(rows))
    stamped = [(numbers, stamp) for numbers, stamp in seen if stamp != NO_WATERMARK]
    assert len(stamped) >= len(seen) // 2 > 2  # the watermark reached the stamps (a table drops it unless declared)
    for numbers, stamp in stamped:
        # each source subtask's times grow, so its watermark stays below the times it has yet to send
        assert stamp < min(numbers) * 10 - disorder_ms
    assert [stamp for _, stamp in seen] == sorted(stamp for _, stamp in seen)


def test_batches_keep_the_arrival_order_when_the_wall_clock_steps_back() -> None:
    """A bounded run's batches are cut by ingestion time, which is the wall clock: when it steps back
    (it does on these machines, by milliseconds to seconds), the rows after the step must still go
    into later batches than the rows before it, or a batch overtakes an earlier one (its events then
    find the watermark of later ones). Here the clock steps back 600 ms in the middle of the stream."""
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    base, step_back, per_key = 1_700_000_000_000, 600, 2_000
    rows = [Row(n, base + n - (step_back if n >= per_key // 2 else 0)) for n in range(per_key)]
    stream = env.from_collection(rows, Types.ROW_NAMED(["n", "ingest"], [Types.LONG(), Types.LONG()]))
    cut = _batch_clock(t_env, stream, {"n": DataTypes.BIGINT()}, bounded=True)
    grouped = t_env.sql_query(
        f"SELECT ARRAY_AGG(n) FROM TABLE(TUMBLE(TABLE {cut}, DESCRIPTOR(t), INTERVAL '0.02' SECOND))"
        " GROUP BY window_start, window_end")
    with grouped.execute().collect() as results:
        batched = [list(row[0]) for row in results]
    assert len(batched) > per_key // 2 // 20  # cut into many batches (20 ms of rows each), not one
    assert [n for numbers in batched for n in numbers] == list(range(per_key))


def test_the_one_lane_stages_leave_the_job_parallelism_to_what_follows() -> None:
    """Kafka's batch parse runs from the stamp to the watermark made again at parallelism 1; the
    operators planned after it (the learner) keep the job's parallelism. (Planning with a default
    parallelism once set the environment's: the learner ran as one subtask holding every shard's
    keyed state, and after a restore it read back only the shard of its first batch.)"""
    env = make_environment({"parallelism.default": "2"})
    t_env = StreamTableEnvironment.create(env)
    one = t_env.to_append_stream(t_env.sql_query("SELECT CAST('1' AS BYTES)"),
                                 Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE())]))
    message_batches(env, t_env, one.map(lambda row: row[0], output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())),
                    batch_ms=20, bounded=False, name="test")
    parsed = t_env.to_append_stream(t_env.sql_query("SELECT 's0', CAST(1 AS BIGINT), ENCODE('[0]', 'UTF-8'),"
                                                    " CAST(1 AS BIGINT)"), block_row_type(with_watermark=True))
    blocks = carried_watermark(t_env, parsed)
    blocks.map(lambda row: row, output_type=block_row_type()).name("after-the-lane")
    assert env.get_parallelism() == 2
    nodes = json.loads(env.get_execution_plan())["nodes"]
    assert [node["parallelism"] for node in nodes if node["contents"].startswith("after-the-lane")] == [2]
    assert any(node["parallelism"] == 1 and "WindowAggregate" in node["contents"] for node in nodes)
