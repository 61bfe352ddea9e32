"""Which batching lane reads which Kafka partition (job.batching.message_batches).

A source's raw messages are batched, parsed and given their watermark again in lanes, one per subtask
of those stages. A partition belongs to one lane, so its messages stay in the order the partition
holds them (a click and its repeat, or an impression and its duplicate, reach the join in that
order, as the reference joiner reads them); lanes share out the partitions, and so the CPU, over the
TaskManagers.

Every lane must receive rows, or its empty subtasks never make a watermark and the join waits for
them: unbounded runs tick every lane (`job.batching.ticks`), so they take a lane per subtask and new
partitions spread over all of them; a bounded run has no ticks and takes a lane only per partition
with records to read, up to the parallelism.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from job.sql import sql_string


@dataclass(frozen=True)
class Lanes:
    """`keys[i]` addresses lane i (job.routing.lane_keys); partition p reads in lane `of_partition[p]`,
    one not listed (created after the start) in lane p mod len(keys)."""

    keys: tuple[str, ...]
    of_partition: Mapping[int, int]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a source needs at least one lane")
        if any(not 0 <= lane < len(self.keys) for lane in self.of_partition.values()):
            raise ValueError(f"lanes {dict(self.of_partition)} outside 0..{len(self.keys) - 1}")

    def key_of(self, partition: int) -> str:
        return self.keys[self.of_partition.get(partition, partition % len(self.keys))]

    def sql_key(self, column: str) -> str:
        """A SQL expression for the lane key of the partition number in `column` (an INT)."""
        if len(self.keys) == 1:
            return sql_string(self.keys[0])
        by_number = " ".join(f"WHEN {lane} THEN {sql_string(key)}" for lane, key in enumerate(self.keys))
        spread = f"CASE MOD({column}, {len(self.keys)}) {by_number} END"
        if not self.of_partition:
            return spread
        listed = " ".join(f"WHEN {int(partition)} THEN {sql_string(self.keys[lane])}"
                          for partition, lane in sorted(self.of_partition.items()))
        return f"CASE {column} {listed} ELSE {spread} END"


def lanes_for(parallelism: int, keys_for, partitions_with_records: Iterable[int] | None) -> Lanes:
    """The lanes of a source at `parallelism`: one per subtask when `partitions_with_records` is None
    (unbounded: ticks keep every lane moving), else one per partition with records, up to the
    parallelism, the partitions dealt out in turn (a bounded run). `keys_for(n)` gives n lane keys."""
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, not {parallelism}")
    if partitions_with_records is None:
        return Lanes(tuple(keys_for(parallelism)), {})
    readable = sorted(set(partitions_with_records))
    count = max(1, min(parallelism, len(readable)))
    return Lanes(tuple(keys_for(count)), {partition: index % count for index, partition in enumerate(readable)})
