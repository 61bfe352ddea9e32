"""Imports point one way, down the layers, and the plain logic and the clients load without pyflink.

Layers, bottom first: udfs/ (records, wire, join and learner logic, operator shells), clients/ (Kafka
clients), job/ (the Flink job), infra/ (local broker and cluster), tools/ (CLI, generator, demos,
benchmark). A module may import its own layer and those below it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The modules the job's operators are built from, testable without Flink (the shells are parse.py,
# join_learn.py, metrics.py and encoding.py), and the Kafka clients, which services use without Flink.
PLAIN = ["clients.kafka_properties", "clients.topics", "clients.admin", "clients.snapshot_consumer",
         "clients.producer", "clients.event_files", "udfs.schemas", "udfs.wire", "udfs.records",
         "udfs.join_logic", "udfs.learner_math", "udfs.learner_kernel", "udfs.metrics_math",
         "udfs.metrics_intervals", "udfs.model_store", "udfs.snapshots", "udfs.click_stall",
         "udfs.batch_learner", "udfs.interpreter", "udfs.text_encoder", "udfs.model_guard",
         "udfs.native", "udfs.avro_batch", "udfs.json_batch", "udfs.event_lines", "udfs.avro_events",
         "udfs.json_events"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


LAYERS = ("udfs", "clients", "job", "infra", "tools")


def test_imports_point_down_the_layers() -> None:
    upward = {}
    for rank, layer in enumerate(LAYERS):
        above = set(LAYERS[rank + 1:])
        for path in sorted((REPO / layer).glob("*.py")):
            names = sorted(name for name in _imports(path) if name.split(".")[0] in above)
            if names:
                upward[f"{layer}/{path.name}"] = names
    assert upward == {}


def test_the_job_entry_point_loads_only_the_job() -> None:
    script = ("import json, runpy, sys\nsys.argv = ['main.py', '--help']\n"
              "try:\n    runpy.run_path('job/main.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'tools', 'infra'})))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--bootstrap" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_plain_logic_loads_without_pyflink() -> None:
    script = (f"import importlib, json, sys\nfor name in {PLAIN!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pyflink')))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert all((REPO / (name.replace(".", "/") + ".py")).exists() for name in PLAIN)
