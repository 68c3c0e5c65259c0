"""Evaluation metrics for routers, with the definitions fixed so numbers compare with the papers.

Notation: a *sweep* routes the evaluation rows at each cost weight lambda (pick = the available model with the
highest ``quality_hat - lambda * cost_hat``) and records one operating point per lambda: (mean cost, mean
realised quality). Realised quality and cost are read from ``RoutingData`` for the chosen model.

Quality-cost metrics
--------------------
* **Rank Score** (VL-RouterBench): ``C = (log2 cmax - log2 clip(cost, cmin, cmax)) / (log2 cmax - log2 cmin)``,
  ``S = (1 + beta) A C / (beta A + C)`` with ``beta = 0.1``, A the mean accuracy (0..1), cost the mean raw USD
  cost per query and (cmin, cmax) the min / max over models of each model's mean USD cost per query on the
  benchmark (:func:`cost_bounds`). ``S = 0`` when A or C is 0; ``C = 1`` when cmin == cmax (cost then carries
  no information). The reported cost-aware value is the best S over the lambda sweep (:func:`best_rank_score`).
* **nAUC** (:func:`nauc`), two documented variants; every number says which one it is:
  - ``mode="interp"`` (MMR-Bench): keep the strict Pareto frontier (:func:`pareto_frontier`), join its points
    with straight lines, trapezoid area / (max cost - min cost of the frontier).
  - ``mode="step"`` (LatentRouter's released evaluator): sort *all* operating points by cost (equal costs keep
    the best quality), replace quality by its running maximum (the best quality affordable at that budget),
    trapezoid area over those knots / (max cost - min cost of all points). Dominated points are lifted to the
    running max instead of dropped, so rises between frontier points become steps, and an expensive dominated
    point extends the curve with a flat segment at the best quality.
  A frontier with a single point (or zero cost range) has nAUC = its (best) quality, so a router that routes
  the same way at every lambda scores its accuracy; an empty one is NaN.
* **Ps** (:func:`ps`): the peak quality over the sweep.
* **QNC** (:func:`qnc`, MMR-Bench's quality-neutral cost): the lowest cost on the router's Pareto frontier whose
  quality reaches the strongest single model's quality (the model with the highest mean quality on the same
  rows, ties to the cheaper), divided by that model's mean cost. < 1 means the router matches the best model
  for less; ``inf`` when the frontier never reaches it.
* **Oracle regret** (:func:`oracle_regret`): mean over rows of ``max_avail u - u_chosen`` with
  ``u = quality - lambda * cost`` (realised, normalised cost).

Outcome-prediction metrics (predicted quality matrix vs realised quality, available entries only)
---------------------------------------------------------------------------------------------------
MSE over available entries; NDCG@K per query (gain = true quality, discount 1/log2(rank + 1), predicted order
with ties broken by model index; queries whose ideal DCG is 0 are skipped); Spearman per query
(``scipy.stats.spearmanr``; queries with < 2 available models or a constant row are skipped); Top-3 recall per
query = |best ∩ predicted top-3| / |best| with best = the available models reaching the row's max true quality
(queries where every available model ties are skipped: there is nothing to find). Each is averaged over the
queries kept; NaN when none is kept.

Statistics: :func:`mean_std` (sample std, ddof=1, over seeds) and :func:`welch_t` (two-sided Welch t-test).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from router.data.routing_data import RoutingData
from router.models.base import Router

RANK_BETA = 0.1
# lambda = 0 plus 50 log-spaced weights in [1e-4, 1e4], the grid of the LatentRouter evaluator
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *np.logspace(-4.0, 4.0, 50).tolist())
_TIE = 1e-12


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


def cost_bounds(
    data: RoutingData, rows: np.ndarray | None = None, avail: np.ndarray | None = None
) -> tuple[float, float]:
    """(cmin, cmax) = min / max over models of the model's mean raw USD cost per query on ``rows``.

    ``rows`` defaults to every row of the benchmark (the bounds are a benchmark constant, not learned).
    Models with no available row are ignored. A model with zero mean cost (free local model) cannot enter a
    log scale, so cmin is the smallest *positive* model mean; such a model clips to cmin (C = 1).
    """
    rows = np.arange(data.n) if rows is None else np.asarray(rows)
    mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
    usd = np.where(mask, data.cost_usd[rows], np.nan)
    with np.errstate(invalid="ignore"):
        means = np.nanmean(usd, axis=0) if len(rows) else np.full(data.k, np.nan)
    means = means[np.isfinite(means)]
    positive = means[means > 0]
    if positive.size == 0:
        raise ValueError("cost_bounds: no model has a positive mean cost_usd on these rows; Rank Score is undefined")
    return float(positive.min()), float(means.max())


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

    See the module docstring for both curves. Single point or zero cost range: the (best) quality.
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
        return float(curve[:, 1].max())
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


# --------------------------------------------------------------------------------------------- sweep


@dataclass
class Sweep:
    """Operating points of one router on ``rows``: one entry per lambda (sorted, 0 first)."""

    lambdas: np.ndarray  # [L]
    rows: np.ndarray  # [R] evaluated rows (rows with no available model are dropped)
    choices: np.ndarray  # [L, R] chosen model index
    quality: np.ndarray  # [L] mean realised quality of the picks
    cost: np.ndarray  # [L] mean realised normalised cost of the picks
    cost_usd: np.ndarray  # [L] mean realised USD cost of the picks
    avail: np.ndarray  # [R, K] the availability mask routed under

    def points(self, usd: bool = False) -> np.ndarray:
        """[L, 2] (mean cost, mean quality), normalised cost unless ``usd``."""
        return np.stack([self.cost_usd if usd else self.cost, self.quality], axis=1)

    def at(self, lam: float) -> int:
        """Index of ``lam`` in the sweep."""
        hits = np.flatnonzero(np.isclose(self.lambdas, lam, rtol=0, atol=1e-12))
        if hits.size == 0:
            raise KeyError(f"lambda={lam} is not in the sweep {self.lambdas.tolist()}")
        return int(hits[0])


def _uses_base_selection(router: Router) -> bool:
    cls = type(router)
    return cls.select is Router.select and cls.scores is Router.scores


def route_outcomes(data: RoutingData, rows: np.ndarray, choice: np.ndarray) -> tuple[float, float, float]:
    """(mean quality, mean normalised cost, mean USD cost) of the chosen models on ``rows``."""
    rows, choice = np.asarray(rows), np.asarray(choice)
    if len(rows) == 0:
        return float("nan"), float("nan"), float("nan")
    return (
        float(np.mean(data.quality[rows, choice], dtype=np.float64)),
        float(np.mean(data.cost[rows, choice], dtype=np.float64)),
        float(np.mean(data.cost_usd[rows, choice], dtype=np.float64)),
    )


def lambda_sweep(
    router: Router,
    data: RoutingData,
    rows: np.ndarray,
    lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS,
    avail: np.ndarray | None = None,
) -> Sweep:
    """Route ``rows`` at every lambda (0 is always added) and collect the operating points.

    ``avail`` ([len(rows), K]) overrides ``data.avail[rows]`` for pool-change experiments; rows with no
    available model are dropped (``Sweep.rows`` says which were kept). Routers that keep the base
    ``scores``/``select`` are predicted once and re-ranked per lambda (same picks, one forward pass).
    """
    rows = np.asarray(rows, dtype=np.int64)
    mask = (data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)).copy()
    if mask.shape != (len(rows), data.k):
        raise ValueError(f"lambda_sweep: avail must have shape {(len(rows), data.k)}, got {mask.shape}")
    lams = np.unique(np.concatenate([[0.0], np.asarray(lambdas, dtype=np.float64)]))
    if np.any(lams < 0) or not np.all(np.isfinite(lams)):
        raise ValueError(f"lambda_sweep: lambdas must be finite and >= 0, got {lams.tolist()}")
    keep = mask.any(axis=1)
    rows, mask = rows[keep], mask[keep]
    choices = np.zeros((len(lams), len(rows)), dtype=np.int64)
    if len(rows):
        if _uses_base_selection(router):
            q, c = router.predict(data, rows)
            for i, lam in enumerate(lams):
                s = np.asarray(q - lam * c, dtype=np.float64)
                choices[i] = np.argmax(np.where(mask, s, -np.inf), axis=1)
        else:
            for i, lam in enumerate(lams):
                choices[i] = router.select(data, rows, float(lam), avail=mask)
        bad = ~mask[np.arange(len(rows))[None, :], choices]
        if bad.any():
            li, ri = np.argwhere(bad)[0]
            raise ValueError(
                f"router {router.name!r} chose unavailable model {data.model_ids[choices[li, ri]]!r} for query "
                f"{data.query_ids[rows[ri]]!r} at lambda={lams[li]}"
            )
    outs = np.array([route_outcomes(data, rows, ch) for ch in choices]).reshape(len(lams), 3)
    return Sweep(lams, rows, choices, outs[:, 0], outs[:, 1], outs[:, 2], mask)


def oracle_regret(
    data: RoutingData, rows: np.ndarray, choice: np.ndarray, lam: float = 0.0, avail: np.ndarray | None = None
) -> float:
    """Mean of ``max_{available} u - u_chosen`` with ``u = quality - lam * cost`` (realised); >= 0."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return float("nan")
    mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
    u = data.utility(lam)[rows].astype(np.float64)
    best = np.where(mask, u, -np.inf).max(axis=1)
    chosen = u[np.arange(len(rows)), np.asarray(choice)]
    return float(np.mean(best - chosen))


# --------------------------------------------------------------------------------------------- outcome prediction


def outcome_mse(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> float:
    """Mean squared error over available (query, model) entries."""
    m = np.asarray(avail, dtype=bool)
    if not m.any():
        return float("nan")
    d = np.asarray(pred, dtype=np.float64)[m] - np.asarray(true, dtype=np.float64)[m]
    return float(np.mean(d * d))


def _rank_desc(x: np.ndarray) -> np.ndarray:
    """Indices sorting ``x`` descending, ties by position (deterministic)."""
    return np.argsort(-x, kind="stable")


def ndcg(pred: np.ndarray, true: np.ndarray, avail: np.ndarray, k: int | None = None) -> float:
    """Mean NDCG@k over queries (k=None: all available models); gain = true quality."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        if not m.any():
            continue
        p, t = p[m], t[m]
        kk = len(t) if k is None else min(k, len(t))
        disc = 1.0 / np.log2(np.arange(2, kk + 2))
        ideal = float(np.sum(np.sort(t)[::-1][:kk] * disc))
        if ideal <= 0:
            continue
        vals.append(float(np.sum(t[_rank_desc(p)][:kk] * disc)) / ideal)
    return float(np.mean(vals)) if vals else float("nan")


def spearman(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> float:
    """Mean per-query Spearman correlation between predicted and true quality over available models."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        p, t = p[m], t[m]
        if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
            continue
        vals.append(float(stats.spearmanr(p, t).statistic))
    return float(np.mean(vals)) if vals else float("nan")


def top3_recall(pred: np.ndarray, true: np.ndarray, avail: np.ndarray, top: int = 3) -> float:
    """Mean per-query recall of the true best models (max true quality) within the predicted top-``top``."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        p, t = p[m], t[m]
        if len(t) == 0 or np.ptp(t) == 0:
            continue
        best = set(np.flatnonzero(t >= t.max() - _TIE).tolist())
        picked = set(_rank_desc(p)[:top].tolist())
        vals.append(len(best & picked) / len(best))
    return float(np.mean(vals)) if vals else float("nan")


def outcome_metrics(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> dict[str, float]:
    """MSE, NDCG (all models and @3), Spearman and Top-3 recall of a predicted quality matrix."""
    return {
        "mse": outcome_mse(pred, true, avail),
        "ndcg": ndcg(pred, true, avail),
        "ndcg@3": ndcg(pred, true, avail, k=3),
        "spearman": spearman(pred, true, avail),
        "top3_recall": top3_recall(pred, true, avail),
    }


# --------------------------------------------------------------------------------------------- evaluation


def evaluate_sweep(
    sweep: Sweep,
    data: RoutingData,
    bounds: tuple[float, float] | None = None,
    beta: float = RANK_BETA,
) -> dict[str, float]:
    """Setting-labelled metrics of one sweep (see :func:`evaluate_router` for the keys)."""
    rows, mask = sweep.rows, sweep.avail
    i0 = sweep.at(0.0)
    pts = sweep.points()
    out: dict[str, float] = {"n_rows": float(len(rows))}
    try:
        cmin, cmax = cost_bounds(data) if bounds is None else bounds
    except ValueError:  # no positive cost anywhere: Rank Score undefined
        cmin = cmax = float("nan")
    ranked = np.isfinite(cmin) and len(rows) > 0
    # oriented: the lambda = 0 operating point alone (a single-point frontier: nAUC = its quality)
    out["oriented/quality"] = float(sweep.quality[i0])
    out["oriented/cost"] = float(sweep.cost[i0])
    out["oriented/cost_usd"] = float(sweep.cost_usd[i0])
    out["oriented/rank_score"] = (
        rank_score(sweep.quality[i0], sweep.cost_usd[i0], cmin, cmax, beta) if ranked else float("nan")
    )
    out["oriented/nauc_interp"] = nauc(pts[i0 : i0 + 1], "interp")
    out["oriented/nauc_step"] = nauc(pts[i0 : i0 + 1], "step")
    out["oriented/regret"] = oracle_regret(data, rows, sweep.choices[i0], 0.0, mask)
    # cost: the whole lambda sweep
    if ranked:
        best, lam = best_rank_score(sweep.quality, sweep.cost_usd, sweep.lambdas, cmin, cmax, beta)
        j = sweep.at(lam)
        out.update({"cost/rank_score": best, "cost/rank_lambda": lam, "cost/rank_quality": float(sweep.quality[j]),
                    "cost/rank_cost_usd": float(sweep.cost_usd[j])})
    else:
        out.update({k: float("nan") for k in ("cost/rank_score", "cost/rank_lambda", "cost/rank_quality",
                                               "cost/rank_cost_usd")})
    out["cost/nauc_interp"] = nauc(pts, "interp")
    out["cost/nauc_step"] = nauc(pts, "step")
    out["cost/ps"] = ps(pts)
    if len(rows):
        _, q_best, c_best = strongest_single(single_model_points(data, rows, mask))
        out["cost/qnc"] = qnc(pts, q_best, c_best)
    else:
        out["cost/qnc"] = float("nan")
    out["cost/regret"] = float(
        np.mean([oracle_regret(data, rows, ch, lam, mask) for ch, lam in zip(sweep.choices, sweep.lambdas,
                                                                               strict=True)])
    )
    out["rank_cmin"], out["rank_cmax"] = float(cmin), float(cmax)
    return out


def evaluate_router(
    router: Router,
    data: RoutingData,
    rows: np.ndarray,
    lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS,
    *,
    avail: np.ndarray | None = None,
    bounds: tuple[float, float] | None = None,
    beta: float = RANK_BETA,
) -> dict[str, float]:
    """All metrics of a fitted router on ``rows`` (normally ``data.idx('test')``), keys prefixed by setting.

    ``oriented/*`` — the lambda = 0 pick (performance-oriented setting; paper Table 1 "Oriented"):
      quality, cost, cost_usd, rank_score (Rank Score of that one point), nauc_interp / nauc_step (single-point
      frontier, so both equal the quality), regret (oracle regret at lambda 0).
    ``cost/*`` — the lambda sweep (performance-cost setting; Table 1 "Cost"): rank_score (best over the sweep,
      VL-RouterBench) with rank_lambda / rank_quality / rank_cost_usd of that point, nauc_interp (MMR-Bench),
      nauc_step (LatentRouter evaluator), ps, qnc, regret (mean oracle regret over the sweep's lambdas).
    ``outcome/*`` — mse, ndcg, ndcg@3, spearman, top3_recall of ``predict``'s quality, only for routers whose
      ``predicts_outcomes`` is true (default true).
    Also n_rows and the Rank Score bounds used (rank_cmin / rank_cmax; ``bounds`` defaults to
    :func:`cost_bounds` over every row of ``data``). Which *router* fills which Table-1 column (trained at
    lambda 0 vs cost-aware) is the caller's choice; both settings' numbers are computed for any router.
    """
    sweep = lambda_sweep(router, data, rows, lambdas, avail)
    out = evaluate_sweep(sweep, data, bounds, beta)
    if getattr(router, "predicts_outcomes", True) and len(sweep.rows):
        q_hat, _ = router.predict(data, sweep.rows)
        for key, val in outcome_metrics(q_hat, data.quality[sweep.rows], sweep.avail).items():
            out[f"outcome/{key}"] = val
    return out


def group_rows(data: RoutingData, rows: np.ndarray, key: str = "task_group") -> dict[str, np.ndarray]:
    """``rows`` split by a per-query label array of ``data`` (``task_group`` or ``dataset``), sorted by label."""
    labels = getattr(data, key, None)
    if labels is None or len(labels) != data.n:
        raise ValueError(f"group_rows: RoutingData has no per-query field {key!r}")
    rows = np.asarray(rows)
    lab = np.asarray(labels)[rows].astype(str)
    return {g: rows[lab == g] for g in sorted(set(lab.tolist()))}


def evaluate_by_group(
    router: Router,
    data: RoutingData,
    rows: np.ndarray,
    lambdas: Sequence[float] | np.ndarray = DEFAULT_LAMBDAS,
    key: str = "task_group",
    **kwargs,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_router` per group of ``key``, with the benchmark-wide Rank Score bounds for every group."""
    if kwargs.get("bounds") is None:
        try:
            kwargs["bounds"] = cost_bounds(data)
        except ValueError:  # no positive cost: every group reports NaN Rank Scores
            kwargs["bounds"] = None
    avail = kwargs.pop("avail", None)
    out = {}
    rows = np.asarray(rows)
    for g, g_rows in group_rows(data, rows, key).items():
        sub_avail = None if avail is None else np.asarray(avail)[np.isin(rows, g_rows)]
        out[g] = evaluate_router(router, data, g_rows, lambdas, avail=sub_avail, **kwargs)
    return out


# --------------------------------------------------------------------------------------------- statistics


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
