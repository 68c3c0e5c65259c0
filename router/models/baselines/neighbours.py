"""MMR-Bench's neighbourhood baselines on ``data.pooled``: KNN (k=50 cosine neighbours) and KMeans (20
clusters), each predicting the mean outcome and cost of the training queries near a query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import FittedOnModels, group_means, train_means, train_rows

CHUNK = 2048  # query rows per similarity block in KNNRouter.neighbours


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero, as in sklearn's cosine distance)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)


@dataclass
class KNNConfig:
    """MMR-Bench's KNN: ``k`` cosine neighbours."""

    k: int = 50


@dataclass
class KMeansConfig:
    """MMR-Bench's KMeans: ``n_clusters`` clusters, the best of ``n_init`` k-means runs."""

    n_clusters: int = 20
    n_init: int = 10


class KNNRouter(FittedOnModels, Router):
    """MMR-Bench KNN: mean outcome and mean cost of the k (=50) nearest training queries (cosine) per model."""

    name = "knn"

    def __init__(self, k: int = 50) -> None:
        if k < 1:
            raise ValueError(f"KNNRouter.k must be >= 1, got {k}")
        self.k = k
        self._nn: NearestNeighbors | None = None
        self._unit: np.ndarray | None = None  # the training rows at unit length, for neighbours()

    def fit(self, data: RoutingData, seed: int = 0) -> KNNRouter:
        tr = train_rows(data)
        self._remember(data)
        self._nn = NearestNeighbors(n_neighbors=min(self.k, len(tr)), metric="cosine", algorithm="brute")
        self._nn.fit(data.pooled[tr])
        self._unit = _unit_rows(np.asarray(data.pooled[tr], dtype=np.float64))
        self._q, self._c = data.quality[tr].astype(np.float64), data.cost[tr].astype(np.float64)
        self._m = data.avail[tr].copy()
        self._qf, self._cf = train_means(data, tr)
        return self

    def neighbours(self, x: np.ndarray) -> np.ndarray:
        """Indices [R, k] of the k training rows nearest (cosine) to each row of ``x``, in no particular order.

        Why not ``NearestNeighbors.kneighbors``: the same exact brute-force search, but sklearn spends ~2-5 ms
        per call setting thread-pool limits, which is most of routing one request. Chunked so a large
        evaluation never holds more than ``CHUNK`` x n_train similarities."""
        assert self._nn is not None
        if getattr(self, "_unit", None) is None:  # a router fitted before _unit existed
            self._unit = _unit_rows(np.asarray(self._nn._fit_X, dtype=np.float64))
        k = self._nn.n_neighbors
        out = np.empty((len(x), k), dtype=np.int64)
        for start in range(0, len(x), CHUNK):
            sim = _unit_rows(np.asarray(x[start:start + CHUNK], dtype=np.float64)) @ self._unit.T
            out[start:start + CHUNK] = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        return out

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        idx = self.neighbours(data.pooled[rows])  # [R, k]
        m = self._m[idx]  # [R, k, K]
        n = m.sum(axis=1)
        q = np.where(m, self._q[idx], 0).sum(axis=1)
        c = np.where(m, self._c[idx], 0).sum(axis=1)
        safe = np.maximum(n, 1)
        return np.where(n > 0, q / safe, self._qf), np.where(n > 0, c / safe, self._cf)

    def n_parameters(self) -> int:
        """Stored numbers: the training feature matrix plus outcome, cost and availability tables."""
        if self._nn is None:
            return 0
        return int(self._nn.n_samples_fit_ * (self._nn.n_features_in_ + 3 * len(self._model_ids or [])))


class KMeansRouter(FittedOnModels, Router):
    """MMR-Bench KMeans: cluster training queries (20 clusters) and use each cluster's mean outcome and cost."""

    name = "kmeans"

    def __init__(self, n_clusters: int = 20, n_init: int = 10) -> None:
        if n_clusters < 1 or n_init < 1:
            raise ValueError(f"KMeansRouter needs n_clusters >= 1 and n_init >= 1, got {n_clusters}, {n_init}")
        self.n_clusters, self.n_init = n_clusters, n_init
        self._km: KMeans | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> KMeansRouter:
        tr = train_rows(data)
        self._remember(data)
        x = data.pooled[tr].astype(np.float64)
        g = min(self.n_clusters, len(np.unique(x, axis=0)))
        self._km = KMeans(n_clusters=g, n_init=self.n_init, random_state=seed).fit(x)
        lab = self._km.labels_
        qf, cf = train_means(data, tr)
        m = data.avail[tr]
        self._cq = group_means(lab, g, data.quality[tr], m, qf)
        self._cc = group_means(lab, g, data.cost[tr], m, cf)
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        assert self._km is not None
        lab = self._km.predict(data.pooled[rows].astype(np.float64))
        return self._cq[lab], self._cc[lab]

    def n_parameters(self) -> int:
        """Stored numbers: centroids plus per-cluster quality and cost tables."""
        if self._km is None:
            return 0
        return int(self._km.cluster_centers_.size + self._cq.size + self._cc.size)
