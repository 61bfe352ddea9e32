"""Benchmark: the whole throughput story of a file replay in one run, on one machine, on the same files.

Printed as one table:
- (a) the Flink replay end to end, start-up included: what `freshrank replay` costs a user;
- (b) the replay at steady state: a second, small replay of the same generator config, and
  (N_big - N_small) / (T_big - T_small), so the job's fixed start-up cost cancels out;
- (c) the learner math alone in a plain Python loop over the replay's examples (no parse, no join,
  no I/O): the floor of what learning costs in Python;
- (d) a plain single-process program doing the same parse + join + learn (`tools.plain_program`):
  what a user would write instead of freshrank;
- the ratios of (a) and (b) to (c) and (d);
- the per-stage costs the job reports itself (`cost_*` metrics), and from them where an impression's
  microseconds go at steady state (the parse's Python work, the learner's stages, the rest);
- the share of impressions of the heaviest users, so the reader sees the skewed traffic was there.

Absolute figures depend on the machine; the ratios, measured in the same run, are what to compare
across changes. Nothing here asserts on timings.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyflink.common import Types
from pyflink.datastream import OutputTag

from job.config import JobConfig
from job.replay import read_output, run_replay
from tools.generate import GeneratorConfig, generate, write_stream
from tools.plain_program import run_plain_program
from udfs.encoding import JsonLinesEncoder
from udfs.learner_math import ItemSide, OnlineRanker
from udfs.parse import ParseEventBatches
from udfs.records import parse_json, parse_wire

SMALL_FRACTION = 0.02  # the steady-state replay's size relative to the big one
SMALL_MIN = 20_000  # below this the small replay is mostly start-up and its time too noisy
HEAVIEST = 3  # how many of the most active users the skew line reports
PARSE_SHARDS = ["shard-0"]  # routing is one CRC per record whatever the shard count


def plain_python_learner(examples: list[dict], config: JobConfig) -> float:
    """Seconds the learner math takes over `examples` with users in a dict (no Flink, no state backend)."""
    ranker = OnlineRanker(config.learner, ItemSide(config.learner))
    users: dict = {}
    started = time.perf_counter()
    for e in examples:
        user = users.get(e["user_id"])
        if user is None:
            user = users[e["user_id"]] = ranker.codec.new()
        ranker.score_then_learn(user, e["item_id"], e["position"], e["label"])
    return time.perf_counter() - started


PARSE_BATCH = 2_000  # records per parse call: a 100 ms batch at 20k records/s


class _Uncounted:
    """A runtime context for an operator function run outside Flink: its metrics go nowhere."""

    def get_metrics_group(self) -> _Uncounted:
        return self

    def add_group(self, _name: str) -> _Uncounted:
        return self

    def counter(self, _name: str) -> _Uncounted:
        return self

    def inc(self, _n: int = 1) -> None:
        pass


def parse_us_of(raw: list[tuple[str, list[Any]]], decode: Callable[[str, Any], dict[str, Any]] = parse_json) -> float:
    """Microseconds of Python work per record that the job's parse operator does, timed outside Flink:
    its function (`udfs.parse.ParseEventBatches`) over each (schema name, raw records) pair in batches
    of PARSE_BATCH, records as the source gives them (Kafka batches carry a watermark too)."""
    records = 0
    seconds = 0.0
    for schema_name, values in raw:
        parse = ParseEventBatches("bench", schema_name, OutputTag("bench-dead-letter", Types.STRING()),
                                  JsonLinesEncoder(), PARSE_SHARDS, decode)
        parse.open(_Uncounted())
        with_watermark = decode is parse_wire
        started = time.perf_counter()
        for at in range(0, len(values), PARSE_BATCH):
            batch = values[at:at + PARSE_BATCH]
            for _ in parse.process_element([batch, 0] if with_watermark else [batch], None):
                pass
        seconds += time.perf_counter() - started
        records += len(values)
    return seconds / max(records, 1) * 1e6


def python_parse_us(files: list[tuple[str, Path]]) -> float:
    """`parse_us_of` the lines of JSON Lines files, as text like the file source gives them."""
    raw = []
    for schema_name, path in files:
        with open(path, encoding="utf-8") as handle:
            raw.append((schema_name, [line.rstrip("\n") for line in handle if line.strip()]))
    return parse_us_of(raw)


def where_the_time_goes(steady: float, events_per_impression: float, parse_us: float,
                        costs: dict[str, float]) -> dict[str, float]:
    """Microseconds per impression at steady state, split into the Python stages and the rest.

    The learner's stages are its `cost_*_total` metrics (per event, so times events per impression);
    parse is its Python work per record; the rest is what neither holds: each record's JVM-to-Python
    call into the parse operator and back, the JVM operators (watermarks, shuffle, batching), the
    sinks, and the Python operators' waits for one another (thread mode: one interpreter lock)."""
    total = 1e6 / steady if steady > 0 and math.isfinite(steady) else float("nan")
    split = {"parse (Python)": parse_us * events_per_impression}
    for stage in ("join", "learn", "state"):
        split[f"learner {stage} (Python)"] = costs.get(f"cost_{stage}_us_per_event_total", float("nan")) * \
            events_per_impression
    split["the rest (JVM, crossings, sinks)"] = total - sum(split.values())
    split["total at steady state"] = total
    return split


def small_size(n_impressions: int) -> int:
    """Impressions of the steady-state replay: 2% of the big one, at least 20k, at most half of it."""
    return min(max(SMALL_MIN, round(SMALL_FRACTION * n_impressions)), n_impressions // 2)


def latest_stage_costs(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Every `cost_*` metric at its latest window_end (the job's final figure for the run)."""
    latest: dict[str, tuple[int, float]] = {}
    for record in metrics:
        name = record["name"]
        if name.startswith("cost_") and record["window_end"] >= latest.get(name, (-1, 0.0))[0]:
            latest[name] = (record["window_end"], record["value"])
    return {name: value for name, (_, value) in sorted(latest.items())}


def heaviest_user_shares(examples: list[dict[str, Any]], k: int = HEAVIEST) -> list[tuple[str, float]]:
    """The `k` users with most examples and their share of all examples (one per distinct impression)."""
    counts = Counter(e["user_id"] for e in examples)
    total = max(len(examples), 1)
    return [(user, n / total) for user, n in counts.most_common(k)]


def _events(work_dir: Path, n_impressions: int, seed: int, heavy_users: int) -> Path:
    """The generated stream's folder, generated on first use (generation is not what is measured)."""
    events = work_dir / f"events-{n_impressions}-{seed}-heavy{heavy_users}"
    if not (events / "clicks.jsonl").exists():
        print(f"generating {n_impressions:,} impressions ({heavy_users} heavy users) ...")
        write_stream(generate(GeneratorConfig(n_impressions=n_impressions, seed=seed, heavy_users=heavy_users)),
                     events)
    return events


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def _replay(events: Path, run_dir: Path, config: JobConfig, checkpoint_dir: str | None) -> tuple[float, float]:
    """(seconds of the whole run_replay call, seconds of the job's execution alone)."""
    started = time.perf_counter()
    result = run_replay(events / "impressions.jsonl", events / "clicks.jsonl", run_dir, config,
                        checkpoint_dir=checkpoint_dir)
    return time.perf_counter() - started, result.wall_s


def run_bench(
    work_dir: Path, n_impressions: int, config: JobConfig, seed: int = 7, heavy_users: int = 3,
    checkpoint_dir: str | None = None,
) -> dict[str, float]:
    """Run every measurement on the same generated files and print one table; returns the figures."""
    n_small = small_size(n_impressions)
    big = _events(work_dir, n_impressions, seed, heavy_users)
    small = _events(work_dir, n_small, seed, heavy_users)
    lines_big = _count_lines(big / "impressions.jsonl")
    lines_small = _count_lines(small / "impressions.jsonl")
    stamp = time.strftime("%Y%m%d-%H%M%S")

    # The plain program first: its figure is printed even if the job fails, and it reads the files
    # once before Flink does, so neither side gets a colder page cache than the other.
    print(f"plain single-process program over {lines_big:,} impressions ...")
    plain = run_plain_program(big / "impressions.jsonl", big / "clicks.jsonl", config.window_ms, config.learner)
    print(f"  {plain.impressions_per_s:,.0f} impressions/s ({plain.seconds:.1f} s)")

    # The big replay goes first, so (a) includes everything a user waits for (the JVM gateway's
    # launch too), and the small replay runs in a warmer JVM: if anything, that makes T_small
    # shorter and the steady-state estimate lower, never flattering.
    print(f"Flink replay of {lines_big:,} impressions (parallelism {config.parallelism}) ...")
    run_big = work_dir / f"run-{stamp}"
    call_big_s, exec_big_s = _replay(big, run_big, config, checkpoint_dir)
    print(f"Flink replay of {lines_small:,} impressions (for the steady state) ...")
    call_small_s, exec_small_s = _replay(small, work_dir / f"run-{stamp}-small", config, checkpoint_dir)

    # Steady state from the execution walls: both include the same per-job start-up (MiniCluster,
    # Python workers, operator set-up), which cancels; the one-off JVM launch is in neither.
    extra_s = exec_big_s - exec_small_s
    steady = (lines_big - lines_small) / extra_s if extra_s > 0 else float("nan")
    startup_s = exec_small_s - lines_small / steady if math.isfinite(steady) else float("nan")

    examples = sorted(read_output(run_big, "examples"), key=lambda e: e["impression_time"])
    learner_s = plain_python_learner(examples, config)
    learner_rate = len(examples) / learner_s if learner_s > 0 else float("nan")
    flink_rate = lines_big / call_big_s
    costs = latest_stage_costs(read_output(run_big, "metrics"))
    clicks_big = _count_lines(big / "clicks.jsonl")
    parse_us = python_parse_us([("Impression", big / "impressions.jsonl"), ("Click", big / "clicks.jsonl")])
    split = where_the_time_goes(steady, (lines_big + clicks_big) / lines_big, parse_us, costs)
    heaviest = heaviest_user_shares(examples)
    # A cross-check that both sides did the same join: label values must agree (a positive's click
    # time may differ, see tools.plain_program).
    flink_labels = {e["impression_id"]: e["label"] for e in examples}
    labels_differ = sum(1 for i, (label, _) in plain.labels.items() if flink_labels.get(i) != label)
    labels_differ += sum(1 for i in flink_labels if i not in plain.labels)

    figures: dict[str, float] = {
        "impressions": lines_big,
        "impressions_small": lines_small,
        "heavy_users": heavy_users,
        "examples": len(examples),
        "flink_wall_s": call_big_s,
        "flink_execute_s": exec_big_s,
        "flink_small_wall_s": call_small_s,
        "flink_small_execute_s": exec_small_s,
        "flink_impressions_per_s": flink_rate,
        "flink_steady_impressions_per_s": steady,
        "flink_startup_s": startup_s,
        "plain_learner_s": learner_s,
        "plain_python_learner_examples_per_s": learner_rate,
        "plain_program_s": plain.seconds,
        "plain_program_impressions_per_s": plain.impressions_per_s,
        "plain_program_examples": plain.examples,
        "labels_differ": labels_differ,
        "ratio_flink_to_plain": _ratio(flink_rate, learner_rate),
        "ratio_flink_to_plain_program": _ratio(flink_rate, plain.impressions_per_s),
        "ratio_steady_to_plain": _ratio(steady, learner_rate),
        "ratio_steady_to_plain_program": _ratio(steady, plain.impressions_per_s),
        "heaviest_users_share": sum(share for _, share in heaviest),
    }
    figures.update(costs)
    figures.update({f"us_per_impression {stage}": value for stage, value in split.items()})
    for rank, (_, share) in enumerate(heaviest, 1):
        figures[f"heaviest_user_{rank}_share"] = share

    print()
    print(format_table(figures, costs, heaviest, config, n_small, split))
    return figures


def _rate(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "n/a"


def _share(value: float, total: float) -> str:
    return f"{value / total:6.1%}" if total > 0 and math.isfinite(value) and math.isfinite(total) else ""


def _times(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def format_table(
    figures: dict[str, float], costs: dict[str, float], heaviest: list[tuple[str, float]], config: JobConfig,
    n_small: int, split: dict[str, float] | None = None,
) -> str:
    """The bench's printed report."""
    f = figures
    startup = (f"about {f['flink_startup_s']:.1f} s" if f["flink_startup_s"] >= 0
               else "not resolvable at this size (timing noise exceeds it)")
    if not math.isfinite(f["flink_startup_s"]):
        startup = "n/a (the big replay was not slower than the small one)"
    rows = [
        ("(a) Flink replay, end to end, start-up included", f["flink_impressions_per_s"], f"{f['flink_wall_s']:.1f}",
         f["ratio_flink_to_plain"], f["ratio_flink_to_plain_program"]),
        ("(b) Flink replay, steady state *", f["flink_steady_impressions_per_s"],
         f"{f['flink_execute_s'] - f['flink_small_execute_s']:.1f}",
         f["ratio_steady_to_plain"], f["ratio_steady_to_plain_program"]),
        ("(c) plain learner-math loop (examples/s) **", f["plain_python_learner_examples_per_s"],
         f"{f['plain_learner_s']:.1f}", 1.0, float("nan")),
        ("(d) plain single-process program ***", f["plain_program_impressions_per_s"], f"{f['plain_program_s']:.1f}",
         float("nan"), 1.0),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"freshrank bench: {int(f['impressions']):,} impressions (duplicates included), {int(f['heavy_users'])} heavy "
        f"users, parallelism {config.parallelism}, window {config.window_s:g} s",
        "",
        f"{'':{width}}  {'impressions/s':>13}  {'seconds':>8}  {'/ (c)':>7}  {'/ (d)':>7}",
    ]
    for label, rate, seconds, vs_learner, vs_program in rows:
        lines.append(f"{label:{width}}  {_rate(rate):>13}  {seconds:>8}  "
                     f"{_times(vs_learner):>7}  {_times(vs_program):>7}")
    lines += [
        "",
        "*   (N_big - N_small) / (T_big - T_small), T = the job's execution wall, with a second replay of "
        f"{int(f['impressions_small']):,}",
        f"    impressions (same generator config, {n_small:,} generated): the job's start-up cost cancels out.",
        f"    Start-up: {startup}.",
        "    The small run goes second, in a warm JVM, which if anything lowers (b).",
        "**  udfs.learner_math over the replay's examples in a Python loop: no parse, no join, no I/O.",
        "*** tools/plain_program.py: reads both files, checks fields, sorts by event time, joins with dicts and a",
        "    deadline heap, learns with the same math; file reading included.",
        (f"    Its labels agree with the replay's ({int(f['plain_program_examples']):,} examples)."
         if not f["labels_differ"]
         else f"    Its labels DIFFER from the replay's for {int(f['labels_differ']):,} impressions."),
        "",
        "per-stage cost reported by the job (cost_* metrics, latest interval):",
    ]
    if costs:
        name_width = max(len(name) for name in costs)
        lines += [f"  {name:{name_width}}  {value:>10,.1f}" for name, value in costs.items()]
    else:
        lines.append("  the job reported no stage costs (no cost_* metrics)")
    if split:
        lines.append("where an impression's microseconds go at steady state (Python stages timed in the job or,")
        lines.append("for parse, over the same lines outside it; the rest is what none of them holds):")
        total = split["total at steady state"]
        name_width = max(len(name) for name in split)
        lines += [f"  {name:{name_width}}  {value:>7,.1f} us  {_share(value, total)}" for name, value in split.items()]
    shares = ", ".join(f"{user} {share:.1%}" for user, share in heaviest)
    lines.append(f"skew: the {len(heaviest)} heaviest users have {f['heaviest_users_share']:.1%} of all examples "
                 f"({shares})")
    return "\n".join(lines)
