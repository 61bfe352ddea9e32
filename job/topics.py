"""The Kafka topics of a freshrank deployment: their names and how they are created.

Inputs (impressions, clicks, items) and outputs (examples, metrics, dead-letter) are ordinary
time-retained topics; `model-snapshots` is compacted, keyed by entity (`snapshot_key`), so a serving
replica that reads it from the beginning gets every entity's latest record without replaying the
whole history.

Record timestamps are event times (the replay and the job's sinks write them), which may run ahead
of the wall clock when a stream is replayed faster than real time; Kafka 4 rejects timestamps more
than an hour in the future by default, so every topic here allows `MAX_FUTURE_TIMESTAMP_MS`.
Retention is measured against the wall clock, so records with event times older than a topic's
retention can be deleted as soon as their segment rolls: replaying old files into these topics
needs `retention_ms` overrides (e.g. -1, forever).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from job.kafka_broker import create_topics

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Kafka's default (log.message.timestamp.after.max.ms) is 1 h since 4.0: too little for a sped-up stream.
MAX_FUTURE_TIMESTAMP_MS = 7 * DAY_MS

# Retention per TopicNames field (cleanup.policy=delete topics); the snapshot topic is compacted instead.
DEFAULT_RETENTION_MS: dict[str, int] = {
    "impressions": 7 * DAY_MS,
    "clicks": 7 * DAY_MS,
    "items": 7 * DAY_MS,
    "examples": 7 * DAY_MS,
    "metrics": 2 * DAY_MS,
    "dead_letter": 7 * DAY_MS,
    "late_clicks": 7 * DAY_MS,
    "orphan_clicks": 7 * DAY_MS,
}

# The compacted snapshot topic: roll segments hourly and clean when 10% is superseded, so the topic stays
# close to the model's size; keep tombstones a day so slow readers still see deletions.
SNAPSHOT_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": str(HOUR_MS),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(DAY_MS),
}


@dataclass(frozen=True)
class TopicNames:
    """Topic name of every stream; the defaults are the deployment's names."""

    impressions: str = "impressions"
    clicks: str = "clicks"
    items: str = "items"
    examples: str = "examples"
    snapshots: str = "model-snapshots"
    metrics: str = "metrics"
    dead_letter: str = "dead-letter"
    late_clicks: str = "late-clicks"
    orphan_clicks: str = "orphan-clicks"

    def as_dict(self) -> dict[str, str]:
        """Field name -> topic name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def suffixed(self, suffix: str) -> TopicNames:
        """The same names with `suffix` appended (separate deployments or tests on one broker)."""
        return replace(self, **{key: name + suffix for key, name in self.as_dict().items()})


DEFAULT_TOPICS = TopicNames()


def snapshot_key(entity_type: str, entity_id: str) -> str:
    """The Kafka key of a ModelSnapshot record: compaction keeps the last record written per entity."""
    return f"{entity_type}:{entity_id}"


def topic_configs(
    names: TopicNames = DEFAULT_TOPICS, retention_ms: Mapping[str, int] | None = None
) -> dict[str, dict[str, str]]:
    """Topic name -> topic config that `create_all` uses; `retention_ms` overrides per field (-1 = forever)."""
    retention = {**DEFAULT_RETENTION_MS, **(retention_ms or {})}
    unknown = set(retention) - set(DEFAULT_RETENTION_MS)
    if unknown:
        raise ValueError(f"retention_ms for unknown or compacted topics: {sorted(unknown)}")
    configs: dict[str, dict[str, str]] = {}
    for key, topic in names.as_dict().items():
        if key == "snapshots":
            config = dict(SNAPSHOT_TOPIC_CONFIG)
        else:
            config = {"cleanup.policy": "delete", "retention.ms": str(int(retention[key]))}
        config["message.timestamp.after.max.ms"] = str(MAX_FUTURE_TIMESTAMP_MS)
        configs[topic] = config
    if len(configs) != len(fields(names)):
        raise ValueError(f"topic names must be distinct: {names}")
    return configs


def create_all(
    bootstrap: str,
    names: TopicNames = DEFAULT_TOPICS,
    partitions: int = 2,
    *,
    retention_ms: Mapping[str, int] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, dict[str, str]]:
    """Create every topic of `names` with `partitions` partitions; returns topic -> config used.

    Idempotent: existing topics are left as they are (their config is not changed); one with another
    partition count is an error (see `create_topics`). Returns once every partition has a leader.
    """
    configs = topic_configs(names, retention_ms)
    # create_topics applies one config to all topics of a call: one call per distinct config.
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for topic, config in configs.items():
        groups.setdefault(tuple(sorted(config.items())), []).append(topic)
    for config_items, topics in groups.items():
        config = dict(config_items)
        compacted = topics if config["cleanup.policy"] == "compact" else ()
        create_topics(
            bootstrap,
            {topic: partitions for topic in topics},
            compacted=compacted,
            config=config,
            timeout_s=timeout_s,
        )
    return configs
