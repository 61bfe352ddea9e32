"""Which batching lane reads which Kafka partition (job.lanes): every lane gets rows, a partition one lane."""

from __future__ import annotations

import pytest

from job.lanes import Lanes, lanes_for


def keys(n: int) -> list[str]:
    return [f"k{i}" for i in range(n)]


def test_an_unbounded_source_takes_a_lane_per_subtask_and_spreads_every_partition() -> None:
    lanes = lanes_for(3, keys, None)
    assert lanes.keys == ("k0", "k1", "k2")
    assert [lanes.key_of(partition) for partition in range(7)] == ["k0", "k1", "k2", "k0", "k1", "k2", "k0"]


@pytest.mark.parametrize(("parallelism", "readable", "expected"), [
    (2, [0, 1], {0: 0, 1: 1}),
    (2, [5, 1, 3], {1: 0, 3: 1, 5: 0}),  # dealt out in turn, whatever the numbers
    (4, [2, 7], {2: 0, 7: 1}),  # fewer partitions with records than subtasks: a lane each
    (3, [], {}),  # nothing to read: one lane, which the run's end finishes
])
def test_a_bounded_source_takes_a_lane_only_per_partition_with_records(
        parallelism: int, readable: list[int], expected: dict[int, int]) -> None:
    lanes = lanes_for(parallelism, keys, readable)
    assert dict(lanes.of_partition) == expected
    assert len(lanes.keys) == max(1, min(parallelism, len(readable)))
    assert set(expected.values()) == set(range(len(lanes.keys))) or not expected  # no lane without records


def test_the_sql_expression_names_the_same_lane_as_the_mapping() -> None:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    for lanes in (lanes_for(3, keys, None), lanes_for(2, keys, [4, 1, 9]), lanes_for(1, keys, [0])):
        values = ", ".join(f"({p})" for p in range(12))
        rows = t_env.sql_query(f"SELECT p, {lanes.sql_key('p')} FROM (VALUES {values}) AS t(p)").execute().collect()
        with rows:
            assert {row[0]: row[1] for row in rows} == {p: lanes.key_of(p) for p in range(12)}


def test_lanes_refuse_what_would_leave_rows_nowhere() -> None:
    with pytest.raises(ValueError, match="at least one lane"):
        Lanes((), {})
    with pytest.raises(ValueError, match="outside"):
        Lanes(("k0",), {3: 1})
    with pytest.raises(ValueError, match="parallelism"):
        lanes_for(0, keys, None)
