"""The model reads text: query-title similarity, the learned title map, their state, snapshots and serving.

A tiny deterministic encoder (hashing) stands in for the pretrained model, so these tests need no
model weights; tests/test_text_encoder.py runs the real one.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from dict_state import copy_state, new_state

from job.catalog import catalog_from_file
from tools.generate import GeneratorConfig, generate
from udfs import batch_learner
from udfs.batch_learner import END_OF_INPUT, TEXT_KEY, TITLE_MAP_KEY, BatchJoinLearner
from udfs.join_logic import ImpressionClickJoin
from udfs.learner_kernel import ITEM_BIAS, TEXT_SEARCH, TEXT_WEIGHT
from udfs.learner_math import LearnerConfig, sigmoid
from udfs.model_store import SEARCH_BIAS, TEXT, TEXT_WEIGHT_ID, TITLE_MAP, ModelStore, snapshot_problem
from udfs.records import click_event, impression_event
from udfs.text_encoder import HashingTextEncoder
from udfs.text_features import CODE_DIM, TextFeatures, TitleMap, code_projection
from udfs.wire import WireDecoder, encode

GEN = GeneratorConfig(n_impressions=6000, n_users=150, n_items=120, seed=11, window_s=60.0, max_disorder_s=2.0,
                      click_delay_median_s=8.0, requests_per_s=2.0, search_fraction=0.6, query_relevance=2.0,
                      search_in_category_fraction=0.5, new_item_share=0.3)
WINDOW_MS, RETENTION_MS, DISORDER_MS = 60_000, 600_000, 3_000
CONFIG = LearnerConfig(dim=8)


class CountingEncoder(HashingTextEncoder):
    def __init__(self) -> None:
        super().__init__(dim=64)
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts += list(texts)
        return super().encode(texts)


# --- the encoder interface and the features --------------------------------------------------------

def test_hashing_encoder_is_deterministic_unit_and_token_based() -> None:
    encoder = HashingTextEncoder()
    rows = encoder.encode(["Red running shoes", "running shoes", "运动鞋", "运动鞋 轻", "", "kitchen knife"])
    assert rows.dtype == np.float32 and rows.shape == (6, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(rows[[0, 1, 2, 3, 5]], axis=1), 1.0, rtol=1e-6)
    assert not rows[4].any()  # an empty text is a zero row
    np.testing.assert_array_equal(rows, HashingTextEncoder().encode(
        ["Red running shoes", "running shoes", "运动鞋", "运动鞋 轻", "", "kitchen knife"]))
    sims = rows @ rows.T
    assert sims[0, 1] > 0.5 and sims[2, 3] > 0.5  # shared words; shared Chinese characters
    assert abs(sims[0, 5]) < 0.3


def test_similarities_are_cosines_nan_without_query_zero_without_title() -> None:
    encoder = CountingEncoder()
    text = TextFeatures(encoder, {"a": "red running shoes", "b": "kitchen knife"})
    sims = text.similarities(["running shoes", None, "running shoes", "knife", ""], ["a", "a", "b", "c", "b"])
    expected = float(encoder.encode(["running shoes"])[0] @ encoder.encode(["red running shoes"])[0])
    assert sims[0] == pytest.approx(expected, abs=1e-6) and sims[0] > 0.5
    assert math.isnan(sims[1]) and math.isnan(sims[4])
    assert sims[2] == pytest.approx(0.0, abs=1e-6) and sims[3] == 0.0  # "c" has no title
    encoder.texts.clear()
    text.similarities(["running shoes"] * 3, ["a", "b", "a"])
    assert encoder.texts == []  # queries and titles are encoded once
    text.add_titles({"a": "chef knife"})  # a changed title is encoded again
    assert text.similarities(["knife"], ["a"])[0] > 0.3
    assert encoder.texts == ["chef knife"]  # the query "knife" was cached above


def test_title_codes_keep_cosines_roughly() -> None:
    projection = code_projection(512)
    np.testing.assert_allclose(projection.T @ projection, np.eye(CODE_DIM), atol=1e-10)
    np.testing.assert_array_equal(projection, code_projection(512))  # the same in every process


def test_title_map_learns_a_linear_map_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(CONFIG.dim + 1, CODE_DIM))
    title_map = TitleMap(CONFIG.dim, l2=0.01, min_items=50)
    assert not title_map.ready
    for _ in range(5):
        codes = rng.normal(size=(100, CODE_DIM))
        title_map.fit(codes, codes @ truth.T + rng.normal(0, 0.01, (100, CONFIG.dim + 1)))
    assert title_map.ready and title_map.items_fitted == 500
    code = rng.normal(size=CODE_DIM)
    vector, bias = title_map.predict(code)
    np.testing.assert_allclose(vector, truth[:-1] @ code, atol=0.05)
    assert bias == pytest.approx(truth[-1] @ code, abs=0.05)
    copy = TitleMap(CONFIG.dim)
    copy.load_array(title_map.to_array())
    np.testing.assert_array_equal(copy.to_array(), title_map.to_array())
    with pytest.raises(ValueError):
        title_map.fit(np.zeros((3, CODE_DIM)), np.zeros((3, CONFIG.dim)))
    with pytest.raises(ValueError):
        TitleMap(CONFIG.dim + 1).load_array(title_map.to_array())


# --- the learner -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream():
    return generate(GEN)


@pytest.fixture(scope="module")
def rows(stream) -> list:
    events = [impression_event(r) for r in stream.impressions] + [click_event(r) for r in stream.clicks]
    events.sort(key=lambda e: e[-1])
    out, newest = [], -(2**63)
    for event in events:
        out.append([newest - DISORDER_MS - 1 if newest > -(2**63) else -(2**63) + 1, event])
        newest = max(newest, event[-1])
    return out


def titles(stream) -> dict[str, str]:
    return {item["item_id"]: item["title"] for item in stream.items}


def run(stream, rows, restore_every: int | None = None, text: bool = True):
    state = new_state()
    features = TextFeatures(HashingTextEncoder(), titles(stream))

    def learner() -> BatchJoinLearner:
        return BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state,
                                text=features if text else None)

    current = learner()
    examples, snapshots = [], []
    for n, start in enumerate(range(0, len(rows), 97), 1):
        examples += current.process_batch(rows[start : start + 97], now_ms=0).examples
        if n % 10 == 0:
            snapshots += current.snapshot(1_800_000_000_000 + n)
        if restore_every and n % restore_every == 0:
            current = learner()
    examples += current.advance_to(END_OF_INPUT).examples
    snapshots += current.snapshot(1_900_000_000_000)
    return examples, snapshots, state, current


@pytest.fixture(scope="module")
def learned(stream, rows):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_learner, "FIT_EVERY", 300)
        yield run(stream, rows)


def test_the_query_title_weight_learns_relevance(learned) -> None:
    _, snapshots, _, learner = learned
    weight = learner.model.text[TEXT_WEIGHT]
    assert weight[2] > 1000  # learned from every search example
    assert weight[0] > 0.3  # in this stream a search click is likelier when the title matches the query
    newest = {(r["entity_type"], r["entity_id"]): r for r in snapshots}
    assert newest[(TEXT, TEXT_WEIGHT_ID)]["bias"] == weight[0]
    assert newest[(TEXT, SEARCH_BIAS)]["bias"] == learner.model.text[TEXT_SEARCH, 0]
    assert newest[(TEXT, TITLE_MAP)]["updates"] == learner.title_map.items_fitted >= learner.title_map.min_items
    # as published (the learner's records hold numpy arrays, which the encoders write as lists)
    published = [WireDecoder("ModelSnapshot").decode(encode("ModelSnapshot", r)) for r in snapshots]
    assert all(snapshot_problem(r, CONFIG.dim) is None for r in published)


def test_search_scores_use_the_query(learned, stream) -> None:
    """Two searches that differ only in the query: the one naming the item's words scores higher."""
    _, _, _, learner = learned
    item = stream.items[0]
    queries = [item["title"], "zzz qqq"]
    op = (batch_learner.OP_SCORE, learner._user_row("u-new"), learner._item_row(item["item_id"]),
          learner._position_row(1), 0)
    sims = learner.text.similarities(queries, [item["item_id"]] * 2)
    scores = learner.model.run(np.array([op, op]), sims)
    assert sims[0] > 0.9 and sims[1] == 0.0
    assert scores[0] > scores[1]


def test_launched_items_start_from_their_title(learned, stream) -> None:
    _, _, state, learner = learned
    launches = stream.stats["launches"]
    assert launches
    # An item first seen now starts from the map's prediction for its title.
    learner.text.add_titles({"sku-new": stream.items[0]["title"]})
    row = learner.model.items[learner._item_row("sku-new")]
    vector, bias = learner.title_map.predict(learner.text.title_code("sku-new"))
    np.testing.assert_allclose(row[: CONFIG.dim], vector)
    assert row[ITEM_BIAS] == pytest.approx(bias)
    assert np.linalg.norm(vector) > 0.01
    # Both text parameters are in state.
    assert TEXT_KEY in state.biases.data and TITLE_MAP_KEY in state.biases.data


def test_a_search_teaches_its_user_what_the_query_asks_for(learned, stream) -> None:
    """A search moves its user's vector towards the query's place in item space, once per request (not
    once per impression): the same batch through two copies of the learned state, hints on and off."""
    _, _, state, learner = learned
    query = stream.items[0]["title"]
    query_vector = learner.title_map.predict_vectors(learner.text.query_codes([query]))[0]
    later = max(r["event_time"] for r in stream.impressions) + 1
    shown = [[later - 1, impression_event({"impression_id": f"imp-hint-{n}", "request_id": "req-hint",
                                           "user_id": "u-search", "item_id": stream.items[n]["item_id"],
                                           "query": query, "position": n + 1, "event_time": later})]
             for n in range(5)]
    users = {}
    for weight in (1.0, 0.0):
        copy = copy_state(state)
        config = replace(CONFIG, query_hint_weight=weight)
        twin = BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), config, 30_000, 0, copy,
                                text=learner.text)
        ran = []
        run_ops = twin.model.run
        twin.model.run = lambda ops, *args, ran=ran, run_ops=run_ops: ran.append(ops.copy()) or run_ops(ops, *args)
        twin.process_batch(shown, now_ms=0)
        assert list(ran[0][:, 0]).count(batch_learner.OP_QUERY_HINT) == (1 if weight else 0)
        users[weight] = twin.model.users[twin.model.user_rows["u-search"]].copy()
        assert "u-search" in copy.users.data
    dim = CONFIG.dim
    assert (users[1.0][:dim] - users[0.0][:dim]) @ query_vector > 0
    assert users[1.0][2 * dim] == users[0.0][2 * dim] == 5  # the hint is not counted as an example


def test_a_restored_text_learner_continues_exactly(stream, rows) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_learner, "FIT_EVERY", 300)
        straight, _, straight_state, _ = run(stream, rows)
        restored, _, restored_state, _ = run(stream, rows, restore_every=7)
    assert [e["score"] for e in straight] == pytest.approx([e["score"] for e in restored], abs=1e-12)
    assert straight_state.biases.data == restored_state.biases.data


def test_text_improves_search_scores_over_no_text(stream, rows, learned) -> None:
    from tools.evaluate import auc

    with_text = learned[0]
    without, _, _, _ = run(stream, rows, text=False)
    searches = lambda examples: [e for e in examples if e["query"]]  # noqa: E731
    a = auc([e["label"] for e in searches(with_text)], [e["score"] for e in searches(with_text)])
    b = auc([e["label"] for e in searches(without)], [e["score"] for e in searches(without)])
    assert a > b + 0.01, (a, b)


# --- serving and the wire ------------------------------------------------------------------------------

def test_serving_scores_searches_with_the_query_and_unseen_items_from_their_title(learned, stream) -> None:
    _, snapshots, _, learner = learned
    store = ModelStore(TextFeatures(HashingTextEncoder(), titles(stream))).apply_all(snapshots)
    user = next(r["entity_id"] for r in snapshots if r["entity_type"] == "USER")
    item = stream.items[0]
    record = store.records[("ITEM", item["item_id"])]
    z = (float(np.dot(store.records[("USER", user)]["vector"], record["vector"])) + record["bias"]
         + store.records[("GLOBAL", "global")]["bias"])
    assert store.score(user, item["item_id"]) == pytest.approx(sigmoid(z))
    sim = float(store.text.similarities([item["title"]], [item["item_id"]])[0])
    text_z = store.records[(TEXT, TEXT_WEIGHT_ID)]["bias"] * sim + store.records[(TEXT, SEARCH_BIAS)]["bias"]
    assert store.score(user, item["item_id"], query=item["title"]) == pytest.approx(sigmoid(z + text_z))
    # An item no impression ever showed is scored from its title; without text it is unknown.
    store.text.add_titles({"sku-unseen": item["title"]})
    assert store.score(user, "sku-unseen") is not None
    assert ModelStore().apply_all(snapshots).score(user, "sku-unseen") is None
    ranked = store.rank(user, ["sku-unseen", item["item_id"], "nothing"], k=3, query=item["title"])
    assert ranked[-1][0] == "nothing" and math.isnan(ranked[-1][1])


def test_text_records_travel_the_wire_and_bad_ones_are_refused(learned) -> None:
    _, snapshots, _, _ = learned
    decoder = WireDecoder("ModelSnapshot")
    text_records = [r for r in snapshots if r["entity_type"] == TEXT][-3:]
    published = [decoder.decode(encode("ModelSnapshot", record)) for record in text_records]
    for record, decoded in zip(text_records, published, strict=True):
        assert decoded["entity_id"] == record["entity_id"]
        assert decoded["vector"] == record["vector"].astype(np.float32).tolist()  # Avro floats
    text_records = published
    title_map = next(r for r in text_records if r["entity_id"] == TITLE_MAP)
    assert "not one of" in snapshot_problem(dict(title_map, entity_id="other"), CONFIG.dim)
    assert "--dim is 16" in snapshot_problem(title_map, 16)
    weight = next(r for r in text_records if r["entity_id"] == TEXT_WEIGHT_ID)
    assert "not finite" in snapshot_problem(dict(weight, bias=math.inf), CONFIG.dim)


def test_the_catalog_reads_titles(tmp_path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "title": "运动鞋", "category": "shoes", "embedding": null}\n'
                    '{"item_id": "b", "title": "tea pot", "category": "kitchen", "embedding": [1.0, 2.0]}\n')
    catalog, rejects = catalog_from_file(path)
    assert rejects == [] and catalog.titles == {"a": "运动鞋", "b": "tea pot"}
    assert catalog.embeddings == {"b": [1.0, 2.0]}


def test_the_generator_launches_items_mid_stream() -> None:
    config = GeneratorConfig(n_impressions=20_000, new_item_share=0.25)
    stream = generate(config)
    launches = stream.stats["launches"]
    assert len(launches) == 250
    shown = {}
    for impression in stream.impressions:
        assert impression["event_time"] >= launches.get(impression["item_id"], 0)
        shown.setdefault(impression["item_id"], impression["event_time"])
    assert sum(1 for item_id in launches if item_id in shown) > 200  # launched items do get shown
    start, end = stream.impressions[0]["event_time"], stream.impressions[-1]["event_time"]
    assert all(start < t < end for t in launches.values())
    assert generate(GeneratorConfig(n_impressions=2_000)).stats["launches"] == {}


def test_items_published_while_running_reach_the_learner_and_its_state(stream, rows) -> None:
    from udfs.records import CATALOG_ITEM, NO_WATERMARK

    state = new_state()
    make = lambda: BatchJoinLearner(ImpressionClickJoin(WINDOW_MS, RETENTION_MS), CONFIG, 30_000, 0, state,  # noqa: E731
                                    text=TextFeatures(HashingTextEncoder(), {}))
    learner = make()
    learner.process_batch(rows[:200], now_ms=0)
    assert not learner.text.has_title("sku-launched")
    learner.process_batch([[NO_WATERMARK, [CATALOG_ITEM, "sku-launched", "red running shoes", [1.0, 2.0]]]], 0)
    assert learner.text.titles["sku-launched"] == "red running shoes"
    assert learner.init_side.embeddings["sku-launched"] == [1.0, 2.0]
    restored = make()  # after a failure: the title comes back from state, not from the job's start-up catalog
    assert restored.text.titles["sku-launched"] == "red running shoes"
    assert restored.init_side.embeddings["sku-launched"] == [1.0, 2.0]
