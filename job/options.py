"""The job's options: one definition for `freshrank` (tools.cli) and for `flink run -py job/main.py`.

Every option shows its default in `--help` and reads FRESHRANK_<OPTION> from the environment; the
value stays a string there, which argparse converts with the option's type, so a bad value is a
usage error naming the option. `run` is the Kafka job's entry, shared by both commands.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from job.config import JobConfig
from job.errors import UsageError
from udfs.learner_math import LEARNING_MODES, OPTIMIZERS, USER_UPDATES, LearnerConfig
from udfs.model_guard import GuardConfig
from udfs.text_encoder import ENCODERS

# Exactly-once sinks publish on checkpoints, so the interval is the commit latency. A deployed job
# (`run`) trades it for fewer transactions; the demo and the bench show the freshness a user can
# have: with 1 s snapshots, 2 s checkpoints put p99 anywhere from ~2.3 to ~3.1 s depending on the two
# timers' phase, 1 s ~2.2 s, at no throughput cost measurable in `freshrank bench --kafka`.
RUN_CHECKPOINT_INTERVAL_S = 10.0
DEMO_CHECKPOINT_INTERVAL_S = 1.0


def env_default(name: str, default: Any) -> Any:
    """Flags fall back to FRESHRANK_<NAME> so deployments can configure by environment. The value stays
    a string: argparse converts a string default with the option's `type` when it parses, so a bad
    value is a usage error naming the option (and `--help` still works)."""
    value = os.environ.get(f"FRESHRANK_{name.upper().replace('-', '_')}")
    return value if value else default


def add_job_options(parser: argparse.ArgumentParser, mode_dependent: frozenset[str] = frozenset()) -> None:
    """The job's options, each with its FRESHRANK_<OPTION> fallback. Those in `mode_dependent` (dests)
    default to None, so a command with modes (`demo --kafka`) can tell an unset option from a typed
    one and fill in its mode's default (`apply_mode_defaults`)."""
    defaults = JobConfig()
    learner = LearnerConfig()
    group = parser.add_argument_group("job options (env FRESHRANK_<OPTION>)")

    def default(dest: str, value: Any) -> Any:
        return env_default(dest, None if dest in mode_dependent else value)

    def shown(dest: str) -> str:
        return "by mode, see below" if dest in mode_dependent else "%(default)s"

    group.add_argument("--window", type=float, default=default("window", defaults.window_s),
                       help=f"attribution window in seconds (default {shown('window')})")
    group.add_argument("--max-disorder", type=float, default=default("max_disorder", defaults.max_disorder_s),
                       help="bounded out-of-orderness of event times in seconds (default %(default)s)")
    group.add_argument("--retention", type=float, default=default("retention", defaults.retention_s),
                       help="seconds an impression id is remembered after its window, for dedup and "
                            "late-click detection (default %(default)s)")
    group.add_argument("--snapshot-interval", type=float,
                       default=default("snapshot_interval", defaults.snapshot_interval_s),
                       help=f"wall-clock seconds between model snapshots (default {shown('snapshot_interval')})")
    group.add_argument("--metrics-interval", type=float,
                       default=default("metrics_interval", defaults.metrics_interval_s),
                       help="event-time seconds per metrics interval (default %(default)s)")
    group.add_argument("--batch", type=float, default=default("batch", defaults.batch_s),
                       help="wall-clock seconds of events per learner call: longer batches raise throughput, "
                            "shorter ones freshness (default %(default)s)")
    group.add_argument("--click-stall-limit", type=float,
                       default=default("click_stall_limit", defaults.click_stall_limit_s),
                       help="Kafka runs: event-time seconds negatives may wait for a stalled click stream "
                            "before they are decided without it; 0 turns the guard off (default %(default)s)")
    group.add_argument("--click-stall-report", type=float,
                       default=default("click_stall_report", defaults.click_stall_report_s),
                       help="wall-clock seconds without click progress, while impressions flow, after which "
                            "a stall is logged and shown by the click_stalled metric (default %(default)s)")
    group.add_argument("--max-event-ahead", type=float,
                       default=default("max_event_ahead", defaults.max_event_ahead_s),
                       help="seconds an event time may be ahead of min(newest accepted event time, wall clock); "
                            "later events go to dead-letter instead of moving the watermark (default %(default)s)")
    group.add_argument("--dead-letter-max-bytes", type=int,
                       default=default("dead_letter_max_bytes", defaults.dead_letter_max_bytes),
                       help="bytes of a rejected record kept in its dead-letter record; payload_size gives the "
                            "original size (default %(default)s)")
    group.add_argument("--state-ttl", type=float, default=default("state_ttl", defaults.state_ttl_s),
                       help="seconds after which a user or item not learned since leaves Flink state and starts "
                            "over from its prior if it returns; 0 keeps every entity for ever "
                            "(default %(default)s = 30 days)")
    group.add_argument("--parallelism", type=int, default=default("parallelism", defaults.parallelism),
                       help="operator parallelism (default %(default)s)")
    group.add_argument("--lane-load", type=float, default=default("lane_load", defaults.lane_load),
                       help="Kafka runs at parallelism > 1: the work of the one-lane stages (batching and parse of "
                            "the raw records) relative to all learners'; the learner subtask that shares their slot "
                            "takes that much fewer users. 0 splits users evenly. Fixed for a job's state, like the "
                            "parallelism (default %(default)s)")
    group.add_argument("--dim", type=int, default=default("dim", learner.dim),
                       help="model dimension (default %(default)s)")
    group.add_argument("--learning-rate", type=float, default=default("learning_rate", learner.learning_rate),
                       help="AdaGrad step size of item vectors (and of user vectors with --user-update gradient) "
                            "(default %(default)s)")
    group.add_argument("--l2", type=float, default=default("l2", learner.l2),
                       help="L2 penalty on vectors (default %(default)s)")
    group.add_argument("--learning-mode", choices=LEARNING_MODES,
                       default=default("learning_mode", learner.learning_mode),
                       help="when an example is learned: decided (once its label is decided: a negative when its "
                            "window closes) or impression (as a negative the moment it is shown, corrected when its "
                            "click arrives: fake-negative weighting) (default %(default)s)")
    group.add_argument("--bias-optimizer", choices=OPTIMIZERS,
                       default=default("bias_optimizer", learner.bias_optimizer),
                       help="optimizer of item biases, position terms, global bias and text weights: adagrad, or "
                            "ftrl (FTRL-Proximal with --ftrl-l1/--ftrl-l2) (default %(default)s)")
    group.add_argument("--vector-optimizer", choices=OPTIMIZERS,
                       default=default("vector_optimizer", learner.vector_optimizer),
                       help="optimizer of user and item vectors: adagrad, or ftrl (FTRL-Proximal with "
                            "--learning-rate as alpha and --ftrl-l2; no L1 for vectors) (default %(default)s)")
    group.add_argument("--user-update", choices=USER_UPDATES, default=default("user_update", learner.user_update),
                       help="how user vectors learn: newton (a Gaussian posterior per user, Newton steps, scores "
                            "integrated over it) or gradient (the --vector-optimizer step, as item vectors) "
                            "(default %(default)s)")
    group.add_argument("--user-prior-variance", type=float,
                       default=default("user_prior_variance", learner.user_prior_variance),
                       help="newton users: variance of the prior over a new user's vector, per coordinate "
                            "(default %(default)s)")
    group.add_argument("--ftrl-l1", type=float, default=default("ftrl_l1", learner.ftrl_l1),
                       help="FTRL-Proximal L1: scalars whose evidence stays below it are exactly 0 "
                            "(default %(default)s)")
    group.add_argument("--ftrl-l2", type=float, default=default("ftrl_l2", learner.ftrl_l2),
                       help="FTRL-Proximal L2 (default %(default)s)")
    group.add_argument("--query-hint-weight", type=float,
                       default=default("query_hint_weight", learner.query_hint_weight),
                       help="weight of a search's query as a positive for its user's vector (the query in item "
                            "space through the title map; 0 turns it off; needs a text encoder) "
                            "(default %(default)s)")
    group.add_argument("--text-encoder", choices=ENCODERS, default=default("text_encoder", defaults.text_encoder),
                       help="what reads queries and item titles: use (pretrained multilingual Universal Sentence "
                            "Encoder, English and Chinese), hashing (shared words only, fast) or none (the model "
                            "ignores text) (default %(default)s)")
    guard = GuardConfig()
    group.add_argument("--guard-logloss-margin", type=float,
                       default=default("guard_logloss_margin", guard.logloss_margin),
                       help="stability guard: hold a snapshot version back while the progressive logloss since the "
                            "last judged period exceeds its baseline by more than this share; 0 turns the guard "
                            "off (default %(default)s)")
    group.add_argument("--guard-auc-margin", type=float, default=default("guard_auc_margin", guard.auc_margin),
                       help="stability guard: ... or its AUC is below the baseline's by more than this "
                            "(default %(default)s)")
    group.add_argument("--guard-ctr-factor", type=float, default=default("guard_ctr_factor", guard.ctr_factor),
                       help="stability guard: ... or its click rate is this many times above or below the "
                            "baseline's (default %(default)s)")
    group.add_argument("--guard-min-examples", type=int,
                       default=default("guard_min_examples", guard.min_examples),
                       help="stability guard: examples a period needs before it is judged (default %(default)s)")
    group.add_argument("--checkpoint-dir", default=default("checkpoint_dir", None),
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
        lane_load=args.lane_load,
        click_stall_limit_s=args.click_stall_limit,
        click_stall_report_s=args.click_stall_report,
        state_ttl_s=args.state_ttl,
        max_event_ahead_s=args.max_event_ahead,
        dead_letter_max_bytes=args.dead_letter_max_bytes,
        learner=LearnerConfig(dim=args.dim, learning_rate=args.learning_rate, l2=args.l2,
                              learning_mode=args.learning_mode, bias_optimizer=args.bias_optimizer,
                              vector_optimizer=args.vector_optimizer, user_update=args.user_update,
                              user_prior_variance=args.user_prior_variance,
                              ftrl_l1=args.ftrl_l1, ftrl_l2=args.ftrl_l2,
                              query_hint_weight=args.query_hint_weight),
        text_encoder=args.text_encoder,
        guard=GuardConfig(logloss_margin=args.guard_logloss_margin, auc_margin=args.guard_auc_margin,
                          ctr_factor=args.guard_ctr_factor, min_examples=args.guard_min_examples),
    )


def job_option_args(config: JobConfig) -> list[str]:
    """The job options that give `config` (the inverse of `job_config`): how a tool hands its whole
    configuration to a child `freshrank run`."""
    learner = config.learner
    values = {
        "--window": config.window_s, "--max-disorder": config.max_disorder_s, "--retention": config.retention_s,
        "--snapshot-interval": config.snapshot_interval_s, "--metrics-interval": config.metrics_interval_s,
        "--batch": config.batch_s, "--parallelism": config.parallelism, "--lane-load": config.lane_load,
        "--click-stall-limit": config.click_stall_limit_s, "--click-stall-report": config.click_stall_report_s,
        "--state-ttl": config.state_ttl_s, "--max-event-ahead": config.max_event_ahead_s,
        "--dead-letter-max-bytes": config.dead_letter_max_bytes,
        "--dim": learner.dim, "--learning-rate": learner.learning_rate, "--l2": learner.l2,
        "--guard-logloss-margin": config.guard.logloss_margin, "--guard-auc-margin": config.guard.auc_margin,
        "--guard-ctr-factor": config.guard.ctr_factor, "--guard-min-examples": config.guard.min_examples,
        "--text-encoder": config.text_encoder, "--learning-mode": learner.learning_mode,
        "--bias-optimizer": learner.bias_optimizer, "--ftrl-l1": learner.ftrl_l1, "--ftrl-l2": learner.ftrl_l2,
        "--query-hint-weight": learner.query_hint_weight, "--vector-optimizer": learner.vector_optimizer,
        "--user-update": learner.user_update, "--user-prior-variance": learner.user_prior_variance,
    }
    return [item for option, value in values.items()
            for item in (option, value if isinstance(value, str) else repr(value))]


def apply_mode_defaults(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Give every mode-dependent option still unset (None: neither typed nor in the environment) the
    value of `defaults`."""
    for dest, value in defaults.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def add_local_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rest-port", type=int, default=env_default("rest_port", None), metavar="PORT",
                        help="the local Flink's REST endpoint and web UI on localhost:PORT (default: a free port)")
    parser.add_argument("--prometheus-port", default=env_default("prometheus_port", None), metavar="PORT[-PORT]",
                        help="expose the Flink metrics (the job's freshrank group included) to Prometheus at "
                             "http://HOST:PORT/metrics; a range lets each JVM take a free port. Flink's reporter "
                             "listens on every interface, so it is off unless given (default off)")


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka (env FRESHRANK_<OPTION>)")
    group.add_argument("--bootstrap", default=env_default("bootstrap", "localhost:9092"),
                       help="Kafka bootstrap servers (default %(default)s)")
    group.add_argument("--topic-suffix", default=env_default("topic_suffix", ""),
                       help="suffix appended to every topic name (separate deployments on one broker)")
    add_kafka_property_options(group)


def add_kafka_property_options(group) -> None:
    group.add_argument("--kafka-properties", action="append", metavar="FILE",
                       help="Kafka client properties (security.protocol, sasl.*, ssl.* ...; `key=value` lines, "
                            "# comments) for every Kafka client; repeatable, later files win; env "
                            "FRESHRANK_KAFKA_PROPERTIES; `java.`/`librdkafka.` prefixes scope a key (README)")
    group.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                       help="one Kafka client property, over those of the files; repeatable")


def kafka_properties_of(args: argparse.Namespace) -> dict[str, str]:
    """The run's merged Kafka client properties (clients.kafka_properties), or a usage error."""
    from clients.kafka_properties import KafkaPropertiesError, merge_kafka_properties

    files = getattr(args, "kafka_properties", None) or [
        path for path in [os.environ.get("FRESHRANK_KAFKA_PROPERTIES")] if path]
    try:
        return merge_kafka_properties(files, getattr(args, "kafka_property", None) or [])
    except KafkaPropertiesError as error:
        raise UsageError(str(error)) from None


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of `freshrank run` and of `flink run -py job/main.py`."""
    add_kafka_options(parser)
    parser.add_argument("--group-id", default="freshrank",
                        help="consumer group and transactional-id prefix (default %(default)s)")
    parser.add_argument("--bounded", action="store_true", help="stop at the topics' current end (tests, backfills)")
    parser.add_argument("--checkpoint-interval", type=float, default=RUN_CHECKPOINT_INTERVAL_S,
                        help="seconds between checkpoints = exactly-once commit latency (default %(default)s)")
    parser.add_argument("--idleness", type=float, default=5.0,
                        help="seconds after which an idle partition stops holding back the watermark "
                             "(default %(default)s)")
    parser.add_argument("--create-topics", action="store_true", help="create missing topics first")
    parser.add_argument("--partitions", type=int, default=2, help="partitions of created topics (default %(default)s)")
    parser.add_argument("--items", help="optional item catalog file (embeddings seed item vectors)")
    parser.add_argument("--from-snapshot", help="hot start from the newest snapshot in this folder")
    parser.add_argument("--from-snapshot-topic", action="store_true",
                        help="hot start a new job (no savepoint) from the newest record of every entity on the "
                             "compacted model-snapshots topic")
    parser.add_argument("--job-name", default="freshrank", help="Flink job name (default %(default)s)")
    add_local_cluster_options(parser)
    add_job_options(parser)


def run(args: argparse.Namespace) -> int:
    """Build the Kafka job from `args` (add_run_options) and execute it."""
    from clients.admin import require_broker
    from clients.topics import TopicNames, create_all
    from job.kafka_job import build_kafka_job, kafka_environment

    config = job_config(args)
    topics = TopicNames().suffixed(args.topic_suffix) if args.topic_suffix else TopicNames()
    properties = kafka_properties_of(args)
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
