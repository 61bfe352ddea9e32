"""Offline metrics over labeled examples: how good the job's progressive scores were.

Why: the demo summary and the tests need one trusted implementation of AUC, log loss, normalized
entropy and calibration, plus the two reference points a learned ranker must be judged against:
a progressive item-popularity baseline (what you get without personalisation) and, on synthetic
data, the oracle (the true click probabilities the generator used).

Examples are dicts with the fields of `schemas/LabeledExample.avsc` (`label`, `score`, `item_id`,
`impression_time`, ...). Everything is numpy-vectorized so a million examples take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Probabilities are clipped to [EPS, 1 - EPS] before taking logs (as the job's streaming metrics do), so
# one confident mistake costs a large but finite loss.
from udfs.metrics_math import EPS, normalized_entropy_of

Values = Sequence[float] | np.ndarray
Example = Mapping[str, Any]


def _arrays(labels: Values, scores: Values) -> tuple[np.ndarray, ...]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {s.size}")
    return y, s


def auc(labels: Values, scores: Values) -> float:
    """Exact ROC AUC: P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed from average ranks (Mann-Whitney U), so it is exact with ties. NaN when either class
    is missing, because the AUC is then undefined.
    """
    y, s = _arrays(labels, scores)
    pos = y > 0
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    avg_rank = ends - (counts - 1) / 2.0
    rank_sum = float(avg_rank[inverse][pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def logloss(labels: Values, scores: Values) -> float:
    """Mean binary cross-entropy (natural log) of probabilities clipped to [EPS, 1 - EPS]."""
    y, s = _arrays(labels, scores)
    if y.size == 0:
        return math.nan
    p = np.clip(s, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def normalized_entropy(labels: Values, scores: Values) -> float:
    """Log loss divided by the entropy of the base rate (the loss of always predicting the CTR).

    Below 1 means the scores carry information beyond the average; NaN if all labels are equal.
    """
    y, _ = _arrays(labels, scores)
    if y.size == 0:
        return math.nan
    return normalized_entropy_of(logloss(y, scores), float(y.mean()))


def calibration(labels: Values, scores: Values) -> float:
    """Mean predicted probability over observed click rate (1 is calibrated; NaN without positives)."""
    y, s = _arrays(labels, scores)
    if y.size == 0 or y.sum() == 0:
        return math.nan
    return float(s.mean() / y.mean())


def popularity_scores(examples: Sequence[Example], prior_strength: float = 10.0) -> list[float]:
    """Progressive item-popularity baseline, one score per example, aligned with the input order.

    Examples are replayed in `impression_time` order (ties keep input order). Each is scored with
    its item's smoothed CTR from the examples *before* it, then counted, so no example sees its own
    label: score = (item_clicks + k * m) / (item_impressions + k), where m is the global CTR so far
    (Laplace-smoothed, so 1/2 before any example) and k = `prior_strength`.
    """
    n = len(examples)
    if n == 0:
        return []
    times = np.fromiter((int(e["impression_time"]) for e in examples), dtype=np.int64, count=n)
    labels = np.fromiter((float(e["label"]) for e in examples), dtype=np.float64, count=n)
    _, item_code = np.unique(np.array([str(e["item_id"]) for e in examples]), return_inverse=True)
    order = np.argsort(times, kind="stable")
    y = labels[order]
    items = item_code[order]
    # Global counts before each example.
    seen = np.arange(n, dtype=np.float64)
    clicks = np.cumsum(y) - y
    global_ctr = (clicks + 1.0) / (seen + 2.0)
    # Per-item counts before each example: group by item (stable keeps time order inside a group).
    by_item = np.argsort(items, kind="stable")
    yi = y[by_item]
    group_start = np.ones(n, dtype=bool)
    group_start[1:] = items[by_item][1:] != items[by_item][:-1]
    start_idx = np.maximum.accumulate(np.where(group_start, np.arange(n), 0))
    cum = np.cumsum(yi) - yi  # clicks before, over the whole sorted array
    item_seen = np.empty(n)
    item_clicks = np.empty(n)
    item_seen[by_item] = np.arange(n) - start_idx
    item_clicks[by_item] = cum - cum[start_idx]
    score_sorted = (item_clicks + prior_strength * global_ctr) / (item_seen + prior_strength)
    scores = np.empty(n)
    scores[order] = score_sorted
    return scores.tolist()


def _metrics(prefix: str, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        f"{prefix}_auc": auc(labels, scores),
        f"{prefix}_ne": normalized_entropy(labels, scores),
        f"{prefix}_logloss": logloss(labels, scores),
        f"{prefix}_calibration": calibration(labels, scores),
    }


def summarize(examples: Sequence[Example], oracle: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Counts, CTR and the model's metrics next to the popularity baseline's (and the oracle's).

    The model is scored by each example's `score`. Oracle metrics (when `oracle`, impression_id ->
    true click probability, is given) use the examples the oracle knows; `oracle_coverage` says
    what share that was.
    """
    n = len(examples)
    labels = np.fromiter((float(e["label"]) for e in examples), dtype=np.float64, count=n)
    summary: dict[str, Any] = {
        "n_examples": n,
        "n_positives": int(labels.sum()),
        "ctr": float(labels.mean()) if n else math.nan,
        "n_users": len({e["user_id"] for e in examples if "user_id" in e}),
        "n_items": len({e["item_id"] for e in examples}),
    }
    scores = np.fromiter((float(e["score"]) for e in examples), dtype=np.float64, count=n)
    summary.update(_metrics("model", labels, scores))
    summary.update(_metrics("popularity", labels, np.asarray(popularity_scores(examples))))
    if oracle is not None:
        known = [i for i, e in enumerate(examples) if e["impression_id"] in oracle]
        o_labels = labels[known]
        o_scores = np.array([oracle[examples[i]["impression_id"]] for i in known], dtype=np.float64)
        summary["oracle_coverage"] = len(known) / n if n else math.nan
        summary.update(_metrics("oracle", o_labels, o_scores))
    return summary
