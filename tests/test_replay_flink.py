"""End-to-end replays through a real Flink MiniCluster (thread mode), checked against the reference joiner.

Each Flink job costs seconds, so the module runs a few replays once (module fixtures) and many
assertions against their outputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import fastavro
import orjson
import pytest
from reference_joiner import reference_join

from job.config import JobConfig
from job.replay import load_snapshots, read_output, run_replay
from tools.generate import GeneratorConfig, generate, write_stream
from udfs.learner_math import LearnerConfig
from udfs.schemas import parsed_schema

pytestmark = pytest.mark.flink  # runs the job on a local MiniCluster

# A short window and fast clicks so a small stream has late, orphan, early and duplicate clicks.
GEN = GeneratorConfig(n_impressions=4000, n_users=150, n_items=120, seed=11, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=8.0, requests_per_s=2.0)
JOB = JobConfig(window_s=60.0, max_disorder_s=3.0, retention_s=600.0, metrics_interval_s=30.0,
                learner=LearnerConfig(dim=8))


@pytest.fixture(scope="module")
def stream():
    return generate(GEN)


@pytest.fixture(scope="module")
def events(stream, tmp_path_factory) -> dict[str, Path]:
    return write_stream(stream, tmp_path_factory.mktemp("events"))


@pytest.fixture(scope="module")
def reference(stream):
    return reference_join(stream.impressions, stream.clicks, JOB.window_ms)


@pytest.fixture(scope="module", params=[1, 2], ids=["parallelism1", "parallelism2"])
def run(request, events, tmp_path_factory) -> Path:
    config = JobConfig(**{**JOB.__dict__, "parallelism": request.param})
    out = tmp_path_factory.mktemp(f"run-p{request.param}")
    run_replay(events["impressions"], events["clicks"], out, config, items=events["items"])
    return out


def test_exactly_one_example_per_impression_with_reference_labels(run, reference):
    examples = read_output(run, "examples")
    ids = [e["impression_id"] for e in examples]
    assert len(ids) == len(set(ids)), "an impression produced two examples"
    got = {e["impression_id"]: (e["label"], e["click_time"]) for e in examples}
    assert got == reference.labels
    assert sum(label for label, _ in got.values()) > 50  # the stream really has clicks


def test_late_and_orphan_clicks_go_to_their_side_outputs(run, reference):
    assert reference.late_clicks > 0 and reference.orphan_clicks > 0
    assert len(read_output(run, "late-clicks")) == reference.late_clicks
    assert len(read_output(run, "orphan-clicks")) == reference.orphan_clicks


def test_final_metrics_count_what_the_reference_counts(run, reference):
    metrics = read_output(run, "metrics")
    last_end = max(m["window_end"] for m in metrics)
    totals = {m["name"]: m["value"] for m in metrics if m["window_end"] == last_end}
    assert totals["examples_total"] == len(reference.labels)
    assert totals["duplicate_impressions_total"] == reference.duplicate_impressions
    assert totals["duplicate_clicks_total"] == reference.duplicate_clicks
    assert totals["late_clicks_total"] == reference.late_clicks
    assert totals["orphan_clicks_total"] == reference.orphan_clicks
    positives = sum(label for label, _ in reference.labels.values())
    assert totals["click_coverage_total"] == pytest.approx(positives / reference.clicks)
    assert 0.5 < totals["auc_total"] <= 1.0
    # every interval is emitted once, in event-time order
    ends = sorted({m["window_end"] for m in metrics})
    assert len([m for m in metrics if m["name"] == "examples"]) == len(ends)


def test_every_example_is_scored_and_snapshots_cover_learned_users(run):
    examples = read_output(run, "examples")
    assert all(0.0 < e["score"] < 1.0 for e in examples)
    store = load_snapshots(run)
    assert set(store.user_ids()) == {e["user_id"] for e in examples}


def test_model_beats_item_popularity_on_hidden_preferences(tmp_path):
    """End to end through Flink, the learned model beats the popularity baseline (the margins, over
    several seeds, are gated on the learner core in test_quality_gates.py)."""
    from tools.evaluate import summarize

    stream = generate(GeneratorConfig(n_impressions=30_000, n_users=300, n_items=200, seed=5, requests_per_s=0.5))
    files = write_stream(stream, tmp_path / "events")
    config = JobConfig()
    run_replay(files["impressions"], files["clicks"], tmp_path / "out", config, items=files["items"])
    examples = sorted(read_output(tmp_path / "out", "examples"), key=lambda e: e["impression_time"])
    overall = summarize(examples, stream.oracle)
    # after the warm-up (the first windows, when only positives can have been learned)
    warm = [e for e in examples if e["impression_time"] >= examples[0]["impression_time"] + 2 * config.window_ms]
    steady = summarize(warm, stream.oracle)
    assert overall["model_auc"] > overall["popularity_auc"]
    assert steady["model_auc"] > steady["popularity_auc"]
    assert steady["model_auc"] < steady["oracle_auc"]
    assert steady["model_ne"] < steady["popularity_ne"]


def test_bad_records_reach_the_dead_letter_and_valid_ones_are_all_processed(tmp_path):
    good = [
        {"impression_id": "i1", "request_id": "r1", "user_id": "u1", "item_id": "a", "query": None,
         "position": 1, "event_time": 1_000},
        {"impression_id": "i2", "request_id": "r1", "user_id": "u1", "item_id": "b", "query": "red shoes",
         "position": 2, "event_time": 1_000},
    ]
    bad_lines = {
        b"{not json": "not valid JSON",
        b'{"impression_id": "i3", "request_id": "r1", "user_id": "u1", "item_id": "c", "query": null, '
        b'"position": 0, "event_time": 1000}': "position must be >= 1",
        b'{"impression_id": "i4", "request_id": "r1", "user_id": "u1", "item_id": "c", "query": null, '
        b'"position": 1, "event_time": -5}': "event_time is negative",
        b'{"impression_id": "i5", "request_id": "r1", "user_id": "u1", "item_id": "c", "query": null, '
        b'"position": "1", "event_time": 1000}': "does not match its schema",
        b'{"impression_id": "i6", "user_id": "u1", "item_id": "c", "position": 1, "event_time": 1000}':
            "missing field(s): request_id",
    }
    impressions = tmp_path / "impressions.jsonl"
    lines = [orjson.dumps(good[0]), *bad_lines, orjson.dumps(good[1])]
    impressions.write_bytes(b"\n".join(lines) + b"\n")
    clicks = tmp_path / "clicks.jsonl"
    clicks.write_bytes(b'{"impression_id": "i2", "user_id": "u1", "item_id": "b", "event_time": 2000}\n'
                       b'{"impression_id": "i2", "user_id": "u1"}\n')
    out = tmp_path / "out"
    run_replay(impressions, clicks, out, JOB)

    dead = read_output(out, "dead-letter")
    reasons = {d["payload"].encode(): d["reason"] for d in dead if d["source"] == "impressions"}
    assert set(reasons) == set(bad_lines)
    for payload, expected in bad_lines.items():
        assert expected in reasons[payload]
    assert [d["source"] for d in dead].count("clicks") == 1
    labels = {e["impression_id"]: e["label"] for e in read_output(out, "examples")}
    assert labels == {"i1": 0, "i2": 1}


def test_avro_container_input_and_hot_start_from_snapshot(stream, tmp_path):
    """Avro files are read like JSON Lines; a second run resumes from the first run's snapshot."""
    half = len(stream.impressions) // 2
    cut = stream.impressions[half]["event_time"]
    first = [i for i in stream.impressions if i["event_time"] < cut]
    second = [i for i in stream.impressions if i["event_time"] >= cut]
    paths = {}
    for name, records, schema in (("imp1", first, "Impression"), ("imp2", second, "Impression"),
                                  ("clicks", stream.clicks, "Click")):
        paths[name] = tmp_path / f"{name}.avro"
        with open(paths[name], "wb") as handle:
            fastavro.writer(handle, parsed_schema(schema), records)

    run_replay(paths["imp1"], paths["clicks"], tmp_path / "run1", JOB)
    run1 = load_snapshots(tmp_path / "run1")
    run_replay(paths["imp2"], paths["clicks"], tmp_path / "run2", JOB, from_snapshot=tmp_path / "run1")
    run2_records = read_output(tmp_path / "run2", "snapshots")

    assert len(read_output(tmp_path / "run1", "examples")) == len({i["impression_id"] for i in first})
    assert min(r["version"] for r in run2_records) > run1.version  # versions grow across restarts
    # a returning user continues from its snapshot: update counts carry on from run 1
    returning = {r["entity_id"]: r for r in run2_records if r["entity_type"] == "USER"
                 and run1.records.get(("USER", r["entity_id"]))}
    assert returning
    for user_id, record in returning.items():
        assert record["updates"] > run1.records[("USER", user_id)]["updates"]
    # and the first run-2 example of such a user is scored with run 1's parameters (not a fresh prior)
    examples2 = sorted(read_output(tmp_path / "run2", "examples"), key=lambda e: e["impression_time"])
    user_id = next(iter(returning))
    first_example = next(e for e in examples2 if e["user_id"] == user_id)
    assert first_example["model_version"] == run1.version


def _poison_impression(stream, marker: str, **changes) -> bytes:
    """A line for an impression of the stream's world (a real user and item) that must be rejected."""
    base = dict(stream.impressions[0], impression_id=marker, request_id=f"req-{marker}")
    return orjson.dumps({**base, **changes})


def test_poison_records_go_to_the_dead_letter_and_nothing_valid_is_lost(stream, events, reference, tmp_path):
    """Issue 7's single records that crashed, hung or poisoned the job, in one replay: each is in the
    dead letter with its reason, the labels are the reference's and no output holds a NaN."""
    item_id = stream.impressions[0]["item_id"]
    poison = {  # marker in the payload -> what its reason must say
        "poison-9999": (_poison_impression(stream, "poison-9999", event_time=253_402_300_799_000),
                        "beyond the bound"),
        "poison-2^63": (_poison_impression(stream, "poison-2^63", event_time=2**63 - 1_000), "beyond the bound"),
        "poison-malformed": (b'{"impression_id": "poison-malformed", "request_id": ', "not valid JSON"),
        # Flink's text source decodes the file as UTF-8 with replacement: the id arrives with U+FFFD
        "poison-utf8": (_poison_impression(stream, "poison-utf8", user_id="u-X").replace(b"u-X", b"u-\xff\xfe"),
                        "user_id contains invalid UTF-8"),
        "poison-bom": (_poison_impression(stream, "\ufeffpoison-bom"), "impression_id contains a byte order mark"),
    }
    lines = events["impressions"].read_bytes().splitlines()
    for index, (line, _) in enumerate(poison.values()):
        lines.insert((index + 1) * len(lines) // (len(poison) + 1), line)
    impressions = tmp_path / "impressions.jsonl"
    impressions.write_bytes(b"\n".join(lines) + b"\n")
    clicks = tmp_path / "clicks.jsonl"
    future_click = {**stream.clicks[0], "impression_id": "poison-click", "event_time": 2**63 - 1}
    clicks.write_bytes(events["clicks"].read_bytes() + orjson.dumps(future_click) + b"\n")
    # the catalog: its good entries, then bad ones for an item the stream shows (accepted, they would win)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    good_item = next(i for i in stream.items if i["item_id"] == item_id)
    (catalog / "items.jsonl").write_bytes(
        events["items"].read_bytes()
        + b'{"item_id": "' + item_id.encode() + b'", "title": \n'
        + b'{"item_id": "' + item_id.encode() + b'", "title": "t", "category": "c", "embedding": [Infinity]}\n'
        + orjson.dumps({**good_item, "embedding": [1e30] * len(good_item["embedding"])}) + b"\n")
    with open(catalog / "more.avro", "wb") as handle:
        fastavro.writer(handle, parsed_schema("Item"),
                        [{**good_item, "embedding": [float("inf")] * len(good_item["embedding"])}])

    out = tmp_path / "out"
    run_replay(impressions, clicks, out, JOB, items=catalog)

    dead = read_output(out, "dead-letter")
    for marker, (_, reason) in poison.items():
        found = [d for d in dead if marker in d["payload"] and d["source"] == "impressions"]
        assert len(found) == 1, marker
        assert reason in found[0]["reason"], (marker, found[0]["reason"])
        assert found[0]["payload_size"] >= len(found[0]["payload"].encode()) - 8  # U+FFFD is longer than \xff
    click = [d for d in dead if d["source"] == "clicks"]
    assert len(click) == 1 and "beyond the bound" in click[0]["reason"] and "poison-click" in click[0]["payload"]
    items = [d for d in dead if d["source"] == "items"]
    assert len(items) == 4
    assert any("items.jsonl line " in d["reason"] and "not valid JSON" in d["reason"] for d in items)
    assert sum("finite with |x| <= 1e+06" in d["reason"] for d in items) == 2  # 1e30 (JSON) and inf (Avro)
    assert len(dead) == len(poison) + 1 + 4

    examples = read_output(out, "examples")
    assert {e["impression_id"]: (e["label"], e["click_time"]) for e in examples} == reference.labels
    assert all(isinstance(e["score"], float) and 0.0 < e["score"] < 1.0 for e in examples)
    snapshots = read_output(out, "snapshots")
    numbers = [x for r in snapshots for x in (*r["vector"], *r["vector_accum"], r["bias"], r["bias_accum"])]
    assert numbers and all(x is not None and math.isfinite(x) for x in numbers)  # JSON writes NaN as null
    metrics = read_output(out, "metrics")
    last_end = max(m["window_end"] for m in metrics)
    totals = {m["name"]: m["value"] for m in metrics if m["window_end"] == last_end}
    for name in ("logloss_total", "ne_total", "auc_total", "calibration_total"):
        assert totals[name] is not None and math.isfinite(totals[name]), name
