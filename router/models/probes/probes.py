"""The last-token probe and the Attention Probe, behind one interface that ReLope shares.

Every probe is fitted on train rows, tuned / early-stopped on val rows only, and predicts p(small model
correct). Hidden states are standardised per dimension with train statistics (LLM states have a few huge
outlier dimensions that would otherwise dominate). The paper's probe head is a five-layer MLP; the default
here is one hidden layer, because the demo trains on tens of rows (``head_hidden=(256, 128, 64, 32)``
gives the paper's depth).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from router.models.probes.features import ProbeFeatures
from router.models.probes.training import ProbeTrainConfig, auc_or_nan, mlp_head, train_probe


class CorrectnessProbe(ABC):
    name: str = "probe"

    @abstractmethod
    def fit(self, feats: ProbeFeatures, y: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
            seed: int = 0) -> CorrectnessProbe:
        """Fit on ``train_rows`` (labels ``y`` aligned with ``feats``), tune on ``val_rows`` only."""

    @abstractmethod
    def predict(self, feats: ProbeFeatures, rows: np.ndarray) -> np.ndarray:
        """p(the small model's answer is correct) for ``rows`` of ``feats``."""

    def n_parameters(self) -> int:
        return 0


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    return x.mean(0).astype(np.float32), (x.std(0) + 1e-3).astype(np.float32)


@dataclass
class LastTokenProbeConfig:
    layer: int | None = None  # hidden_states index; None = the features' layer
    cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # inverse L2 strengths, chosen on val AUC


class LastTokenProbe(CorrectnessProbe):
    """Logistic regression on the last prompt token's state at layer l (Chuang et al. / Mahaut et al.)."""

    name = "Probe (last token)"

    def __init__(self, cfg: LastTokenProbeConfig | None = None):
        self.cfg = cfg or LastTokenProbeConfig()
        self.chosen_c: float | None = None

    def _x(self, feats: ProbeFeatures, rows: np.ndarray) -> np.ndarray:
        layer = self.cfg.layer if self.cfg.layer is not None else feats.layer
        return (feats.last[rows, layer].astype(np.float32) - self._mu) / self._sd

    def fit(self, feats, y, train_rows, val_rows, seed=0):
        layer = self.cfg.layer if self.cfg.layer is not None else feats.layer
        self._mu, self._sd = _stats(feats.last[train_rows, layer])
        xt, yt = self._x(feats, train_rows), y[train_rows].astype(int)
        best = (-np.inf, None)
        for c in self.cfg.cs:
            m = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xt, yt) if 0 < yt.sum() < len(yt) else None
            if m is None:
                break
            score = auc_or_nan(y[val_rows], m.predict_proba(self._x(feats, val_rows))[:, 1]) if len(val_rows) else 0.0
            score = score if np.isfinite(score) else 0.0
            if score > best[0]:
                best = (score, (c, m))
        if best[1] is None:  # one-class training labels: the base rate is all there is to predict
            self.chosen_c, self._model, self._rate = None, None, float(np.mean(yt)) if len(yt) else 0.5
        else:
            self.chosen_c, self._model = best[1]
        return self

    def predict(self, feats, rows):
        if self._model is None:
            return np.full(len(rows), self._rate)
        return self._model.predict_proba(self._x(feats, rows))[:, 1]

    def n_parameters(self) -> int:
        return 0 if self._model is None else int(self._model.coef_.size + 1)


@dataclass
class AttentionProbeConfig:
    head_hidden: tuple[int, ...] = (64,)
    dropout: float = 0.1
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)


class _AttnPool(nn.Module):
    """alpha_t = softmax_t(h_t . q / sqrt(D)) over valid tokens; returns sum_t alpha_t h_t and the head's logit."""

    def __init__(self, d: int, cfg: AttentionProbeConfig, mu: np.ndarray, sd: np.ndarray):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(d))  # zero init: uniform attention (mean pooling) at start
        self.register_buffer("mu", torch.as_tensor(mu))
        self.register_buffer("sd", torch.as_tensor(sd))
        self.head = mlp_head(d, cfg.head_hidden, cfg.dropout)

    def weights(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = (x - self.mu) / self.sd
        s = h @ self.query / h.shape[-1] ** 0.5
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return torch.softmax(s.masked_fill(~valid, float("-inf")), dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        a = self.weights(x, lengths)
        pooled = torch.einsum("bt,btd->bd", a, (x - self.mu) / self.sd)
        return self.head(pooled).squeeze(-1)


class AttentionProbe(CorrectnessProbe):
    """The paper's Attention Probe: a learned routing query aggregates layer l-1's token states."""

    name = "Attention Probe"

    def __init__(self, cfg: AttentionProbeConfig | None = None):
        self.cfg = cfg or AttentionProbeConfig()
        self.module: _AttnPool | None = None
        self.history: list[dict] = []

    @staticmethod
    def _batch(feats: ProbeFeatures, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = feats.lengths[rows]
        t = int(lengths.max())
        return torch.as_tensor(feats.seq[rows, :t].astype(np.float32)), torch.as_tensor(lengths)

    def fit(self, feats, y, train_rows, val_rows, seed=0):
        torch.manual_seed(seed)
        tok = np.concatenate([feats.seq[r, : feats.lengths[r]] for r in train_rows]).astype(np.float32)
        self.module = _AttnPool(feats.dim, self.cfg, *_stats(tok))
        bce = nn.BCEWithLogitsLoss()

        def loss_fn(m, rows, yb):
            return bce(m(*self._batch(feats, rows)), yb)

        self.history = train_probe(self.module, loss_fn, lambda m, rows: self._predict(m, feats, rows), y,
                                   train_rows, val_rows, self.cfg.train, seed)
        return self

    def _predict(self, m: nn.Module, feats: ProbeFeatures, rows: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(rows), 64):
                out.append(torch.sigmoid(m(*self._batch(feats, rows[i: i + 64]))).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def predict(self, feats, rows):
        if self.module is None:
            raise RuntimeError("AttentionProbe is not fitted")
        return self._predict(self.module, feats, rows)

    def n_parameters(self) -> int:
        return 0 if self.module is None else sum(p.numel() for p in self.module.parameters())


PROBES: tuple[str, ...] = ("Probe (last token)", "Attention Probe", "ReLope")


def make_probe(name: str, **cfg: object) -> CorrectnessProbe:
    """A probe by display name (``PROBES``), with its default config unless ``cfg`` overrides fields."""
    from router.models.probes.relope import ReLopeConfig, ReLopeProbe

    if name == LastTokenProbe.name:
        return LastTokenProbe(LastTokenProbeConfig(**cfg))  # type: ignore[arg-type]
    if name == AttentionProbe.name:
        return AttentionProbe(AttentionProbeConfig(**cfg))  # type: ignore[arg-type]
    if name == ReLopeProbe.name:
        return ReLopeProbe(ReLopeConfig(**cfg))  # type: ignore[arg-type]
    raise ValueError(f"unknown probe {name!r}; known: {list(PROBES)}")
