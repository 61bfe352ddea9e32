"""The Kafka topics of a freshrank deployment: their names and how they are created.

Inputs (impressions, clicks, items) and outputs (examples, metrics, dead-letter) are ordinary
time-retained topics; `model-snapshots` is compacted, keyed by entity (`snapshot_key`), so a serving
replica that reads it from the beginning gets every entity's latest record without replaying the
whole history.

Record timestamps are event times (the replay and the job's sinks write them), which may run ahead
of the wall clock when a stream is replayed faster than real time; Kafka 4 rejects timestamps more
than an hour in the future by default, so every topic here allows `MAX_FUTURE_TIMESTAMP_MS`.

Retention: Kafka deletes a closed segment once its newest record timestamp (here: event time) is
more than `retention.ms` older than the wall clock, and it closes a segment once the segment spans
`segment.ms` (7 days by default) of record timestamps (or holds `segment.bytes`). Events replayed
from files older than a finite retention are therefore deleted minutes after their segment closes,
before or while the job reads them. So the default here is -1 (keep forever), suited to replays of
old event times; a live deployment sets a finite `retention_ms` (`freshrank topics create
--retention-ms`). The compacted snapshot topic is never deleted by time, whatever the setting: it
keeps every entity's newest record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from clients.admin import create_topics

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Kafka's default (log.message.timestamp.after.max.ms) is 1 h since 4.0: too little for a sped-up stream.
MAX_FUTURE_TIMESTAMP_MS = 7 * DAY_MS

# Kafka's value for "no time limit".
RETAIN_FOREVER_MS = -1

# Retention per TopicNames field (cleanup.policy=delete topics); the snapshot topic is compacted instead.
# Forever by default: retention is measured on event times (see the module doc), and replays carry old ones.
DEFAULT_RETENTION_MS: dict[str, int] = dict.fromkeys(
    ("impressions", "clicks", "items", "examples", "metrics", "dead_letter", "late_clicks", "orphan_clicks"),
    RETAIN_FOREVER_MS,
) | {"item_loop": HOUR_MS}

# The compacted snapshot topic: roll segments hourly and clean when 10% is superseded, so the topic stays
# close to the model's size; keep tombstones a day so slow readers still see deletions.
SNAPSHOT_TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact",  # compaction only: no deletion by time
    "retention.ms": str(RETAIN_FOREVER_MS),  # explicit, in case the policy is ever widened to compact,delete
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
    # internal: the learner replicas' item-side parameters for each other (udfs.item_loop), read from
    # its end, so an hour's retention is plenty
    item_loop: str = "item-loop"

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
    names: TopicNames = DEFAULT_TOPICS, retention_ms: int | Mapping[str, int] | None = None
) -> dict[str, dict[str, str]]:
    """Topic name -> topic config that `create_all` uses; `retention_ms` (-1 = forever) for every
    time-retained topic, or per TopicNames field; the compacted snapshot topic keeps its own config."""
    if isinstance(retention_ms, int):
        if retention_ms < RETAIN_FOREVER_MS or retention_ms == 0:
            raise ValueError(f"retention_ms must be -1 (forever) or positive, not {retention_ms}")
        retention_ms = dict.fromkeys(DEFAULT_RETENTION_MS, retention_ms)
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
    retention_ms: int | Mapping[str, int] | None = None,
    timeout_s: float = 30.0,
    kafka_properties: Mapping[str, str] | None = None,
) -> dict[str, dict[str, str]]:
    """Create every topic of `names` with `partitions` partitions; returns topic -> config used.
    `kafka_properties`: the admin client's security settings (clients.kafka_properties).

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
            kafka_properties=kafka_properties,
        )
    return configs
