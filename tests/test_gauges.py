"""Gauges are pushed from the operator's thread: Flink's metric threads never call into Python."""

from __future__ import annotations

import ast
from pathlib import Path

from operator_context import MetricGroup

from udfs.gauges import PushedGauges

REPO = Path(__file__).resolve().parent.parent


def test_pushed_gauges_hold_the_last_value_and_skip_repeats() -> None:
    group = MetricGroup()
    gauges = PushedGauges(group, ["model_version", "click_stalled"])
    for value in (0, 3, 3, 4):
        gauges.set("model_version", value)
    gauges.set("click_stalled", True)
    assert group.distributions["model_version"].updates == [0, 3, 4]
    assert group.distributions["click_stalled"].updates == [1]


def test_no_operator_registers_a_python_callable_gauge() -> None:
    """`MetricGroup.gauge(name, callable)` is called by Flink's metric threads through PemJa, which in
    thread mode crashed a TaskManager (SIGSEGV in the interpreter on the "flink-metrics" thread)."""
    callers = []
    for path in sorted((REPO / "udfs").glob("*.py")) + sorted((REPO / "job").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "gauge":
                callers.append(f"{path.name}:{node.lineno}")
    assert not callers, f"use udfs.gauges.PushedGauges instead of MetricGroup.gauge: {callers}"
