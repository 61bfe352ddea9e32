"""The Kafka subcommands of `freshrank` on a real broker: topics, produce, rank, serve-demo (and helpers)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from clients.topics import TopicNames, snapshot_key
from job.kafka_job import require_topic
from tools.cli import main
from tools.generate import GeneratorConfig, generate, write_stream
from tools.kafka_demo import freshness_of, read_topic
from udfs.model_store import ModelStore
from udfs.wire import encode

NOW_MS = int(time.time() * 1000)


def unique_suffix() -> str:
    return f"-cli-{uuid.uuid4().hex[:8]}"


def kafka_args(bootstrap: str, suffix: str) -> list[str]:
    return ["--bootstrap", bootstrap, f"--topic-suffix={suffix}"]  # `=`: the suffix starts with "-"


def topic_counts(bootstrap: str, topics: TopicNames) -> dict[str, int]:
    return {key: len(read_topic(bootstrap, getattr(topics, key), timeout_s=30))
            for key in ("impressions", "clicks", "items")}


def test_topics_create_then_produce_a_generated_stream(kafka_broker: str, capsys) -> None:
    suffix = unique_suffix()
    topics = TopicNames().suffixed(suffix)
    assert main(["topics", "create", *kafka_args(kafka_broker, suffix), "--partitions", "2"]) == 0
    created = capsys.readouterr().out
    assert all(name in created for name in topics.as_dict().values())
    assert "cleanup.policy=compact" in created  # the snapshot topic

    require_topic(kafka_broker, topics.item_loop)  # the learners' loop, which the job checks for at parallelism > 1
    with pytest.raises(RuntimeError, match=f"topic {topics.item_loop}-not-created is missing.*topics create"):
        require_topic(kafka_broker, f"{topics.item_loop}-not-created", timeout_s=10)

    config = GeneratorConfig(n_impressions=300, n_users=20, n_items=30, seed=11)
    assert main(["produce", "--generate", "300", "--generate-users", "20", "--generate-items", "30", "--seed", "11",
                 "--speedup", "2000", "--quiet", *kafka_args(kafka_broker, suffix)]) == 0
    stream = generate(config)
    expected = {"impressions": len(stream.impressions), "clicks": len(stream.clicks), "items": len(stream.items)}
    assert f"impressions {expected['impressions']:,}" in capsys.readouterr().out
    assert topic_counts(kafka_broker, topics) == expected


def test_produce_event_files(kafka_broker: str, tmp_path: Path, capsys) -> None:
    suffix = unique_suffix()
    topics = TopicNames().suffixed(suffix)
    main(["topics", "create", *kafka_args(kafka_broker, suffix)])
    # Event times of today: retention (against the wall clock) must not delete them.
    stream = generate(GeneratorConfig(n_impressions=120, n_users=10, n_items=20, seed=3, start_ms=NOW_MS - 3_600_000))
    files = write_stream(stream, tmp_path)
    assert main(["produce", "--impressions", str(files["impressions"]), "--clicks", str(files["clicks"]),
                 "--items", str(files["items"]), "--quiet", *kafka_args(kafka_broker, suffix)]) == 0
    assert "invalid_impressions 0" in capsys.readouterr().out
    assert topic_counts(kafka_broker, topics) == {
        "impressions": len(stream.impressions), "clicks": len(stream.clicks), "items": len(stream.items)}


def snapshot(entity_type: str, entity_id: str, version: int, vector: list[float], bias: float = 0.0,
             updates: int = 1) -> dict:
    return {"version": version, "entity_type": entity_type, "entity_id": entity_id, "vector": vector, "bias": bias,
            "vector_accum": [1.0] * len(vector), "bias_accum": 0.5, "updates": updates, "watermark": version - 1000,
            "created_at": version, "replica": 0}


@pytest.fixture(scope="module")
def filled_snapshots(kafka_broker: str):
    """A snapshot topic with a few items, users, the global bias, and an older version of one user."""
    suffix = unique_suffix()
    main(["topics", "create", *kafka_args(kafka_broker, suffix)])
    v1, v2 = NOW_MS - 2_000, NOW_MS - 1_000
    records = [
        snapshot("GLOBAL", "global", v2, [], bias=-1.0),
        snapshot("POSITION", "1", v2, [], bias=0.2),
        snapshot("ITEM", "shoes", v2, [1.0, 0.0], bias=0.1),
        snapshot("ITEM", "boots", v2, [0.5, 0.5], bias=0.0),
        snapshot("ITEM", "lamp", v2, [-1.0, 0.2], bias=0.3),
        snapshot("ITEM", "mug", v2, [0.0, 1.0], bias=-0.2),
        snapshot("USER", "u-1", v1, [-3.0, 3.0], updates=2),  # older: superseded below
        snapshot("USER", "u-1", v2, [2.0, -0.5], updates=9),
        snapshot("USER", "u-2", v2, [0.0, 1.5], updates=4),
    ]
    producer = Producer({"bootstrap.servers": kafka_broker})
    for record in records:
        producer.produce(TopicNames().suffixed(suffix).snapshots, encode("ModelSnapshot", record),
                         snapshot_key(record["entity_type"], record["entity_id"]))
    assert producer.flush(30) == 0
    return suffix, ModelStore().apply_all(records), v2


def ranked_items(output: str) -> list[str]:
    """Item ids of the numbered lines `  1. item  score` in order."""
    return [line.split()[1] for line in output.splitlines() if line.strip()[:1].isdigit() and ". " in line]


def test_rank_prints_the_newest_models_order(kafka_broker: str, filled_snapshots, capsys) -> None:
    suffix, store, version = filled_snapshots
    candidates = ["lamp", "mug", "shoes", "boots", "unknown-item"]
    assert main(["rank", "--user", "u-1", "--candidates", ",".join(candidates), "--k", "5",
                 *kafka_args(kafka_broker, suffix)]) == 0
    out = capsys.readouterr().out
    expected = [item for item, _ in store.rank("u-1", candidates, 5)]
    assert expected[:4] == ["shoes", "boots", "mug", "lamp"] and expected[-1] == "unknown-item"
    assert ranked_items(out) == expected
    assert f"model version {version}" in out and "lag 0" in out
    assert "9 updates" in out  # the newer record of u-1
    assert f"{store.score('u-1', 'shoes'):.4f}" in out
    assert "n/a (item not in the model)" in out

    # A user the model does not know: biases only (lamp has the largest item bias).
    main(["rank", "--user", "nobody", "--candidates", "mug,lamp,shoes", "--k", "2", *kafka_args(kafka_broker, suffix)])
    out = capsys.readouterr().out
    assert "not in the model" in out and ranked_items(out) == ["lamp", "shoes"]


def test_serve_demo_shows_users_with_most_updates(kafka_broker: str, filled_snapshots, capsys) -> None:
    suffix, store, _ = filled_snapshots
    assert main(["serve-demo", "--users", "1", "--k", "3", *kafka_args(kafka_broker, suffix)]) == 0
    out = capsys.readouterr().out
    assert "user u-1 (9 updates" in out and "u-2" not in out
    assert ranked_items(out) == [item for item, _ in store.rank("u-1", ["shoes", "boots", "lamp", "mug"], 3)]


def test_kafka_status_without_a_broker(tmp_path: Path) -> None:
    assert main(["kafka", "status", "--data-dir", str(tmp_path)]) == 1


def test_freshness_uses_the_first_user_record_that_includes_the_click() -> None:
    examples = [
        {"impression_id": "i1", "user_id": "u", "label": 1, "impression_time": 400, "click_time": 500,
         "model_version": 10},
        {"impression_id": "i2", "user_id": "v", "label": 1, "impression_time": 600, "click_time": 700,
         "model_version": 20},
        {"impression_id": "i3", "user_id": "u", "label": 1, "impression_time": 450, "click_time": 999,
         "model_version": 10},  # another click on the impression was the one counted
        {"impression_id": "i4", "user_id": "w", "label": 1, "impression_time": 700, "click_time": 800,
         "model_version": 30},
        {"impression_id": "i6", "user_id": "u", "label": 1, "impression_time": 100, "click_time": 150,
         "model_version": 10},  # in the warm-up window
    ]
    acked = {"i1": (1_000, 500), "i2": (2_000, 700), "i3": (1_500, 900), "i4": (3_000, 800), "i5": (100, 1),
             "i6": (900, 150)}
    history = {"u": [(5, 900, 850), (10, 1_100, 1_000), (11, 1_800, 1_300), (12, 2_500, 2_000)],
               "v": [(21, 2_600, 2_400)], "w": [(31, 9_999, 9_000)]}
    result = freshness_of(acked, examples, history, drain_started_ms=9_000, warm_up_until_ms=300,
                          warm_from_ms=1_500)
    assert result.values_ms == [800.0, 600.0]  # u: version 11 seen at 1800 (10 predates the click); v: 2600
    assert result.made_ms == [300.0, 400.0]  # the same records' created_at
    assert result.warm_ms == [600.0]  # only v's click was acked after the warm-up
    assert (result.at_drain, result.warm_up, result.unmatched) == (1, 1, 2)  # w; i6; i3 and i5 (no example)
