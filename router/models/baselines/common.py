"""What every baseline family shares: the fit-row guard, masked per-model means, the fixed-pool check and the
torch training loop.

Why: every learned router may read only ``data.idx('train')`` and ``data.idx('val')`` in ``fit`` (checked
here, once), is seeded (same data + seed -> same predictions) and works on the K models it was fitted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from router.data.routing_data import RoutingData


def fit_rows(data: RoutingData, split: str) -> np.ndarray:
    """Row indices of a train/val split; refuses anything else so ``fit`` can never index test rows."""
    if split not in ("train", "val"):
        raise ValueError(f"fit may only read train or val rows, asked for {split!r}")
    rows = data.idx(split)
    if np.any(data.split[rows] == "test"):  # defensive: idx() must never hand back test rows
        raise RuntimeError("fit_rows returned test rows")
    return rows


def train_rows(data: RoutingData) -> np.ndarray:
    rows = fit_rows(data, "train")
    if len(rows) == 0:
        raise ValueError("cannot fit a router: RoutingData has no 'train' rows")
    return rows


def masked_means(values: np.ndarray, mask: np.ndarray, fallback: np.ndarray | None = None) -> np.ndarray:
    """Per-column mean over masked entries ([R, K] -> [K]); columns with no entry take ``fallback`` (or 0)."""
    n = mask.sum(axis=0)
    s = np.where(mask, np.nan_to_num(values.astype(np.float64)), 0.0).sum(axis=0)
    fb = np.zeros(values.shape[1]) if fallback is None else fallback
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), fb)


def train_means(data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model mean quality and mean normalised cost over the available entries of ``rows``."""
    m = data.avail[rows]
    q_all = float(np.mean(data.quality[rows][m])) if m.any() else 0.0
    c_all = float(np.mean(data.cost[rows][m])) if m.any() else 0.0
    q = masked_means(data.quality[rows], m, np.full(data.k, q_all))
    c = masked_means(data.cost[rows], m, np.full(data.k, c_all))
    return q, c


def group_means(
    groups: np.ndarray, n_groups: int, values: np.ndarray, mask: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """[G, K] mean of ``values`` per group over masked entries; empty cells take the model's ``fallback``."""
    v = np.where(mask, np.nan_to_num(values.astype(np.float64)), 0.0)
    s = np.zeros((n_groups, values.shape[1]))
    n = np.zeros((n_groups, values.shape[1]))
    np.add.at(s, groups, v)
    np.add.at(n, groups, mask.astype(np.float64))
    return np.where(n > 0, s / np.maximum(n, 1), fallback[None, :])


class FittedOnModels:
    """Mixin: remember the model list at fit time and refuse a different pool at predict time."""

    _model_ids: list[str] | None = None

    def _remember(self, data: RoutingData) -> None:
        self._model_ids = list(data.model_ids)

    def fitted_model_ids(self) -> list[str] | None:
        return None if self._model_ids is None else list(self._model_ids)

    def _check(self, data: RoutingData) -> None:
        if self._model_ids is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        if list(data.model_ids) != self._model_ids:
            raise ValueError(
                f"{type(self).__name__} was fitted on models {self._model_ids} but got {list(data.model_ids)}; "
                "baselines score a fixed pool (mask models out with avail instead)"
            )


def fit_split(data: RoutingData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train rows, val rows, train+val rows): the only rows a torch baseline copies to tensors."""
    tr, va = train_rows(data), fit_rows(data, "val")
    return tr, va, np.concatenate([tr, va])


def positions(n_train: int, n_val: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the train and val rows inside the train+val tensors."""
    return (torch.arange(n_train, device=dev), torch.arange(n_train, n_train + n_val, device=dev))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def n_params(module: nn.Module | None) -> int:
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


def train_loop(
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


def mlp(sizes: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear-ReLU stack; no activation after the last layer."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)
