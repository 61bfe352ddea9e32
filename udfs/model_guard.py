"""The stability guard: a new model version reaches serving only if it looks sound.

A model that updates every few seconds can also go wrong within seconds: a burst of corrupted
feedback (a bot clicking everything, a tracking bug), or a numeric blow-up. Before the learner
publishes a snapshot version it asks the guard, which checks

- the parameters about to be published: every value finite, every vector's norm at most `max_norm`;
- the model's progressive quality since the last judged period (each example scored before it was
  learned, as the metrics do): its logloss must not exceed the baseline by more than
  `logloss_margin` (relative), nor its AUC fall below the baseline's by more than `auc_margin`. The
  baseline follows the periods that passed (an exponential average, weight `smoothing`), so it
  tracks a model that improves, and moves slowly (weight `drift`) towards periods that failed, so a
  lasting change of the traffic itself is accepted after some periods instead of holding the model
  for ever (a logloss 3x the baseline is held for about 35 judged periods, a click rate 4x the
  baseline's about 50). A period is judged once it holds `min_examples` examples; until then the
  last verdict stands;
- the feedback itself: the period's click rate within `ctr_factor` of the baseline's. A burst of
  corrupted labels (a bot clicking everything) is held while it lasts, even once the model has
  adapted to it and scores it well; after it, the model's own logloss holds it until it recovers.

The learner feeds the guard only examples decided after a cold start's warm-up (the first window
learns positives alone, so its click rate and logloss say nothing about the model).

A held version is not published (its entities stay marked as changed, so the next published version
carries them); examples and metrics flow as before; serving keeps the last good version. Publishing
resumes once a period passes again. The guard's state is a small dict kept in the learner's `meta`
(Flink state), so a restore keeps the baseline, the verdict and the count of held versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from udfs.metrics_math import BinnedAUC, ExampleStats

# A coarse histogram: the period's AUC is a guard rail, not a report, and it is stored every call.
_AUC_BINS = 240


@dataclass(frozen=True)
class GuardConfig:
    logloss_margin: float = 0.5  # hold if the period's logloss > baseline * (1 + margin); 0: guard off
    auc_margin: float = 0.1  # hold if the period's AUC < baseline AUC - margin
    min_examples: int = 2000  # examples a period needs before it is judged (about 100 clicks at 5%)
    ctr_factor: float = 3.0  # hold if the period's click rate is this many times above or below the baseline's
    min_auc_examples: int = 100  # positives and negatives each a period needs before its AUC is judged
    max_norm: float = 100.0  # hold if a published vector is longer than this
    smoothing: float = 0.3  # weight of a passing period in the baseline
    drift: float = 0.02  # weight of a failing period in the logloss and AUC baselines
    ctr_drift: float = 0.005  # weight of a failing period in the click-rate baseline

    @property
    def enabled(self) -> bool:
        return self.logloss_margin > 0


class ModelGuard:
    """Decides whether a snapshot may be published; `state` is a dict the caller persists."""

    def __init__(self, config: GuardConfig, state: dict[str, Any]) -> None:
        self.config = config
        self.state = state
        state.setdefault("examples", ExampleStats())
        state.setdefault("auc", BinnedAUC(bins=_AUC_BINS))
        state.setdefault("baseline_logloss", None)
        state.setdefault("baseline_auc", None)
        state.setdefault("problem", None)  # why the last judged period failed (None: it passed)
        state.setdefault("held", 0)  # versions held back since the job started

    @property
    def held(self) -> int:
        return self.state["held"]

    def observe(self, scores: list[float], labels: list[int]) -> None:
        """Examples decided in one learner call, with the scores they had before learning."""
        if not self.config.enabled or not scores:
            return
        add = self.state["examples"].add
        for score, label in zip(scores, labels, strict=True):
            add(score, label)
        self.state["auc"].add_all(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64))

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
        examples: ExampleStats = state["examples"]
        if examples.examples < config.min_examples:
            return state["problem"]  # too few examples to judge: the last verdict stands
        logloss, ctr = examples.logloss(), examples.ctr()
        negatives = examples.examples - examples.positives
        auc = state["auc"].value() if min(examples.positives, negatives) >= config.min_auc_examples else math.nan
        state["examples"], state["auc"] = ExampleStats(), BinnedAUC(bins=_AUC_BINS)
        base_logloss, base_auc, base_ctr = state["baseline_logloss"], state["baseline_auc"], state.get("baseline_ctr")
        problem = None
        if base_ctr and not base_ctr / config.ctr_factor <= ctr <= base_ctr * config.ctr_factor:
            # The feedback itself changed abruptly (a bot clicking everything, a tracking outage):
            # whatever the model learns from it is not published until the click rate is back.
            problem = (f"click rate {ctr:.4f} over {examples.examples} examples is more than {config.ctr_factor:g}x "
                       f"away from the baseline {base_ctr:.4f}")
        elif base_logloss is not None and logloss > base_logloss * (1 + config.logloss_margin):
            problem = (f"progressive logloss {logloss:.4f} over {examples.examples} examples is above the "
                       f"baseline {base_logloss:.4f} by more than {config.logloss_margin:.0%}")
        elif base_auc is not None and not math.isnan(auc) and auc < base_auc - config.auc_margin:
            problem = (f"progressive AUC {auc:.4f} over {examples.examples} examples is below the baseline "
                       f"{base_auc:.4f} by more than {config.auc_margin}")
        weight = config.smoothing if problem is None else config.drift
        state["baseline_logloss"] = logloss if base_logloss is None else (1 - weight) * base_logloss + weight * logloss
        weight = config.smoothing if problem is None else config.ctr_drift
        state["baseline_ctr"] = ctr if not base_ctr else (1 - weight) * base_ctr + weight * ctr
        if not math.isnan(auc):
            state["baseline_auc"] = auc if base_auc is None else (1 - weight) * base_auc + weight * auc
        state["problem"] = problem
        return problem


def _parameter_problem(records: list[dict[str, Any]], max_norm: float) -> str | None:
    for record in records:
        where = f"{record['entity_type']} {record['entity_id']}"
        numbers = [record["bias"], record["bias_accum"]]
        for name in ("vector", "vector_accum"):
            if record.get(name) is not None:
                numbers.extend(record[name])
        if not all(math.isfinite(x) for x in numbers):
            return f"{where} has a value that is not finite"
        vector = record.get("vector")
        if vector is not None:
            norm = math.sqrt(sum(x * x for x in vector))
            if norm > max_norm:
                return f"{where} has a vector of norm {norm:.1f}, above {max_norm:g}"
    return None
