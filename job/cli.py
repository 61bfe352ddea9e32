"""The `freshrank` command line: parses options and calls the job or a client; nothing more."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson

from job.config import JobConfig
from udfs.learner_math import LearnerConfig


def _env_default(name: str, default):
    """Flags fall back to FRESHRANK_<NAME> so deployments can configure by environment."""
    value = os.environ.get(f"FRESHRANK_{name.upper().replace('-', '_')}")
    return type(default)(value) if value is not None and default is not None else (value or default)


def _job_options(parser: argparse.ArgumentParser) -> None:
    defaults = JobConfig()
    learner = LearnerConfig()
    group = parser.add_argument_group("job options (env FRESHRANK_<OPTION>)")
    group.add_argument("--window", type=float, default=_env_default("window", defaults.window_s),
                       help="attribution window in seconds (default %(default)s)")
    group.add_argument("--max-disorder", type=float, default=_env_default("max_disorder", defaults.max_disorder_s),
                       help="bounded out-of-orderness of event times in seconds (default %(default)s)")
    group.add_argument("--retention", type=float, default=_env_default("retention", defaults.retention_s),
                       help="seconds an impression id is remembered after its window, for dedup and "
                            "late-click detection (default %(default)s)")
    group.add_argument("--snapshot-interval", type=float,
                       default=_env_default("snapshot_interval", defaults.snapshot_interval_s),
                       help="wall-clock seconds between model snapshots (default %(default)s)")
    group.add_argument("--metrics-interval", type=float,
                       default=_env_default("metrics_interval", defaults.metrics_interval_s),
                       help="event-time seconds per metrics interval (default %(default)s)")
    group.add_argument("--parallelism", type=int, default=_env_default("parallelism", defaults.parallelism),
                       help="operator parallelism (default %(default)s)")
    group.add_argument("--dim", type=int, default=_env_default("dim", learner.dim),
                       help="model dimension (default %(default)s)")
    group.add_argument("--learning-rate", type=float, default=learner.learning_rate, help="AdaGrad step size")
    group.add_argument("--l2", type=float, default=learner.l2, help="L2 penalty on vectors")


def job_config(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        window_s=args.window,
        max_disorder_s=args.max_disorder,
        retention_s=args.retention,
        snapshot_interval_s=args.snapshot_interval,
        metrics_interval_s=args.metrics_interval,
        parallelism=args.parallelism,
        learner=LearnerConfig(dim=args.dim, learning_rate=args.learning_rate, l2=args.l2),
    )


def _generator_options(parser: argparse.ArgumentParser, impressions: int) -> None:
    group = parser.add_argument_group("synthetic stream")
    group.add_argument("--impressions", dest="n_impressions", type=int, default=impressions,
                       help="number of impressions (default %(default)s)")
    group.add_argument("--users", dest="n_users", type=int, default=2000, help="number of users")
    group.add_argument("--items", dest="n_items", type=int, default=1000, help="number of catalog items")
    group.add_argument("--seed", type=int, default=7, help="random seed")


def _generator_config(args: argparse.Namespace):
    from job.generate import GeneratorConfig

    return GeneratorConfig(n_impressions=args.n_impressions, n_users=args.n_users, n_items=args.n_items,
                           seed=args.seed)


def cmd_generate(args: argparse.Namespace) -> int:
    from job.generate import generate, write_stream

    started = time.time()
    paths = write_stream(generate(_generator_config(args)), Path(args.out))
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.time() - started:.1f} s")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from job.replay import run_replay

    result = run_replay(
        Path(args.impressions), Path(args.clicks), Path(args.out), job_config(args),
        items=Path(args.items) if args.items else None,
        from_snapshot=Path(args.from_snapshot) if args.from_snapshot else None,
    )
    print(f"replay finished in {result.wall_s:.1f} s; outputs under {result.out_dir}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from job.generate import generate, write_stream
    from job.replay import run_replay
    from job.report import format_summary, plot_learning_curve, run_summary

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out folder")
    print(f"generating {args.n_impressions:,} impressions (hidden user preferences, position bias, "
          "duplicates, disorder, late and orphan clicks) ...")
    stream = generate(_generator_config(args))
    files = write_stream(stream, out / "events")
    print("running the job on a local Flink MiniCluster ...")
    result = run_replay(files["impressions"], files["clicks"], out / "run", job_config(args), items=files["items"])
    summary = run_summary(result.out_dir, result.wall_s, job_config(args).window_ms, stream.oracle)
    png = plot_learning_curve(result.out_dir, out / "learning-curve.png", stream.oracle)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print()
    print(format_summary(summary))
    print(f"\noutputs: {result.out_dir}/{{examples,snapshots,metrics,dead-letter,late-clicks,orphan-clicks}}")
    print(f"learning curve: {png}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from job.bench import run_bench

    run_bench(Path(args.out), args.n_impressions, job_config(args), seed=args.seed)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from job.kafka_job import build_kafka_job, kafka_environment
    from job.topics import TopicNames, create_all

    config = job_config(args)
    topics = TopicNames().suffixed(args.topic_suffix) if args.topic_suffix else TopicNames()
    if args.create_topics:
        create_all(args.bootstrap, topics, partitions=args.partitions)
    env = kafka_environment(config, args.checkpoint_interval, args.bounded)
    build_kafka_job(env, args.bootstrap, config, topics, group_id=args.group_id, bounded=args.bounded,
                    idleness_s=args.idleness, items=Path(args.items) if args.items else None,
                    from_snapshot=Path(args.from_snapshot) if args.from_snapshot else None)
    env.execute(args.job_name)
    return 0


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka (env FRESHRANK_<OPTION>)")
    group.add_argument("--bootstrap", default=_env_default("bootstrap", "localhost:9092"),
                       help="Kafka bootstrap servers (default %(default)s)")
    group.add_argument("--topic-suffix", default=_env_default("topic_suffix", ""),
                       help="suffix appended to every topic name (separate deployments on one broker)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freshrank", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a stream, learn from it on a local Flink, print a summary")
    demo.add_argument("--out", default="out/demo", help="output folder (default %(default)s)")
    _generator_options(demo, impressions=200_000)
    _job_options(demo)
    demo.set_defaults(func=cmd_demo)

    replay = commands.add_parser("replay", help="run the job over event files (JSON Lines or Avro)")
    replay.add_argument("--impressions", required=True, help="impression file or folder")
    replay.add_argument("--clicks", required=True, help="click file or folder")
    replay.add_argument("--items", help="optional item catalog file (embeddings seed item vectors)")
    replay.add_argument("--out", required=True, help="output folder")
    replay.add_argument("--from-snapshot", help="hot start from the newest snapshot in this folder")
    _job_options(replay)
    replay.set_defaults(func=cmd_replay)

    gen = commands.add_parser("generate", help="write the synthetic stream as event files")
    gen.add_argument("--out", required=True, help="output folder")
    _generator_options(gen, impressions=100_000)
    gen.set_defaults(func=cmd_generate)

    run = commands.add_parser("run", help="run the job on Kafka (locally, or via `flink run -py job/main.py`)")
    _kafka_options(run)
    run.add_argument("--group-id", default="freshrank", help="consumer group and transactional-id prefix")
    run.add_argument("--bounded", action="store_true", help="stop at the topics' current end (tests, backfills)")
    run.add_argument("--checkpoint-interval", type=float, default=10.0,
                     help="seconds between checkpoints = exactly-once commit latency (default %(default)s)")
    run.add_argument("--idleness", type=float, default=5.0,
                     help="seconds after which an idle partition stops holding back the watermark")
    run.add_argument("--create-topics", action="store_true", help="create missing topics first")
    run.add_argument("--partitions", type=int, default=2, help="partitions of created topics")
    run.add_argument("--items", help="optional item catalog file (embeddings seed item vectors)")
    run.add_argument("--from-snapshot", help="hot start from the newest snapshot in this folder")
    run.add_argument("--job-name", default="freshrank", help="Flink job name")
    _job_options(run)
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser("bench", help="end-to-end impressions/s vs the same learner in plain Python")
    bench.add_argument("--out", default="out/bench", help="work folder (default %(default)s)")
    bench.add_argument("--impressions", dest="n_impressions", type=int, default=1_000_000)
    bench.add_argument("--seed", type=int, default=7)
    _job_options(bench)
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
