"""Matrix-factorisation baselines on ``data.pooled``: MMR-Bench's MLPMF (MLP query embedding x model vectors,
one net for quality and one for cost) and RouteLLM-style MF trained on pairwise preferences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.baselines.common import (
    FittedOnModels,
    TorchTrainConfig,
    default_device,
    fit_split,
    mlp,
    n_params,
    positions,
    train_loop,
    train_means,
)


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
        self.query = mlp((d_in, *hidden))
        self.models = nn.Parameter(torch.randn(k, hidden[-1]) * hidden[-1] ** -0.5)
        self.bias = nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.query(x) @ self.models.T + self.bias


class MLPMFRouter(FittedOnModels, Router):
    """MMR-Bench MLPMF: one MF net for quality (sigmoid output) and one for normalised cost, masked losses."""

    name = "mlpmf"

    def __init__(self, config: MLPMFConfig | None = None) -> None:
        self.config = config or MLPMFConfig()
        self._qnet: _MFNet | None = None
        self._cnet: _MFNet | None = None

    def _fit_net(self, data: RoutingData, target: np.ndarray, kind: str, seed: int) -> _MFNet:
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
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

        tr_p, va_p = positions(len(tr), len(va), dev)
        train_loop(net, len(tr), lambda pos: loss_on(tr_p[pos.to(dev)]),
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
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=default_device())
        q = self._qnet(x)
        q = torch.sigmoid(q) if self.config.quality_loss == "bce" else q
        return q.double().cpu().numpy(), self._cnet(x).clamp_min(0).double().cpu().numpy()

    def n_parameters(self) -> int:
        return n_params(self._qnet) + n_params(self._cnet)


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


class RouteLLMMFRouter(FittedOnModels, Router):
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
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
        self._remember(data)
        torch.manual_seed(seed)
        net = _RouteLLMNet(data.pooled.shape[1], cfg.dim, data.k).to(dev)
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=dev)
        y = torch.as_tensor(np.nan_to_num(data.quality[rows]), dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.bool, device=dev)
        tr_p, va_p = positions(len(tr), len(va), dev)

        def loss_on(pos: torch.Tensor) -> torch.Tensor:
            return self._pair_loss(net(x[pos]), y[pos], m[pos])

        train_loop(net, len(tr), lambda pos: loss_on(tr_p[pos.to(dev)]),
                    (lambda: float(loss_on(va_p))) if len(va) else None, cfg.train, seed)
        self._net = net
        cal = va if len(va) else tr
        self._platt = self._fit_platt(self._raw(data, cal), data.quality[cal], data.avail[cal])
        self._c = train_means(data, tr)[1]
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
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=default_device())
        return self._net(x).double().cpu().numpy()

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        a, b = self._platt
        q = 1.0 / (1.0 + np.exp(-(a * self._raw(data, rows) + b)))
        return q, np.tile(self._c, (len(rows), 1))

    def n_parameters(self) -> int:
        return n_params(self._net) + 2
