"""The stability guard: a new model version reaches serving only if it looks sound.

A model that updates every few seconds can also go wrong within seconds: a burst of corrupted
feedback (a bot clicking everything, a tracking bug), or a numeric blow-up. Before the learner
publishes a snapshot version it asks the guard, which checks

- the parameters about to be published: every value finite, every vector's norm at most `max_norm`;
- the model's progressive quality (each example scored before it was learned, as the metrics do)
  over the examples decided since the last judged period, per class: the mean logloss of the
  positives and that of the negatives must each stay within `logloss_margin` (relative) of their
  baselines, and the AUC, when the period has `min_auc_examples` of each class, within `auc_margin`.
  Per class, because which examples a period decides depends on the watermark (a positive is
  decided at its click, a negative a window after its impression): a period of mostly negatives or
  mostly positives says nothing bad about the model;
- the feedback itself: clicks per impression within `ctr_factor` of the baseline, judged while
  impressions arrive (at least a quarter as many as the period decided). A burst of corrupted labels
  is held while it lasts, even once the model has adapted to it; after it, the negatives' logloss
  holds the model until it has recovered. Arrivals count by event time: an impression or click at
  most ARRIVAL_AHEAD_MS ahead of the join watermark counts at once; one further ahead waits in its
  event-time bucket of ARRIVAL_AHEAD_MS and counts as the watermark passes through the bucket (pro
  rata). The ratio must not depend on how the two inputs are read: a replay reads its small clicks
  file far ahead of its impressions, and counted as they arrived, its later periods had no clicks at
  all (every version after the first was held). Live traffic arrives near the watermark, so a
  burst counts as it arrives.

A period is judged once it has `min_examples` examples, `min_class_examples` of each class among
them; until then the last verdict stands. The baselines are exponential averages of the periods
that passed (weight `smoothing`); they move slowly towards periods that failed (`drift`,
`ctr_drift`), so a lasting change of the traffic is accepted after some periods instead of holding
the model for ever (a logloss 3x the baseline after about 35 judged periods, a click rate 4x the
baseline's after about 50).

A held version is not published (its entities stay marked as changed, so the next published version
carries them); examples and metrics flow as before; serving keeps the last good version. The
learner feeds the guard only after a cold start's first window (which can decide positives alone).
The guard's state is a small dict kept in the learner's `meta` (Flink state), so a restore keeps the
baselines, the open period, the verdict and the count of held versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from udfs.metrics_math import EPS, BinnedAUC

# A coarse histogram: the period's AUC is a guard rail, not a report, and it is stored every call.
_AUC_BINS = 240
# How far ahead of the join watermark an arrival may be and still count at once; the width of the
# event-time buckets further arrivals wait in (a replay's clicks: at most one per minute of its span).
ARRIVAL_AHEAD_MS = 60_000


@dataclass(frozen=True)
class GuardConfig:
    logloss_margin: float = 0.5  # hold if a class's logloss > its baseline * (1 + margin); 0: guard off
    auc_margin: float = 0.1  # hold if the period's AUC < baseline AUC - margin
    ctr_factor: float = 2.0  # hold if arriving clicks per impression are this many times off the baseline
    min_examples: int = 2000  # examples a period needs before it is judged
    min_class_examples: int = 20  # ... of which at least this many positives and negatives
    min_auc_examples: int = 100  # positives and negatives each a period needs before its AUC is judged
    max_norm: float = 100.0  # hold if a published vector is longer than this
    smoothing: float = 0.3  # weight of a passing period in the baselines
    drift: float = 0.02  # weight of a failing period in the logloss and AUC baselines
    ctr_drift: float = 0.005  # weight of a failing period in the click-rate baseline

    @property
    def enabled(self) -> bool:
        return self.logloss_margin > 0


def _new_period() -> dict[str, Any]:
    return {"positives": 0, "positive_loss": 0.0, "negatives": 0, "negative_loss": 0.0,
            "auc": BinnedAUC(bins=_AUC_BINS), "impressions": 0, "clicks": 0}


class ModelGuard:
    """Decides whether a snapshot may be published; `state` is a dict the caller persists."""

    def __init__(self, config: GuardConfig, state: dict[str, Any]) -> None:
        self.config = config
        self.state = state
        state.setdefault("period", _new_period())
        state.setdefault("baseline", {})  # name -> value: positive_loss, negative_loss, auc, ctr
        state.setdefault("problem", None)  # why the last judged period failed (None: it passed)
        state.setdefault("held", 0)  # versions held back since the job started
        state.setdefault("arrivals", {})  # event-time bucket -> [impressions, clicks] ahead of the watermark

    @property
    def held(self) -> int:
        return self.state["held"]

    def arrive(self, now: list[int], ahead: dict[int, list[int]], watermark: int) -> None:
        """One learner call's arriving [impressions, clicks]: `now` near the join watermark, `ahead` by
        `arrivals` (see the module doc); `watermark` is the join watermark after the call."""
        if not self.config.enabled:
            return
        state = self.state
        period, pending = state["period"], state["arrivals"]
        period["impressions"] += now[0]
        period["clicks"] += now[1]
        for bucket, (impressions, clicks) in ahead.items():
            counts = pending.setdefault(bucket, [0.0, 0.0])
            counts[0] += impressions
            counts[1] += clicks
        # What of each waiting bucket the watermark has passed since the last call counts now.
        since = state.get("released_until")
        for bucket in [bucket for bucket in pending if bucket * ARRIVAL_AHEAD_MS <= watermark]:
            start, end = bucket * ARRIVAL_AHEAD_MS, (bucket + 1) * ARRIVAL_AHEAD_MS
            passed_from = start if since is None else max(start, since)
            if watermark + 1 >= end:
                share = 1.0
            else:
                share = (watermark - passed_from) / (end - passed_from) if watermark > passed_from else 0.0
            counts = pending[bucket]
            for index, key in enumerate(("impressions", "clicks")):
                period[key] += counts[index] * share
                counts[index] -= counts[index] * share
            if share == 1.0:
                del pending[bucket]
        state["released_until"] = watermark if since is None else max(since, watermark)

    def observe(self, scores: list[float], labels: list[int]) -> None:
        """One learner call's decided examples, with the scores they had before learning."""
        if not self.config.enabled:
            return
        period = self.state["period"]
        if len(scores) == 0:
            return
        # A NaN score (inputs are guarded so none should arise) counts as 0.5, as in the metrics' AUC.
        p = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.5), EPS, 1 - EPS)
        y = np.asarray(labels, dtype=np.int64)
        positive = y != 0
        period["positives"] += int(positive.sum())
        period["negatives"] += int((~positive).sum())
        period["positive_loss"] += float(-np.log(p[positive]).sum())
        period["negative_loss"] += float(-np.log1p(-p[~positive]).sum())
        period["auc"].add_all(p, y)

    def problem(self, records: list[dict[str, Any]]) -> str | None:
        """Why the version of `records` must be held back, or None to publish it. Counts a hold."""
        if not self.config.enabled:
            return None
        problem = _parameter_problem(records, self.config.max_norm) or self._judge_period()
        if problem is not None:
            self.state["held"] += 1
        return problem

    def _judge_period(self) -> str | None:
        state, config = self.state, self.config
        period = state["period"]
        n_pos, n_neg = period["positives"], period["negatives"]
        if n_pos + n_neg < config.min_examples or min(n_pos, n_neg) < config.min_class_examples:
            return state["problem"]  # too few examples to judge: the last verdict stands
        state["period"] = _new_period()
        figures = {"positive_loss": period["positive_loss"] / n_pos, "negative_loss": period["negative_loss"] / n_neg}
        if min(n_pos, n_neg) >= config.min_auc_examples:
            figures["auc"] = period["auc"].value()
        # Only with traffic: when impressions pause (a quiet night, the end of a stream) the clicks of
        # earlier ones still arrive, and their ratio says nothing about the feedback.
        if period["impressions"] >= (n_pos + n_neg) / 4:
            figures["ctr"] = period["clicks"] / period["impressions"]
        baseline = state["baseline"]
        problem = None
        ctr, base_ctr = figures.get("ctr"), baseline.get("ctr")
        if ctr is not None and base_ctr and not base_ctr / config.ctr_factor <= ctr <= base_ctr * config.ctr_factor:
            problem = (f"clicks per impression {ctr:.4f} are more than {config.ctr_factor:g}x away from the "
                       f"baseline {base_ctr:.4f} (the feedback changed abruptly)")
        for name, label in (("positive_loss", "clicked"), ("negative_loss", "not clicked")):
            base = baseline.get(name)
            if problem is None and base is not None and figures[name] > base * (1 + config.logloss_margin):
                problem = (f"progressive logloss of {label} examples {figures[name]:.4f} is above the baseline "
                           f"{base:.4f} by more than {config.logloss_margin:.0%}")
        auc, base_auc = figures.get("auc", math.nan), baseline.get("auc")
        if problem is None and base_auc is not None and not math.isnan(auc) and auc < base_auc - config.auc_margin:
            problem = f"progressive AUC {auc:.4f} is below the baseline {base_auc:.4f} by more than {config.auc_margin}"
        for name, value in figures.items():
            if math.isnan(value):
                continue
            weight = config.smoothing if problem is None else (config.ctr_drift if name == "ctr" else config.drift)
            base = baseline.get(name)
            baseline[name] = value if base is None else (1 - weight) * base + weight * value
        state["problem"] = problem
        return problem


def arrivals(event_times: np.ndarray, kinds: np.ndarray, watermarks: np.ndarray
             ) -> tuple[list[int], dict[int, list[int]]]:
    """Arriving events for `ModelGuard.arrive`: [impressions, clicks] (kinds 0 and 1) that count at once,
    being at most ARRIVAL_AHEAD_MS ahead of the join watermark at their arrival, and the others by the
    event-time bucket they wait in."""
    now = event_times <= watermarks + ARRIVAL_AHEAD_MS
    counted = [int(np.count_nonzero(now & (kinds == kind))) for kind in (0, 1)]
    ahead: dict[int, list[int]] = {}
    if not now.all():
        buckets = event_times[~now] // ARRIVAL_AHEAD_MS
        clicks = kinds[~now] == 1
        for bucket in np.unique(buckets).tolist():
            chosen = buckets == bucket
            n_clicks = int(np.count_nonzero(chosen & clicks))
            ahead[bucket] = [int(np.count_nonzero(chosen)) - n_clicks, n_clicks]
    return counted, ahead


def _parameter_problem(records: list[dict[str, Any]], max_norm: float) -> str | None:
    """Why the first record (in order) at fault is: a value that is not finite, or a vector above
    `max_norm`. Checked in numpy over all records at once (a user's record holds its covariance,
    ~1,100 values), record by record only to name the one at fault."""
    if not records:
        return None
    vectors = [_values(record.get("vector")) for record in records]
    accums = [_values(record.get("vector_accum")) for record in records]
    scalars = np.array([(record["bias"], record["bias_accum"]) for record in records], dtype=np.float64)
    finite = np.isfinite(np.concatenate([scalars.ravel(), *vectors, *accums])).all()
    lengths = np.fromiter(map(len, vectors), dtype=np.int64, count=len(vectors))
    norms = np.zeros(len(vectors))
    filled = lengths > 0
    if finite and filled.any():
        starts = np.cumsum(lengths) - lengths
        norms[filled] = np.sqrt(np.add.reduceat(np.concatenate(vectors) ** 2, starts[filled]))
    elif not finite:  # the first record at fault, of either kind
        norms = [math.sqrt(float(np.dot(vector, vector))) for vector in vectors]
    for record, vector, accum, pair, norm in zip(records, vectors, accums, scalars, norms, strict=True):
        where = f"{record['entity_type']} {record['entity_id']}"
        if not finite and not (np.isfinite(pair).all() and np.isfinite(vector).all() and np.isfinite(accum).all()):
            return f"{where} has a value that is not finite"
        if norm > max_norm:
            return f"{where} has a vector of norm {norm:.1f}, above {max_norm:g}"
    return None


def _values(values: Any) -> np.ndarray:
    return np.asarray(() if values is None else values, dtype=np.float64)
