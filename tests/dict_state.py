"""Dict-backed stand-ins for Flink's state handles, so the learner core runs without a cluster.

Values are stored as Flink stores them: copies (pickled and unpickled), never references, so a test
fails if the learner relied on mutating a value after writing it."""

from __future__ import annotations

import pickle

from udfs.batch_learner import LearnerState


class DictMapState:
    """MapState semantics over a dict."""

    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key):
        value = self.data.get(key)
        return None if value is None else pickle.loads(pickle.dumps(value))

    def put_all(self, entries: dict) -> None:
        self.data.update(pickle.loads(pickle.dumps(entries)))

    def remove(self, key) -> None:
        self.data.pop(key, None)

    def items(self):
        return list(pickle.loads(pickle.dumps(self.data)).items())

    def clear(self) -> None:
        self.data.clear()


class DictValueState:
    def __init__(self) -> None:
        self.data = None

    def value(self):
        return None if self.data is None else pickle.loads(self.data)

    def update(self, value) -> None:
        self.data = pickle.dumps(value)


def new_state() -> LearnerState:
    return LearnerState(DictMapState(), DictMapState(), DictMapState(), DictMapState(), DictMapState(),
                        DictMapState(), DictValueState(), DictMapState(), DictMapState())


def copy_state(state: LearnerState) -> LearnerState:
    """An independent copy of every handle's contents (a restore from the same checkpoint, twice)."""
    return pickle.loads(pickle.dumps(state))
