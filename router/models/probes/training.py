"""The training loop the torch probes share: AdamW, mini-batches, early stopping on validation AUC.

Why AUC: the probes are judged on ranking queries by the small model's chance of being right, and the
demo's validation split is small (tens of rows), where loss is noisier than AUC. With a one-class
validation split AUC is undefined and validation BCE is used instead.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn


@dataclass
class ProbeTrainConfig:
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3  # AdamW, as in the paper
    weight_decay: float = 1e-2
    patience: int = 8


def auc_or_nan(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when ``y`` has one class (AUC undefined)."""
    y = np.asarray(y).astype(int)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def mlp_head(d_in: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """The probe classifier: Linear-GELU-Dropout blocks and a final logit."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.GELU(), nn.Dropout(dropout)]
        d_in = h
    layers.append(nn.Linear(d_in, 1))
    return nn.Sequential(*layers)


def train_probe(module: nn.Module, loss_fn: Callable[[nn.Module, np.ndarray, torch.Tensor], torch.Tensor],
                predict_fn: Callable[[nn.Module, np.ndarray], np.ndarray], y: np.ndarray,
                train_rows: np.ndarray, val_rows: np.ndarray, cfg: ProbeTrainConfig, seed: int) -> list[dict]:
    """Fit ``module`` in place (best validation state kept); returns the per-epoch history."""
    gen = np.random.default_rng(seed)
    torch.manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, bad, history = -np.inf, copy.deepcopy(module.state_dict()), 0, []
    yt = torch.as_tensor(y, dtype=torch.float32)
    for epoch in range(cfg.epochs):
        module.train()
        order = gen.permutation(train_rows)
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i: i + cfg.batch_size]
            loss = loss_fn(module, rows, yt[rows])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(float(loss.detach()))
        module.eval()
        score = _val_score(predict_fn(module, val_rows), y[val_rows]) if len(val_rows) else -float(np.mean(losses))
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_score": score})
        if score > best + 1e-6:
            best, best_state, bad = score, copy.deepcopy(module.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    return history


def _val_score(p: np.ndarray, y: np.ndarray) -> float:
    auc = auc_or_nan(y, p)
    if np.isfinite(auc):
        return auc
    eps = 1e-6
    return float(np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))  # -BCE
