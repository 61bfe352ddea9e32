"""The JVM half of the batched core on a real MiniCluster: every event reaches exactly one batch.

Hundreds of thousands of rows arrive within a few seconds, so many share an ingestion millisecond
with a window's end: the ingestion-time windows of a bounded run must not drop any of them.
"""

from __future__ import annotations

import pytest
from pyflink.table import StreamTableEnvironment

from job.batching import batches, event_row_type, with_event_time
from job.flink_env import make_environment

pytestmark = pytest.mark.flink  # runs the job on a local MiniCluster

ROWS = 300_000
SHARDS = ("s0", "s1", "s2")


def test_a_fast_bounded_stream_loses_no_event_to_its_batches() -> None:
    env = make_environment({"parallelism.default": "1"})
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE numbers (n BIGINT) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{ROWS}', 'rows-per-second' = '{ROWS // 3}',
          'fields.n.kind' = 'sequence', 'fields.n.start' = '1', 'fields.n.end' = '{ROWS}'
        )""")
    cases = " ".join(f"WHEN {i} THEN '{shard}'" for i, shard in enumerate(SHARDS))
    events = t_env.sql_query(
        f"SELECT CAST(CASE MOD(n, {len(SHARDS)}) {cases} END AS STRING) AS shard, n * 10 AS event_time,"
        " '[0,' || CAST(n AS STRING) || ']' AS event FROM numbers")
    parsed = with_event_time(t_env, t_env.to_append_stream(events, event_row_type()), max_disorder_ms=0)
    # 1 ms batches: every watermark the ingestion clock emits is then the last millisecond of a window
    sizes = batches(env, t_env, parsed, batch_ms=1, bounded=True)

    # Sized in the JVM: a Python consumer of every event would slow the stream down and hide the race.
    table = t_env.from_data_stream(sizes)
    with t_env.sql_query(f"SELECT shard_key, CARDINALITY(batch_row.batch) FROM {table}").execute().collect() as rows:
        sizes_seen = [(row[0], row[1]) for row in rows]
    assert len(sizes_seen) > len(SHARDS)  # several batches per shard, or the test proves nothing
    assert sum(size for _, size in sizes_seen) == ROWS
