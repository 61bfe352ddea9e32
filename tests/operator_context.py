"""A runtime context for calling PyFlink operator functions without Flink: counters that count."""

from __future__ import annotations

import pickle


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class MetricGroup:
    """Every subgroup is this group: counters are found by their own name."""

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}

    def add_group(self, _name: str) -> MetricGroup:
        return self

    def counter(self, name: str) -> Counter:
        return self.counters.setdefault(name, Counter())

    def distribution(self, _name: str) -> Distribution:
        return Distribution()


class RuntimeContext:
    def __init__(self) -> None:
        self.group = MetricGroup()

    def get_metrics_group(self) -> MetricGroup:
        return self.group


class Distribution:
    def __init__(self) -> None:
        self.value: int | None = None

    def update(self, value: int) -> None:
        self.value = value


class PickledValueState:
    """A value state that keeps bytes, as Flink's does: what was not written back is not there."""

    def __init__(self, store: dict, name: str) -> None:
        self.store, self.name = store, name

    def value(self):
        data = self.store.get(self.name)
        return None if data is None else pickle.loads(data)

    def update(self, value) -> None:
        self.store[self.name] = pickle.dumps(value)


class StatefulRuntimeContext(RuntimeContext):
    """Value states over `store` (name -> bytes): a new context over a copy of it is a restore."""

    def __init__(self, store: dict) -> None:
        super().__init__()
        self.store = store

    def get_state(self, descriptor) -> PickledValueState:
        return PickledValueState(self.store, descriptor.name)


class TimerService:
    def __init__(self) -> None:
        self.event_timers: list[int] = []

    def register_event_time_timer(self, timestamp: int) -> None:
        self.event_timers.append(timestamp)


class KeyedContext:
    def __init__(self) -> None:
        self.timers = TimerService()

    def timer_service(self) -> TimerService:
        return self.timers
