"""K-fold, group-aware cross-fitting over train + validation rows: low-noise selection for every router.

Why: a 100-500 row validation set makes early stopping, hyperparameter choice and the deployment choice
noisy. Cross-fitting uses every train + val row once as held-out data: the rows are cut into K folds (whole
groups, stratified by dataset), and for each fold a fresh router is fitted on the other folds and predicts
that fold. One of the other folds is the fit's ``val`` split (early stopping, tuning), so nothing is selected
on the held-out rows and the out-of-fold (OOF) utility is an honest estimate for every router alike (with
``inner_val=False`` the held-out fold is the ``val`` split: routers that early-stop then choose their epoch on
the rows they are scored on, which flatters them). The OOF picks and quality estimates cover all train + val
rows, and the OOF utility is the selection criterion. Test rows keep their ``test`` label in every fold and
are never read; normalisers and profiles stay those of ``data`` (built from its train / calibration rows).

The K fold fits also make a deployable router, :class:`FoldAverage` (the mean of the fold routers' quality
estimates): every row was used for fitting and every fit was early-stopped on unseen rows.

Entry points: :func:`assign_folds`, :func:`fold_data`, :func:`crossfit` (OOF predictions of one router),
:func:`oof_utility`, :func:`oof_table` / :func:`choose_oof` (the deployment choice on OOF utility) and
:func:`select_by_oof` (hyperparameters with the same grid budget for every router).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router

RouterFactory = Callable[[], Router]


def fit_pool_rows(data: RoutingData) -> np.ndarray:
    """The rows cross-fitting may use: train and val rows with at least one available model (never test)."""
    rows = np.flatnonzero((data.split == "train") | (data.split == "val"))
    return rows[data.avail[rows].any(axis=1)]


def assign_folds(data: RoutingData, rows: np.ndarray, n_folds: int = 5, seed: int = 0,
                 groups: Sequence[str] | None = None) -> np.ndarray:
    """Fold id in [0, n_folds) for each of ``rows``: whole groups per fold, balanced within each dataset.

    ``groups`` has one label per query of ``data`` (e.g. ``router.data.splits.query_groups``); default: every
    query is its own group. Groups are ordered by a seeded hash of their label inside each dataset stratum and
    dealt round-robin, so fold sizes per stratum differ by at most one group and the assignment does not
    depend on row order."""
    rows = np.asarray(rows, dtype=np.int64)
    if n_folds < 2:
        raise ValueError(f"assign_folds: n_folds must be >= 2, got {n_folds}")
    if groups is not None and len(groups) != data.n:
        raise ValueError(f"assign_folds: groups has {len(groups)} labels for {data.n} queries")
    labels = [str(data.query_ids[i]) for i in rows] if groups is None else [str(groups[i]) for i in rows]
    strata = np.asarray(data.dataset)[rows].astype(str)
    uniq = sorted(set(labels))
    if len(uniq) < n_folds:
        raise ValueError(f"assign_folds: {len(uniq)} groups cannot fill {n_folds} folds")
    # a group's stratum: the dataset of its first row (groups inside one dataset are the normal case)
    g_stratum: dict[str, str] = {}
    for lab, st in zip(labels, strata, strict=True):
        g_stratum.setdefault(lab, st)

    def rank(lab: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{seed}:fold:{lab}".encode()).digest()[:8], "big")

    g_fold: dict[str, int] = {}
    offset = 0
    for st in sorted(set(g_stratum.values())):
        members = sorted((g for g, s in g_stratum.items() if s == st), key=rank)
        for j, g in enumerate(members):
            g_fold[g] = (offset + j) % n_folds
        offset += len(members)  # the next stratum starts where this one stopped: folds stay balanced overall
    return np.array([g_fold[lab] for lab in labels], dtype=np.int64)


def fold_data(data: RoutingData, rows: np.ndarray, folds: np.ndarray, fold: int, inner_val: bool = True
              ) -> RoutingData:
    """``data`` relabelled for held-out fold ``fold``. ``inner_val`` (default): the next fold is ``val`` (early
    stopping, tuning), the remaining folds ``train``, and ``fold`` itself is ``test`` like every row outside
    ``rows``, so nothing fitted or selected on it. ``inner_val=False``: ``fold`` is ``val``; a router that
    early-stops then selects its epoch on the rows it is scored on, and its OOF utility is optimistic."""
    split = np.full(data.n, "test", dtype=object)
    rows = np.asarray(rows, dtype=np.int64)
    split[rows] = "train"
    if inner_val:
        k = int(folds.max()) + 1
        split[rows[folds == (fold + 1) % k]] = "val"
        split[rows[folds == fold]] = "test"
    else:
        split[rows[folds == fold]] = "val"
    return replace(data, split=split)


@dataclass
class OOFPredictions:
    """One router's out-of-fold output over ``rows`` (train + val rows of the source data).

    ``quality`` holds the quality estimates of routers with ``predicts_outcomes`` (NaN rows otherwise);
    ``picks[lam]`` the held-out picks at each lambda; ``best_epochs`` what each fold's early stopping chose,
    where the router reports it."""

    name: str
    rows: np.ndarray
    folds: np.ndarray
    quality: np.ndarray  # [len(rows), K]
    cost: np.ndarray  # [len(rows), K] the routers' cost estimates
    picks: dict[float, np.ndarray]
    predicts_outcomes: bool = True
    best_epochs: list[int] = field(default_factory=list)
    fitted: list[Router] = field(default_factory=list)  # the K fold routers (kept only when asked)


def _best_epoch(router: Router) -> int | None:
    res = getattr(router, "result", None)
    return None if res is None or not hasattr(res, "best_epoch") else int(res.best_epoch)


def crossfit(factory: RouterFactory, data: RoutingData, n_folds: int = 5, seed: int = 0,
             lams: Sequence[float] = (0.0,), groups: Sequence[str] | None = None, name: str | None = None,
             keep_fitted: bool = False, fold_seed: int = 0, inner_val: bool = True) -> OOFPredictions:
    """Fit ``factory()`` K times (fold f held out; the next fold its validation rows, see :func:`fold_data`) and
    collect the OOF predictions.

    ``seed`` seeds each fit (the same for every fold, as one training run would be); ``fold_seed`` the fold
    assignment, which should be the same for every router compared."""
    rows = fit_pool_rows(data)
    folds = assign_folds(data, rows, n_folds, fold_seed, groups)
    q = np.full((len(rows), data.k), np.nan)
    c = np.full((len(rows), data.k), np.nan)
    picks = {float(lam): np.zeros(len(rows), dtype=np.int64) for lam in lams}
    epochs: list[int] = []
    fitted: list[Router] = []
    outcomes = True
    label = name
    for f in range(n_folds):
        d = fold_data(data, rows, folds, f, inner_val)
        r = factory().fit(d, seed=seed)
        label = label or r.name
        outcomes = bool(getattr(r, "predicts_outcomes", True))
        held = folds == f
        hr = rows[held]
        if outcomes:
            qf, cf = r.predict(d, hr)
            q[held], c[held] = np.asarray(qf, dtype=np.float64), np.asarray(cf, dtype=np.float64)
        for lam in picks:
            picks[lam][held] = np.asarray(r.select(d, hr, lam))
        be = _best_epoch(r)
        if be is not None:
            epochs.append(be)
        if keep_fitted:
            fitted.append(r)
    return OOFPredictions(str(label), rows, folds, q, c, picks, outcomes, epochs, fitted)


def oof_utility(oof: OOFPredictions, data: RoutingData, lam: float, mask: np.ndarray | None = None) -> float:
    """Mean realised ``quality - lam * cost`` of the OOF picks at ``lam`` (``mask``: a subset of ``oof.rows``)."""
    pick = oof.picks[float(lam)]
    rows = oof.rows
    if mask is not None:
        rows, pick = rows[mask], pick[mask]
    if len(rows) == 0:
        return float("nan")
    return float(np.mean(data.quality[rows, pick] - lam * data.cost[rows, pick]))


def oof_fold_utilities(oof: OOFPredictions, data: RoutingData, lam: float) -> np.ndarray:
    """OOF utility per fold (for paired comparisons between routers on the same folds)."""
    return np.array([oof_utility(oof, data, lam, oof.folds == f) for f in range(int(oof.folds.max()) + 1)])


def oof_table(oofs: Mapping[str, OOFPredictions], data: RoutingData, lam: float) -> list[dict[str, Any]]:
    """One row per router: OOF utility, quality and cost of its picks at ``lam``, and the std over folds; best
    first."""
    out = []
    for name, o in oofs.items():
        pick = o.picks[float(lam)]
        q = float(np.mean(data.quality[o.rows, pick]))
        c = float(np.mean(data.cost[o.rows, pick]))
        fu = oof_fold_utilities(o, data, lam)
        out.append({"router": name, "oof_utility": q - lam * c, "oof_quality": q, "oof_cost": c,
                    "fold_std": float(np.std(fu, ddof=1)) if len(fu) > 1 else float("nan"),
                    "n_oof": int(len(o.rows)), "best_epochs": list(o.best_epochs)})
    out.sort(key=lambda r: -r["oof_utility"] if math.isfinite(r["oof_utility"]) else math.inf)
    return out


def choose_oof(table: Sequence[Mapping[str, Any]], prefer: str = "LatentRouter") -> str:
    """The deployment choice: the best OOF utility (``prefer`` wins exact ties)."""
    finite = [r for r in table if math.isfinite(r["oof_utility"])]
    if not finite:
        return prefer
    top = max(r["oof_utility"] for r in finite)
    best = [r["router"] for r in finite if r["oof_utility"] == top]
    return prefer if prefer in best else str(best[0])


def select_by_oof(make: Callable[[Mapping[str, Any]], Router], grid: Sequence[Mapping[str, Any]],
                  data: RoutingData, lam: float = 0.0, n_folds: int = 5, seed: int = 0,
                  groups: Sequence[str] | None = None) -> tuple[Mapping[str, Any], list[dict[str, Any]]]:
    """Hyperparameters by OOF utility at ``lam``: ``make(params)`` builds the router for each grid point; every
    router gets the grid it is given, so give each the same number of points (the equal-budget rule).
    Returns (the chosen params, one row per point with its OOF utility)."""
    if not grid:
        raise ValueError("select_by_oof: empty grid")
    rows = []
    for i, params in enumerate(grid):
        o = crossfit(lambda p=params: make(p), data, n_folds, seed, (lam,), groups, name=f"trial{i}")
        rows.append({"trial": i, "params": dict(params), "oof_utility": oof_utility(o, data, lam),
                     "best_epochs": o.best_epochs})
    best = max(range(len(rows)), key=lambda i: (rows[i]["oof_utility"], -i))
    return grid[best], rows


class FoldAverage(Router):
    """The K fold routers of a cross-fit as one router: the mean of their quality and cost estimates and of their
    scores (picks by majority vote for routers that do not predict outcomes). Every fold router early-stopped on rows it did
    not fit, and together they used every train + val row."""

    def __init__(self, members: Sequence[Router], name: str | None = None) -> None:
        if not members:
            raise ValueError("FoldAverage needs at least one fitted router")
        self.members = list(members)
        self.name = name or f"{members[0].name} (fold average)"
        self.predicts_outcomes = all(getattr(m, "predicts_outcomes", True) for m in self.members)

    @classmethod
    def from_oof(cls, oof: OOFPredictions) -> FoldAverage:
        if not oof.fitted:
            raise ValueError(f"FoldAverage.from_oof: {oof.name} was cross-fitted without keep_fitted=True")
        return cls(oof.fitted, f"{oof.name} (fold average)")

    def fit(self, data: RoutingData, seed: int = 0) -> FoldAverage:
        """The members are fitted by :func:`crossfit`; refitting them here would undo the cross-fit."""
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = [m.predict(data, rows) for m in self.members]
        return (np.mean([np.asarray(o[0], dtype=np.float64) for o in outs], axis=0),
                np.mean([np.asarray(o[1], dtype=np.float64) for o in outs], axis=0))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        if self.predicts_outcomes:  # each member's own scoring rule at lam (the same rule for all of them)
            return np.mean([np.asarray(m.scores(data, rows, lam), dtype=np.float64) for m in self.members], axis=0)
        votes = np.zeros((len(rows), data.k))
        for m in self.members:
            votes[np.arange(len(rows)), np.asarray(m.select(data, rows, lam))] += 1.0
        return votes

    def n_parameters(self) -> int:
        return sum(m.n_parameters() for m in self.members)


@dataclass
class OOFChoice:
    """The cross-fitted deployment choice: the chosen name, the OOF table (the ensemble's row, when asked for,
    scored with weights chosen on the other folds), every candidate's OOF predictions and the ensemble weights
    chosen on all OOF rows."""

    chosen: str
    table: list[dict[str, Any]]
    oofs: dict[str, OOFPredictions]
    ensemble_weights: dict[str, float] = field(default_factory=dict)


ENSEMBLE = "Ensemble"


def oof_deployment_choice(candidates: Mapping[str, RouterFactory], data: RoutingData, lam: float,
                          n_folds: int = 5, seed: int = 0, groups: Sequence[str] | None = None,
                          ensemble: bool = True, prefer: str = "LatentRouter") -> OOFChoice:
    """Cross-fit every candidate (the same folds for all), and choose by OOF utility at ``lam``; with
    ``ensemble`` the OOF-weighted ensemble of the candidates competes too, scored by its nested OOF utility.

    Deploying the choice: a single router is refitted as usual (train rows, val for early stopping) or the
    fold routers are averaged (``FoldAverage``); the ensemble is ``EnsembleRouter.from_fitted(fitted,
    result.ensemble_weights)`` over the fitted candidates."""
    oofs = {n: crossfit(f, data, n_folds, seed, (lam,), groups, name=n) for n, f in candidates.items()}
    table = oof_table(oofs, data, lam)
    weights: dict[str, float] = {}
    if ensemble and len(oofs) > 1:
        from router.models.ensemble import EnsembleConfig, choose_weights, nested_oof_utility

        ecfg = EnsembleConfig(lams=(float(lam),))
        u, per_fold, _ = nested_oof_utility(oofs, data, lam, ecfg)
        weights = choose_weights(oofs, data, ecfg)
        table.append({"router": ENSEMBLE, "oof_utility": float(u), "oof_quality": float("nan"), "oof_cost": float("nan"),
                      "fold_std": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else float("nan"),
                      "n_oof": int(len(next(iter(oofs.values())).rows)), "best_epochs": [],
                      "weights": weights})
        table.sort(key=lambda r: -r["oof_utility"] if math.isfinite(r["oof_utility"]) else math.inf)
    return OOFChoice(choose_oof(table, prefer), table, oofs, weights)


def epoch_curves(oof: OOFPredictions) -> np.ndarray:
    """[K folds, E epochs] validation utility of each fold's router after every epoch (its training history's
    ``val_utility``: the held-out fold itself when cross-fitted with ``inner_val=False``, which is honest only
    for a fixed epoch budget, ``TrainConfig.restore_best=False``); needs ``keep_fitted`` and routers with a
    ``result.history`` (LatentRouter). Folds that stopped early repeat their last value."""
    if not oof.fitted:
        raise ValueError(f"epoch_curves: {oof.name} was cross-fitted without keep_fitted=True")
    hist = []
    for r in oof.fitted:
        res = getattr(r, "result", None)
        if res is None or not getattr(res, "history", None):
            raise ValueError(f"epoch_curves: {oof.name} has no training history per epoch")
        hist.append([float(h.val_utility) for h in res.history])
    n = max(len(h) for h in hist)
    return np.array([h + [h[-1]] * (n - len(h)) for h in hist])


def choose_epochs(oof: OOFPredictions) -> tuple[int, np.ndarray, float, np.ndarray]:
    """Early stopping by cross-fitting: the epoch count with the best held-out utility pooled over all folds
    (fold-size weighted), instead of each fold's own noisy argmax (cross-fit a fixed budget with
    ``inner_val=False`` so that the curves are the held-out folds'). Returns (epochs, pooled curve, the nested
    OOF utility of the rule, per-fold utilities): for the nested figure each fold is scored at the epoch count
    chosen on the other folds, so it is not optimistic."""
    curves = epoch_curves(oof)
    sizes = np.bincount(oof.folds, minlength=curves.shape[0]).astype(np.float64)
    pooled = (curves * sizes[:, None]).sum(0) / sizes.sum()
    per_fold = np.zeros(curves.shape[0])
    for f in range(curves.shape[0]):
        others = np.arange(curves.shape[0]) != f
        e = int(np.argmax((curves[others] * sizes[others, None]).sum(0)))
        per_fold[f] = curves[f, e]
    return int(np.argmax(pooled)) + 1, pooled, float((per_fold * sizes).sum() / sizes.sum()), per_fold
