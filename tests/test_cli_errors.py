"""Errors reach the user as one `freshrank: error: ...` line (the traceback only with --debug), bad
environment values as usage errors naming the option, and a failed command leaves no output folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from infra.ports import free_port
from job.errors import describe

REPO = Path(__file__).resolve().parent.parent


def freshrank(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("FRESHRANK_")}
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], cwd=REPO, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout_s)


def test_a_missing_input_file_is_one_line_and_creates_no_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = freshrank("replay", "--impressions", str(tmp_path / "nope.jsonl"), "--clicks", str(tmp_path / "c.jsonl"),
                       "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.strip() == f"freshrank: error: no such event file or folder: {tmp_path / 'nope.jsonl'}"
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = freshrank("--debug", "replay", "--impressions", str(tmp_path / "nope.jsonl"), "--clicks", "c",
                       "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "FileNotFoundError" in result.stderr


def test_an_unreachable_broker_is_reported_within_seconds() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    commands = (["topics", "create"], ["produce", "--generate", "100", "--quiet"],
                ["rank", "--user", "u", "--candidates", "a"])
    for command in commands:
        started = time.monotonic()
        result = freshrank(*command, "--bootstrap", bootstrap)
        assert result.returncode == 1, command
        assert result.stderr.strip().startswith(f"freshrank: error: no Kafka broker answers at {bootstrap}"), \
            (command, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and "%3|" not in result.stderr, command
        assert time.monotonic() - started < 30, command


def test_a_bad_environment_value_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    assert freshrank("--help", env={"FRESHRANK_WINDOW": "abc"}).returncode == 0
    result = freshrank("replay", "--impressions", "i", "--clicks", "c", "--out", str(tmp_path / "o"),
                       env={"FRESHRANK_WINDOW": "abc"})
    assert result.returncode == 2
    assert "argument --window: invalid float value: 'abc'" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_values_reach_the_options() -> None:
    from tools.cli import build_parser

    previous = {key: os.environ.get(key) for key in ("FRESHRANK_LEARNING_RATE", "FRESHRANK_WINDOW")}
    os.environ.update({"FRESHRANK_LEARNING_RATE": "0.25", "FRESHRANK_WINDOW": "12"})
    try:
        args = build_parser().parse_args(["replay", "--impressions", "i", "--clicks", "c", "--out", "o"])
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert args.learning_rate == 0.25 and args.window == 12.0


def test_describe_names_the_cause() -> None:
    assert describe(FileNotFoundError(2, "No such file or directory", "/x/y")) == "no such file or folder: /x/y"
    assert describe(ValueError("--dim must be positive")) == "--dim must be positive"

    class Py4JJavaError(Exception):  # what PyFlink raises when a job fails (matched by name)
        pass

    java = Py4JJavaError("An error occurred while calling o1.execute.\n: org.apache.flink.runtime.JobException: "
                         "Recovery is suppressed\n\tat x\nCaused by: java.io.IOException: disk full\n\tat y")
    assert describe(java).startswith("Flink: java.io.IOException: disk full")
    assert describe(KeyError("shard")) == "KeyError: 'shard'"


def test_broker_and_cluster_are_freshrank_commands_with_their_own_options(tmp_path: Path) -> None:
    for command in ("kafka", "cluster"):
        result = freshrank(command, "-h")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: freshrank {command}"), result.stderr
    # one tool: the same default data folder as `python -m infra.kafka_broker`
    from infra.kafka_broker import DEFAULT_CLI_DATA_DIR

    assert str(DEFAULT_CLI_DATA_DIR) in freshrank("kafka", "-h", env={"COLUMNS": "1000"}).stdout  # unwrapped
    status = freshrank("kafka", "status", "--data-dir", str(tmp_path))
    assert status.returncode == 1 and "not running" in status.stdout + status.stderr


def test_cluster_cpus_per_taskmanager_is_refused_by_its_option_name(tmp_path: Path) -> None:
    home = tmp_path / "cluster"
    for value, reason in (("-1", "must not be negative, not -1"), ("two", "not a whole number: 'two'")):
        result = freshrank("cluster", "start", "--home", str(home), f"--cpus-per-taskmanager={value}")
        assert result.returncode == 2
        assert result.stderr.strip().endswith(f"error: argument --cpus-per-taskmanager: {reason}"), result.stderr
    assert not home.exists()  # refused before anything started


def test_demo_modes_fill_only_what_was_not_given(monkeypatch) -> None:
    """`demo --kafka` has its own defaults; options typed or set in the environment keep their value."""
    from tools.cli import build_parser, resolve_demo_mode
    from tools.kafka_demo import KAFKA_DEMO_DEFAULTS

    monkeypatch.delenv("FRESHRANK_WINDOW", raising=False)
    args = build_parser().parse_args(["demo", "--kafka", "--imp", "3000", "--snapshot-interval=2"])
    resolve_demo_mode(args)
    assert (args.n_impressions, args.snapshot_interval) == (3000, 2.0)
    assert (args.n_users, args.window) == (KAFKA_DEMO_DEFAULTS["n_users"], KAFKA_DEMO_DEFAULTS["window"])
    plain = build_parser().parse_args(["demo", "--imp", "3000"])
    resolve_demo_mode(plain)
    assert (plain.n_impressions, plain.window, plain.n_users) == (3000, 1800.0, 2000)
    monkeypatch.setenv("FRESHRANK_WINDOW", "60")
    from_env = build_parser().parse_args(["demo", "--kafka"])
    resolve_demo_mode(from_env)
    assert from_env.window == 60.0


def test_a_configuration_survives_the_trip_through_options() -> None:
    """Tools hand a whole JobConfig to a child `freshrank run` as options (job_option_args)."""
    from job.config import JobConfig
    from job.options import job_config, job_option_args
    from tools.cli import build_parser
    from udfs.learner_math import LearnerConfig
    from udfs.model_guard import GuardConfig

    config = JobConfig(window_s=61.5, max_disorder_s=3.0, retention_s=99.0, snapshot_interval_s=2.0,
                       metrics_interval_s=7.0, batch_s=0.25, parallelism=2, lane_load=0.3, click_stall_limit_s=11.0,
                       click_stall_report_s=5.0, state_ttl_s=0.0, max_event_ahead_s=60.0,
                       dead_letter_max_bytes=123, learner=LearnerConfig(dim=8, learning_rate=0.07, l2=3e-5),
                       guard=GuardConfig(logloss_margin=0.7, auc_margin=0.2, ctr_factor=4.0, min_examples=300))
    args = build_parser().parse_args(["run", *job_option_args(config)])
    assert job_config(args) == config


def test_evaluate_passes_the_stream_shape_to_the_generator(tmp_path: Path) -> None:
    # The generator's own check answers, so the option reached the stream evaluate generates.
    result = freshrank("evaluate", "--seeds", "3", "--impressions", "2000", "--heavy-users", "5000",
                       "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip() == ("freshrank: error: heavy_users must be at least 0 and below n_users "
                                     "(the rest need someone)")


def test_scale_out_bench_options_are_refused_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = freshrank("bench", "--scale-out", "--out", str(out))
    assert result.returncode != 0
    assert result.stderr.strip() == "freshrank: error: --scale-out: measured on Kafka, add --kafka"
    result = freshrank("bench", "--kafka", "--scale-out", "--rounds", "0", "--out", str(out))
    assert result.returncode != 0
    assert result.stderr.strip() == "freshrank: error: rounds must be at least 1, not 0"
    assert not out.exists()


def test_demo_and_bench_checkpoints_reach_their_jobs_and_a_deployed_job_keeps_its_own() -> None:
    """Demo and bench checkpoint every second unless told otherwise (freshness: commits publish the
    snapshots), a deployed job (`run`) every ten; what the bench is given reaches its child jobs."""
    from job.config import JobConfig
    from job.options import DEMO_CHECKPOINT_INTERVAL_S, RUN_CHECKPOINT_INTERVAL_S
    from tools.cli import build_parser
    from tools.kafka_demo import run_args

    parser = build_parser()
    assert DEMO_CHECKPOINT_INTERVAL_S < RUN_CHECKPOINT_INTERVAL_S
    assert parser.parse_args(["demo", "--kafka"]).checkpoint_interval == DEMO_CHECKPOINT_INTERVAL_S
    assert parser.parse_args(["run", "--bootstrap", "127.0.0.1:9"]).checkpoint_interval == RUN_CHECKPOINT_INTERVAL_S
    for given, expected in (([], DEMO_CHECKPOINT_INTERVAL_S), (["--checkpoint-interval", "3.5"], 3.5)):
        bench = parser.parse_args(["bench", "--kafka", *given])
        child = parser.parse_args(run_args("127.0.0.1:9", "-t", JobConfig(), group_id="g", job_name="j",
                                           checkpoint_interval_s=bench.checkpoint_interval))
        assert (bench.checkpoint_interval, child.checkpoint_interval) == (expected, expected)
