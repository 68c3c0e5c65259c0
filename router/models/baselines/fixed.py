"""Training-free baselines: Oracle (true outcomes; the upper bound), Strongest (best validation model),
Cheapest and Random.

Why: they bound and anchor Table 1. Fixed-model routers (Strongest, Cheapest, Random) ignore lambda, so their
sweep is a single operating point.
"""

from __future__ import annotations

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import FittedOnModels, fit_rows, masked_means, train_means, train_rows


class OracleRouter(Router):
    """Upper bound: picks the available model with the best *realised* utility; ties go to the cheaper model."""

    name = "oracle"
    learned = False
    sweeps_budget = True  # its "predictions" are the true outcomes, so a budget sweep traces the oracle frontier

    def fit(self, data: RoutingData, seed: int = 0) -> OracleRouter:
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return data.quality[rows].astype(np.float64), data.cost[rows].astype(np.float64)

    def select(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        q, c = self.predict(data, rows)
        mask = data.avail[rows] if avail is None else avail
        u = np.where(mask, q - lam * c, -np.inf)
        top = u >= u.max(axis=1, keepdims=True) - 1e-12
        return np.argmin(np.where(top & mask, c, np.inf), axis=1)


class _FixedRouter(FittedOnModels, Router):
    """A router with one per-model preference for every query; lambda does not change its pick."""

    learned = False
    predicts_outcomes = True
    _pref: np.ndarray  # [K] higher = preferred
    _q: np.ndarray  # [K]
    _c: np.ndarray  # [K]

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        r = len(rows)
        return np.tile(self._q, (r, 1)), np.tile(self._c, (r, 1))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        self._check(data)
        return np.tile(self._pref, (len(rows), 1))


class StrongestRouter(_FixedRouter):
    """Always the model with the best mean validation quality (train if no val row) among the available ones."""

    name = "strongest"

    def fit(self, data: RoutingData, seed: int = 0) -> StrongestRouter:
        tr = train_rows(data)
        q_tr, c_tr = train_means(data, tr)
        va = fit_rows(data, "val")
        q_va = masked_means(data.quality[va], data.avail[va], q_tr) if len(va) else q_tr
        self._remember(data)
        self._q, self._c = q_va, c_tr
        # tie-break on the cheaper model so equal-quality pools pick deterministically and sensibly
        self._pref = q_va - 1e-9 * c_tr
        return self


class CheapestRouter(_FixedRouter):
    """Always the model with the lowest mean (normalised) training cost among the available ones."""

    name = "cheapest"

    def fit(self, data: RoutingData, seed: int = 0) -> CheapestRouter:
        q_tr, c_tr = train_means(data, train_rows(data))
        self._remember(data)
        self._q, self._c = q_tr, c_tr
        self._pref = -c_tr + 1e-9 * q_tr
        return self


class RandomRouter(FittedOnModels, Router):
    """Uniform over the available models; the draw is fixed per (seed, query row), so lambda doesn't change it."""

    name = "random"
    learned = False
    predicts_outcomes = False

    def __init__(self) -> None:
        self.seed = 0

    def fit(self, data: RoutingData, seed: int = 0) -> RandomRouter:
        self.seed = int(seed)
        self._remember(data)
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        table = np.random.default_rng(self.seed).random((data.n, data.k))
        return table[np.asarray(rows)], np.zeros((len(rows), data.k))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        return self.predict(data, rows)[0]
