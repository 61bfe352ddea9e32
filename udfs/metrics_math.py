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

    The counts are dense arrays (the run's totals merge every interval, and the metrics operator
    computes AUC at every interval's close: a dict of thousands of bins cost ~0.4 ms a time) made
    on the first example; they pickle sparse, as (bin, count) pairs of the bins in use, because
    metric intervals live in Flink state and are written back after every learner call.
    """

    __slots__ = ("bins", "logit_limit", "_counts", "_scale")

    def __init__(self, bins: int = 4800, logit_limit: float = 12.0) -> None:
        self.bins = bins
        self.logit_limit = logit_limit
        self._scale = bins / (2 * logit_limit)
        self._counts: np.ndarray | None = None  # (2, bins) int64: negatives, positives; None while empty

    def _dense(self) -> np.ndarray:
        if self._counts is None:
            self._counts = np.zeros((2, self.bins), dtype=np.int64)
        return self._counts

    @property
    def positives(self) -> dict[int, int]:
        """Bin -> count of the positives (bins in use only)."""
        return self._sparse(1)

    @property
    def negatives(self) -> dict[int, int]:
        return self._sparse(0)

    def _sparse(self, row: int) -> dict[int, int]:
        if self._counts is None:
            return {}
        used = np.flatnonzero(self._counts[row])
        return dict(zip(used.tolist(), self._counts[row, used].tolist(), strict=True))

    def bin_of(self, score: float) -> int:
        # NaN compares false with everything, so min/max would pass it through to int(): the metrics
        # operator must not die of one bad score (inputs are guarded so none arises); it counts as 0.5.
        p = min(max(score, EPS), 1 - EPS) if score == score else 0.5
        index = int((math.log(p / (1 - p)) + self.logit_limit) * self._scale)
        return min(max(index, 0), self.bins - 1)

    def add(self, score: float, label: int) -> None:
        self._dense()[1 if label else 0, self.bin_of(score)] += 1

    def add_all(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """`add` for many examples at once (the learner's examples of one call), in numpy."""
        if not len(scores):
            return
        p = np.clip(np.nan_to_num(scores, nan=0.5), EPS, 1 - EPS)
        index = np.clip(np.trunc((np.log(p / (1 - p)) + self.logit_limit) * self._scale), 0, self.bins - 1)
        flat = index.astype(np.int64) + (np.asarray(labels) != 0) * self.bins
        self._dense().reshape(-1)[:] += np.bincount(flat, minlength=2 * self.bins)

    def merge(self, other: BinnedAUC) -> None:
        if other._counts is not None:
            self._dense()[:] += other._counts

    def value(self) -> float:
        if self._counts is None:
            return math.nan
        negatives, positives = self._counts
        n_pos = int(positives.sum())
        n_neg = int(negatives.sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan
        negatives_below = np.cumsum(negatives) - negatives
        wins = float((positives * negatives_below).sum()) + 0.5 * float((positives * negatives).sum())
        return wins / (n_pos * n_neg)

    def __getstate__(self) -> tuple:
        if self._counts is None:
            return (self.bins, self.logit_limit, None)
        used = np.flatnonzero(self._counts)
        counts = self._counts.reshape(-1)[used]
        smallest = np.min_scalar_type  # the narrowest integers that hold them: pickles half the size
        return (self.bins, self.logit_limit,
                (used.astype(smallest(2 * self.bins)), counts.astype(smallest(counts.max(initial=0)))))

    def __setstate__(self, state: tuple) -> None:
        if state[0] is None:  # pickled before the dense counts: (None, slots with dicts bin -> count)
            slots = state[1]
            self.__init__(slots["bins"], slots["logit_limit"])
            for row, counts in ((0, slots["negatives"]), (1, slots["positives"])):
                for index, count in counts.items():
                    self._dense()[row, index] += count
            return
        bins, logit_limit, sparse = state
        self.__init__(bins, logit_limit)
        if sparse is not None:
            used, counts = sparse
            self._dense().reshape(-1)[used] = counts  # (as int64)


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
