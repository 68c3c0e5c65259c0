"""R2-Router (Xue et al. 2026, arXiv 2602.02823), adapted to traces with a single output budget.

The paper routes over (model, output-length budget) pairs with a lightweight multi-head predictor: for a query
embedding it predicts, per model and budget, the answer quality and the output length (hence cost), and picks
the pair maximising ``(1 - lambda) Q - lambda C`` (Sec. 3-4; the release trains one sigmoid/BCE quality MLP
per budget and a token-count regressor per model and multiplies tokens by the model's price).

Adaptation: our traces have one (unconstrained) budget per model, so the budget axis has one point and the
predictor keeps one quality head and one cost head per model on a shared trunk over ``data.pooled``. The cost
head predicts the query's cost *relative to the model's mean training cost* (the query-dependent length
factor of "tokens x price"), multiplied back by that mean. ``(1 - l) Q - l C`` and our ``Q - lambda C`` give
the same argmax for ``lambda = l / (1 - l)``, so the base ``Router.select`` covers the paper's sweep.
Models added after training have no heads: the pool is fixed at fit time (mask models out with ``avail``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
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
class R2RouterConfig:
    """Shared trunk sizes (the release's predictor MLP: 256-128-64, dropout 0.5), loss weight of the cost head."""

    hidden: tuple[int, ...] = (256, 128, 64)
    dropout: float = 0.5
    cost_weight: float = 1.0  # weight of the relative-cost MSE next to the quality BCE
    train: TorchTrainConfig = field(default_factory=TorchTrainConfig)

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"R2RouterConfig.hidden must be positive sizes, got {self.hidden}")
        if not 0 <= self.dropout < 1 or self.cost_weight < 0:
            raise ValueError(f"R2RouterConfig needs 0 <= dropout < 1 and cost_weight >= 0, got {self}")


class _MultiHead(nn.Module):
    """Shared trunk -> per-model quality logits [B, K] and per-model relative cost [B, K]."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], k: int, dropout: float) -> None:
        super().__init__()
        self.trunk = nn.Sequential(mlp((d_in, *hidden), dropout), nn.ReLU(), nn.Dropout(dropout))
        self.quality = nn.Linear(hidden[-1], k)  # one linear quality head per model (columns)
        self.cost = nn.Linear(hidden[-1], k)  # one linear cost head per model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.quality(h), self.cost(h)


class R2Router(FittedOnModels, Router):
    """R2-Router's multi-head quality / cost predictor; routes by predicted ``Q - lambda C`` (base select)."""

    name = "r2_router"

    def __init__(self, config: R2RouterConfig | None = None) -> None:
        self.config = config or R2RouterConfig()
        self._net: _MultiHead | None = None
        self._cscale = np.ones(1)

    def loss(self, net: _MultiHead, x: torch.Tensor, y: torch.Tensor, rc: torch.Tensor,
             m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quality BCE, relative-cost MSE), each averaged over available (query, model) entries."""
        ql, cr = net(x)
        n = m.sum().clamp_min(1.0)
        bce = (F.binary_cross_entropy_with_logits(ql, y, reduction="none") * m).sum() / n
        mse = (((cr - rc) ** 2) * m).sum() / n
        return bce, mse

    def fit(self, data: RoutingData, seed: int = 0) -> R2Router:
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
        self._remember(data)
        c_mean = train_means(data, tr)[1]
        self._cscale = np.where(c_mean > 0, c_mean, 1.0)
        torch.manual_seed(seed)
        net = _MultiHead(data.pooled.shape[1], cfg.hidden, data.k, cfg.dropout).to(dev)
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=dev)
        y = torch.as_tensor(np.clip(np.nan_to_num(data.quality[rows]), 0, 1), dtype=torch.float32, device=dev)
        rel = np.nan_to_num(data.cost[rows].astype(np.float64)) / self._cscale[None, :]
        rc = torch.as_tensor(rel, dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.float32, device=dev)
        tr_p, va_p = positions(len(tr), len(va), dev)

        def loss_on(pos: torch.Tensor) -> torch.Tensor:
            bce, mse = self.loss(net, x[pos], y[pos], rc[pos], m[pos])
            return bce + cfg.cost_weight * mse

        train_loop(net, len(tr), lambda pos: loss_on(tr_p[pos.to(dev)]),
                   (lambda: float(loss_on(va_p))) if len(va) else None, cfg.train, seed)
        self._net = net
        return self

    @torch.no_grad()
    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(data)
        assert self._net is not None
        x = torch.as_tensor(data.pooled[rows], dtype=torch.float32, device=default_device())
        ql, cr = self._net(x)
        q = torch.sigmoid(ql).double().cpu().numpy()
        c = cr.clamp_min(0).double().cpu().numpy() * self._cscale[None, :]
        return q, c

    def n_parameters(self) -> int:
        return n_params(self._net)
