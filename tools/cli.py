"""The `freshrank` command line: parses options and calls the job or a client; nothing more."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson

from job.config import JobConfig
from job.errors import UsageError, run_reporting_errors
from job.options import (
    DEMO_CHECKPOINT_INTERVAL_S,
    add_job_options,
    add_kafka_options,
    add_kafka_property_options,
    add_local_cluster_options,
    add_run_options,
    apply_mode_defaults,
    job_config,
    kafka_properties_of,
    run,
)
from tools.job_progress import SCALE_OUT_IMPRESSIONS

GENERATOR_DEFAULTS = {"n_impressions": 100_000, "n_users": 2000, "n_items": 1000}
DEMO_DEFAULTS = {**GENERATOR_DEFAULTS, "n_impressions": 200_000, "window": JobConfig().window_s,
                 "snapshot_interval": JobConfig().snapshot_interval_s}


def _generator_options(parser: argparse.ArgumentParser, defaults: dict[str, int] | None = None) -> None:
    """The generator's size options; without `defaults` they are mode-dependent (None until resolved)."""
    given = defaults or {}
    shown = " (default %(default)s)" if defaults else ""
    group = parser.add_argument_group("synthetic stream")
    group.add_argument("--impressions", dest="n_impressions", type=int, default=given.get("n_impressions"),
                       help="number of impressions" + shown)
    group.add_argument("--users", dest="n_users", type=int, default=given.get("n_users"),
                       help="number of users" + shown)
    group.add_argument("--items", dest="n_items", type=int, default=given.get("n_items"),
                       help="number of catalog items" + shown)
    group.add_argument("--seed", type=int, default=7, help="random seed")
    _stream_shape_options(group)


def _stream_shape_options(group: argparse._ArgumentGroup) -> None:
    """The generator's skew and text options, for every command that generates a stream."""
    group.add_argument("--heavy-users", type=int, default=0,
                       help="users (bots, power users) that each make 10%% of all requests (default %(default)s)")
    group.add_argument("--chinese-share", type=float, default=0.0,
                       help="share of titles and queries written in Chinese (default %(default)s)")
    group.add_argument("--synonym-share", type=float, default=0.0,
                       help="share of titles and queries naming their category by a synonym (default %(default)s)")
    group.add_argument("--query-relevance", type=float, default=0.0,
                       help="hidden logit added when a search shows an item of the query's category "
                            "(default %(default)s)")
    group.add_argument("--new-item-share", type=float, default=0.0,
                       help="share of the catalog launched mid-stream, each shown only from its launch "
                            "(default %(default)s)")


def _generator_config(args: argparse.Namespace):
    from tools.generate import GeneratorConfig

    return GeneratorConfig(n_impressions=args.n_impressions, n_users=args.n_users, n_items=args.n_items,
                           seed=args.seed, **_stream_shape(args))


def _stream_shape(args: argparse.Namespace) -> dict[str, float]:
    return {"heavy_users": args.heavy_users, "chinese_share": args.chinese_share,
            "synonym_share": args.synonym_share, "query_relevance": args.query_relevance,
            "new_item_share": args.new_item_share}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tools.compare import run_evaluate

    if args.examples:
        from tools.compare import run_evaluate_replay

        if not (Path(args.examples) / "examples").is_dir():
            raise UsageError(f"--examples: {args.examples} has no examples/ folder (pass a replay's --out folder)")
        run_evaluate_replay(Path(args.out), Path(args.examples), job_config(args),
                            Path(args.oracle) if args.oracle else None)
        return 0
    if args.n_impressions < 1000:
        raise UsageError("--impressions: at least 1000, or the metrics say nothing")
    run_evaluate(Path(args.out), args.seeds, args.n_impressions, job_config(args), **_stream_shape(args))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from tools.simulate import SimulationConfig, run_simulation

    if args.requests < 100:
        raise UsageError("--requests: at least 100")
    sim = SimulationConfig(n_requests=args.requests, seed=args.seed, freeze_after_s=args.freeze_after)
    if args.kafka:
        from tools.simulate_kafka import run_kafka_simulation

        if args.speedup <= 0:
            raise UsageError("--speedup: must be positive")
        run_kafka_simulation(Path(args.out), sim, job_config(args), speedup=args.speedup, bootstrap=args.bootstrap)
        return 0
    run_simulation(Path(args.out), sim, job_config(args))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tools.generate import generate, write_stream

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


def resolve_demo_mode(args: argparse.Namespace) -> None:
    """Options of `demo` that neither the command line nor the environment set take the mode's default."""
    if args.kafka:
        from tools.kafka_demo import KAFKA_DEMO_DEFAULTS

        apply_mode_defaults(args, KAFKA_DEMO_DEFAULTS)
    else:
        apply_mode_defaults(args, DEMO_DEFAULTS)


def cmd_demo(args: argparse.Namespace) -> int:
    resolve_demo_mode(args)
    if args.kafka:
        return cmd_demo_kafka(args)
    from job.replay import run_replay
    from tools.generate import generate, write_stream
    from tools.report import describe_plot, format_summary, plot_learning_curve, run_summary

    out = Path(args.out or f"out/demo/{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; pass a new --out folder")
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
    if args.scale_out and not args.kafka:
        raise UsageError("--scale-out: measured on Kafka, add --kafka")
    if args.kafka:
        return cmd_bench_kafka(args)
    if args.text:
        return cmd_bench_text(args)
    apply_mode_defaults(args, {"n_impressions": 1_000_000})
    from tools.bench import run_bench

    run_bench(Path(args.out), args.n_impressions, job_config(args), seed=args.seed, heavy_users=args.heavy_users,
              checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_bench_text(args: argparse.Namespace) -> int:
    from tools.text_bench import run_text_bench

    apply_mode_defaults(args, {"n_impressions": 400_000})
    run_text_bench(Path(args.out), args.n_impressions, job_config(args), seed=args.seed)
    return 0


def cmd_demo_kafka(args: argparse.Namespace) -> int:
    from tools.kafka_demo import demo_generator_config, run_kafka_demo

    out = Path(args.out or f"out/demo-kafka/{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; pass a new --out folder")
    config = job_config(args)
    gen = demo_generator_config(args.n_impressions, args.n_users, args.n_items, args.seed, config)
    run_kafka_demo(out, gen, config, bootstrap=args.bootstrap, topic_suffix=args.topic_suffix,
                   duration_s=args.duration, checkpoint_interval_s=args.checkpoint_interval,
                   kafka_properties=kafka_properties_of(args), checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_bench_kafka(args: argparse.Namespace) -> int:
    from tools.kafka_demo import run_kafka_bench

    # The file bench's size: a bounded job of 400k ran ~25 s, most of it while the JVM was still compiling.
    # Scale-out measures a later part of longer jobs, where the JIT compiler takes little (tools.job_progress).
    apply_mode_defaults(args, {"n_impressions": SCALE_OUT_IMPRESSIONS if args.scale_out else 1_000_000})
    if args.scale_out:
        from tools.scale_out_bench import run_scale_out_bench

        run_scale_out_bench(Path(args.out) / f"scale-out-{time.strftime('%Y%m%d-%H%M%S')}", args.n_impressions,
                            job_config(args), rounds=args.rounds, seed=args.seed, heavy_users=args.heavy_users,
                            bootstrap=args.bootstrap, checkpoint_interval_s=args.checkpoint_interval,
                            kafka_properties=kafka_properties_of(args))
        return 0
    run_kafka_bench(Path(args.out) / f"kafka-{time.strftime('%Y%m%d-%H%M%S')}", args.n_impressions, job_config(args),
                    seed=args.seed, heavy_users=args.heavy_users, bootstrap=args.bootstrap,
                    taskmanagers=args.taskmanagers, checkpoint_interval_s=args.checkpoint_interval,
                    kafka_properties=kafka_properties_of(args), checkpoint_dir=args.checkpoint_dir)
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    from infra.kafka_broker import main as broker_main

    return broker_main(args.rest, prog="freshrank kafka")


def cmd_cluster(args: argparse.Namespace) -> int:
    from infra.cluster import main as cluster_main

    return cluster_main(args.rest, prog="freshrank cluster")


def _topic_names(args: argparse.Namespace):
    from clients.topics import TopicNames

    return TopicNames().suffixed(args.topic_suffix) if args.topic_suffix else TopicNames()


def cmd_topics(args: argparse.Namespace) -> int:
    from clients.admin import require_broker
    from clients.topics import create_all

    properties = kafka_properties_of(args)
    require_broker(args.bootstrap, properties)
    configs = create_all(args.bootstrap, _topic_names(args), partitions=args.partitions,
                         retention_ms=args.retention_ms, kafka_properties=properties)
    for topic, config in configs.items():
        print(f"{topic:<24} {args.partitions} partitions  " + " ".join(f"{k}={v}" for k, v in sorted(config.items())))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from clients.admin import require_broker
    from clients.kafka_properties import librdkafka_properties
    from clients.producer import replay_files, stream_live

    topics = _topic_names(args)
    properties = kafka_properties_of(args)
    require_broker(args.bootstrap, properties)
    started = time.monotonic()
    if args.generate is not None:
        from tools.generate import GeneratorConfig, generate

        if args.impressions or args.clicks or args.items:
            raise UsageError("--generate streams a generated world; it takes no event files")
        gen = GeneratorConfig(n_impressions=args.generate, n_users=args.generate_users,
                              n_items=args.generate_items, seed=args.seed,
                              new_item_share=args.generate_new_item_share)
        world = generate(gen)
        counts = stream_live(args.bootstrap, world, args.speedup, topics, progress=not args.quiet,
                             launches=world.stats["launches"], **librdkafka_properties(properties))
    else:
        if not args.impressions or not args.clicks:
            raise UsageError("pass --impressions FILE and --clicks FILE (or --generate N)")
        counts = replay_files(args.bootstrap, args.impressions, args.clicks, args.items, rate=args.rate,
                              topics=topics, progress=not args.quiet, **librdkafka_properties(properties))
    print(f"produced in {time.monotonic() - started:.1f} s to {args.bootstrap}: "
          + ", ".join(f"{name} {count:,}" for name, count in counts.items()))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from clients.admin import require_broker
    from tools.kafka_demo import print_ranking

    candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if not candidates:
        raise UsageError("--candidates: give item ids separated by commas")
    properties = kafka_properties_of(args)
    require_broker(args.bootstrap, properties)
    print_ranking(args.bootstrap, _topic_names(args), args.user, candidates, args.k, timeout_s=args.timeout,
                  kafka_properties=properties, query=args.query, text_encoder=args.text_encoder)
    return 0


def cmd_serve_demo(args: argparse.Namespace) -> int:
    from clients.admin import require_broker
    from tools.kafka_demo import serve_demo

    properties = kafka_properties_of(args)
    require_broker(args.bootstrap, properties)
    serve_demo(args.bootstrap, _topic_names(args), n_users=args.users, k=args.k, timeout_s=args.timeout,
               kafka_properties=properties)
    return 0


def _add_kafka_commands(commands) -> None:
    """`kafka`, `topics`, `produce`, `rank`, `serve-demo`."""
    # The broker and the cluster keep their own parsers (infra.kafka_broker, infra.cluster): these hand them
    # everything after the command word, so `python -m infra.kafka_broker status` and `freshrank kafka
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
    add_kafka_options(topics)
    topics.add_argument("--partitions", type=int, default=2, help="partitions per topic (default %(default)s)")
    topics.add_argument("--retention-ms", type=int, default=-1,
                        help="retention of the time-retained topics, -1 = forever (default %(default)s: Kafka "
                             "deletes by record timestamp = event time, so finite retention deletes replayed old "
                             "events); the compacted model-snapshots topic is never deleted by time")
    topics.set_defaults(func=cmd_topics)

    produce = commands.add_parser("produce", help="put event files, or a live generated stream, on the input topics")
    add_kafka_options(produce)
    files = produce.add_argument_group("event files")
    files.add_argument("--impressions", metavar="FILE", help="impression file or folder")
    files.add_argument("--clicks", metavar="FILE", help="click file or folder")
    files.add_argument("--items", metavar="FILE", help="item catalog file")
    files.add_argument("--rate", type=float, help="at most this many events/s (default: as fast as possible)")
    live = produce.add_argument_group("a generated world, live (instead of files)")
    live.add_argument("--generate", type=int, metavar="N_IMPRESSIONS",
                      help="stream a generated world of this many impressions, event times starting now")
    live.add_argument("--generate-users", type=int, default=GENERATOR_DEFAULTS["n_users"],
                      help="its number of users (default %(default)s)")
    live.add_argument("--generate-items", type=int, default=GENERATOR_DEFAULTS["n_items"],
                      help="its number of catalog items (default %(default)s)")
    live.add_argument("--generate-new-item-share", type=float, default=0.0,
                      help="share of its catalog launched mid-stream: published on the items topic at its launch "
                           "time (default %(default)s)")
    live.add_argument("--seed", type=int, default=7, help="its random seed (default %(default)s)")
    live.add_argument("--speedup", type=float, default=1.0,
                      help="event time runs this much faster than the wall clock (default %(default)s)")
    produce.add_argument("--quiet", action="store_true", help="no progress bar")
    produce.set_defaults(func=cmd_produce)

    rank = commands.add_parser("rank", help="rank candidates for a user with the newest model on the snapshot topic")
    add_kafka_options(rank)
    rank.add_argument("--user", required=True, help="user id")
    rank.add_argument("--candidates", required=True, help="item ids separated by commas")
    rank.add_argument("--k", type=int, default=10, help="how many to show (default %(default)s)")
    rank.add_argument("--query", help="a search request's query: ranked with the query-title term (and "
                                      "candidates never shown yet scored from their titles)")
    rank.add_argument("--text-encoder", choices=("use", "hashing"), default="use",
                      help="with --query: the encoder the job runs with (default %(default)s)")
    rank.add_argument("--timeout", type=float, default=60.0, help="seconds to catch up with the snapshot topic")
    rank.set_defaults(func=cmd_rank)

    serve = commands.add_parser("serve-demo", help="catch up with the snapshot topic, show top items for a few users")
    add_kafka_options(serve)
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
    _generator_options(demo)
    add_job_options(demo, mode_dependent=frozenset({"window", "snapshot_interval"}))
    kafka_demo = demo.add_argument_group(
        "modes (defaults: 200000 impressions, 2000 users, 1000 items, --window 1800, --snapshot-interval 10; "
        "with --kafka 30000 impressions, 300 users, 300 items, --window 300, --snapshot-interval 1, "
        "--out out/demo-kafka/<time>)")
    kafka_demo.add_argument("--kafka", action="store_true",
                            help="run live on Kafka: broker, topics, the job, a live stream; measures snapshot "
                                 "freshness")
    kafka_demo.add_argument("--bootstrap", help="use this broker instead of starting one")
    add_kafka_property_options(kafka_demo)
    kafka_demo.add_argument("--topic-suffix", help="topic name suffix (default: a new one per run)")
    kafka_demo.add_argument("--duration", type=float, default=60.0,
                            help="wall seconds the live stream should take (default %(default)s)")
    kafka_demo.add_argument("--checkpoint-interval", type=float, default=DEMO_CHECKPOINT_INTERVAL_S,
                            help="seconds between checkpoints = commit latency (default %(default)s)")
    demo.set_defaults(func=cmd_demo)

    replay = commands.add_parser("replay", help="run the job over event files (JSON Lines or Avro)")
    replay.add_argument("--impressions", required=True, help="impression file or folder")
    replay.add_argument("--clicks", required=True, help="click file or folder")
    replay.add_argument("--items", help="optional item catalog file (embeddings seed item vectors)")
    replay.add_argument("--out", required=True, help="output folder")
    replay.add_argument("--from-snapshot", help="hot start from the newest snapshot in this folder")
    add_job_options(replay)
    add_local_cluster_options(replay)
    replay.set_defaults(func=cmd_replay)

    gen = commands.add_parser("generate", help="write the synthetic stream as event files")
    gen.add_argument("--out", required=True, help="output folder")
    _generator_options(gen, GENERATOR_DEFAULTS)
    gen.set_defaults(func=cmd_generate)

    evaluate = commands.add_parser(
        "evaluate", help="freshrank's learning modes beside River and Vowpal Wabbit on the same examples")
    evaluate.add_argument("--out", default="out/evaluate",
                          help="folder for the learning-curve PNG (default %(default)s)")
    evaluate.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 13],
                          help="one generated stream per seed (default %(default)s)")
    evaluate.add_argument("--impressions", dest="n_impressions", type=int, default=200_000,
                          help="impressions per stream (default %(default)s)")
    evaluate.add_argument("--examples", metavar="REPLAY_OUT",
                          help="instead: the anchors on a replay's labeled examples (its --out folder), beside the "
                               "replay's own scores; --window must be the replay's")
    evaluate.add_argument("--oracle", metavar="FILE", help="with --examples: oracle.jsonl of a generated stream")
    _stream_shape_options(evaluate.add_argument_group("synthetic stream"))
    add_job_options(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    simulate = commands.add_parser(
        "simulate", help="closed loop: CTR of rankings by freshrank (online, frozen) vs popularity, random, oracle")
    simulate.add_argument("--out", default="out/simulate", help="folder for the CTR PNG (default %(default)s)")
    simulate.add_argument("--requests", type=int, default=20_000,
                          help="requests (about one per second of event time; default %(default)s)")
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--freeze-after", type=float, default=3600.0,
                          help="event-time seconds after which the frozen policy's model stops (default %(default)s)")
    simulate.add_argument("--kafka", action="store_true",
                          help="the freshrank policy is the Flink job on a Kafka broker (started unless --bootstrap): "
                               "impressions and clicks go to its topics, rankings read its snapshot topic")
    simulate.add_argument("--bootstrap", help="with --kafka: use this broker instead of starting one")
    simulate.add_argument("--speedup", type=float, default=30.0,
                          help="with --kafka: event time runs this many times faster than the wall clock "
                               "(default %(default)s)")
    add_job_options(simulate)
    simulate.set_defaults(func=cmd_simulate)

    run_command = commands.add_parser("run", help="run the job on Kafka (locally, or via `flink run -py job/main.py`)")
    add_run_options(run_command)
    run_command.set_defaults(func=run)

    bench = commands.add_parser("bench", help="end-to-end impressions/s vs the same learner in plain Python")
    bench.add_argument("--out", default="out/bench", help="work folder (default %(default)s)")
    bench.add_argument("--impressions", dest="n_impressions", type=int, default=None,
                       help="impressions of the big replay (default 1000000; with --text 400000)")
    bench.add_argument("--seed", type=int, default=7)
    bench.add_argument("--heavy-users", type=int, default=3,
                       help="users that each make 10%% of all requests, so per-user state grows large "
                            "(default %(default)s)")
    add_job_options(bench)
    bench.add_argument("--kafka", action="store_true",
                       help="on Kafka: impressions/s of a bounded run over produced topics (with start-up, "
                            "once running, at steady state), of a live job catching up, and the snapshot "
                            "freshness of a live run")
    bench.add_argument("--bootstrap", help="with --kafka: use this broker instead of starting one")
    bench.add_argument("--checkpoint-interval", type=float, default=DEMO_CHECKPOINT_INTERVAL_S,
                       help="with --kafka: seconds between checkpoints = commit latency, for every job of the "
                            "bench (default %(default)s)")
    bench.add_argument("--text", action="store_true",
                       help="what reading text buys and costs: AUC with and without the query-title term and the "
                            "title map (search requests, items launched mid-stream) on a stream with English and "
                            "Chinese text, and replay impressions/s with the text encoder off and on "
                            "(default size 400,000)")
    add_kafka_property_options(bench)
    bench.add_argument("--taskmanagers", type=int, default=0,
                       help="with --kafka: run the bounded job on a standalone cluster of this many TaskManager "
                            "JVMs (each runs one Python interpreter) instead of a local MiniCluster")
    bench.add_argument("--scale-out", action="store_true",
                       help="with --kafka: only the scale-out measurement: parallelism 1 on one TaskManager against "
                            "parallelism 2 on two, each TaskManager pinned to a CPU of its own (needs 2 CPUs): live "
                            f"jobs catching up on a backlog (default {SCALE_OUT_IMPRESSIONS:,} impressions), at "
                            "steady state in alternating rounds")
    bench.add_argument("--rounds", type=int, default=3, help="with --scale-out: rounds (default %(default)s)")
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
    return run_reporting_errors(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
