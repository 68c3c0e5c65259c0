"""Baseline routers of the LatentRouter paper (Table 1), all behind ``router.models.base.Router``.

Training-free: Oracle (true outcomes; the upper bound), Strongest (best validation model), Cheapest, Random.
Feature-level (MMR-Bench): KNN (k=50 cosine), KMeans (20 clusters), MLPMF (MLP query embedding x model vectors).
Learned: RouteLLM-style matrix factorisation trained on pairwise preferences, and VL-RouterBench's feature-level
MLP classifier trained with cost-aware soft labels.

Every learned router reads only ``data.idx('train')`` and ``data.idx('val')`` in ``fit`` (checked), is seeded
(same data + seed -> same predictions) and works on the K models it was fitted on. Fixed-model routers
(Strongest, Cheapest, Random) ignore lambda, so their sweep is a single operating point. Input features are
``data.pooled`` (L2-normalised concat of pooled image, text and side features).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from torch import nn

from router.data.routing_data import RoutingData
from router.models.base import Router

# --------------------------------------------------------------------------------------------- helpers


def fit_rows(data: RoutingData, split: str) -> np.ndarray:
    """Row indices of a train/val split; refuses anything else so ``fit`` can never index test rows."""
    if split not in ("train", "val"):
        raise ValueError(f"fit may only read train or val rows, asked for {split!r}")
    rows = data.idx(split)
    if np.any(data.split[rows] == "test"):  # defensive: idx() must never hand back test rows
        raise RuntimeError("fit_rows returned test rows")
    return rows


def _train_rows(data: RoutingData) -> np.ndarray:
    rows = fit_rows(data, "train")
    if len(rows) == 0:
        raise ValueError("cannot fit a router: RoutingData has no 'train' rows")
    return rows


def _masked_means(values: np.ndarray, mask: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Per-column mean over masked entries ([R, K] -> [K]); columns with no entry take ``fallback`` (or 0)."""
    n = mask.sum(axis=0)
    s = np.where(mask, np.nan_to_num(values.astype(np.float64)), 0.0).sum(axis=0)
    fb = np.zeros(values.shape[1]) if fallback is None else fallback
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), fb)


def _train_means(data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean quality and mean normalised cost over the available entries of ``rows``."""
    m = data.avail[rows]
    q_all = float(np.mean(data.quality[rows][m])) if m.any() else 0.0
    c_all = float(np.mean(data.cost[rows][m])) if m.any() else 0.0
    q = _masked_means(data.quality[rows], m, np.full(data.k, q_all))
    c = _masked_means(data.cost[rows], m, np.full(data.k, c_all))
    return q, c


def _group_means(
    groups: np.ndarray, n_groups: int, values: np.ndarray, mask: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """[G, K] mean of ``values`` per group over masked entries; empty cells take the model's ``fallback``."""
    v = np.where(mask, np.nan_to_num(values.astype(np.float64)), 0.0)
    s = np.zeros((n_groups, values.shape[1]))
    n = np.zeros((n_groups, values.shape[1]))
    np.add.at(s, groups, v)
    np.add.at(n, groups, mask.astype(np.float64))
    return np.where(n > 0, s / np.maximum(n, 1), fallback[None, :])


class _FittedOnModels:
    """Mixin: remember the model list at fit time and refuse a different pool at predict time."""

    _model_ids: list[str] | None = None

    def _remember(self, data: RoutingData) -> None:
        self._model_ids = list(data.model_ids)

    def _check(self, data: RoutingData) -> None:
        if self._model_ids is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        if list(data.model_ids) != self._model_ids:
            raise ValueError(
                f"{type(self).__name__} was fitted on models {self._model_ids} but got {list(data.model_ids)}; "
                "baselines score a fixed pool (mask models out with avail instead)"
            )


def _fit_split(data: RoutingData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train rows, val rows, train+val rows): the only rows a torch baseline copies to tensors."""
    tr, va = _train_rows(data), fit_rows(data, "val")
    return tr, va, np.concatenate([tr, va])


def _positions(n_train: int, n_val: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the train and val rows inside the train+val tensors."""
    return (torch.arange(n_train, device=dev), torch.arange(n_train, n_train + n_val, device=dev))


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _n_params(module: nn.Module | None) -> int:
    return 0 if module is None else int(sum(p.numel() for p in module.parameters()))


@dataclass
class TorchTrainConfig:
    """Optimisation settings shared by the torch baselines (MMR-Bench: Adam 1e-3, batch 32)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without validation improvement before stopping

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 1:
            raise ValueError(f"invalid TorchTrainConfig: {self}")


def _train_loop(
    module: nn.Module,
    n_train: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    val_loss: Callable[[], float] | None,
    cfg: TorchTrainConfig,
    seed: int,
) -> int:
    """Adam on minibatches of train positions with early stopping on ``val_loss``; restores the best weights.

    ``batch_loss`` gets a LongTensor of positions 0..n_train-1. Returns the number of epochs run.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, bad, ran = np.inf, None, 0, 0
    for _ in range(cfg.epochs):
        ran += 1
        module.train()
        perm = torch.randperm(n_train, generator=gen)
        for start in range(0, n_train, cfg.batch_size):
            loss = batch_loss(perm[start : start + cfg.batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if val_loss is None:
            continue
        module.eval()
        with torch.no_grad():
            v = float(val_loss())
        if v < best - 1e-7:
            best, bad = v, 0
            best_state = {k: t.detach().clone() for k, t in module.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return ran


def _mlp(sizes: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU stack; no activation after the last layer."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------- training-free


class OracleRouter(Router):
    """Upper bound: picks the available model with the best *realised* utility; ties go to the cheaper model."""

    name = "oracle"
    learned = False

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


class _FixedRouter(_FittedOnModels, Router):
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
        tr = _train_rows(data)
        q_tr, c_tr = _train_means(data, tr)
        va = fit_rows(data, "val")
        q_va = _masked_means(data.quality[va], data.avail[va], q_tr) if len(va) else q_tr
        self._remember(data)
        self._q, self._c = q_va, c_tr
        # tie-break on the cheaper model so equal-quality pools pick deterministically and sensibly
        self._pref = q_va - 1e-9 * c_tr
        return self


class CheapestRouter(_FixedRouter):
    """Always the model with the lowest mean (normalised) training cost among the available ones."""

    name = "cheapest"

    def fit(self, data: RoutingData, seed: int = 0) -> CheapestRouter:
        q_tr, c_tr = _train_means(data, _train_rows(data))
        self._remember(data)
        self._q, self._c = q_tr, c_tr
        self._pref = -c_tr + 1e-9 * q_tr
        return self


class RandomRouter(_FittedOnModels, Router):
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


# --------------------------------------------------------------------------------------------- feature level


class KNNRouter(_FittedOnModels, Router):
    """MMR-Bench KNN: mean outcome and mean cost of the k (=50) nearest training queries (cosine) per model."""

    name = "knn"

    def __init__(self, k: int = 50) -> None:
        if k < 1:
            raise ValueError(f"KNNRouter.k must be >= 1, got {k}")
        self.k = k
        self._nn: NearestNeighbors | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> KNNRouter:
        tr = _train_rows(data)
        self._remember(data)
        self._nn = NearestNeighbors(n_neighbors=min(self.k, len(tr)), metric="cosine", algorithm="brute")
        self._nn.fit(data.pooled[tr])
        self._q, self._c = data.quality[tr].astype(np.float64), data.cost[tr].astype(np.float64)
        self._m = data.avail[tr].copy()
        self._qf, self._cf = _train_means(data, tr)
        return self

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        assert self._nn is not None
        idx = self._nn.kneighbors(data.pooled[rows], return_distance=False)  # [R, k]
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


class KMeansRouter(_FittedOnModels, Router):
    """MMR-Bench KMeans: cluster training queries (20 clusters) and use each cluster's mean outcome and cost."""

    name = "kmeans"

    def __init__(self, n_clusters: int = 20, n_init: int = 10) -> None:
        if n_clusters < 1 or n_init < 1:
            raise ValueError(f"KMeansRouter needs n_clusters >= 1 and n_init >= 1, got {n_clusters}, {n_init}")
        self.n_clusters, self.n_init = n_clusters, n_init
        self._km: KMeans | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> KMeansRouter:
        tr = _train_rows(data)
        self._remember(data)
        x = data.pooled[tr].astype(np.float64)
        g = min(self.n_clusters, len(np.unique(x, axis=0)))
        self._km = KMeans(n_clusters=g, n_init=self.n_init, random_state=seed).fit(x)
        lab = self._km.labels_
        qf, cf = _train_means(data, tr)
        m = data.avail[tr]
        self._cq = _group_means(lab, g, data.quality[tr], m, qf)
        self._cc = _group_means(lab, g, data.cost[tr], m, cf)
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


@dataclass
class MLPMFConfig:
    """MMR-Bench MLPMF: query MLP 256-128-64, per-model vectors of size 64, Adam 1e-3, batch 32."""

    hidden: tuple[int, ...] = (256, 128, 64)
    train: TorchTrainConfig = field(default_factory=TorchTrainConfig)
    quality_loss: str = "bce"  # bce (outcomes in [0,1] as soft targets) or mse

    def __post_init__(self) -> None:
        if self.quality_loss not in ("bce", "mse"):
            raise ValueError(f"MLPMFConfig.quality_loss must be 'bce' or 'mse', got {self.quality_loss!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"MLPMFConfig.hidden must be positive sizes, got {self.hidden}")


class _MFNet(nn.Module):
    """score[b, j] = <mlp(x_b), v_j> + bias_j."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], k: int) -> None:
        super().__init__()
        self.query = _mlp((d_in, *hidden))
        self.models = nn.Parameter(torch.randn(k, hidden[-1]) * hidden[-1] ** -0.5)
        self.bias = nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.query(x) @ self.models.T + self.bias


class MLPMFRouter(_FittedOnModels, Router):
    """MMR-Bench MLPMF: one MF net for quality (sigmoid output) and one for normalised cost, masked losses."""

    name = "mlpmf"

    def __init__(self, config: MLPMFConfig | None = None) -> None:
        self.config = config or MLPMFConfig()
        self._qnet: _MFNet | None = None
        self._cnet: _MFNet | None = None

    def _fit_net(self, data: RoutingData, target: np.ndarray, kind: str, seed: int) -> _MFNet:
        dev, cfg = _device(), self.config
        tr, va, rows = _fit_split(data)
        torch.manual_seed(seed)
        net = _MFNet(data.pooled.shape[1], cfg.hidden, data.k).to(dev)
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=dev)
        y = torch.as_tensor(np.nan_to_num(target[rows]), dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.float32, device=dev)

        def loss_on(pos: torch.Tensor) -> torch.Tensor:
            out = net(x[pos])
            if kind == "bce":
                per = F.binary_cross_entropy_with_logits(out, y[pos], reduction="none")
            else:
                per = (out - y[pos]) ** 2
            return (per * m[pos]).sum() / m[pos].sum().clamp_min(1.0)

        tr_p, va_p = _positions(len(tr), len(va), dev)
        _train_loop(net, len(tr), lambda pos: loss_on(tr_p[pos.to(dev)]),
                    (lambda: float(loss_on(va_p))) if len(va) else None, cfg.train, seed)
        return net

    def fit(self, data: RoutingData, seed: int = 0) -> MLPMFRouter:
        self._remember(data)
        self._qnet = self._fit_net(data, data.quality, self.config.quality_loss, seed)
        self._cnet = self._fit_net(data, data.cost, "mse", seed + 1)
        return self

    @torch.no_grad()
    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        assert self._qnet is not None and self._cnet is not None
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=_device())
        q = self._qnet(x)
        q = torch.sigmoid(q) if self.config.quality_loss == "bce" else q
        return q.double().cpu().numpy(), self._cnet(x).clamp_min(0).double().cpu().numpy()

    def n_parameters(self) -> int:
        return _n_params(self._qnet) + _n_params(self._cnet)


# --------------------------------------------------------------------------------------------- learned routers


@dataclass
class RouteLLMConfig:
    """RouteLLM matrix factorisation: project the query to ``dim``, ⊙ model embedding, linear -> scalar."""

    dim: int = 128
    train: TorchTrainConfig = field(default_factory=lambda: TorchTrainConfig(batch_size=64))

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"RouteLLMConfig.dim must be >= 1, got {self.dim}")


class _RouteLLMNet(nn.Module):
    def __init__(self, d_in: int, dim: int, k: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, dim, bias=False)
        self.models = nn.Embedding(k, dim)
        self.head = nn.Linear(dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K] per-model preference scores."""
        return self.head(self.proj(x)[:, None, :] * self.models.weight[None, :, :]).squeeze(-1)


class RouteLLMMFRouter(_FittedOnModels, Router):
    """RouteLLM-style MF trained on pairwise wins/losses derived from training outcomes.

    For each training query every available pair (a, b) with quality_a > quality_b is a preference; the loss is
    ``-log sigmoid(s_a - s_b)``. Scores have no scale of their own, so a shared Platt map ``sigmoid(A s + B)``
    fitted on validation outcomes (train if no val) turns them into a quality estimate that can be traded
    against cost; cost is the model's mean training cost.
    """

    name = "routellm_mf"

    def __init__(self, config: RouteLLMConfig | None = None) -> None:
        self.config = config or RouteLLMConfig()
        self._net: _RouteLLMNet | None = None
        self._platt = (1.0, 0.0)

    @staticmethod
    def _pair_loss(s: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        diff = s[:, :, None] - s[:, None, :]
        win = (y[:, :, None] > y[:, None, :]) & m[:, :, None] & m[:, None, :]
        if not win.any():
            return (s * 0).sum()
        return F.softplus(-diff[win]).mean()

    def fit(self, data: RoutingData, seed: int = 0) -> RouteLLMMFRouter:
        dev, cfg = _device(), self.config
        tr, va, rows = _fit_split(data)
        self._remember(data)
        torch.manual_seed(seed)
        net = _RouteLLMNet(data.pooled.shape[1], cfg.dim, data.k).to(dev)
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=dev)
        y = torch.as_tensor(np.nan_to_num(data.quality[rows]), dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.bool, device=dev)
        tr_p, va_p = _positions(len(tr), len(va), dev)

        def loss_on(pos: torch.Tensor) -> torch.Tensor:
            return self._pair_loss(net(x[pos]), y[pos], m[pos])

        _train_loop(net, len(tr), lambda pos: loss_on(tr_p[pos.to(dev)]),
                    (lambda: float(loss_on(va_p))) if len(va) else None, cfg.train, seed)
        self._net = net
        cal = va if len(va) else tr
        self._platt = self._fit_platt(self._raw(data, cal), data.quality[cal], data.avail[cal])
        self._c = _train_means(data, tr)[1]
        return self

    @staticmethod
    def _fit_platt(s: np.ndarray, y: np.ndarray, m: np.ndarray) -> tuple[float, float]:
        """(A, B) minimising the BCE of sigmoid(A s + B) against outcomes in [0, 1] (available entries)."""
        sv, yv = s[m].astype(np.float64), np.clip(np.nan_to_num(y[m]).astype(np.float64), 0, 1)
        if sv.size == 0:
            return 1.0, 0.0

        def nll(p: np.ndarray) -> tuple[float, np.ndarray]:
            z = p[0] * sv + p[1]
            loss = np.mean(np.logaddexp(0, z) - yv * z)
            g = 1 / (1 + np.exp(-z)) - yv
            return float(loss), np.array([np.mean(g * sv), np.mean(g)])

        res = minimize(nll, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        return float(res.x[0]), float(res.x[1])

    @torch.no_grad()
    def _raw(self, data: RoutingData, rows: np.ndarray) -> np.ndarray:
        assert self._net is not None
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=_device())
        return self._net(x).double().cpu().numpy()

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        a, b = self._platt
        q = 1.0 / (1.0 + np.exp(-(a * self._raw(data, rows) + b)))
        return q, np.tile(self._c, (len(rows), 1))

    def n_parameters(self) -> int:
        return _n_params(self._net) + 2


@dataclass
class VLFeatureConfig:
    """VL-RouterBench feature-level router: MLP classifier over models, one per training lambda."""

    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.1
    # soft-label cost weights (on the normalised cost); inf = cheapest correct model only
    lambdas: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0)
    correct_threshold: float = 0.5  # quality >= this counts as correct
    train: TorchTrainConfig = field(default_factory=lambda: TorchTrainConfig(batch_size=64))

    def __post_init__(self) -> None:
        if not self.lambdas or any(not (lam >= 0) for lam in self.lambdas):
            raise ValueError(f"VLFeatureConfig.lambdas must be non-empty and >= 0, got {self.lambdas}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"VLFeatureConfig.dropout must be in [0, 1), got {self.dropout}")


def soft_labels(
    quality: np.ndarray, cost: np.ndarray, avail: np.ndarray, lam: float, threshold: float = 0.5
) -> np.ndarray:
    """VL-RouterBench targets: t(j) ∝ 1[correct_j] exp(-lam c_j) over available correct models.

    Rows with no correct available model put all mass on the cheapest available model; ``lam = inf`` puts all
    mass on the cheapest correct model. Rows with no available model get zeros.
    """
    correct = (np.nan_to_num(quality) >= threshold) & avail
    c = np.where(avail, np.nan_to_num(cost, nan=np.inf), np.inf).astype(np.float64)
    if not lam >= 0:
        raise ValueError(f"soft_labels: lambda must be >= 0, got {lam}")
    out = np.zeros(quality.shape, dtype=np.float64)
    rows = np.arange(len(quality))
    has = correct.any(axis=1)
    if np.isinf(lam):
        cc = np.where(correct, c, np.inf)
        out[rows[has], np.argmin(cc[has], axis=1)] = 1.0
    else:
        # shift by the row's cheapest correct cost so large lambdas cannot underflow every weight to 0
        cmin = np.where(correct, c, np.inf).min(axis=1, keepdims=True)
        shifted = np.where(correct, c - np.where(np.isfinite(cmin), cmin, 0.0), 0.0)
        w = np.where(correct, np.exp(-lam * shifted), 0.0)
        out[has] = w[has] / w[has].sum(axis=1, keepdims=True)
    none = ~has & avail.any(axis=1)
    out[rows[none], np.argmin(c[none], axis=1)] = 1.0
    return out


class VLFeatureRouter(_FittedOnModels, Router):
    """VL-RouterBench feature-level router: standardised ``pooled`` -> MLP -> softmax over available models.

    One classifier per lambda in ``config.lambdas``, trained on :func:`soft_labels`; routing at lambda uses the
    classifier whose training lambda is nearest on a log(1 + lambda) scale and picks its most probable
    available model. ``predict`` returns the lambda-0 (lowest) classifier's probabilities as a quality proxy and
    the train mean cost (not outcome estimates, so ``predicts_outcomes`` is False).
    """

    name = "vl_feature"
    predicts_outcomes = False

    def __init__(self, config: VLFeatureConfig | None = None) -> None:
        self.config = config or VLFeatureConfig()
        self._nets: list[nn.Module] = []
        self._lams = np.array(sorted(self.config.lambdas), dtype=np.float64)
        self._scaler: StandardScaler | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> VLFeatureRouter:
        dev, cfg = _device(), self.config
        tr, va, rows = _fit_split(data)
        self._remember(data)
        self._scaler = StandardScaler().fit(data.pooled[tr])
        self._c = _train_means(data, tr)[1]
        x = torch.as_tensor(self._scaler.transform(data.pooled[rows]), dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.bool, device=dev)
        tr_p, va_p = _positions(len(tr), len(va), dev)
        self._nets = []
        for i, lam in enumerate(self._lams):
            target = soft_labels(data.quality[rows], data.cost[rows], data.avail[rows], lam, cfg.correct_threshold)
            t = torch.as_tensor(target, dtype=torch.float32, device=dev)
            torch.manual_seed(seed * 1000 + i)
            net = _mlp((data.pooled.shape[1], *cfg.hidden, data.k), cfg.dropout).to(dev)

            def loss_on(pos: torch.Tensor, net: nn.Module = net, t: torch.Tensor = t) -> torch.Tensor:
                logp = torch.log_softmax(net(x[pos]).masked_fill(~m[pos], -1e9), dim=-1)
                return -(t[pos] * logp).sum(-1).mean()

            _train_loop(net, len(tr), lambda pos, f=loss_on: f(tr_p[pos.to(dev)]),
                        (lambda f=loss_on: float(f(va_p))) if len(va) else None, cfg.train, seed * 1000 + i)
            self._nets.append(net)
        return self

    def nearest_lambda(self, lam: float) -> float:
        """The training lambda whose classifier routes at ``lam``."""
        return float(self._lams[int(np.argmin(np.abs(np.log1p(self._lams) - np.log1p(lam))))])

    @torch.no_grad()
    def _probs(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        self._check(data)
        assert self._scaler is not None
        net = self._nets[int(np.flatnonzero(self._lams == self.nearest_lambda(lam))[0])]
        x = torch.as_tensor(self._scaler.transform(data.pooled[rows]), dtype=torch.float32, device=_device())
        return torch.softmax(net(x), dim=-1).double().cpu().numpy()

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._probs(data, rows, float(self._lams[0])), np.tile(self._c, (len(rows), 1))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        return self._probs(data, rows, lam)

    def n_parameters(self) -> int:
        return int(sum(_n_params(n) for n in self._nets))


BASELINES: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (OracleRouter, StrongestRouter, CheapestRouter, RandomRouter, KNNRouter, KMeansRouter,
                MLPMFRouter, RouteLLMMFRouter, VLFeatureRouter)
}
