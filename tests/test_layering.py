"""Imports point one way: udfs/ never imports job/, and the plain logic loads without pyflink."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The modules the job's operators are built from, testable without Flink (the shells are parse.py,
# join_learn.py, metrics.py and encoding.py).
PLAIN = ["udfs.schemas", "udfs.wire", "udfs.records", "udfs.join_logic", "udfs.learner_math", "udfs.learner_kernel",
         "udfs.metrics_math", "udfs.metrics_intervals", "udfs.model_store", "udfs.snapshots", "udfs.click_stall",
         "udfs.batch_learner", "udfs.interpreter"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_udfs_never_imports_job() -> None:
    upward = {f"udfs/{path.name}": sorted(name for name in _imports(path) if name.split(".")[0] == "job")
              for path in sorted((REPO / "udfs").glob("*.py"))}
    assert {module: names for module, names in upward.items() if names} == {}


def test_the_plain_logic_loads_without_pyflink() -> None:
    script = (f"import importlib, json, sys\nfor name in {PLAIN!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pyflink')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert all((REPO / (name.replace(".", "/") + ".py")).exists() for name in PLAIN)
