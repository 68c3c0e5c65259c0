"""A weighted ensemble of routers with weights chosen out-of-fold: one more candidate for the deployment choice.

Why: on small benchmarks the top routers (GroupBest, KNN, MLPMF, ECVL, LatentRouter) make different errors,
and which one is best changes between splits. Averaging their quality estimates reduces the variance of the
pick; the weights must come from held-out predictions, or the ensemble just copies whichever member overfits
its training rows most.

Scoring: member r contributes ``S_r(lambda) = q_r - lambda * c_r`` (its ``predict()`` quality and cost
estimates) when it predicts outcomes, else a one-hot vote for its own pick at lambda. The ensemble picks the
available model with the highest ``sum_r w_r S_r``. ECVL's cost-aware MES rule and LatentRouter's lambda
feedback are therefore not used inside the ensemble, only their quality estimates.

Weights: greedy forward selection with replacement (Caruana et al. 2004) on the out-of-fold predictions of
``router.evaluation.crossfit.crossfit``: start from the best single member and add, ``size`` times, the member
whose extra unit of weight most raises the mean OOF utility over ``lams``; the best prefix is kept, so the
weights are multiples of 1/n and a single router stays a possible answer. :func:`nested_oof_utility` gives the
ensemble's own OOF utility without the optimism of choosing and scoring on the same rows (weights chosen on
the other folds), which is the figure to compare with the single routers' OOF utilities.

For the deployment selection (the lead's registry): ``choose_weights(oofs, data, cfg)`` then
``EnsembleRouter.from_fitted(fitted_routers, weights)`` with the routers already fitted on train (val for early
stopping); or ``EnsembleRouter(factories, cfg).fit(data)``, which cross-fits, chooses and fits by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router

RouterFactory = Callable[[], Router]


@dataclass
class EnsembleConfig:
    """How the ensemble's weights are chosen (see the module docstring)."""

    size: int = 20  # greedy rounds; weights are multiples of 1 / (rounds kept)
    lams: tuple[float, ...] = (0.0,)  # the weights maximise the mean OOF utility over these lambdas
    n_folds: int = 5  # cross-fitting folds when the ensemble chooses its own weights (fit with weights=None)
    fold_seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"EnsembleConfig.size must be >= 1, got {self.size}")
        if not self.lams or any(not (math.isfinite(x) and x >= 0) for x in self.lams):
            raise ValueError(f"EnsembleConfig.lams must be non-empty, finite and >= 0, got {self.lams}")
        if self.n_folds < 2:
            raise ValueError(f"EnsembleConfig.n_folds must be >= 2, got {self.n_folds}")


def _member_matrix(quality: np.ndarray | None, cost: np.ndarray | None, pick: np.ndarray | None, lam: float,
                   k: int) -> np.ndarray:
    """S_r(lambda) of one member: q - lambda c, or a one-hot vote for its pick when it has no outcome estimates."""
    if quality is not None:
        return np.nan_to_num(np.asarray(quality, dtype=np.float64) - lam * np.asarray(cost, dtype=np.float64))
    assert pick is not None
    out = np.zeros((len(pick), k))
    out[np.arange(len(pick)), np.asarray(pick, dtype=np.int64)] = 1.0
    return out


def _oof_matrices(oofs: Mapping[str, Any], lams: Sequence[float], k: int) -> dict[str, list[np.ndarray]]:
    """Per member, S_r(lambda) over the OOF rows for each lambda."""
    out: dict[str, list[np.ndarray]] = {}
    for name, o in oofs.items():
        mats = []
        for lam in lams:
            if o.predicts_outcomes:
                mats.append(_member_matrix(o.quality, o.cost, None, lam, k))
            else:
                if float(lam) not in o.picks:
                    raise ValueError(f"choose_weights: {name} has no OOF picks at lambda {lam} (crossfit lams)")
                mats.append(_member_matrix(None, None, o.picks[float(lam)], lam, k))
        out[name] = mats
    return out


def _check_aligned(oofs: Mapping[str, Any]) -> np.ndarray:
    if not oofs:
        raise ValueError("choose_weights: no members")
    first = next(iter(oofs.values()))
    for name, o in oofs.items():
        if not (np.array_equal(o.rows, first.rows) and np.array_equal(o.folds, first.folds)):
            raise ValueError(f"choose_weights: {name}'s OOF rows or folds differ from {first.name}'s "
                             "(cross-fit every member with the same data and fold_seed)")
    return first.rows


def _utility(score: np.ndarray, util: np.ndarray, avail: np.ndarray) -> float:
    pick = np.argmax(np.where(avail, score, -np.inf), axis=1)
    return float(util[np.arange(len(pick)), pick].mean())


def _greedy(mats: dict[str, list[np.ndarray]], utils: list[np.ndarray], avail: np.ndarray, size: int,
            mask: np.ndarray) -> dict[str, float]:
    """Caruana forward selection with replacement on the rows in ``mask``; the best prefix's weights."""
    names = sorted(mats)
    sub = {n: [m[mask] for m in mats[n]] for n in names}
    us, av = [u[mask] for u in utils], avail[mask]

    def value(acc: list[np.ndarray]) -> float:
        return float(np.mean([_utility(a, u, av) for a, u in zip(acc, us, strict=True)]))

    counts = dict.fromkeys(names, 0)
    acc = [np.zeros_like(us[0]) for _ in us]
    best_val, best_counts = -math.inf, dict(counts)
    for _ in range(size):
        cand = []
        for n in names:
            trial = [a + s for a, s in zip(acc, sub[n], strict=True)]
            cand.append((value(trial), n))
        v, n = max(cand, key=lambda x: (x[0], -names.index(x[1])))  # ties: the first name in sorted order
        counts[n] += 1
        acc = [a + s for a, s in zip(acc, sub[n], strict=True)]
        if v > best_val + 1e-12:
            best_val, best_counts = v, dict(counts)
    total = sum(best_counts.values())
    return {n: c / total for n, c in best_counts.items() if c > 0}


def choose_weights(oofs: Mapping[str, Any], data: RoutingData, cfg: EnsembleConfig | None = None,
                   mask: np.ndarray | None = None) -> dict[str, float]:
    """Member weights (summing to 1, zero-weight members left out) that maximise the mean OOF utility over
    ``cfg.lams``. ``oofs``: name -> ``crossfit`` output, all over the same rows and folds; ``mask`` restricts
    the choice to a subset of those rows."""
    cfg = cfg or EnsembleConfig()
    rows = _check_aligned(oofs)
    mats = _oof_matrices(oofs, cfg.lams, data.k)
    utils = [np.asarray(data.quality[rows] - lam * data.cost[rows], dtype=np.float64) for lam in cfg.lams]
    m = np.ones(len(rows), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return _greedy(mats, utils, data.avail[rows], cfg.size, m)


def nested_oof_utility(oofs: Mapping[str, Any], data: RoutingData, lam: float,
                       cfg: EnsembleConfig | None = None) -> tuple[float, np.ndarray, list[dict[str, float]]]:
    """The ensemble's OOF utility at ``lam`` with weights chosen on the other folds for each fold (no row
    scores weights that were chosen on it). Returns (mean over OOF rows, per-fold utilities, per-fold weights)."""
    cfg = cfg or EnsembleConfig()
    rows = _check_aligned(oofs)
    folds = next(iter(oofs.values())).folds
    mats = _oof_matrices(oofs, (lam,), data.k)
    util = np.asarray(data.quality[rows] - lam * data.cost[rows], dtype=np.float64)
    avail = data.avail[rows]
    per_fold, weights, total = [], [], 0.0
    for f in range(int(folds.max()) + 1):
        held = folds == f
        w = choose_weights(oofs, data, cfg, mask=~held)
        score = sum(wt * mats[n][0][held] for n, wt in w.items())
        u = _utility(np.asarray(score), util[held], avail[held])
        per_fold.append(u)
        weights.append(w)
        total += u * held.sum()
    return total / len(rows), np.array(per_fold), weights


class EnsembleRouter(Router):
    """Weighted members behind the ``Router`` interface (see the module docstring).

    Built either from factories (``fit`` chooses the weights by cross-fitting on train + val when ``weights``
    is None, then fits every member with a positive weight on ``data``) or with :meth:`from_fitted`."""

    name = "Ensemble"
    learned = True

    def __init__(self, factories: Mapping[str, RouterFactory] | None = None, cfg: EnsembleConfig | None = None,
                 weights: Mapping[str, float] | None = None, name: str | None = None,
                 groups: Sequence[str] | None = None) -> None:
        self.factories = dict(factories or {})
        self.cfg = cfg or EnsembleConfig()
        self.weights = None if weights is None else _normalised(weights)
        self.members: dict[str, Router] = {}
        self.groups = groups
        self.oof_table: list[dict[str, Any]] = []
        self._memo: tuple[Any, dict[str, tuple[np.ndarray, np.ndarray]]] | None = None
        if name is not None:
            self.name = name
        if self.weights is not None and self.factories:
            missing = sorted(set(self.weights) - set(self.factories))
            if missing:
                raise ValueError(f"EnsembleRouter: weights name members without a factory: {missing}")

    @classmethod
    def from_fitted(cls, members: Mapping[str, Router], weights: Mapping[str, float],
                    name: str | None = None) -> EnsembleRouter:
        """An ensemble of routers that are already fitted (``fit`` on it would need factories)."""
        w = _normalised(weights)
        missing = sorted(set(w) - set(members))
        if missing:
            raise ValueError(f"EnsembleRouter.from_fitted: no fitted router for weighted member(s) {missing}")
        ens = cls(None, None, w, name)
        ens.members = {n: members[n] for n in w}
        return ens

    def fit(self, data: RoutingData, seed: int = 0) -> EnsembleRouter:
        if not self.factories:
            raise ValueError("EnsembleRouter.fit needs member factories (use from_fitted for fitted routers)")
        if self.weights is None:
            from router.evaluation.crossfit import crossfit, oof_table

            oofs = {n: crossfit(f, data, self.cfg.n_folds, seed, self.cfg.lams, self.groups, name=n,
                                fold_seed=self.cfg.fold_seed) for n, f in self.factories.items()}
            self.weights = choose_weights(oofs, data, self.cfg)
            self.oof_table = oof_table(oofs, data, self.cfg.lams[0])
        self.members = {n: self.factories[n]().fit(data, seed=seed) for n in self.weights}
        self._memo = None
        return self

    def _fitted(self) -> tuple[dict[str, Router], dict[str, float]]:
        if self.weights is None or not self.members:
            raise RuntimeError(f"{self.name}: call fit() (or build it with from_fitted) before predicting")
        return self.members, self.weights

    @property
    def predicts_outcomes(self) -> bool:  # type: ignore[override]
        if not self.members:
            return True
        return all(getattr(m, "predicts_outcomes", True) for m in self.members.values())

    def _member_outcomes(self, data: RoutingData, rows: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each outcome-predicting member's (quality, cost) estimates, memoised per (data, rows) so that a lambda
        sweep runs every member once."""
        key = (id(data), id(data.quality), np.asarray(rows).tobytes())
        if self._memo is None or self._memo[0] != key:
            out = {n: tuple(np.asarray(x, dtype=np.float64) for x in m.predict(data, rows))
                   for n, m in self.members.items() if getattr(m, "predicts_outcomes", True)}
            self._memo = (key, out)
        return self._memo[1]

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean quality and cost estimates of the members that predict outcomes."""
        members, w = self._fitted()
        outs = self._member_outcomes(data, rows)
        qs, cs, ws = [], [], []
        for n in members:
            if n in outs:
                q, c = outs[n]
                qs.append(np.asarray(q, dtype=np.float64))
                cs.append(np.asarray(c, dtype=np.float64))
                ws.append(w[n])
        if not qs:
            z = np.zeros((len(rows), data.k))
            return z, z.copy()
        wt = np.asarray(ws) / np.sum(ws)
        return np.tensordot(wt, np.stack(qs), axes=1), np.tensordot(wt, np.stack(cs), axes=1)

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        members, w = self._fitted()
        rows = np.asarray(rows)
        total = np.zeros((len(rows), data.k))
        outs = self._member_outcomes(data, rows)
        for n, m in members.items():
            if n in outs:
                q, c = outs[n]
                total += w[n] * _member_matrix(q, c, None, lam, data.k)
            else:
                total += w[n] * _member_matrix(None, None, m.select(data, rows, lam, avail), lam, data.k)
        return total

    def select(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
        s = np.where(mask, self.scores(data, rows, lam, mask), -np.inf)
        return np.argmax(s, axis=1)

    def n_parameters(self) -> int:
        return sum(m.n_parameters() for m in self.members.values())

    @property
    def _model_ids(self) -> list[str] | None:
        """The fixed pool of the members that have one (baselines), so a deployment records and checks it; None
        when no member has a fixed pool."""
        for m in self.members.values():
            ids = getattr(m, "_model_ids", None)
            if ids:
                return list(ids)
        return None

    def fitted_model_ids(self) -> list[str] | None:
        return self._model_ids

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a deployed ``baseline.joblib``) without the prediction memo and the factories (often
        lambdas; a deployed ensemble predicts, it is not refitted)."""
        return {**self.__dict__, "_memo": None, "factories": {}}


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    w = {str(n): float(v) for n, v in weights.items() if float(v) > 0}
    bad = [n for n, v in weights.items() if not math.isfinite(float(v)) or float(v) < 0]
    if bad or not w:
        raise ValueError(f"EnsembleRouter: weights must be finite, >= 0 and not all zero (bad: {bad})")
    s = sum(w.values())
    return {n: v / s for n, v in w.items()}
