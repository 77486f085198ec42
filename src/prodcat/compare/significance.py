"""Is a difference in balanced accuracy real? Two tests, over rows and over seeds.

- Over the shared test rows, a paired bootstrap: resample the test rows with replacement,
  recompute every run's BAC on the resample, and look at how the difference of the two
  variants' mean BAC (mean over their repeats) spreads. The p-value is two-sided, the
  share of resampled differences at least as far from the observed one as the observed one
  is from zero (the bootstrap shifted to the null; Efron & Tibshirani 1993, ch. 16).
  It answers: would this difference hold on another test set drawn like this one?
- Over seeds, Welch's t-test on the repeats' BACs: would it hold for another seed?

With several comparisons the row-level p-values are adjusted by Holm's method, and a
difference is called significant when its adjusted p-value is below `alpha`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.05
DEFAULT_RESAMPLES = 1000


def class_indicator(y: np.ndarray):
    """Sparse (categories x rows) matrix with a 1 where row j is of category i."""
    from scipy.sparse import csr_matrix

    n_classes = int(y.max()) + 1 if len(y) else 0
    return csr_matrix(
        (np.ones(len(y), dtype=np.float32), (y, np.arange(len(y)))), shape=(n_classes, len(y))
    )


def balanced_accuracies(indicator, weights: np.ndarray, corrects: list[np.ndarray]):
    """For each run (which rows it got right), the BAC of each row of `weights` (resamples x
    rows: how often each row was drawn): the mean recall over the categories drawn."""
    drawn = np.asarray((indicator @ weights.T).T)  # rows drawn per resample and category
    present = drawn > 0
    categories = np.maximum(present.sum(axis=1), 1)
    out = []
    for correct in corrects:
        right = np.asarray((indicator @ (weights * correct.astype(np.float32)).T).T)
        recall = np.divide(right, drawn, out=np.zeros_like(right), where=present)
        out.append(recall.sum(axis=1) / categories)
    return out


@dataclass
class RowTest:
    """The paired bootstrap of one difference in mean BAC."""

    difference: float  # observed: mean BAC of a minus mean BAC of b
    low: float  # 95 % percentile interval of the difference
    high: float
    p_value: float


def paired_bootstrap(
    y: np.ndarray,
    predicted_a: list[np.ndarray],
    predicted_b: list[np.ndarray],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    chunk: int = 100,
) -> RowTest:
    """Paired bootstrap over rows of mean-BAC(a) - mean-BAC(b); `predicted_*` hold one
    array of predicted class ids per repeat, aligned with `y`."""
    rng = np.random.default_rng(seed)
    ones = np.ones((1, len(y)), dtype=np.float32)
    correct_a = [p == y for p in predicted_a]
    correct_b = [p == y for p in predicted_b]

    indicator = class_indicator(y)

    def difference(weights: np.ndarray) -> np.ndarray:
        bacs = balanced_accuracies(indicator, weights, correct_a + correct_b)
        return np.mean(bacs[: len(correct_a)], axis=0) - np.mean(bacs[len(correct_a) :], axis=0)

    observed = float(difference(ones)[0])
    draws = []
    chunk = max(1, min(chunk, 20_000_000 // max(len(y), 1)))  # bounded memory on big tests
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows = rng.integers(0, len(y), size=(size, len(y)))
        weights = np.zeros((size, len(y)), dtype=np.float32)
        np.add.at(weights, (np.arange(size)[:, None], rows), 1.0)
        draws.append(difference(weights))
    spread = np.concatenate(draws)
    extreme = np.abs(spread - observed) >= abs(observed) - 1e-12
    p_value = (extreme.sum() + 1) / (len(spread) + 1)
    low, high = np.percentile(spread, [2.5, 97.5])
    return RowTest(observed, float(low), float(high), float(min(1.0, p_value)))


def welch_p_value(a: list[float], b: list[float]) -> float:
    """Two-sided Welch t-test of the repeats' BACs; nan with fewer than 2 repeats a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy.stats import ttest_ind

    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical repeats: still valid
        return float(ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (nan p-values pass through unadjusted)."""
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    indexed.sort()
    adjusted = list(p_values)
    running = 0.0
    m = len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted
