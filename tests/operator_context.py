"""A runtime context for calling PyFlink operator functions without Flink: counters that count, gauges
that keep what they were given, value states that keep bytes."""

from __future__ import annotations

import pickle


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class Distribution:
    """The Java gauge PyFlink's `distribution` makes: every value pushed to it, in order."""

    def __init__(self) -> None:
        self.updates: list[int] = []

    def update(self, value: int) -> None:
        self.updates.append(value)


class MetricGroup:
    """Every subgroup is this group: counters and gauges are found by their own name."""

    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.distributions: dict[str, Distribution] = {}

    def add_group(self, _name: str) -> MetricGroup:
        return self

    def counter(self, name: str) -> Counter:
        return self.counters.setdefault(name, Counter())

    def distribution(self, name: str) -> Distribution:
        return self.distributions.setdefault(name, Distribution())


class RuntimeContext:
    def __init__(self) -> None:
        self.group = MetricGroup()

    def get_metrics_group(self) -> MetricGroup:
        return self.group


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
