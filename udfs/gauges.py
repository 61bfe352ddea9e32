"""Gauges whose values the operator pushes from its own thread, so Flink never calls into Python.

A PyFlink gauge (`MetricGroup.gauge(name, callable)`) is a Python callable that Flink's metric threads
(REST metric queries, the Prometheus reporter) invoke through PemJa from their own Java threads. In
thread mode that call can crash the TaskManager: seen as a SIGSEGV in the interpreter
(`_PyEval_EvalFrameDefault`) on the "flink-metrics" thread, inside `MetricGauge.getValue`, while the
task thread ran Python. The embedded `distribution` metric is a plain Java gauge that holds the last
long it was given (`org.apache.flink.python.metric.embedded.MetricDistribution`), so values set from
the task thread are read without entering Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class PushedGauges:
    """Named gauges of one metric group; `set` stores a value for Flink to read (ints only)."""

    def __init__(self, group: Any, names: Iterable[str]) -> None:
        self._gauges = {name: group.distribution(name) for name in names}
        self._values: dict[str, int] = {}

    def set(self, name: str, value: int) -> None:
        value = int(value)
        if self._values.get(name) != value:  # each update is a call into the JVM
            self._gauges[name].update(value)
            self._values[name] = value
