"""Routing a sweep and judging it: operating points, oracle regret, and every metric of a router in the
oriented (lambda = 0 pick) and cost settings.

Two sweeps give operating points: the **lambda sweep** (pick argmax q_hat - lambda c_hat; Rank Score and the
labelled "λ view" of nAUC / Ps / QNC) and MMR-Bench's **budget sweep** (``evaluate_under_cost``: per budget,
per query the best *predicted* quality among the models whose *predicted* cost fits; nAUC, Ps and QNC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.data.routing_data import RoutingData
from router.evaluation.metrics.cost import (
    RANK_BETA,
    best_rank_score,
    cost_bounds,
    nauc,
    pareto_frontier,
    ps,
    qnc,
    rank_score,
    single_model_points,
    strongest_single,
)
from router.evaluation.metrics.prediction import outcome_metrics
from router.models.base import Router

N_BUDGETS = 50  # budget levels of the budget sweep (quantiles of the predicted costs)

# lambda = 0 plus 50 log-spaced weights in [1e-4, 1e4], the grid of the LatentRouter evaluator
DEFAULT_LAMBDAS: tuple[float, ...] = (0.0, *np.logspace(-4.0, 4.0, 50).tolist())

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
    """True when picks are an argmax of predict's q - lambda c, so one forward pass serves every lambda."""
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


@dataclass
class BudgetSweep:
    """Operating points of MMR-Bench's budget sweep: one entry per budget on the router's predicted cost."""

    budgets: np.ndarray  # [B] budgets on the predicted normalised cost, ascending
    rows: np.ndarray  # [R]
    choices: np.ndarray  # [B, R]
    quality: np.ndarray  # [B] mean realised quality of the picks
    cost: np.ndarray  # [B] mean realised normalised cost
    cost_usd: np.ndarray  # [B]

    def points(self, usd: bool = False) -> np.ndarray:
        return np.stack([self.cost_usd if usd else self.cost, self.quality], axis=1)


def sweeps_budget(router: Router) -> bool:
    """Whether a router's predictions trade quality for cost: learned routers and the oracle (true outcomes).

    Fixed routers (Strongest, Cheapest, Random) route one way whatever the budget: one operating point.
    """
    return bool(getattr(router, "sweeps_budget", getattr(router, "learned", True)))


def budget_picks(q_hat: np.ndarray, c_hat: np.ndarray, mask: np.ndarray, budget: float) -> np.ndarray:
    """Per row, the available model with the best predicted quality among those whose predicted cost is
    <= ``budget`` (ties: the cheaper prediction, then the lower index); no model fits -> the cheapest predicted."""
    c = np.where(mask, np.asarray(c_hat, dtype=np.float64), np.inf)
    q = np.asarray(q_hat, dtype=np.float64)
    fits = mask & (c <= budget + 1e-12)
    best_q = np.where(fits, q, -np.inf).max(axis=1, keepdims=True)
    top = fits & (q >= best_q - 1e-12)
    pick = np.argmin(np.where(top, c, np.inf), axis=1)
    none = ~fits.any(axis=1)
    pick[none] = np.argmin(c[none], axis=1)
    return pick


def budget_sweep(
    router: Router,
    data: RoutingData,
    rows: np.ndarray,
    avail: np.ndarray | None = None,
    n_budgets: int = N_BUDGETS,
) -> BudgetSweep:
    """MMR-Bench ``evaluate_under_cost``: sweep a budget over the router's predicted costs (``predict``).

    Budgets are ``n_budgets`` quantiles (min and max included) of the predicted costs of available entries.
    A router that does not sweep budgets (:func:`sweeps_budget`) contributes its lambda = 0 pick only.
    """
    rows = np.asarray(rows, dtype=np.int64)
    mask = (data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)).copy()
    keep = mask.any(axis=1)
    rows, mask = rows[keep], mask[keep]
    if len(rows) == 0:
        empty = np.zeros(0)
        return BudgetSweep(empty, rows, np.zeros((0, 0), dtype=np.int64), empty, empty, empty)
    if sweeps_budget(router):
        q, c = router.predict(data, rows)
        q, c = np.asarray(q, dtype=np.float64), np.asarray(c, dtype=np.float64)
        budgets = np.unique(np.quantile(c[mask], np.linspace(0.0, 1.0, max(2, n_budgets))))
        choices = np.stack([budget_picks(q, c, mask, float(b)) for b in budgets])
    else:
        budgets = np.array([np.inf])
        choices = lambda_sweep(router, data, rows, [0.0], mask).choices[:1]
    outs = np.array([route_outcomes(data, rows, ch) for ch in choices]).reshape(len(budgets), 3)
    return BudgetSweep(budgets, rows, choices, outs[:, 0], outs[:, 1], outs[:, 2])


def budget_metrics(bs: BudgetSweep, data: RoutingData, mask: np.ndarray | None = None) -> dict[str, float]:
    """cost/nauc_budget (Pareto frontier of the budget points, trapezoid / its cost range, NaN below 2 frontier
    points), cost/ps (peak quality) and cost/qnc (vs the strongest single model on the same rows)."""
    pts = bs.points()
    out = {"cost/nauc_budget": nauc(pts, "interp"), "cost/ps": ps(pts), "cost/qnc": float("nan"),
           "cost/budget_points": float(len(pareto_frontier(pts)))}
    if len(bs.rows):
        m = data.avail[bs.rows] if mask is None else mask
        _, q_best, c_best = strongest_single(single_model_points(data, bs.rows, m))
        out["cost/qnc"] = qnc(pts, q_best, c_best)
    return out


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


# --------------------------------------------------------------------------------------------- evaluation


def evaluate_sweep(
    sweep: Sweep,
    data: RoutingData,
    bounds: tuple[float, float] | None = None,
    beta: float = RANK_BETA,
    budget: BudgetSweep | None = None,
) -> dict[str, float]:
    """Setting-labelled metrics of one lambda sweep, plus the budget-sweep metrics when ``budget`` is given
    (see :func:`evaluate_router` for the keys)."""
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
    out["oriented/nauc_interp"] = nauc(pts[i0 : i0 + 1], "interp")  # one point: NaN (reference rule)
    out["oriented/nauc_step"] = nauc(pts[i0 : i0 + 1], "step")
    out["oriented/regret"] = oracle_regret(data, rows, sweep.choices[i0], 0.0, mask)
    # cost: the whole lambda sweep (Rank Score; the "λ view" of nAUC / Ps / QNC)
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
    out["cost/ps_lambda"] = ps(pts)
    if len(rows):
        _, q_best, c_best = strongest_single(single_model_points(data, rows, mask))
        out["cost/qnc_lambda"] = qnc(pts, q_best, c_best)
    else:
        out["cost/qnc_lambda"] = float("nan")
    if budget is not None:
        out.update(budget_metrics(budget, data, mask if np.array_equal(budget.rows, rows) else None))
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
      VL-RouterBench) with rank_lambda / rank_quality / rank_cost_usd of that point; from the budget sweep over
      predicted costs (MMR-Bench): nauc_budget, ps, qnc, budget_points (frontier size); from the lambda sweep
      (labelled λ view): nauc_interp (interpolated Pareto), nauc_step (LatentRouter evaluator), ps_lambda,
      qnc_lambda; regret (mean oracle regret over the sweep's lambdas).
    ``outcome/*`` — mse, ndcg, ndcg@3, spearman, top3_recall of ``predict``'s quality, only for routers whose
      ``predicts_outcomes`` is true (default true).
    Also n_rows and the Rank Score bounds used (rank_cmin / rank_cmax; ``bounds`` defaults to
    :func:`cost_bounds` over every row of ``data``). Which *router* fills which Table-1 column (trained at
    lambda 0 vs cost-aware) is the caller's choice; both settings' numbers are computed for any router.
    """
    sweep = lambda_sweep(router, data, rows, lambdas, avail)
    out = evaluate_sweep(sweep, data, bounds, beta, budget_sweep(router, data, rows, avail))
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
