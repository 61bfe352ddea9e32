"""The JVM half of the batched core on a real MiniCluster: every record reaches exactly one batch, and
every block the join watermark from before it.

Hundreds of thousands of rows arrive within a few seconds, so many share an ingestion millisecond
with a window's end: the ingestion-time windows of a bounded run must not drop any of them.
"""

from __future__ import annotations

import json

import pytest
from pyflink.common import Row, Types
from pyflink.datastream import ProcessFunction, RuntimeContext
from pyflink.table import DataTypes, StreamTableEnvironment

from job.batching import (
    _batch_clock,
    _source_watermark_schema,
    block_row_type,
    carried_watermark,
    line_batches,
    message_batches,
    stamped,
    with_event_time,
)
from job.flink_env import make_environment
from job.lanes import lanes_for
from job.routing import lane_keys
from udfs.records import NO_WATERMARK
from udfs.snapshots import subtask_index

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


def test_message_batches_carry_the_source_watermark_and_keep_each_partition_in_order() -> None:
    """Kafka's batch parse (job.batching.message_batches): every message in exactly one batch, each
    batch stamped with a source watermark that had been reached before any of its messages passed,
    and a partition's messages in one lane, in order, as the lanes split the work over subtasks."""
    rows, disorder_ms, partitions = 60_000, 5, 3
    # one source subtask, as a Kafka partition is read by one (the rest of the job at parallelism 2)
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    # growing times n * 10 with a bounded-disorder watermark (the minimum over several source subtasks
    # is tested through Kafka: tests/test_flink_cluster.py); partition n mod 3
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE messages (
          n BIGINT, rt AS TO_TIMESTAMP_LTZ(n * 10, 3), WATERMARK FOR rt AS rt - INTERVAL '0.00{disorder_ms}' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '{rows // 2}',
          'fields.n.kind' = 'sequence', 'fields.n.start' = '0', 'fields.n.end' = '{rows - 1}'
        )""")
    messages = t_env.sql_query(f"SELECT CAST(MOD(n, {partitions}) AS INT) AS `partition`,"
                               f" CAST(CAST(n AS STRING) AS BYTES) AS message FROM messages")
    lanes = lanes_for(2, lane_keys, range(partitions))
    assert dict(lanes.of_partition) == {0: 0, 1: 1, 2: 0}
    # (planned now: the source at parallelism 1, the rest at 2)
    messages = t_env.to_append_stream(messages, Types.ROW_NAMED(["partition", "message"], [
        Types.INT(), Types.PRIMITIVE_ARRAY(Types.BYTE())]))
    env.set_parallelism(2)
    messages = t_env.from_data_stream(messages, _source_watermark_schema().column("partition", DataTypes.INT())
                                      .column("message", DataTypes.BYTES()).build())
    batched = message_batches(env, t_env, messages, lanes, batch_ms=20, bounded=True, name="test")
    # the parse would run here, a lane per subtask (this module shipped for the worker to import WithSubtask)
    env.add_python_file(__file__)
    marked = batched.process(WithSubtask(), output_type=Types.ROW([*batched.get_type().get_field_types(),
                                                                   Types.INT()])).set_parallelism(2)
    with marked.execute_and_collect() as results:
        seen, subtask_of = [], {}
        for row in results:
            numbers = [int(bytes(m)) for m in row[0]]
            seen.append((numbers, row[1]))
            subtask_of.setdefault(lanes.of_partition[numbers[0] % partitions], set()).add(row[2])
    assert subtask_of == {0: {0}, 1: {1}}  # lane i in subtask i, from the source to the parse
    assert sorted(n for numbers, _ in seen for n in numbers) == list(range(rows))
    stamped = [(numbers, stamp) for numbers, stamp in seen if stamp != NO_WATERMARK]
    assert len(stamped) >= len(seen) // 2 > 2  # the watermark reached the stamps (a table drops it unless declared)
    for numbers, stamp in stamped:
        # the source's times grow, so its watermark stays below the times it has yet to send
        assert stamp < min(numbers) * 10 - disorder_ms
    by_lane: dict[int, list[tuple[list[int], int]]] = {}
    for numbers, stamp in seen:
        batch_lanes = {lanes.of_partition[n % partitions] for n in numbers}
        assert len(batch_lanes) == 1  # a batch is one lane's
        by_lane.setdefault(batch_lanes.pop(), []).append((numbers, stamp))
    assert sorted(by_lane) == [0, 1]
    for batches in by_lane.values():
        # results interleave the lanes' subtasks; within a lane, batches keep their order
        assert [stamp for _, stamp in batches] == sorted(stamp for _, stamp in batches)
        for partition in range(partitions):
            in_order = [n for numbers, _ in batches for n in numbers if n % partitions == partition]
            assert in_order == sorted(in_order)


class WithSubtask(ProcessFunction):
    """Each row with the number of the subtask it reached."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.subtask = subtask_index(runtime_context)

    def process_element(self, value, ctx):
        yield Row(*value, self.subtask)


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


def test_the_lane_stages_leave_the_job_parallelism_to_what_follows() -> None:
    """Kafka's batch parse runs from the stamp to the watermark made again at the lanes' parallelism;
    the operators planned after it (the learner) keep the job's. (Planning with a default
    parallelism once set the environment's: the learner ran as one subtask holding every shard's
    keyed state, and after a restore it read back only the shard of its first batch.)"""
    env = make_environment({"parallelism.default": "3"})
    t_env = StreamTableEnvironment.create(env)
    one = t_env.sql_query("SELECT 0 AS `partition`, CAST('1' AS BYTES) AS message")
    message_batches(env, t_env, one, lanes_for(3, lane_keys, [0, 1]), batch_ms=20, bounded=False, name="test")
    parsed = t_env.to_append_stream(t_env.sql_query("SELECT 's0', CAST(1 AS BIGINT), ENCODE('[0]', 'UTF-8'),"
                                                    " CAST(1 AS BIGINT)"), block_row_type(with_watermark=True))
    blocks = carried_watermark(t_env, parsed, lanes=2)
    blocks.map(lambda row: row, output_type=block_row_type()).name("after-the-lane")
    assert env.get_parallelism() == 3
    nodes = json.loads(env.get_execution_plan())["nodes"]
    assert [node["parallelism"] for node in nodes if node["contents"].startswith("after-the-lane")] == [3]
    # unbounded: a lane per subtask (ticks keep each moving); the lanes of `carried_watermark` as asked
    assert any(node["parallelism"] == 3 and "WindowAggregate" in node["contents"] for node in nodes)
    assert any(node["parallelism"] == 2 and "WHERE" in node["contents"].upper() for node in nodes)
