"""Statistics over seeds: mean +- sample std and the two-sided Welch t-test (also from reported mean +- std)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, sample std with ddof=1) over seeds; std is 0 for a single value, (nan, nan) for none."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def welch_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sided Welch t-test of mean(a) vs mean(b): (t, p) from ``scipy.stats.ttest_ind(equal_var=False)``.

    Both samples with zero variance (e.g. deterministic routers): equal means -> (0, 1); different means ->
    (+-inf, 0), the difference is then certain. Each sample needs >= 2 finite values.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, v in (("a", x), ("b", y)):
        if v.size < 2 or not np.all(np.isfinite(v)):
            raise ValueError(f"welch_t: sample {name} needs >= 2 finite values, got {v.tolist()}")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        diff = float(x[0] - y[0])
        return (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    with warnings.catch_warnings():  # scipy warns about "nearly identical data" for a constant sample
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(x, y, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def welch_from_stats(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> tuple[float, float]:
    """Welch test from reported mean +- std (as the paper does for Table 1); same zero-variance rule."""
    if std_a == 0 and std_b == 0:
        diff = mean_a - mean_b
        return (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    res = stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False)
    return float(res.statistic), float(res.pvalue)
