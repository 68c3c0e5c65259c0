"""Statistics over seeds and splits: mean +- sample std, 95% t intervals, the paired t-test over splits and the
two-sided Welch t-test (also from reported mean +- std).

Zero variance never makes a difference "significant": a test whose samples carry no spread (deterministic
routers, one split) returns NaN, reported as "n/a".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats


def _constant(v: np.ndarray) -> bool:
    """No spread beyond floating noise (so equal per-split differences are not a t = inf)."""
    return bool(np.ptp(v) <= 1e-12 * max(1.0, float(np.max(np.abs(v)))))


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, sample std with ddof=1) over seeds; std is 0 for a single value, (nan, nan) for none."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def welch_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sided Welch t-test of mean(a) vs mean(b): (t, p) from ``scipy.stats.ttest_ind(equal_var=False)``.

    Both samples with zero variance (e.g. deterministic routers): (nan, nan) -- seeds that change nothing
    carry no evidence, so no p-value is claimed. Each sample needs >= 2 finite values.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    for name, v in (("a", x), ("b", y)):
        if v.size < 2 or not np.all(np.isfinite(v)):
            raise ValueError(f"welch_t: sample {name} needs >= 2 finite values, got {v.tolist()}")
    if _constant(x) and _constant(y):
        return float("nan"), float("nan")
    with warnings.catch_warnings():  # scipy warns about "nearly identical data" for a constant sample
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(x, y, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def welch_from_stats(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> tuple[float, float]:
    """Welch test from reported mean +- std (as the paper does for Table 1); same zero-variance rule."""
    if std_a == 0 and std_b == 0:
        return float("nan"), float("nan")
    res = stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval) over the finite values; half-width NaN below 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return float(v.mean()), half


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of a vs b over matched units (splits): (t, p) of ``scipy.stats.ttest_rel``.

    NaN when fewer than 2 finite pairs, or when the differences have zero variance (identical differences on
    every split, e.g. one effective split): no spread, no evidence.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_t: samples must be matched, got shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    if d.size < 2 or _constant(d):
        return float("nan"), float("nan")
    res = stats.ttest_rel(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue)
