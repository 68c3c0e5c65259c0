"""One interface for every router (LatentRouter, baselines, oracle), so evaluation treats them alike.

A router predicts, for each query row and each model, an expected quality and an expected normalised cost;
the pick under a cost weight lambda is the available model with the highest ``quality - lambda * cost``.
Routers that only output a choice (classifiers on soft labels) override ``select``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from router.data.routing_data import RoutingData


class Router(ABC):
    name: str = "router"
    learned: bool = True  # False for Oracle / Strongest / Cheapest / Random
    predicts_outcomes: bool = True  # False when predict() returns scores that are not quality estimates

    @abstractmethod
    def fit(self, data: RoutingData, seed: int = 0) -> Router:
        """Fit on ``data.idx('train')`` (and tune/early-stop on ``data.idx('val')``). Never read test rows."""

    @abstractmethod
    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (quality_hat [len(rows), K], cost_hat [len(rows), K]) for the given query rows."""

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        q, c = self.predict(data, rows)
        return q - lam * c

    def select(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        """Index of the chosen model for each row; unavailable models are never chosen."""
        s = np.asarray(self.scores(data, rows, lam), dtype=np.float64)
        mask = data.avail[rows] if avail is None else avail
        s = np.where(mask, s, -np.inf)
        return np.argmax(s, axis=1)

    def fitted_model_ids(self) -> list[str] | None:
        """The model pool this router was fitted on and can only score, or None when it scores any pool
        (LatentRouter reads models through their capability tokens)."""
        return None

    def n_parameters(self) -> int:
        return 0
