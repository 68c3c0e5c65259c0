"""Hyperparameters of every trainable router, chosen on validation rows only with the same budget per router.

Each trainable router tries the first ``EvalConfig.tuning_trials`` candidates of its grid in
its registry grid (``router.models.registry``) (the defaults first), fitted at the first seed; the candidate with
the best *validation* primary metric (mean of the lambda = 0 pick and the sweep, as in Table 1) wins, ties to
the earlier one. Rank Score bounds for this choice come from the shipped ``cost_bounds.json`` or from train +
val rows, so nothing of the test split is read. The choice is then fixed for every seed and test evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.evaluation.metrics.cost import RankBounds, cost_bounds
from router.evaluation.metrics.sweep import evaluate_sweep, lambda_sweep
from router.models.base import Router


def validation_bounds(data: RoutingData, shipped: RankBounds) -> tuple[float, float]:
    """Rank Score bounds for model selection: the shipped ones, else train + val rows only."""
    if shipped.source == "cost_bounds.json":
        return shipped.pair
    rows = np.concatenate([data.idx("train"), data.idx("val")])
    try:
        return cost_bounds(data, rows)
    except ValueError:
        return float("nan"), float("nan")


def validation_score(router: Router, data: RoutingData, lambdas: np.ndarray, bounds: tuple[float, float],
                     beta: float, primary: str) -> float:
    """The primary metric on the validation rows: mean of the lambda = 0 value and the sweep value (finite
    parts only, so a metric undefined at one point - nAUC - is the sweep's)."""
    va = data.idx("val")
    sw = lambda_sweep(router, data, va, lambdas)
    m = evaluate_sweep(sw, data, bounds, beta)
    key = "nauc_interp" if primary == "nauc_budget" else primary
    vals = [v for v in (m.get(f"oriented/{key}", np.nan), m.get(f"cost/{key}", np.nan)) if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("-inf")


def choose(candidates: list[dict[str, Any]], fit: Callable[[dict[str, Any]], Router],
           score: Callable[[Router], float]) -> tuple[int, list[float], dict[int, Router]]:
    """(index of the best candidate, validation scores, fitted routers by index); ties to the earlier one."""
    scores, fitted = [], {}
    for i, cand in enumerate(candidates):
        fitted[i] = fit(cand)
        scores.append(score(fitted[i]))
    best = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf))) if scores else 0
    return best, scores, fitted
