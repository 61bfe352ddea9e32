"""Operators watch the job in Prometheus: `--prometheus-port` turns on Flink's Prometheus reporter, and
a scrape during a run finds the job's own `freshrank` counters moving (and the quality gauges)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.ports import free_port
from job.flink_env import prometheus_reporter
from tools.generate import GeneratorConfig, generate, write_stream
from udfs.metrics_intervals import UNDEFINED_GAUGE, gauge_value

REPO = Path(__file__).resolve().parent.parent
# A learner subtask's examples counter, e.g.
# flink_taskmanager_job_task_operator_freshrank_examples{...,operator_name="join_and_learn",...} 1234.0
EXAMPLES = re.compile(r'^flink_taskmanager_job_task_operator_freshrank_examples\{[^}]*operator_name="join_and_learn"'
                      r"[^}]*\} (\S+)$", re.MULTILINE)
# The newest closed interval's AUC in millionths (udfs.metrics_intervals.LATEST_INTERVAL_GAUGES).
AUC = re.compile(r"^flink_\w+_freshrank_quality_interval_auc_micro\{[^}]*\} (\S+)$", re.MULTILINE)
ITEMS = re.compile(r"^flink_\w+_freshrank_item_count\{[^}]*\} (\S+)$", re.MULTILINE)


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


@pytest.mark.flink
def test_a_replay_exposes_its_counters_to_prometheus(tmp_path: Path) -> None:
    """Also: `--rest-port` puts the run's REST API where asked (the job is listed there while it runs)."""
    files = write_stream(generate(GeneratorConfig(n_impressions=150_000, seed=11)), tmp_path / "events")
    port = free_port()
    rest_port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRESHRANK_")}
    command = [sys.executable, "-m", "tools.cli", "replay", "--impressions", str(files["impressions"]),
               "--clicks", str(files["clicks"]), "--out", str(tmp_path / "out"), "--dim", "8",
               "--prometheus-port", str(port), "--rest-port", str(rest_port)]
    seen: list[float] = []  # the examples counter at each scrape that had it
    quality = None
    auc: list[float] = []
    items: list[float] = []  # the learner's item_count gauge (pushed after each call, udfs.gauges)
    exported: set[str] = set()  # metric names seen in any scrape
    listed: list[str] = []  # job names the REST API on --rest-port listed
    with open(tmp_path / "replay.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/jobs/overview", timeout=2) as response:
                    listed += [job["name"] for job in json.loads(response.read())["jobs"]]
            body = _scrape(port)
            if body:
                exported.update(re.findall(r"^(flink_\w+)\{", body, re.MULTILINE))
                values = [float(v) for v in EXAMPLES.findall(body)]
                if values:
                    seen.append(sum(values))
                quality = quality or re.search(r"^flink_\w+_freshrank_quality_examples_total\{", body, re.MULTILINE)
                auc += [float(v) for v in AUC.findall(body)]
                items += [float(v) for v in ITEMS.findall(body)]
            counted = [v for v in seen if v > 0]  # the first scrapes may come before the first example
            if len(counted) >= 2 and counted[-1] > counted[0] and quality and any(v > 0 for v in auc) and listed \
                    and any(v > 0 for v in items):
                break
            time.sleep(0.5)
        process.wait(240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (tmp_path / "replay.log").read_text()[-3000:]
    counted = [v for v in seen if v > 0]
    assert len(counted) >= 2 and counted[-1] > counted[0], f"the examples counter did not move between scrapes: {seen}"
    assert quality, "the metrics operator's quality gauges were not exported"
    assert "freshrank-replay-out" in listed, listed  # the job, on the REST port asked for
    # The Grafana dashboard in the repo queries only metrics the job exports.
    dashboard = json.loads((REPO / "ops" / "grafana" / "freshrank.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bflink_\w+", target["expr"])}
    assert queried and queried <= exported, sorted(queried - exported)
    # -1 until an interval closes, then the interval's AUC in millionths
    assert any(v > 0 for v in items), f"the learner's item_count gauge never showed items: {items}"
    assert auc and all(v == UNDEFINED_GAUGE or 0 <= v <= 1e6 for v in auc) and any(v > 0 for v in auc), auc


def test_interval_figures_become_integer_gauges() -> None:
    assert gauge_value(0.74183, 1e6) == 741830
    assert gauge_value(12.0, 1) == 12
    assert gauge_value(math.nan, 1e6) == UNDEFINED_GAUGE


def test_reporter_ports_are_checked() -> None:
    assert prometheus_reporter("9250-9260")["metrics.reporter.prom.port"] == "9250-9260"
    for bad in ("", "9250,9251", "port", "-1"):
        with pytest.raises(ValueError):
            prometheus_reporter(bad)
