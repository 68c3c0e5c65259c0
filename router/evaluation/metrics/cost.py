"""Quality-cost metrics of operating points: Rank Score and its cost bounds, Pareto / step frontiers, nAUC,
Ps, QNC and the single-model reference points (definitions in the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData

RANK_BETA = 0.1
_TIE = 1e-12  # qualities this close count as equal

# --------------------------------------------------------------------------------------------- rank score


def rank_score(acc: float, cost: float, cmin: float, cmax: float, beta: float = RANK_BETA) -> float:
    """VL-RouterBench Rank Score of one operating point (see module docstring); 0..1, higher is better."""
    if not (np.isfinite(cmin) and np.isfinite(cmax)) or cmin <= 0 or cmax < cmin:
        raise ValueError(f"rank_score needs 0 < cmin <= cmax (finite), got cmin={cmin}, cmax={cmax}")
    if not np.isfinite(acc) or not -1e-9 <= acc <= 1 + 1e-9:
        raise ValueError(f"rank_score: accuracy must be in [0, 1], got {acc}")
    if not np.isfinite(cost) or cost < 0:
        raise ValueError(f"rank_score: cost must be a finite non-negative USD amount, got {cost}")
    a = min(max(float(acc), 0.0), 1.0)
    if cmax == cmin:
        c_term = 1.0
    else:
        clipped = min(max(float(cost), cmin), cmax)
        c_term = (math.log2(cmax) - math.log2(clipped)) / (math.log2(cmax) - math.log2(cmin))
    if a <= 0.0 or c_term <= 0.0:
        return 0.0
    return float((1.0 + beta) * a * c_term / (beta * a + c_term))


@dataclass(frozen=True)
class RankBounds:
    """The Rank Score constants of one benchmark: (cmin, cmax) in USD per query, beta, and where they came from
    (``cost_bounds.json`` of an import, or computed from the per-sample cost matrix)."""

    cmin: float
    cmax: float
    beta: float = RANK_BETA
    source: str = "per-sample cost matrix"

    @property
    def pair(self) -> tuple[float, float]:
        return self.cmin, self.cmax

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.cmin) and np.isfinite(self.cmax) and 0 < self.cmin <= self.cmax)


def cost_bounds(
    data: RoutingData, rows: np.ndarray | None = None, avail: np.ndarray | None = None
) -> tuple[float, float]:
    """(cmin, cmax) = min / max of the per-sample USD cost matrix over ``rows`` x every available model.

    As the VL-RouterBench and LatentRouter reference evaluators do (when no ``cost_bounds.json`` ships):
    ``rows`` defaults to every row of the benchmark (a constant, not learned). cmin is the smallest *positive*
    entry (a log scale cannot hold 0; free picks clip to cmin, C = 1); unavailable entries are ignored.
    """
    rows = np.arange(data.n) if rows is None else np.asarray(rows)
    mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
    usd = np.asarray(data.cost_usd[rows], dtype=np.float64)[mask]
    usd = usd[np.isfinite(usd)]
    positive = usd[usd > 0]
    if positive.size == 0:
        raise ValueError("cost_bounds: no available entry has a positive cost_usd; Rank Score is undefined")
    return float(positive.min()), float(usd.max())


def rank_bounds(data: RoutingData, shipped: Mapping[str, Any] | None = None) -> RankBounds:
    """The benchmark's Rank Score constants: ``shipped`` (a parsed ``cost_bounds.json``: ``{"cmin", "cmax"[,
    "beta"]}`` or ``{"*": {...}, <dataset>: {...}}``, whole-benchmark key ``"*"``) when it has usable whole-
    benchmark bounds, else :func:`cost_bounds` over all rows; NaN bounds when no cost is positive."""
    if shipped:
        whole = shipped.get("*", shipped) if isinstance(shipped.get("*"), Mapping) else shipped
        lo, hi = whole.get("cmin"), whole.get("cmax")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= hi:
            beta = whole.get("beta", shipped.get("beta", RANK_BETA))
            return RankBounds(float(lo), float(hi), float(beta), "cost_bounds.json")
    try:
        lo, hi = cost_bounds(data)
    except ValueError:
        return RankBounds(float("nan"), float("nan"), RANK_BETA, "undefined (no positive cost)")
    return RankBounds(lo, hi, RANK_BETA, "per-sample cost matrix")


def best_rank_score(
    accs: Sequence[float] | np.ndarray,
    costs_usd: Sequence[float] | np.ndarray,
    lambdas: Sequence[float] | np.ndarray,
    cmin: float,
    cmax: float,
    beta: float = RANK_BETA,
) -> tuple[float, float]:
    """(best Rank Score over the sweep, the lambda achieving it); ties go to the first lambda given."""
    if not len(accs) == len(costs_usd) == len(lambdas) or len(accs) == 0:
        raise ValueError(
            f"best_rank_score: accs, costs_usd and lambdas must be non-empty and equally long, got "
            f"{len(accs)}, {len(costs_usd)}, {len(lambdas)}"
        )
    scores = [rank_score(float(a), float(c), cmin, cmax, beta) for a, c in zip(accs, costs_usd, strict=True)]
    best = int(np.argmax(scores))
    return float(scores[best]), float(lambdas[best])


# --------------------------------------------------------------------------------------------- frontier


def _as_points(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """[P, 2] float array of (cost, quality), rows with a NaN dropped."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"frontier points must be an array of (cost, quality) pairs, got shape {arr.shape}")
    return arr[np.isfinite(arr).all(axis=1)]


def pareto_frontier(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Strict Pareto frontier of (cost, quality) points, sorted by cost (MMR-Bench's rule).

    Points are visited by increasing cost (equal costs: best quality first) and kept only when their quality
    is strictly higher than every cheaper point's, so dominated and duplicate points are removed.
    """
    pts = _as_points(points)
    order = np.lexsort((-pts[:, 1], pts[:, 0]))
    keep, best = [], -np.inf
    for i in order:
        if pts[i, 1] > best:
            keep.append(i)
            best = pts[i, 1]
    return pts[keep] if keep else np.zeros((0, 2))


def _step_envelope(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Distinct costs (best quality at each) with quality replaced by its running max (LatentRouter evaluator)."""
    pts = _as_points(points)
    if len(pts) == 0:
        return pts
    costs = np.unique(pts[:, 0])
    best = np.array([pts[pts[:, 0] == c, 1].max() for c in costs])
    return np.stack([costs, np.maximum.accumulate(best)], axis=1)


def nauc(points: np.ndarray | Sequence[Sequence[float]], mode: str = "interp") -> float:
    """Normalised area under the cost-quality frontier; ``mode`` is "interp" (MMR-Bench) or "step" (LatentRouter).

    See the module docstring for both curves. "interp" (the reference definition): fewer than 2 frontier
    points or a zero cost range is NaN. "step": a single point or zero range gives the (best) quality.
    """
    if mode == "interp":
        curve = pareto_frontier(points)
    elif mode == "step":
        curve = _step_envelope(points)
    else:
        raise ValueError(f"nauc: mode must be 'interp' or 'step', got {mode!r}")
    if len(curve) == 0:
        return float("nan")
    span = float(curve[-1, 0] - curve[0, 0])
    if len(curve) == 1 or span <= 0:
        return float("nan") if mode == "interp" else float(curve[:, 1].max())
    area = float(np.sum(np.diff(curve[:, 0]) * (curve[1:, 1] + curve[:-1, 1]) / 2.0))
    return area / span


def ps(points: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Peak quality over the operating points (MMR-Bench Ps); NaN when there are none."""
    pts = _as_points(points)
    return float(pts[:, 1].max()) if len(pts) else float("nan")


def qnc(points: np.ndarray | Sequence[Sequence[float]], best_quality: float, best_cost: float) -> float:
    """Quality-neutral cost (MMR-Bench): cheapest frontier cost reaching ``best_quality``, over ``best_cost``.

    ``best_quality`` / ``best_cost`` are the strongest single model's mean quality and mean cost on the same
    rows and cost scale as the points (see :func:`strongest_single`). ``inf`` if the quality is never reached
    or ``best_cost`` is not positive.
    """
    front = pareto_frontier(points)
    reach = front[front[:, 1] >= best_quality - _TIE] if len(front) else front
    if len(reach) == 0 or not best_cost > 0:
        return float("inf")
    return float(reach[0, 0] / best_cost)


def single_model_points(
    data: RoutingData, rows: np.ndarray, avail: np.ndarray | None = None, usd: bool = False
) -> np.ndarray:
    """[K, 2] (mean cost, mean quality) of always picking each model, over the rows where it is available.

    Cost is the normalised ``data.cost`` (or ``cost_usd`` when ``usd``); a model never available gets NaNs.
    """
    rows = np.asarray(rows)
    mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
    cost = (data.cost_usd if usd else data.cost)[rows].astype(np.float64)
    qual = data.quality[rows].astype(np.float64)
    n_av = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mc = np.where(n_av > 0, np.where(mask, cost, 0).sum(0) / n_av, np.nan)
        mq = np.where(n_av > 0, np.where(mask, qual, 0).sum(0) / n_av, np.nan)
    return np.stack([mc, mq], axis=1)


def strongest_single(single_points: np.ndarray) -> tuple[int, float, float]:
    """(model index, mean quality, mean cost) of the best single model: highest quality, ties to the cheaper."""
    pts = np.asarray(single_points, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(pts).all(axis=1))
    if ok.size == 0:
        raise ValueError("strongest_single: no model has an available row")
    order = ok[np.lexsort((pts[ok, 0], -pts[ok, 1]))]
    j = int(order[0])
    return j, float(pts[j, 1]), float(pts[j, 0])
