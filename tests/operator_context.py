"""A runtime context for calling PyFlink operator functions without Flink: counters that count."""

from __future__ import annotations


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


class RuntimeContext:
    def __init__(self) -> None:
        self.group = MetricGroup()

    def get_metrics_group(self) -> MetricGroup:
        return self.group
