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
    """Flags fall back to FRESHRANK_<NAME> so deployments can configure by environment. The value stays
    a string: argparse converts a string default with the option's `type` when it parses, so a bad
    value is a usage error naming the option (and `--help` still works)."""
    value = os.environ.get(f"FRESHRANK_{name.upper().replace('-', '_')}")
    return value if value else default


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
    group.add_argument("--batch", type=float, default=_env_default("batch", defaults.batch_s),
                       help="wall-clock seconds of events per learner call: longer batches raise throughput, "
                            "shorter ones freshness (default %(default)s)")
    group.add_argument("--click-stall-limit", type=float,
                       default=_env_default("click_stall_limit", defaults.click_stall_limit_s),
                       help="Kafka runs: event-time seconds negatives may wait for a stalled click stream "
                            "before they are decided without it; 0 turns the guard off (default %(default)s)")
    group.add_argument("--click-stall-report", type=float,
                       default=_env_default("click_stall_report", defaults.click_stall_report_s),
                       help="wall-clock seconds without click progress, while impressions flow, after which "
                            "a stall is logged and shown by the click_stalled metric (default %(default)s)")
    group.add_argument("--max-event-ahead", type=float,
                       default=_env_default("max_event_ahead", defaults.max_event_ahead_s),
                       help="seconds an event time may be ahead of min(newest accepted event time, wall clock); "
                            "later events go to dead-letter instead of moving the watermark (default %(default)s)")
    group.add_argument("--dead-letter-max-bytes", type=int,
                       default=_env_default("dead_letter_max_bytes", defaults.dead_letter_max_bytes),
                       help="bytes of a rejected record kept in its dead-letter record; payload_size gives the "
                            "original size (default %(default)s)")
    group.add_argument("--state-ttl", type=float, default=_env_default("state_ttl", defaults.state_ttl_s),
                       help="seconds after which a user or item not learned since leaves Flink state and starts "
                            "over from its prior if it returns; 0 keeps every entity for ever "
                            "(default %(default)s = 30 days)")
    group.add_argument("--parallelism", type=int, default=_env_default("parallelism", defaults.parallelism),
                       help="operator parallelism (default %(default)s)")
    group.add_argument("--dim", type=int, default=_env_default("dim", learner.dim),
                       help="model dimension (default %(default)s)")
    group.add_argument("--learning-rate", type=float, default=_env_default("learning_rate", learner.learning_rate),
                       help="AdaGrad step size")
    group.add_argument("--l2", type=float, default=_env_default("l2", learner.l2), help="L2 penalty on vectors")
    group.add_argument("--checkpoint-dir", default=_env_default("checkpoint_dir", None),
                       help="checkpoints (and savepoints without a target, in its savepoints/); a path (created "
                            "owner-only, 0700) or a file system URI (default: flink-conf/config.yaml's, "
                            ".freshrank/checkpoints under the working directory; under `flink run`: the cluster's)")


def job_config(args: argparse.Namespace) -> JobConfig:
    return JobConfig(
        window_s=args.window,
        max_disorder_s=args.max_disorder,
        retention_s=args.retention,
        snapshot_interval_s=args.snapshot_interval,
        metrics_interval_s=args.metrics_interval,
        batch_s=args.batch,
        parallelism=args.parallelism,
        click_stall_limit_s=args.click_stall_limit,
        click_stall_report_s=args.click_stall_report,
        state_ttl_s=args.state_ttl,
        max_event_ahead_s=args.max_event_ahead,
        dead_letter_max_bytes=args.dead_letter_max_bytes,
        learner=LearnerConfig(dim=args.dim, learning_rate=args.learning_rate, l2=args.l2),
    )


def _generator_options(parser: argparse.ArgumentParser, impressions: int) -> None:
    group = parser.add_argument_group("synthetic stream")
    group.add_argument("--impressions", dest="n_impressions", type=int, default=impressions,
                       help="number of impressions (default %(default)s)")
    group.add_argument("--users", dest="n_users", type=int, default=2000, help="number of users")
    group.add_argument("--items", dest="n_items", type=int, default=1000, help="number of catalog items")
    group.add_argument("--seed", type=int, default=7, help="random seed")
    group.add_argument("--heavy-users", type=int, default=0,
                       help="users (bots, power users) that each make 10%% of all requests (default %(default)s)")


def _generator_config(args: argparse.Namespace):
    from job.generate import GeneratorConfig

    return GeneratorConfig(n_impressions=args.n_impressions, n_users=args.n_users, n_items=args.n_items,
                           seed=args.seed, heavy_users=args.heavy_users)


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
        checkpoint_dir=args.checkpoint_dir,
        prometheus_ports=args.prometheus_port,
        rest_port=args.rest_port,
    )
    print(f"replay finished in {result.wall_s:.1f} s; outputs under {result.out_dir}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if getattr(args, "kafka", False):
        return cmd_demo_kafka(args)
    from job.generate import generate, write_stream
    from job.replay import run_replay
    from job.report import describe_plot, format_summary, plot_learning_curve, run_summary

    out = Path(args.out or f"out/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out folder")
    print(f"generating {args.n_impressions:,} impressions (hidden user preferences, position bias, "
          "duplicates, disorder, late and orphan clicks) ...")
    stream = generate(_generator_config(args))
    files = write_stream(stream, out / "events")
    print("running the job on a local Flink MiniCluster ...")
    result = run_replay(files["impressions"], files["clicks"], out / "run", job_config(args), items=files["items"],
                        checkpoint_dir=args.checkpoint_dir)
    summary = run_summary(result.out_dir, result.wall_s, job_config(args).window_ms, stream.oracle)
    png = plot_learning_curve(result.out_dir, out / "learning-curve.png", stream.oracle)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print()
    print(format_summary(summary))
    print(f"\noutputs: {result.out_dir}/{{examples,snapshots,metrics,dead-letter,late-clicks,orphan-clicks}}")
    print(describe_plot(png))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "kafka", False):
        return cmd_bench_kafka(args)
    from job.bench import run_bench

    run_bench(Path(args.out), args.n_impressions, job_config(args), seed=args.seed, heavy_users=args.heavy_users,
              checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from job.kafka_broker import require_broker
    from job.kafka_job import build_kafka_job, kafka_environment
    from job.topics import TopicNames, create_all

    config = job_config(args)
    topics = TopicNames().suffixed(args.topic_suffix) if args.topic_suffix else TopicNames()
    properties = _kafka_properties(args)
    require_broker(args.bootstrap, properties)
    if args.create_topics:
        create_all(args.bootstrap, topics, partitions=args.partitions, kafka_properties=properties)
    env = kafka_environment(config, args.checkpoint_interval, args.bounded, args.checkpoint_dir,
                            args.prometheus_port, args.rest_port)
    build_kafka_job(env, args.bootstrap, config, topics, group_id=args.group_id, bounded=args.bounded,
                    idleness_s=args.idleness, items=Path(args.items) if args.items else None,
                    from_snapshot=Path(args.from_snapshot) if args.from_snapshot else None,
                    kafka_properties=properties, from_snapshot_topic=args.from_snapshot_topic)
    env.execute(args.job_name)
    return 0


def _local_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rest-port", type=int, default=_env_default("rest_port", None), metavar="PORT",
                        help="the local Flink's REST endpoint and web UI on localhost:PORT (default: a free port)")
    parser.add_argument("--prometheus-port", default=_env_default("prometheus_port", None), metavar="PORT[-PORT]",
                        help="expose the Flink metrics (the job's freshrank group included) to Prometheus at "
                             "http://HOST:PORT/metrics; a range lets each JVM take a free port. Flink's reporter "
                             "listens on every interface, so it is off unless given (default off)")


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka (env FRESHRANK_<OPTION>)")
    group.add_argument("--bootstrap", default=_env_default("bootstrap", "localhost:9092"),
                       help="Kafka bootstrap servers (default %(default)s)")
    group.add_argument("--topic-suffix", default=_env_default("topic_suffix", ""),
                       help="suffix appended to every topic name (separate deployments on one broker)")
    _kafka_property_options(group)


def _kafka_property_options(group) -> None:
    group.add_argument("--kafka-properties", action="append", metavar="FILE",
                       help="Kafka client properties (security.protocol, sasl.*, ssl.* ...; `key=value` lines, "
                            "# comments) for every Kafka client; repeatable, later files win; env "
                            "FRESHRANK_KAFKA_PROPERTIES; `java.`/`librdkafka.` prefixes scope a key (README)")
    group.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                       help="one Kafka client property, over those of the files; repeatable")


def _kafka_properties(args: argparse.Namespace) -> dict[str, str]:
    """The run's merged Kafka client properties (job.kafka_properties), or a usage error."""
    from job.kafka_properties import KafkaPropertiesError, merge_kafka_properties

    files = getattr(args, "kafka_properties", None) or [
        path for path in [os.environ.get("FRESHRANK_KAFKA_PROPERTIES")] if path]
    try:
        return merge_kafka_properties(files, getattr(args, "kafka_property", None) or [])
    except KafkaPropertiesError as error:
        raise SystemExit(f"error: {error}") from None


def _typed_options(argv: list[str] | None) -> set[str]:
    """Destinations of the options typed in `argv` or set as FRESHRANK_<OPTION>: the others may take a
    mode's own defaults (`demo --kafka`, `bench --kafka`)."""
    parser = build_parser()

    def suppress_defaults(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    suppress_defaults(sub)
            else:
                action.default = argparse.SUPPRESS

    suppress_defaults(parser)
    typed = set(vars(parser.parse_args(argv or [])))
    return typed | {key[len("FRESHRANK_"):].lower() for key in os.environ if key.startswith("FRESHRANK_")}


def cmd_demo_kafka(args: argparse.Namespace) -> int:
    from job.kafka_demo import KAFKA_DEMO_DEFAULTS, demo_generator_config, run_kafka_demo

    typed = _typed_options(getattr(args, "argv", None))
    for dest, value in KAFKA_DEMO_DEFAULTS.items():
        if dest not in typed:
            setattr(args, dest, value)
    out = Path(args.out if "out" in typed else f"out/demo-kafka/{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; pass a new --out folder")
    config = job_config(args)
    gen = demo_generator_config(args.n_impressions, args.n_users, args.n_items, args.seed, config)
    run_kafka_demo(out, gen, config, bootstrap=args.bootstrap, topic_suffix=args.topic_suffix,
                   duration_s=args.duration, checkpoint_interval_s=args.checkpoint_interval,
                   kafka_properties=_kafka_properties(args), checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_bench_kafka(args: argparse.Namespace) -> int:
    from job.kafka_demo import run_kafka_bench

    n = args.n_impressions if "n_impressions" in _typed_options(getattr(args, "argv", None)) else 100_000
    run_kafka_bench(Path(args.out) / f"kafka-{time.strftime('%Y%m%d-%H%M%S')}", n, job_config(args),
                    seed=args.seed, bootstrap=args.bootstrap, taskmanagers=args.taskmanagers,
                    kafka_properties=_kafka_properties(args), checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    from job.kafka_broker import main as broker_main

    return broker_main(args.rest, prog="freshrank kafka")


def cmd_cluster(args: argparse.Namespace) -> int:
    from job.cluster import main as cluster_main

    return cluster_main(args.rest, prog="freshrank cluster")


def _topic_names(args: argparse.Namespace):
    from job.topics import TopicNames

    return TopicNames().suffixed(args.topic_suffix) if args.topic_suffix else TopicNames()


def cmd_topics(args: argparse.Namespace) -> int:
    from job.kafka_broker import require_broker
    from job.topics import create_all

    properties = _kafka_properties(args)
    require_broker(args.bootstrap, properties)
    configs = create_all(args.bootstrap, _topic_names(args), partitions=args.partitions,
                         retention_ms=args.retention_ms, kafka_properties=properties)
    for topic, config in configs.items():
        print(f"{topic:<24} {args.partitions} partitions  " + " ".join(f"{k}={v}" for k, v in sorted(config.items())))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from job.kafka_broker import require_broker
    from job.kafka_properties import librdkafka_properties
    from job.producer import replay_files, stream_generated

    topics = _topic_names(args)
    properties = _kafka_properties(args)
    require_broker(args.bootstrap, properties)
    started = time.monotonic()
    if args.generate:
        from job.generate import GeneratorConfig

        try:
            gen = GeneratorConfig(n_impressions=int(args.impressions or 100_000), n_users=args.users,
                                  n_items=int(args.items or 1000), seed=args.seed)
        except ValueError:
            raise SystemExit("with --generate, --impressions and --items are counts") from None
        counts = stream_generated(args.bootstrap, gen, args.speedup, topics, progress=not args.quiet,
                                  **librdkafka_properties(properties))
    else:
        if not args.impressions or not args.clicks:
            raise SystemExit("pass --impressions FILE and --clicks FILE (or --generate)")
        counts = replay_files(args.bootstrap, args.impressions, args.clicks, args.items, rate=args.rate,
                              topics=topics, progress=not args.quiet, **librdkafka_properties(properties))
    print(f"produced in {time.monotonic() - started:.1f} s to {args.bootstrap}: "
          + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from job.kafka_broker import require_broker
    from job.kafka_demo import print_ranking

    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if not candidates:
        raise SystemExit("--candidates: give item ids separated by commas")
    properties = _kafka_properties(args)
    require_broker(args.bootstrap, properties)
    print_ranking(args.bootstrap, _topic_names(args), args.user, candidates, args.k, timeout_s=args.timeout,
                  kafka_properties=properties)
    return 0


def cmd_serve_demo(args: argparse.Namespace) -> int:
    from job.kafka_broker import require_broker
    from job.kafka_demo import serve_demo

    properties = _kafka_properties(args)
    require_broker(args.bootstrap, properties)
    serve_demo(args.bootstrap, _topic_names(args), n_users=args.users, k=args.k, timeout_s=args.timeout,
               kafka_properties=properties)
    return 0


def _add_kafka_commands(commands) -> None:
    """`kafka`, `topics`, `produce`, `rank`, `serve-demo`."""
    # The broker and the cluster keep their own parsers (job.kafka_broker, job.cluster): these hand them
    # everything after the command word, so `python -m job.kafka_broker status` and `freshrank kafka
    # status` are one tool with one default data folder.
    kafka = commands.add_parser("kafka", add_help=False,
                                help="a local single-node Kafka broker (KRaft) in the background: "
                                     "start|stop|status [--port 9092] (`freshrank kafka -h`)")
    kafka.add_argument("rest", nargs=argparse.REMAINDER)
    kafka.set_defaults(func=cmd_kafka)
    cluster = commands.add_parser("cluster", add_help=False,
                                  help="a local Flink standalone cluster: start|status|env|submit|stop-job|cancel|stop "
                                       "(`freshrank cluster -h`)")
    cluster.add_argument("rest", nargs=argparse.REMAINDER)
    cluster.set_defaults(func=cmd_cluster)

    topics = commands.add_parser("topics", help="create the deployment's topics (idempotent)")
    topics.add_argument("action", choices=("create",))
    _kafka_options(topics)
    topics.add_argument("--partitions", type=int, default=2, help="partitions per topic (default %(default)s)")
    topics.add_argument("--retention-ms", type=int, default=-1,
                        help="retention of the time-retained topics, -1 = forever (default %(default)s: Kafka "
                             "deletes by record timestamp = event time, so finite retention deletes replayed old "
                             "events); the compacted model-snapshots topic is never deleted by time")
    topics.set_defaults(func=cmd_topics)

    produce = commands.add_parser("produce", help="put event files, or a live generated stream, on the input topics")
    _kafka_options(produce)
    produce.add_argument("--impressions", help="impression file or folder (with --generate: a count, default 100000)")
    produce.add_argument("--clicks", help="click file or folder")
    produce.add_argument("--items", help="item catalog file (with --generate: a count, default 1000)")
    produce.add_argument("--rate", type=float, help="at most this many events/s (files; default: as fast as possible)")
    produce.add_argument("--generate", action="store_true",
                         help="stream the synthetic world live instead, event times starting now")
    produce.add_argument("--speedup", type=float, default=1.0,
                         help="with --generate: event time runs this much faster than the wall clock")
    produce.add_argument("--users", type=int, default=2000, help="with --generate: number of users")
    produce.add_argument("--seed", type=int, default=7, help="with --generate: random seed")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=cmd_produce)

    rank = commands.add_parser("rank", help="rank candidates for a user with the newest model on the snapshot topic")
    _kafka_options(rank)
    rank.add_argument("--user", required=True, help="user id")
    rank.add_argument("--candidates", required=True, help="item ids separated by commas")
    rank.add_argument("--k", type=int, default=10, help="how many to show (default %(default)s)")
    rank.add_argument("--timeout", type=float, default=60.0, help="seconds to catch up with the snapshot topic")
    rank.set_defaults(func=cmd_rank)

    serve = commands.add_parser("serve-demo", help="catch up with the snapshot topic, show top items for a few users")
    _kafka_options(serve)
    serve.add_argument("--users", type=int, default=3, help="how many users (those with most updates)")
    serve.add_argument("--k", type=int, default=5, help="items per user (default %(default)s)")
    serve.add_argument("--timeout", type=float, default=60.0, help="seconds to catch up with the snapshot topic")
    serve.set_defaults(func=cmd_serve_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freshrank", description=__doc__)
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("FRESHRANK_DEBUG")),
                        help="show the full traceback of an error (env FRESHRANK_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate a stream, learn from it on a local Flink, print a summary")
    demo.add_argument("--out", default=None,
                      help="output folder (default out/demo/<time>; out/demo-kafka/<time> with --kafka)")
    _generator_options(demo, impressions=200_000)
    _job_options(demo)
    kafka_demo = demo.add_argument_group("on Kafka (--kafka; defaults there: 30000 impressions, 300 users, 300 items, "
                                         "--window 300, --snapshot-interval 1, --out out/demo-kafka/<time>)")
    kafka_demo.add_argument("--kafka", action="store_true",
                            help="run live on Kafka: broker, topics, the job, a live stream; measures snapshot "
                                 "freshness")
    kafka_demo.add_argument("--bootstrap", help="use this broker instead of starting one")
    _kafka_property_options(kafka_demo)
    kafka_demo.add_argument("--topic-suffix", help="topic name suffix (default: a new one per run)")
    kafka_demo.add_argument("--duration", type=float, default=60.0,
                            help="wall seconds the live stream should take (default %(default)s)")
    kafka_demo.add_argument("--checkpoint-interval", type=float, default=2.0,
                            help="seconds between checkpoints = commit latency (default %(default)s)")
    demo.set_defaults(func=cmd_demo)

    replay = commands.add_parser("replay", help="run the job over event files (JSON Lines or Avro)")
    replay.add_argument("--impressions", required=True, help="impression file or folder")
    replay.add_argument("--clicks", required=True, help="click file or folder")
    replay.add_argument("--items", help="optional item catalog file (embeddings seed item vectors)")
    replay.add_argument("--out", required=True, help="output folder")
    replay.add_argument("--from-snapshot", help="hot start from the newest snapshot in this folder")
    _job_options(replay)
    _local_cluster_options(replay)
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
    run.add_argument("--from-snapshot-topic", action="store_true",
                     help="hot start a new job (no savepoint) from the newest record of every entity on the "
                          "compacted model-snapshots topic")
    run.add_argument("--job-name", default="freshrank", help="Flink job name")
    _local_cluster_options(run)
    _job_options(run)
    run.set_defaults(func=cmd_run)

    bench = commands.add_parser("bench", help="end-to-end impressions/s vs the same learner in plain Python")
    bench.add_argument("--out", default="out/bench", help="work folder (default %(default)s)")
    bench.add_argument("--impressions", dest="n_impressions", type=int, default=1_000_000)
    bench.add_argument("--seed", type=int, default=7)
    bench.add_argument("--heavy-users", type=int, default=3,
                       help="users that each make 10%% of all requests, so per-user state grows large "
                            "(default %(default)s)")
    _job_options(bench)
    bench.add_argument("--kafka", action="store_true",
                       help="on Kafka: impressions/s of a bounded run over produced topics (default 100000 "
                            "impressions) and the snapshot freshness of a live run")
    bench.add_argument("--bootstrap", help="with --kafka: use this broker instead of starting one")
    _kafka_property_options(bench)
    bench.add_argument("--taskmanagers", type=int, default=0,
                       help="with --kafka: run the bounded job on a standalone cluster of this many TaskManager "
                            "JVMs (each runs one Python interpreter) instead of a local MiniCluster")
    bench.set_defaults(func=cmd_bench)
    _add_kafka_commands(commands)
    return parser


# Commands whose own parsers take everything after the command word (argparse's REMAINDER would refuse
# a leading option such as `freshrank kafka -h`).
PASS_THROUGH = {"kafka": cmd_kafka, "cluster": cmd_cluster}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command_at = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    if command_at is not None and argv[command_at] in PASS_THROUGH:
        args = parser.parse_args(argv[:command_at + 1])
        args.rest = argv[command_at + 1:]
    else:
        args = parser.parse_args(argv)
    args.argv = argv  # which options were typed (see _typed_options)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("freshrank: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; the traceback with --debug
        if args.debug:
            raise
        from job.errors import describe

        print(f"freshrank: error: {describe(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
