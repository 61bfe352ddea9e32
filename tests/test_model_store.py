"""ModelStore: newest-version-wins materialization of snapshot records, serving scores, hot start."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import orjson
import pytest

from job.replay import load_snapshots
from udfs.encoding import JsonLinesEncoder
from udfs.learner_math import ItemSide, LearnerConfig, OnlineRanker, sigmoid
from udfs.model_store import GLOBAL, ITEM, POSITION, USER, ModelStore, SnapshotError, snapshot_problem
from udfs.snapshots import next_version, snapshot_record
from udfs.wire import WireDecoder, encode

CFG = LearnerConfig(dim=6, learning_rate=0.1, l2=1e-3)


def record(entity_type: str, entity_id: str, version: int, bias: float = 0.0, vector=(), **extra) -> dict:
    base = {
        "version": version, "entity_type": entity_type, "entity_id": entity_id, "vector": list(vector),
        "bias": bias, "vector_accum": [0.1] * len(vector), "bias_accum": 0.1, "updates": version,
        "watermark": 1_000 * version, "created_at": 10_000 + version, "replica": 0,
    }
    base.update(extra)
    return base


@pytest.mark.parametrize("seed", range(5))
def test_newest_version_wins_in_any_order(seed: int) -> None:
    records = [
        record(kind, entity_id, version, bias=float(version))
        for kind, entity_id in [(USER, "u1"), (ITEM, "sku1"), (ITEM, "sku2"), (POSITION, "3"), (GLOBAL, "global")]
        for version in (3, 9, 5, 1)
    ]
    random.Random(seed).shuffle(records)
    store = ModelStore().apply_all(records)
    assert len(store) == 5
    for (_, _), held in store.records.items():
        assert held["version"] == 9 and held["bias"] == 9.0
    assert (store.version, store.watermark, store.created_at) == (9, 9_000, 10_009)
    # An older or equal version is refused; a newer one replaces.
    assert not store.apply(record(ITEM, "sku1", 9, bias=-1.0))
    assert not store.apply(record(ITEM, "sku1", 2, bias=-1.0))
    assert store.records[(ITEM, "sku1")]["bias"] == 9.0
    assert store.apply(record(ITEM, "sku1", 10, bias=-1.0))
    assert store.records[(ITEM, "sku1")]["bias"] == -1.0 and store.version == 10
    # The store's watermark and creation time are maxima over records (replicas differ), not the last one's.
    assert store.apply(record(ITEM, "sku2", 11, watermark=5, created_at=6, replica=1))
    assert (store.version, store.watermark, store.created_at) == (11, 10_000, 10_010)


def serving_store() -> ModelStore:
    u = [1.0, 0.0, 0.5]
    return ModelStore().apply_all([
        record(USER, "u1", 1, vector=u),
        record(ITEM, "a", 1, bias=0.2, vector=[0.5, 0.0, 0.0]),  # z = 0.5 + 0.2 + g
        record(ITEM, "b", 1, bias=-1.0, vector=[0.0, 3.0, 0.0]),  # z = 0.0 - 1.0 + g
        record(ITEM, "c", 1, bias=0.0, vector=[1.0, 0.0, 2.0]),  # z = 2.0 + g
        record(POSITION, "1", 1, bias=5.0),  # not used for serving
        record(GLOBAL, "global", 1, bias=-0.3),
    ])


def test_score_and_rank() -> None:
    store = serving_store()
    assert store.score("u1", "a") == pytest.approx(sigmoid(0.5 + 0.2 - 0.3))
    assert store.score("u1", "c") == pytest.approx(sigmoid(2.0 - 0.3))
    assert store.score("nobody", "a") == pytest.approx(sigmoid(0.2 - 0.3))  # unknown user: biases only
    assert store.score("u1", "zzz") is None
    ranked = store.rank("u1", ["zzz", "b", "a", "c", "yyy"], k=10)
    assert [item for item, _ in ranked[:3]] == ["c", "a", "b"]
    assert [score for _, score in ranked[:3]] == pytest.approx(
        [sigmoid(1.7), sigmoid(0.4), sigmoid(-1.3)]
    )
    assert {item for item, _ in ranked[3:]} == {"zzz", "yyy"}
    assert all(math.isnan(score) for _, score in ranked[3:])
    assert [item for item, _ in store.rank("u1", ["zzz", "b", "a", "c"], k=2)] == ["c", "a"]
    # Without the user's vector the biases decide: a (0.2) > c (0.0) > b (-1.0).
    assert [item for item, _ in store.rank("nobody", ["b", "c", "a"])] == ["a", "c", "b"]


def train(ranker: OnlineRanker, users: dict[str, np.ndarray], n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(n):
        user_id, item_id = f"u{rng.integers(4)}", f"sku{rng.integers(6)}"
        state = users.setdefault(user_id, ranker.codec.new())
        scores.append(ranker.score_then_learn(state, item_id, int(rng.integers(1, 4)), int(rng.random() < 0.3)))
    return scores


def snapshot(ranker: OnlineRanker, users: dict[str, np.ndarray], version: int) -> list[dict]:
    """What JoinLearnCore._snapshot publishes for every entity (all of them dirty here)."""
    common = {"watermark": 123, "created_at": 456, "replica": 0}
    codec, side = ranker.codec, ranker.item_side
    out = [
        snapshot_record(version, USER, user_id, codec.vector(s), codec.optimizer_state(s), None, codec.updates(s),
                        **common)
        for user_id, s in users.items()
    ]
    out += [
        snapshot_record(version, ITEM, item_id, item.vector, item.accum, item.bias, item.updates, **common)
        for item_id, item in side.items.items()
    ]
    out += [
        snapshot_record(version, POSITION, str(position), None, None, term, term.updates, **common)
        for position, term in side.positions.items()
    ]
    glob = side.global_bias
    out.append(snapshot_record(version, GLOBAL, "global", None, None, glob, glob.updates, **common))
    return out


def test_hot_start_round_trips_the_learner_state() -> None:
    ranker = OnlineRanker(CFG, ItemSide(CFG))
    users: dict[str, np.ndarray] = {}
    train(ranker, users, 150, seed=1)
    encoder = JsonLinesEncoder()  # the file sink's format
    store = ModelStore().apply_all(orjson.loads(encoder.encode("ModelSnapshot", r)) for r in snapshot(ranker, users, 7))

    codec = ranker.codec
    for user_id, state in users.items():
        np.testing.assert_array_equal(store.user_state(user_id, codec), state)
    assert store.user_state("never-seen", codec) is None
    side = store.item_side(CFG)
    original = ranker.item_side
    assert set(side.items) == set(original.items) and set(side.positions) == set(original.positions)
    for item_id, item in original.items.items():
        restored = side.items[item_id]
        np.testing.assert_array_equal(restored.vector, item.vector)
        np.testing.assert_array_equal(restored.accum, item.accum)
        assert (restored.bias.value, restored.bias.accum, restored.updates) == (
            item.bias.value, item.bias.accum, item.updates,
        )
        assert not restored.dirty
    for position, term in original.positions.items():
        restored = side.positions[position]
        assert (restored.value, restored.accum, restored.updates) == (term.value, term.accum, term.updates)
    glob = original.global_bias
    assert (side.global_bias.value, side.global_bias.accum, side.global_bias.updates) == (
        glob.value, glob.accum, glob.updates,
    )

    # Learning goes on exactly as if the job had never stopped.
    resumed = OnlineRanker(CFG, side)
    resumed_users = {user_id: store.user_state(user_id, codec) for user_id in users}
    assert train(resumed, resumed_users, 100, seed=2) == train(ranker, users, 100, seed=2)


def test_hot_start_from_avro_wire_records_is_float32_close() -> None:
    ranker = OnlineRanker(CFG, ItemSide(CFG))
    users: dict[str, np.ndarray] = {}
    train(ranker, users, 150, seed=3)
    decoder = WireDecoder("ModelSnapshot")
    store = ModelStore().apply_all(decoder.decode(encode("ModelSnapshot", r)) for r in snapshot(ranker, users, 7))
    for user_id, state in users.items():
        np.testing.assert_allclose(store.user_state(user_id, ranker.codec), state, rtol=1e-6, atol=1e-7)
    side = store.item_side(CFG)
    for item_id, item in ranker.item_side.items.items():
        np.testing.assert_allclose(side.items[item_id].vector, item.vector, rtol=1e-6, atol=1e-7)
        assert side.items[item_id].bias.value == item.bias.value  # biases are doubles


def test_item_side_refuses_another_dimension() -> None:
    store = ModelStore().apply_all([record(ITEM, "sku1", 1, vector=[0.1] * 4)])
    with pytest.raises(ValueError, match="dimension 4"):
        store.item_side(LearnerConfig(dim=6))
    assert len(store.item_side(LearnerConfig(dim=4)).items) == 1


def test_next_version_strictly_increases_even_if_the_clock_goes_back() -> None:
    clock = [1_000, 2_000, 1_500, 1_500, 500, 2_003, 2_003, 10_000, 9_999]
    version, versions = 0, []
    for now in clock:
        version = next_version(version, now)
        versions.append(version)
    assert versions == [1_000, 2_000, 2_001, 2_002, 2_003, 2_004, 2_005, 10_000, 10_001]
    assert all(b > a for a, b in zip(versions, versions[1:], strict=False))
    # Restarted from a store whose version is ahead of the clock: still above it.
    assert next_version(ModelStore().apply_all([record(GLOBAL, "global", 50_000)]).version, 40_000) == 50_001


# --- snapshot files validated up front ---------------------------------------------------------

def trained_snapshot_lines(version: int = 7) -> list[bytes]:
    """A real model's snapshot records as the file sink writes them (JSON Lines)."""
    ranker = OnlineRanker(CFG, ItemSide(CFG))
    users: dict[str, np.ndarray] = {}
    train(ranker, users, 80, seed=4)
    encoder = JsonLinesEncoder()
    return [encoder.encode("ModelSnapshot", r).encode() for r in snapshot(ranker, users, version)]


def write_snapshots(folder, lines: list[bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder / "part-0.jsonl"


def test_every_record_a_learner_writes_passes_the_snapshot_check() -> None:
    records = [orjson.loads(line) for line in trained_snapshot_lines()]
    assert {r["entity_type"] for r in records} == {USER, ITEM, POSITION, GLOBAL}
    assert [snapshot_problem(r, CFG.dim) for r in records] == [None] * len(records)


@pytest.mark.parametrize("change,reason", [
    ({"vector": [0.1, None, 0.1, 0.1, 0.1, 0.1]}, "vector[1] is null (JSON writes NaN as null)"),
    ({"bias": None}, "null in field(s): bias"),
    ({"vector": [0.1] * 4, "vector_accum": [0.1] * 4}, "USER vector has 4 values, but the job's --dim is 6"),
    ({"vector_accum": [0.1] * 5}, "vector_accum has 5 values, expected 6"),
    ({"vector_accum": [0.1, 0.1, 0.0, 0.1, 0.1, 0.1]}, "vector_accum[2] is 0.0: an AdaGrad accumulator must be > 0"),
    ({"vector": [0.1, math.inf, 0.1, 0.1, 0.1, 0.1]}, "vector[1] is inf, not finite"),
    ({"vector": [0.1, "x", 0.1, 0.1, 0.1, 0.1]}, "vector[1] is str, not a number"),
    ({"vector": [0.1, True, 0.1, 0.1, 0.1, 0.1]}, "vector[1] is bool, not a number"),
    ({"entity_type": "USR"}, "entity_type is 'USR'"),
    ({"entity_id": ""}, "entity_id is ''"),
    ({"updates": 1.5}, "updates is float, not an integer"),
    ({"version": "7"}, "version is str"),
    # A Newton user's vector_accum: its accumulator, then its covariance (6 x 6).
    ({"vector_accum": [0.1] * 6 + [0.0] * 36}, "USER covariance has a diagonal value that is not positive"),
    ({"vector_accum": [0.1] * 6 + [0.3] * 20 + [math.nan] + [0.3] * 15}, "USER covariance[20] is nan, not finite"),
    ({"vector_accum": [0.1] * 6 + [0.3] * 35}, "vector_accum has 41 values, expected 6"),
])
def test_snapshot_problem_names_the_field(change: dict, reason: str) -> None:
    good = record(USER, "u1", 3, vector=[0.1] * 6)
    assert snapshot_problem(good, 6) is None
    problem = snapshot_problem({**good, **change}, 6)
    assert problem is not None and reason in problem


def test_snapshot_problem_of_missing_fields_and_non_objects() -> None:
    good = record(POSITION, "3", 1, bias=0.2)
    assert snapshot_problem(good, 6) is None
    assert "missing field(s): bias_accum, replica" in snapshot_problem(
        {k: v for k, v in good.items() if k not in ("bias_accum", "replica")}, 6)
    assert "not a snapshot record but a JSON list" in snapshot_problem([1, 2], 6)
    assert "POSITION entity_id is 'zero'" in snapshot_problem({**good, "entity_id": "zero"}, 6)
    assert "an AdaGrad accumulator must be > 0" in snapshot_problem({**good, "bias_accum": 0.0}, 6)
    assert "vector has 2 values, expected 0" in snapshot_problem({**good, "vector": [1.0, 2.0]}, 6)


def test_a_good_snapshot_folder_loads(tmp_path) -> None:
    lines = trained_snapshot_lines()
    write_snapshots(tmp_path / "snapshots", lines)
    store = load_snapshots(tmp_path, CFG.dim)
    assert len(store) == len(lines) and store.version == 7


@pytest.mark.parametrize("damage,reason", [
    (lambda lines: lines[:-1] + [lines[-1][: len(lines[-1]) // 2]], "not valid JSON"),  # truncated file
    (lambda lines: lines + [bytes(range(128, 256))], "not valid UTF-8"),  # binary garbage
    (lambda lines: lines + [b"[1, 2, 3]"], "not a snapshot record but a JSON list"),
    (lambda lines: lines + [lines[0].replace(b'"replica":0', b'"replica":null')], "null in field(s): replica"),
    (lambda lines: lines + [lines[0].replace(b'"entity_id"', b'"entity"')], "missing field(s): entity_id"),
])
def test_a_damaged_snapshot_file_is_an_error_naming_file_and_line(tmp_path, damage, reason) -> None:
    lines = damage(trained_snapshot_lines())
    path = write_snapshots(tmp_path / "snapshots", lines)
    with pytest.raises(SnapshotError) as error:
        load_snapshots(tmp_path, CFG.dim)
    assert isinstance(error.value, ValueError)
    assert f"{path} line {len(lines)}:" in str(error.value) and reason in str(error.value)


def test_user_vectors_of_another_dimension_are_refused_up_front(tmp_path) -> None:
    path = write_snapshots(tmp_path / "snapshots", trained_snapshot_lines())
    first_user = next(i for i, line in enumerate(path.read_bytes().splitlines(), 1) if b'"USER"' in line)
    with pytest.raises(SnapshotError, match=rf"{path} line {first_user}: USER vector has 6 values, but the job's "
                                            r"--dim is 16"):
        load_snapshots(tmp_path, 16)


def test_replay_fails_on_a_bad_snapshot_before_the_job_starts(tmp_path) -> None:
    from job.config import JobConfig
    from job.replay import run_replay

    lines = trained_snapshot_lines()
    write_snapshots(tmp_path / "snap" / "snapshots", lines[:3] + [b'{"version": 1, "entity_type": "US'])
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"")
    started = time.monotonic()
    with pytest.raises(SnapshotError, match="line 4: not a snapshot record: not valid JSON"):
        run_replay(events, events, tmp_path / "out", JobConfig(learner=CFG), from_snapshot=tmp_path / "snap")
    assert time.monotonic() - started < 10  # no Flink was started
