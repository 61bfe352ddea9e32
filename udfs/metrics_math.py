"""Mergeable accumulators for progressive-validation metrics of a click model.

`ExampleStats` sums what logloss, normalized entropy, calibration and CTR need; `BinnedAUC`
keeps positive/negative counts per score bin (bins equally spaced in logit, so the low scores of
a click model keep their resolution) and computes AUC from them, ties inside a bin counted half.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-7


def normalized_entropy_of(logloss: float, rate: float) -> float:
    """`logloss` over the entropy of the click rate `rate` (the loss of always predicting it); NaN
    when the rate is undefined, 0 or 1. The one definition of NE, streaming and offline."""
    if not 0.0 < rate < 1.0:  # also False for NaN
        return math.nan
    return logloss / -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))


class BinnedAUC:
    """AUC over score histograms; exact up to ties within a bin (logit width `2*limit/bins`).

    The histograms are sparse (bin -> count): a metrics interval lives in Flink state and is written
    back after every learner call, so its size is what one example in the interval costs.
    """

    __slots__ = ("bins", "logit_limit", "positives", "negatives", "_scale")

    def __init__(self, bins: int = 4800, logit_limit: float = 12.0) -> None:
        self.bins = bins
        self.logit_limit = logit_limit
        self.positives: dict[int, int] = {}
        self.negatives: dict[int, int] = {}
        self._scale = bins / (2 * logit_limit)

    def bin_of(self, score: float) -> int:
        # NaN compares false with everything, so min/max would pass it through to int(): the metrics
        # operator must not die of one bad score (inputs are guarded so none arises); it counts as 0.5.
        p = min(max(score, EPS), 1 - EPS) if score == score else 0.5
        index = int((math.log(p / (1 - p)) + self.logit_limit) * self._scale)
        return min(max(index, 0), self.bins - 1)

    def add(self, score: float, label: int) -> None:
        counts = self.positives if label else self.negatives
        index = self.bin_of(score)
        counts[index] = counts.get(index, 0) + 1

    def add_all(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """`add` for many examples at once (the learner's examples of one call), in numpy."""
        p = np.clip(np.nan_to_num(scores, nan=0.5), EPS, 1 - EPS)
        index = np.clip(np.trunc((np.log(p / (1 - p)) + self.logit_limit) * self._scale), 0, self.bins - 1)
        for counts, chosen in ((self.positives, labels != 0), (self.negatives, labels == 0)):
            bins, numbers = np.unique(index[chosen].astype(np.int64), return_counts=True)
            for bin_index, number in zip(bins.tolist(), numbers.tolist(), strict=True):
                counts[bin_index] = counts.get(bin_index, 0) + number

    def merge(self, other: BinnedAUC) -> None:
        for mine, theirs in ((self.positives, other.positives), (self.negatives, other.negatives)):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count

    def _dense(self, counts: dict[int, int]) -> np.ndarray:
        dense = np.zeros(self.bins, dtype=np.int64)
        if counts:
            dense[np.fromiter(counts.keys(), dtype=np.int64)] = np.fromiter(counts.values(), dtype=np.int64)
        return dense

    def value(self) -> float:
        positives, negatives = self._dense(self.positives), self._dense(self.negatives)
        n_pos = int(positives.sum())
        n_neg = int(negatives.sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan
        negatives_below = np.cumsum(negatives) - negatives
        wins = float((positives * negatives_below).sum()) + 0.5 * float((positives * negatives).sum())
        return wins / (n_pos * n_neg)


class ExampleStats:
    """Counts and sums over (score, label) pairs."""

    __slots__ = ("examples", "positives", "logloss_sum", "score_sum")

    def __init__(self) -> None:
        self.examples = 0
        self.positives = 0
        self.logloss_sum = 0.0
        self.score_sum = 0.0

    def add(self, score: float, label: int) -> None:
        p = min(max(score, EPS), 1 - EPS)
        self.examples += 1
        self.score_sum += score
        if label:
            self.positives += 1
            self.logloss_sum -= math.log(p)
        else:
            self.logloss_sum -= math.log(1 - p)

    def add_all(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """`add` for many examples at once, in numpy (sums in another order: equal up to rounding)."""
        p = np.clip(scores, EPS, 1 - EPS)
        positive = labels != 0
        self.examples += len(labels)
        self.positives += int(positive.sum())
        self.score_sum += float(scores.sum())
        self.logloss_sum -= float(np.log(p[positive]).sum() + np.log(1 - p[~positive]).sum())

    def merge(self, other: ExampleStats) -> None:
        self.examples += other.examples
        self.positives += other.positives
        self.logloss_sum += other.logloss_sum
        self.score_sum += other.score_sum

    def ctr(self) -> float:
        return self.positives / self.examples if self.examples else math.nan

    def logloss(self) -> float:
        return self.logloss_sum / self.examples if self.examples else math.nan

    def normalized_entropy(self) -> float:
        """Logloss relative to always predicting the observed CTR (< 1 means better than that)."""
        return normalized_entropy_of(self.logloss(), self.ctr())

    def calibration(self) -> float:
        """Mean predicted over observed click rate (1 is perfectly calibrated on average)."""
        if not self.positives:
            return math.nan
        return self.score_sum / self.positives
