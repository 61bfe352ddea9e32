"""State handles over plain dicts, so the learner core (udfs.batch_learner) runs without Flink: for
offline evaluations and benchmarks of the model itself. Nothing here is checkpointed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from udfs.batch_learner import LearnerState


class MemoryMapState:
    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def put_all(self, entries: dict) -> None:
        self.data.update(entries)

    def remove(self, key: Any) -> None:
        self.data.pop(key, None)

    def items(self) -> Iterable[tuple[Any, Any]]:
        return list(self.data.items())

    def clear(self) -> None:
        self.data.clear()


class MemoryValueState:
    def __init__(self) -> None:
        self.data: Any = None

    def value(self) -> Any:
        return self.data

    def update(self, value: Any) -> None:
        self.data = value


def memory_state() -> LearnerState:
    """Fresh, empty handles for one learner."""
    return LearnerState(*(MemoryMapState() for _ in range(6)), MemoryValueState(), MemoryMapState(),
                        MemoryMapState())
