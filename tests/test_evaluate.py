"""Offline metrics: exact AUC, log loss, NE, calibration, the popularity baseline and the summary."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tools.evaluate import auc, calibration, logloss, normalized_entropy, popularity_scores, summarize


def brute_force_auc(labels: list[int], scores: list[float]) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(8))
def test_auc_matches_pairwise_count_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 300)
    labels = [int(rng.random() < 0.3) for _ in range(n)]
    labels[0], labels[1] = 0, 1
    scores = [rng.randint(0, 6) / 6 for _ in range(n)]  # few distinct values: many ties
    assert auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_auc_edge_cases() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))
    assert math.isnan(auc([], []))
    with pytest.raises(ValueError):
        auc([0, 1], [0.5])


def test_logloss_value_and_clipping() -> None:
    assert logloss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    worst = logloss([1, 0], [0.0, 1.0])
    assert math.isfinite(worst) and worst > 10


def test_ne_is_one_for_the_base_rate_predictor_and_below_for_signal() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.3, 20_000)
    labels = (rng.random(p.size) < p).astype(int)
    base = np.full(p.size, labels.mean())
    assert normalized_entropy(labels, base) == pytest.approx(1.0, abs=1e-12)
    assert normalized_entropy(labels, p) < 0.97
    assert normalized_entropy(labels, np.full(p.size, 0.5)) > 1.5
    assert math.isnan(normalized_entropy([0, 0, 0], [0.1, 0.1, 0.1]))


def test_calibration_is_predicted_over_observed() -> None:
    assert calibration([1, 0, 0, 0], [0.25] * 4) == pytest.approx(1.0)
    assert calibration([1, 0, 0, 0], [0.5] * 4) == pytest.approx(2.0)
    assert math.isnan(calibration([0, 0], [0.1, 0.2]))


def example(item: str, t: int, y: int, score: float = 0.5, imp: str | None = None) -> dict:
    return {
        "impression_id": imp or f"{item}-{t}",
        "user_id": "u",
        "item_id": item,
        "impression_time": t,
        "label": y,
        "score": score,
    }


def test_popularity_scores_are_progressive_and_aligned() -> None:
    k = 10.0
    # Input deliberately not in time order.
    examples = [example("a", 3, 0), example("a", 1, 1), example("b", 2, 0), example("a", 4, 1)]
    scores = popularity_scores(examples, prior_strength=k)
    # Replay by time: (a,1,1) (b,2,0) (a,3,0) (a,4,1).
    g = [(0 + 1) / (0 + 2), (1 + 1) / (1 + 2), (1 + 1) / (2 + 2), (1 + 1) / (3 + 2)]
    expected_by_time = [
        (0 + k * g[0]) / (0 + k),  # a: nothing seen
        (0 + k * g[1]) / (0 + k),  # b: nothing seen
        (1 + k * g[2]) / (1 + k),  # a: one click in one impression
        (1 + k * g[3]) / (2 + k),  # a: one click in two impressions
    ]
    assert scores == pytest.approx(
        [expected_by_time[2], expected_by_time[0], expected_by_time[1], expected_by_time[3]]
    )
    assert popularity_scores([]) == []


def test_popularity_never_sees_its_own_label() -> None:
    rng = random.Random(5)
    examples = [example(f"i{rng.randint(0, 9)}", t, int(rng.random() < 0.2)) for t in range(400)]
    base = popularity_scores(examples)
    for i in (0, 17, 250, 399):
        flipped = [dict(e) for e in examples]
        flipped[i]["label"] = 1 - flipped[i]["label"]
        after = popularity_scores(flipped)
        assert after[i] == pytest.approx(base[i])
        assert after[:i] == pytest.approx(base[:i])  # earlier ones can't see it either


def test_popularity_ranks_items_by_their_ctr() -> None:
    rng = random.Random(9)
    ctr = {"hot": 0.3, "warm": 0.1, "cold": 0.01}
    examples = [example(item, t, int(rng.random() < ctr[item])) for t in range(3000) for item in ctr]
    scores = popularity_scores(examples)
    last = {e["item_id"]: s for e, s in zip(examples, scores, strict=True)}
    assert last["hot"] > last["warm"] > last["cold"]
    assert last["hot"] == pytest.approx(0.3, abs=0.05)


def test_summarize_reports_model_popularity_and_oracle() -> None:
    rng = np.random.default_rng(11)
    examples, oracle = [], {}
    for t in range(5000):
        item = f"i{int(rng.integers(0, 50))}"
        p = float(rng.uniform(0.01, 0.4))
        y = int(rng.random() < p)
        ex = example(item, t, y, score=p, imp=f"imp{t}")
        examples.append(ex)
        if t % 2 == 0:
            oracle[ex["impression_id"]] = p
    s = summarize(examples, oracle)
    labels = [e["label"] for e in examples]
    assert s["n_examples"] == 5000
    assert s["n_positives"] == sum(labels)
    assert s["ctr"] == pytest.approx(sum(labels) / 5000)
    assert s["n_items"] == len({e["item_id"] for e in examples})
    assert s["model_auc"] == pytest.approx(auc(labels, [e["score"] for e in examples]))
    assert s["model_ne"] < 1.0
    assert s["popularity_auc"] == pytest.approx(auc(labels, popularity_scores(examples)))
    assert s["model_auc"] > s["popularity_auc"]
    assert s["oracle_coverage"] == pytest.approx(0.5)
    half = examples[::2]
    assert s["oracle_auc"] == pytest.approx(auc([e["label"] for e in half], [e["score"] for e in half]))
    assert "oracle_auc" not in summarize(examples)
