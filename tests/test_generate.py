"""The synthetic stream: deterministic, schema-exact, bounded disorder, dirt at its rates, real signal."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import orjson
import pytest
from fastavro.validation import validate

from tools.evaluate import auc, popularity_scores
from tools.generate import GeneratorConfig, Stream, generate, write_stream
from udfs.schemas import field_names, parsed_schema

CONFIG = GeneratorConfig()  # 100k impressions: large enough for rates, fast enough for CI


@pytest.fixture(scope="module")
def stream() -> Stream:
    return generate(CONFIG)


def first_impressions(stream: Stream) -> dict[str, dict]:
    first: dict[str, dict] = {}
    for rec in stream.impressions:
        first.setdefault(rec["impression_id"], rec)
    return first


def label(stream: Stream, window_s: float) -> dict[str, int]:
    """impression_id -> 1 if a click came within [t, t + window] of the impression, else 0."""
    impressions = first_impressions(stream)
    labels = dict.fromkeys(impressions, 0)
    for click in stream.clicks:
        imp = impressions.get(click["impression_id"])
        if imp is not None and 0 <= click["event_time"] - imp["event_time"] <= window_s * 1000:
            labels[click["impression_id"]] = 1
    return labels


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    config = GeneratorConfig(n_impressions=5000, n_users=300, n_items=200)
    a, b = generate(config), generate(config)
    assert a.impressions == b.impressions
    assert a.clicks == b.clicks
    assert a.items == b.items
    assert a.oracle == b.oracle
    c = generate(GeneratorConfig(n_impressions=5000, n_users=300, n_items=200, seed=8))
    assert c.impressions != a.impressions
    assert {r["impression_id"] for r in c.impressions}.isdisjoint(a.oracle)


def test_records_have_exactly_the_schema_fields_and_validate(stream: Stream) -> None:
    kinds = ((stream.impressions, "Impression"), (stream.clicks, "Click"), (stream.items, "Item"))
    for records, name in kinds:
        names = field_names(name)
        assert all(tuple(rec) == names for rec in records), name
        schema = parsed_schema(name)
        for rec in records[:: max(1, len(records) // 500)]:
            assert validate(rec, schema, raise_errors=True)


def test_values_are_plain_python(stream: Stream) -> None:
    for rec in stream.impressions[:2000]:
        assert type(rec["position"]) is int and rec["position"] >= 1
        assert type(rec["event_time"]) is int and rec["event_time"] >= 0
        assert rec["query"] is None or type(rec["query"]) is str
    for rec in stream.clicks:
        assert type(rec["event_time"]) is int
    for rec in stream.items:
        assert type(rec["embedding"]) is list and len(rec["embedding"]) == CONFIG.embedding_dim
        assert all(type(x) is float for x in rec["embedding"])
    assert all(type(p) is float and 0.0 < p < 1.0 for p in stream.oracle.values())


def test_requests_show_k_distinct_items_at_positions_1_to_k(stream: Stream) -> None:
    pages: dict[str, list[dict]] = defaultdict(list)
    for rec in first_impressions(stream).values():
        pages[rec["request_id"]].append(rec)
    k = CONFIG.items_per_request
    assert len(pages) == CONFIG.n_impressions // k
    for recs in pages.values():
        assert sorted(r["position"] for r in recs) == list(range(1, k + 1))
        assert len({r["item_id"] for r in recs}) == k
        assert len({(r["user_id"], r["event_time"], r["query"]) for r in recs}) == 1
    search_share = np.mean([recs[0]["query"] is not None for recs in pages.values()])
    assert abs(search_share - CONFIG.search_fraction) < 0.03


def test_search_candidates_come_mostly_from_the_query_category(stream: Stream) -> None:
    category = {item["item_id"]: item["category"] for item in stream.items}
    searched = [r for r in first_impressions(stream).values() if r["query"] is not None]
    match = np.mean([r["query"].split()[-1] == category[r["item_id"]] for r in searched])
    assert match > 0.6


@pytest.mark.parametrize("kind", ["impressions", "clicks"])
def test_disorder_is_strictly_below_the_bound(stream: Stream, kind: str) -> None:
    times = np.array([rec["event_time"] for rec in getattr(stream, kind)], dtype=np.int64)
    lag = np.maximum.accumulate(times) - times
    assert lag.max() < CONFIG.max_disorder_s * 1000
    assert (lag > 0).mean() > 0.01  # and the files really are out of order


def test_event_time_span_follows_the_request_rate(stream: Stream) -> None:
    times = [rec["event_time"] for rec in stream.impressions]
    span_s = (max(times) - min(times)) / 1000
    expected = CONFIG.n_impressions / CONFIG.items_per_request / CONFIG.requests_per_s
    assert 0.9 * expected < span_s < 1.1 * expected
    assert min(times) == CONFIG.start_ms


def test_duplicate_impressions_repeat_the_record_and_arrive_later(stream: Stream) -> None:
    seen: dict[str, dict] = {}
    duplicates = 0
    for rec in stream.impressions:
        if rec["impression_id"] in seen:
            duplicates += 1
            assert rec == seen[rec["impression_id"]]
        else:
            seen[rec["impression_id"]] = rec
    assert len(seen) == CONFIG.n_impressions
    rate = duplicates / CONFIG.n_impressions
    assert 0.5 * CONFIG.duplicate_impression_rate < rate < 1.5 * CONFIG.duplicate_impression_rate


def test_click_dirt_at_roughly_the_configured_rates(stream: Stream) -> None:
    impressions = first_impressions(stream)
    window_ms = CONFIG.window_s * 1000
    per_impression = Counter(c["impression_id"] for c in stream.clicks)
    orphans = sum(n for i, n in per_impression.items() if i not in impressions)
    repeats = sum(n - 1 for i, n in per_impression.items() if i in impressions)
    late = 0
    for click in stream.clicks:
        imp = impressions.get(click["impression_id"])
        if imp is None:
            continue
        assert click["user_id"] == imp["user_id"] and click["item_id"] == imp["item_id"]
        assert click["event_time"] >= imp["event_time"]
        late += click["event_time"] - imp["event_time"] > window_ms
    genuine = len(stream.clicks) - orphans - repeats - late
    ctr = genuine / CONFIG.n_impressions
    assert 0.03 < ctr < 0.08
    for observed, rate in ((orphans, CONFIG.orphan_click_rate), (repeats, CONFIG.duplicate_click_rate)):
        assert 0.5 * rate < observed / genuine < 1.5 * rate
    # Late clicks: the injected ones plus the lognormal tail beyond the window (~0.1% of clicks).
    assert 0.5 * CONFIG.late_click_rate < late / genuine < 1.5 * CONFIG.late_click_rate + 0.005
    assert (
        sum(
            1
            for c in stream.clicks
            if c["impression_id"] in impressions
            and c["event_time"] - impressions[c["impression_id"]]["event_time"] > 1.4 * window_ms
        )
        > 0
    )


def test_true_ctr_and_position_bias(stream: Stream) -> None:
    impressions = first_impressions(stream)
    p = np.array(list(stream.oracle.values()))
    assert abs(p.mean() - 0.05) < 0.005
    labels = label(stream, CONFIG.window_s)
    by_pos = defaultdict(list)
    for imp_id, rec in impressions.items():
        by_pos[rec["position"]].append(labels[imp_id])
    ctr = [np.mean(by_pos[pos]) for pos in range(1, CONFIG.items_per_request + 1)]
    assert ctr[0] > 2 * ctr[-1]


def test_oracle_clearly_beats_item_popularity(stream: Stream) -> None:
    labels = label(stream, CONFIG.window_s)
    impressions = first_impressions(stream)
    examples = [
        {"item_id": rec["item_id"], "impression_time": rec["event_time"], "label": labels[imp_id]}
        for imp_id, rec in impressions.items()
    ]
    y = [e["label"] for e in examples]
    oracle_auc = auc(y, [stream.oracle[imp_id] for imp_id in impressions])
    popularity_auc = auc(y, popularity_scores(examples))
    assert oracle_auc > 0.8
    assert oracle_auc > popularity_auc + 0.1


def test_catalog_embeddings_carry_category_signal(stream: Stream) -> None:
    emb = np.array([item["embedding"] for item in stream.items])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cats = np.array([item["category"] for item in stream.items])
    cos = emb @ emb.T
    same = cats[:, None] == cats[None, :]
    np.fill_diagonal(same, False)
    different = cats[:, None] != cats[None, :]
    assert cos[same].mean() > cos[different].mean() + 0.2


def test_write_stream_round_trips(stream: Stream, tmp_path) -> None:
    small = Stream(
        stream.impressions[:500],
        stream.clicks[:50],
        stream.items[:20],
        dict(list(stream.oracle.items())[:500]),
    )
    paths = write_stream(small, tmp_path / "out")
    assert set(paths) == {"impressions", "clicks", "items", "oracle"}
    read = {
        name: [orjson.loads(line) for line in path.read_bytes().splitlines()] for name, path in paths.items()
    }
    assert read["impressions"] == small.impressions
    assert read["clicks"] == small.clicks
    assert read["items"] == small.items
    assert {r["impression_id"]: r["p"] for r in read["oracle"]} == small.oracle
    assert all(tuple(r) == ("impression_id", "p") for r in read["oracle"])


def test_rejects_a_catalog_smaller_than_a_page() -> None:
    with pytest.raises(ValueError):
        generate(GeneratorConfig(n_items=5, items_per_request=10))


HEAVY = GeneratorConfig(n_impressions=50_000, heavy_users=3)


def user_shares(stream: Stream) -> dict[str, float]:
    impressions = first_impressions(stream)
    counts = Counter(rec["user_id"] for rec in impressions.values())
    return {user: n / len(impressions) for user, n in counts.items()}


def test_heavy_users_each_make_their_share_and_the_rest_keeps_its_zipf_shape() -> None:
    heavy = generate(HEAVY)
    plain = generate(GeneratorConfig(n_impressions=HEAVY.n_impressions))
    heavy_ids = ["u000000", "u000001", "u000002"]
    assert heavy.stats["heavy_user_ids"] == heavy_ids
    assert plain.stats["heavy_user_ids"] == []
    shares, plain_shares = user_shares(heavy), user_shares(plain)
    for user in heavy_ids:
        assert 0.08 < shares[user] < 0.12, user  # 5000 requests: sd of a 10% share is 0.4 points
        assert plain_shares.get(user, 0.0) < 0.05, user  # without the option they are ordinary users
    # The other users keep their (Zipf) activity, renormalized to the 70% left to them.
    rest = {u: s / (1 - 0.3) for u, s in shares.items() if u not in heavy_ids}
    top_plain = sorted(plain_shares, key=plain_shares.get, reverse=True)[:3]
    assert sorted(rest, key=rest.get, reverse=True)[:3] == top_plain
    for user in top_plain:
        assert abs(rest[user] - plain_shares[user]) < 0.02


def test_heavy_users_change_who_sees_a_request_and_nothing_else_before_it() -> None:
    # The user of a request comes from one uniform draw per request in both modes, so every random
    # number drawn before the users' preferences matter (request times, search or not) is the same,
    # and a stream without heavy users draws exactly what it drew before the option existed.
    heavy, plain = generate(HEAVY), generate(GeneratorConfig(n_impressions=HEAVY.n_impressions))

    def skeleton(stream: Stream) -> dict[str, tuple]:
        return {i: (r["request_id"], r["position"], r["event_time"], r["query"] is None)
                for i, r in first_impressions(stream).items()}

    assert skeleton(heavy) == skeleton(plain)
    assert {r["impression_id"]: r["user_id"] for r in heavy.impressions} != {
        r["impression_id"]: r["user_id"] for r in plain.impressions}


@pytest.mark.parametrize("heavy_users, share", [(10, 0.1), (4, 0.3), (2, 0.0), (-1, 0.1), (300, 0.001)])
def test_rejects_impossible_heavy_users(heavy_users: int, share: float) -> None:
    with pytest.raises(ValueError):
        generate(GeneratorConfig(n_impressions=1000, n_users=300, n_items=200, heavy_users=heavy_users,
                                 heavy_user_share=share))
