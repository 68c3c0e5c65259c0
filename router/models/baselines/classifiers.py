"""VL-RouterBench's feature-level classifier router: an MLP over models on standardised ``data.pooled``,
trained with cost-aware soft labels (one classifier per training lambda, plus a cost-only classifier so the
evaluation sweep reaches the cheapest model at its top).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
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
class VLFeatureConfig:
    """VL-RouterBench feature-level router: MLP classifier over models, one per training lambda."""

    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.1
    # soft-label cost weights (on the normalised cost); inf = cheapest correct model only
    lambdas: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0)
    correct_threshold: float = 0.5  # quality >= this counts as correct
    train: TorchTrainConfig = field(default_factory=lambda: TorchTrainConfig(batch_size=64))
    # one more classifier whose target is the cheapest available model (the lambda -> inf limit of utility
    # routing, where correctness no longer matters); soft labels alone stop at the cheapest *correct* model
    cost_only: bool = True
    # the top of the evaluation's lambda sweep: routing lambdas in [0, sweep_max] map monotonically (log1p
    # scale) onto the classifiers, lambda 0 -> the lambda-0 classifier, sweep_max -> the last (cost-only) one
    sweep_max: float = 3.0

    def __post_init__(self) -> None:
        if not self.lambdas or any(not (lam >= 0) for lam in self.lambdas):
            raise ValueError(f"VLFeatureConfig.lambdas must be non-empty and >= 0, got {self.lambdas}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"VLFeatureConfig.dropout must be in [0, 1), got {self.dropout}")
        if not (self.sweep_max > 0 and np.isfinite(self.sweep_max)):
            raise ValueError(f"VLFeatureConfig.sweep_max must be finite and > 0, got {self.sweep_max}")


def cheapest_labels(cost: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """One-hot targets on each row's cheapest available model (zeros for rows with no available model)."""
    c = np.where(avail, np.nan_to_num(cost, nan=np.inf), np.inf)
    out = np.zeros(cost.shape, dtype=np.float64)
    has = avail.any(axis=1)
    out[np.flatnonzero(has), np.argmin(c[has], axis=1)] = 1.0
    return out


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


class VLFeatureRouter(FittedOnModels, Router):
    """VL-RouterBench feature-level router: standardised ``pooled`` -> MLP -> softmax over available models.

    One classifier per lambda in ``config.lambdas``, trained on :func:`soft_labels`, then (``cost_only``) one on
    :func:`cheapest_labels`. Routing at lambda uses classifier ``round((n - 1) * log1p(lambda) /
    log1p(sweep_max))`` (clipped), so the evaluation sweep covers every classifier, from the lambda-0 one to the
    cheapest-model one at its top, and picks its most probable available model. ``predict`` returns the lambda-0 (lowest) classifier's probabilities as a quality proxy and
    the train mean cost (not outcome estimates, so ``predicts_outcomes`` is False).
    """

    name = "vl_feature"
    predicts_outcomes = False

    def __init__(self, config: VLFeatureConfig | None = None) -> None:
        self.config = config or VLFeatureConfig()
        self._nets: list[nn.Module] = []
        lams = sorted(self.config.lambdas)
        self._lams = np.array([*lams, np.inf] if self.config.cost_only else lams, dtype=np.float64)
        self._scaler: StandardScaler | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> VLFeatureRouter:
        dev, cfg = default_device(), self.config
        tr, va, rows = fit_split(data)
        self._remember(data)
        self._scaler = StandardScaler().fit(data.pooled[tr])
        self._c = train_means(data, tr)[1]
        x = torch.as_tensor(self._scaler.transform(data.pooled[rows]), dtype=torch.float32, device=dev)
        m = torch.as_tensor(data.avail[rows], dtype=torch.bool, device=dev)
        tr_p, va_p = positions(len(tr), len(va), dev)
        self._nets = []
        for i, lam in enumerate(self._lams):
            target = (cheapest_labels(data.cost[rows], data.avail[rows]) if np.isinf(lam) and cfg.cost_only else
                      soft_labels(data.quality[rows], data.cost[rows], data.avail[rows], lam, cfg.correct_threshold))
            t = torch.as_tensor(target, dtype=torch.float32, device=dev)
            torch.manual_seed(seed * 1000 + i)
            net = mlp((data.pooled.shape[1], *cfg.hidden, data.k), cfg.dropout).to(dev)

            def loss_on(pos: torch.Tensor, net: nn.Module = net, t: torch.Tensor = t) -> torch.Tensor:
                logp = torch.log_softmax(net(x[pos]).masked_fill(~m[pos], -1e9), dim=-1)
                return -(t[pos] * logp).sum(-1).mean()

            train_loop(net, len(tr), lambda pos, f=loss_on: f(tr_p[pos.to(dev)]),
                        (lambda f=loss_on: float(f(va_p))) if len(va) else None, cfg.train, seed * 1000 + i)
            self._nets.append(net)
        return self

    def classifier_index(self, lam: float) -> int:
        """Which classifier routes at ``lam``: the sweep [0, sweep_max] spread evenly (log1p) over all of them."""
        n = len(self._lams)
        pos = (n - 1) * min(1.0, float(np.log1p(max(lam, 0.0)) / np.log1p(self.config.sweep_max)))
        return int(np.floor(pos + 0.5))

    def nearest_lambda(self, lam: float) -> float:
        """The training lambda (inf = the cost-only classifier) of the classifier that routes at ``lam``."""
        return float(self._lams[self.classifier_index(lam)])

    @torch.no_grad()
    def _probs(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        self._check(data)
        assert self._scaler is not None
        net = self._nets[self.classifier_index(lam)]
        x = torch.as_tensor(self._scaler.transform(data.pooled[rows]), dtype=torch.float32, device=default_device())
        return torch.softmax(net(x), dim=-1).double().cpu().numpy()

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._probs(data, rows, float(self._lams[0])), np.tile(self._c, (len(rows), 1))

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float) -> np.ndarray:
        return self._probs(data, rows, lam)

    def n_parameters(self) -> int:
        return int(sum(n_params(n) for n in self._nets))
