"""ReLope: KL-regularised LoRA probe (ReLope paper, section 4.2).

LoRA adapters (``peft``) are inserted into the attention projections of the chosen layer l, whose frozen
weights come from the small model (`router.models.probes.layer`); the adapted layer re-computes layer l's
states from layer l-1's stored token states, and its last-token output h feeds two linear heads, mu(h) and
log sigma(h), of a diagonal Gaussian q(z|h). Training samples z = mu + sigma * eps (reparameterisation);
inference uses z = mu. The probe's logit is an MLP of z, and the loss is
BCE(y, sigmoid(f(z))) + beta * KL(q(z|h) || N(0, I)). With LoRA's B initialised to zero the adapted layer
starts exactly at the frozen one (a test checks it reproduces the stored layer-l state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from router.models.probes.features import ProbeFeatures
from router.models.probes.layer import FrozenLayer, load_layer
from router.models.probes.probes import CorrectnessProbe, _stats
from router.models.probes.training import ProbeTrainConfig, mlp_head, train_probe


@dataclass
class ReLopeConfig:
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    bottleneck: int = 64  # dimension of z
    beta: float = 1e-3  # weight of the KL term
    head_hidden: tuple[int, ...] = (64,)
    dropout: float = 0.1
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)


def kl_standard_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over dimensions, averaged over the batch."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1.0 - 2 * log_sigma).sum(-1).mean()


class ReLopeModule(nn.Module):
    """LoRA-adapted layer -> standardised last-token state -> (mu, log sigma) -> z -> logit."""

    def __init__(self, layer: FrozenLayer, d: int, cfg: ReLopeConfig, mu: np.ndarray, sd: np.ndarray):
        super().__init__()
        from peft import LoraConfig, inject_adapter_in_model

        present = {n.rsplit(".", 1)[-1] for n, _ in layer.named_modules()}
        targets = [t for t in cfg.target_modules if t in present]
        if not targets:
            raise ValueError(f"none of the LoRA target modules {cfg.target_modules} is in the layer")
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, bias="none")
        self.layer = inject_adapter_in_model(lora, layer)
        for n, p in self.layer.named_parameters():
            p.requires_grad_("lora_" in n)
        self.register_buffer("mu_h", torch.as_tensor(mu))
        self.register_buffer("sd_h", torch.as_tensor(sd))
        self.to_mu = nn.Linear(d, cfg.bottleneck)
        self.to_log_sigma = nn.Linear(d, cfg.bottleneck)
        self.head = mlp_head(cfg.bottleneck, cfg.head_hidden, cfg.dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = (self.layer(x, lengths) - self.mu_h) / self.sd_h
        mu, log_sigma = self.to_mu(h), self.to_log_sigma(h).clamp(-6.0, 4.0)
        z = mu + torch.randn_like(mu) * torch.exp(log_sigma) if self.training else mu
        return self.head(z).squeeze(-1), mu, log_sigma


class ReLopeProbe(CorrectnessProbe):
    name = "ReLope"

    def __init__(self, cfg: ReLopeConfig | None = None, layer: FrozenLayer | None = None):
        """``layer`` overrides the snapshot in the features (tests pass a tiny randomly initialised one)."""
        self.cfg = cfg or ReLopeConfig()
        self._layer = layer
        self.module: ReLopeModule | None = None
        self.history: list[dict] = []
        self.last_kl: float = float("nan")

    @staticmethod
    def _batch(feats: ProbeFeatures, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = feats.lengths[rows]
        t = int(lengths.max())
        return torch.as_tensor(feats.seq[rows, :t].astype(np.float32)), torch.as_tensor(lengths)

    def _frozen_layer(self, feats: ProbeFeatures) -> FrozenLayer:
        if self._layer is not None:
            import copy

            return copy.deepcopy(self._layer)
        if feats.layer_dir is None:
            raise ValueError("ReLope needs the decoder layer: ProbeFeatures.layer_dir is not set")
        return load_layer(feats.layer_dir)

    def fit(self, feats, y, train_rows, val_rows, seed=0):
        torch.manual_seed(seed)
        layer = self._frozen_layer(feats)
        with torch.no_grad():  # standardise with the frozen layer's train outputs
            h0 = torch.cat([layer(*self._batch(feats, train_rows[i: i + 32])) for i in range(0, len(train_rows), 32)])
        torch.manual_seed(seed)
        self.module = ReLopeModule(layer, feats.dim, self.cfg, *_stats(h0.numpy()))
        bce = nn.BCEWithLogitsLoss()
        beta = self.cfg.beta

        def loss_fn(m, rows, yb):
            logit, mu, log_sigma = m(*self._batch(feats, rows))
            kl = kl_standard_normal(mu, log_sigma)
            self.last_kl = float(kl.detach())
            return bce(logit, yb) + beta * kl

        self.history = train_probe(self.module, loss_fn, lambda m, rows: self._predict(m, feats, rows), y,
                                   train_rows, val_rows, self.cfg.train, seed)
        return self

    def _predict(self, m: nn.Module, feats: ProbeFeatures, rows: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(rows), 32):
                out.append(torch.sigmoid(m(*self._batch(feats, rows[i: i + 32]))[0]).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def predict(self, feats, rows):
        if self.module is None:
            raise RuntimeError("ReLopeProbe is not fitted")
        self.module.eval()
        return self._predict(self.module, feats, rows)

    def n_parameters(self) -> int:
        """Trainable parameters (LoRA + heads); the frozen layer is the small model's own."""
        return 0 if self.module is None else sum(p.numel() for p in self.module.parameters() if p.requires_grad)
