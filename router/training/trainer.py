"""Training, prediction and the ``Router`` adapter for LatentRouter (paper section 2.3).

Losses are computed only over the models available for each query: heteroscedastic Gaussian NLL of the
answer quality, a pairwise ranking loss and a listwise loss on the routing scores, utility and mean
regression, and a penalty on the capsule correction. Early stopping keeps the weights with the best mean
validation utility of the argmax pick. For cost-aware training a lambda is drawn per batch from a small set,
so that one model serves a whole lambda sweep; availability dropout teaches it varying pools.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from router.data.routing_data import RoutingData
from router.models.base import Router
from router.models.latent_router.model import InputDims, LatentRouter, LatentRouterConfig, side_input
from router.models.latent_router.pooling import is_prefix_mask
from router.threads import torch_threads
from router.training.curves import group_best_reference
from warehouse.vocabulary import PROGRESS_LOGGER


@dataclass
class TrainConfig:
    """Optimisation and loss settings; defaults follow the released LatentRouter."""

    w_nll: float = 1.0  # point head (distributional=False): weight of the quality MSE instead
    w_pair: float = 0.35
    w_list: float = 0.65
    tau_list: float = 0.05  # temperature of both target and predicted softmax in the listwise loss
    w_util: float = 0.25
    w_mean: float = 0.10
    w_res: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 0.01  # 1e-4 in the release; the router overfits 1.4k train rows within ~8 epochs
    lr_schedule: str = "cosine"  # cosine (decay to lr_min_ratio * lr over ``epochs``) | constant
    warmup_epochs: float = 1.0  # linear warmup, in epochs (fractions allowed)
    lr_min_ratio: float = 0.05
    ema_decay: float = 0.95  # > 0: validate / keep an exponential moving average of the weights (per step);
    # it smooths the noisy 200-row validation signal that early stopping reads (0 = off)
    grad_clip: float = 5.0
    batch_size: int = 128
    epochs: int = 20
    patience: int = 5
    lam: float = 0.0  # train lambda (0 = performance-oriented)
    lam_choices: tuple[float, ...] = ()  # non-empty: draw lambda per batch from these (cost-aware)
    avail_drop: float = 0.1  # chance of hiding each available model in a training batch (>= 1 kept)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int | None = None  # torch threads while training (restored afterwards); None = leave as is
    eval_batch_size: int = 512
    # training curve: per-epoch pick accuracy (lambda 0) on at most this many train rows (evenly spaced) and
    # on all validation rows, next to GroupBest's (0 = off; it costs one forward over those rows per epoch)
    curve_rows: int = 2000
    # True: the head's mu output starts near the mean train quality and sigma near its std (a Bernoulli
    # outcome's spread), so the first optimiser steps go to the query-model interaction, not the global mean
    init_head_mean: bool = False
    # chance of hiding each image / question token from the capsules in a training batch: the query-token
    # path (which overfits first) gets noisier, the side labels and the model tokens carry more of the fit
    token_drop: float = 0.0
    # False: keep the last epoch's (EMA) weights instead of the best validation epoch's, for an epoch budget
    # chosen out of fold (router.evaluation.crossfit.choose_epochs); validation is still recorded each epoch
    restore_best: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 0:
            raise ValueError("TrainConfig needs batch_size >= 1, epochs >= 1 and patience >= 0")
        if not 0.0 <= self.avail_drop < 1.0:
            raise ValueError(f"TrainConfig.avail_drop must be in [0, 1), got {self.avail_drop}")
        if self.tau_list <= 0:
            raise ValueError(f"TrainConfig.tau_list must be > 0, got {self.tau_list}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.lr <= 0 or self.warmup_epochs < 0 or not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError("TrainConfig needs lr > 0, warmup_epochs >= 0 and lr_min_ratio in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.token_drop < 1.0:
            raise ValueError(f"TrainConfig.token_drop must be in [0, 1), got {self.token_drop}")
        if self.curve_rows < 0:
            raise ValueError(f"TrainConfig.curve_rows must be >= 0, got {self.curve_rows}")

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``step`` (linear warmup, then cosine or constant)."""
        warm = self.warmup_epochs * steps_per_epoch
        if step < warm:
            return (step + 1) / (warm + 1)
        if self.lr_schedule == "constant":
            return 1.0
        total = max(1.0, self.epochs * steps_per_epoch - warm)
        frac = min(1.0, (step - warm) / total)
        return self.lr_min_ratio + (1 - self.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    @property
    def eval_lams(self) -> tuple[float, ...]:
        return tuple(self.lam_choices) if self.lam_choices else (self.lam,)


@dataclass
class EpochLog:
    """One epoch of the training curve (the asset shows it as metadata)."""

    epoch: int
    train_loss: float
    parts: dict[str, float]  # mean weighted-free value of each loss term
    val_utility: float
    seconds: float
    val_loss: float = float("nan")  # the training objective at lambda 0 on the validation rows (EMA weights)
    train_acc: float = float("nan")  # pick accuracy at lambda 0 on (a subsample of) train rows (EMA weights)
    val_acc: float = float("nan")  # pick accuracy at lambda 0 on the validation rows (EMA weights)


@dataclass
class TrainResult:
    """The trained model (best epoch's weights), its curve and the configs it was trained with."""

    model: LatentRouter
    history: list[EpochLog]
    best_epoch: int
    n_params: int
    best_val_utility: float
    model_cfg: LatentRouterConfig = field(default_factory=LatentRouterConfig)
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    # the curve's reference lines: GroupBest's pick accuracy on the same train subsample and validation rows
    reference: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present; asking for CUDA without it fails instead of silently using the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device='cuda' but CUDA is not available")
    return torch.device(name)


def make_batch(
    data: RoutingData,
    rows: np.ndarray,
    cfg: LatentRouterConfig,
    device: torch.device,
    avail: np.ndarray | None = None,
) -> dict[str, torch.Tensor | None]:
    """Model inputs for ``rows`` as float32 tensors on ``device`` (``avail`` overrides data.avail)."""

    def t(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), device=device).to(dtype)

    av = data.avail[rows] if avail is None else avail
    if av.shape != (len(rows), data.k):
        raise ValueError(f"avail has shape {av.shape}, expected {(len(rows), data.k)} (rows x models)")
    use_img = data.img_tokens is not None and not data.text_only
    txt, txt_mask = data.txt_tokens[rows], data.txt_mask[rows]
    n = cfg.max_text_tokens
    if 0 < n < txt_mask.shape[1] and is_prefix_mask(txt_mask):  # the model keeps the first n tokens only
        txt, txt_mask = txt[:, :n], txt_mask[:, :n]
    return {
        "img_tokens": t(data.img_tokens[rows]) if use_img else None,
        "img_mask": t(data.img_mask[rows], torch.bool) if use_img and data.img_mask is not None else None,
        "txt_tokens": t(txt),
        "txt_mask": t(txt_mask, torch.bool),
        "side": t(side_input(data, rows, cfg)),
        "model_feats": t(data.model_feats),
        "model_cost": t(data.exp_cost[rows]),
        "avail": t(av, torch.bool),
    }


def routing_losses(
    out: dict[str, torch.Tensor],
    quality: torch.Tensor,
    utility: torch.Tensor,
    cost_pen: torch.Tensor,
    avail: torch.Tensor,
    cfg: LatentRouterConfig,
    tc: TrainConfig,
) -> dict[str, torch.Tensor]:
    """Every loss term, averaged over available entries (pairs / rows for the ranking terms), and total."""
    m = avail.to(quality.dtype)
    n_av = m.sum().clamp_min(1.0)
    mu, sigma, delta = out["mu"], out["sigma"], out["delta"]
    s = out["mu_tilde"] - cost_pen  # finite routing score
    if cfg.distributional:
        nll = (quality - mu) ** 2 / (2 * sigma**2) + torch.log(sigma)
    else:
        nll = (quality - mu) ** 2
    parts = {"nll": (nll * m).sum() / n_av}
    # pairwise: every available pair with u_i > u_j
    better = (utility.unsqueeze(2) > utility.unsqueeze(1)) & avail.unsqueeze(2) & avail.unsqueeze(1)
    margin = s.unsqueeze(2) - s.unsqueeze(1)
    bf = better.to(s.dtype)
    parts["pair"] = (F.softplus(-margin) * bf).sum() / bf.sum().clamp_min(1.0)
    # listwise: CE between softmax(u/tau) and softmax(s/tau) over the available models
    neg = torch.tensor(float("-inf"), dtype=s.dtype, device=s.device)
    target = torch.softmax(torch.where(avail, utility / tc.tau_list, neg), dim=1)
    logp = torch.log_softmax(torch.where(avail, s / tc.tau_list, neg), dim=1)
    row_ok = avail.any(dim=1).to(s.dtype)
    ce = -(target * torch.where(avail, logp, torch.zeros_like(logp))).sum(dim=1)
    parts["list"] = (torch.nan_to_num(ce) * row_ok).sum() / row_ok.sum().clamp_min(1.0)
    parts["util"] = (((s - utility) ** 2) * m).sum() / n_av
    parts["mean"] = (((mu - quality) ** 2) * m).sum() / n_av
    parts["res"] = ((delta**2) * m).sum() / n_av
    parts["total"] = (tc.w_nll * parts["nll"] + tc.w_pair * parts["pair"] + tc.w_list * parts["list"]
                      + tc.w_util * parts["util"] + tc.w_mean * parts["mean"] + tc.w_res * parts["res"])
    return parts


def _drop_avail(avail: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Hide each available model with probability p; a row keeps at least one of its available models."""
    if p <= 0:
        return avail
    keep = avail & (rng.random(avail.shape) >= p)
    empty = np.flatnonzero(~keep.any(axis=1) & avail.any(axis=1))
    for i in empty:
        keep[i, rng.choice(np.flatnonzero(avail[i]))] = True
    return keep


@torch.no_grad()
def _swap_in(params: list[torch.Tensor], values: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copy ``values`` into ``params`` and return the previous contents."""
    old = [p.detach().clone() for p in params]
    for p, v in zip(params, values, strict=True):
        p.copy_(v)
    return old


@torch.inference_mode()
def predict(
    model: LatentRouter,
    data: RoutingData,
    rows: np.ndarray,
    lam: float | np.ndarray = 0.0,
    avail: np.ndarray | None = None,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu_tilde, sigma, score) as float32 [len(rows), K]; score is -inf where a model is unavailable.
    ``lam``: one trade-off for all rows, or one per row (a served batch mixes policies)."""
    rows = np.asarray(rows, dtype=np.int64)
    per_row = np.ndim(lam) > 0
    if per_row and np.shape(lam) != (len(rows),):
        raise ValueError(f"predict: lam has shape {np.shape(lam)}, expected ({len(rows)},) or a scalar")
    av_all = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
    if av_all.shape != (len(rows), data.k):
        raise ValueError(f"predict: avail has shape {av_all.shape}, expected {(len(rows), data.k)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs: list[tuple[np.ndarray, ...]] = []
    try:
        for start in range(0, len(rows), batch_size):
            sl = slice(start, start + batch_size)
            lam_b = torch.as_tensor(np.asarray(lam, dtype=np.float32)[sl]) if per_row else lam
            out = model(**make_batch(data, rows[sl], model.cfg, device, av_all[sl]), lam=lam_b)
            outs.append(tuple(out[k].float().cpu().numpy() for k in ("mu_tilde", "sigma", "score")))
    finally:
        model.train(was_training)
    if not outs:
        empty = np.zeros((0, data.k), dtype=np.float32)
        return empty, empty.copy(), empty.copy()
    mu_t, sig, score = (np.concatenate(x, axis=0) for x in zip(*outs, strict=True))
    return mu_t, sig, score


def pick_utility(model: LatentRouter, data: RoutingData, rows: np.ndarray, lams: tuple[float, ...],
                 batch_size: int = 512) -> float:
    """Mean realised utility of the argmax pick over ``rows``, averaged over ``lams``."""
    vals = []
    for lam in lams:
        _, _, score = predict(model, data, rows, lam, batch_size=batch_size)
        pick = np.argmax(score, axis=1)
        util = data.quality[rows, pick] - lam * data.cost[rows, pick]
        vals.append(float(util.mean()))
    return float(np.mean(vals))


def _drop_tokens(batch: dict[str, torch.Tensor | None], p: float, rng: np.random.Generator) -> None:
    """Hide each valid image / question token of a training batch with probability ``p`` (in place, via the
    masks; the side tokens always stay, so no query loses its whole input)."""
    for tok, mask in (("img_tokens", "img_mask"), ("txt_tokens", "txt_mask")):
        x = batch.get(tok)
        if x is None:
            continue
        m = batch.get(mask)
        m = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if m is None else m
        keep = torch.as_tensor(rng.random(tuple(m.shape)) >= p, device=m.device)
        batch[mask] = m & keep


@torch.no_grad()
def _init_head(model: LatentRouter, data: RoutingData, train: np.ndarray) -> None:
    """mu's output bias = mean available train quality, sigma's = softplus^-1 of its std, the output weights
    shrunk tenfold (see init_head_mean)."""
    q = data.quality[train][data.avail[train]].astype(np.float64)
    if len(q) == 0:
        return
    fc2 = model.head.fc2
    fc2.weight.mul_(0.1)  # the start is the bias, not a random per-token offset of the same size
    fc2.bias[0] = float(q.mean())
    if model.cfg.distributional:
        sd = max(float(q.std()), 2 * model.cfg.eps) - model.cfg.eps
        fc2.bias[1] = float(np.log(np.expm1(sd)))


def _curve_accuracy(model: LatentRouter, data: RoutingData, rows: np.ndarray, batch_size: int) -> float:
    """Pick accuracy at lambda 0 over ``rows`` (the training curve's figure; not the early-stopping signal)."""
    _, _, score = predict(model, data, rows, 0.0, batch_size=batch_size)
    return float(data.quality[rows, np.argmax(score, axis=1)].mean())


def _check_data(data: RoutingData) -> tuple[np.ndarray, np.ndarray]:
    """Train and val rows with an available model; fails naming the first non-finite input or target."""
    train = data.idx("train")
    train = train[data.avail[train].any(axis=1)]
    val = data.idx("val")
    val = val[data.avail[val].any(axis=1)]
    if len(train) == 0:
        raise ValueError("train_latent_router: no train rows with at least one available model")
    if data.model_feats.shape[0] != data.k:
        raise ValueError(f"RoutingData.model_feats has {data.model_feats.shape[0]} rows for {data.k} models")
    for name in ("img_tokens", "txt_tokens", "side", "pooled", "model_feats"):
        arr = getattr(data, name)
        if arr is None:
            continue
        finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            where = f"model {data.model_ids[i]!r}" if name == "model_feats" else f"query {data.query_ids[i]!r}"
            raise ValueError(f"RoutingData.{name} has non-finite values at {where} (padding must be finite too)")
    for name in ("quality", "cost", "exp_cost"):
        arr = getattr(data, name)[train]
        bad = ~np.isfinite(arr) & data.avail[train]
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"RoutingData.{name} is not finite at query {data.query_ids[train[r]]!r}, "
                             f"model {data.model_ids[c]!r}")
    return train, val


def train_latent_router(
    data: RoutingData,
    model_cfg: LatentRouterConfig | None = None,
    train_cfg: TrainConfig | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train on ``data.idx('train')``, early-stop on ``data.idx('val')`` (train rows when there is none)."""
    mc, tc = model_cfg or LatentRouterConfig(), train_cfg or TrainConfig()
    with torch_threads(tc.num_threads):
        return _train(data, mc, tc, progress)


@dataclass
class _Optimiser:
    """The state one training run carries across epochs: model, AdamW, the step count and the EMA weights."""

    model: LatentRouter
    opt: torch.optim.Optimizer
    params: list[torch.Tensor]
    ema: list[torch.Tensor] | None
    device: torch.device
    steps_per_epoch: int
    step: int = 0


_REPORT_EVERY_S = 2.0  # progress lines: one every 2 s at most (an evaluation trains hundreds of short fits)
_last_report = [float("-inf")]


def _report_epoch(epoch: int, epochs: int, loss: float, val_u: float, seconds: float) -> None:
    """An epoch on the progress logger (the run's event log, `lrouter run`'s progress line), throttled."""
    now = time.monotonic()
    if now - _last_report[0] >= _REPORT_EVERY_S:
        _last_report[0] = now
        logging.getLogger(PROGRESS_LOGGER).info("LatentRouter epoch %d/%d: loss %.4f, validation utility %.4f "
                                                "(%.1fs)", epoch, epochs, loss, val_u, seconds)


def _train(data: RoutingData, mc: LatentRouterConfig, tc: TrainConfig, progress: bool) -> TrainResult:
    """Set-up, then epochs validated on the (EMA) weights; the best epoch's weights are kept (early stopping)."""
    device = resolve_device(tc.device)
    train, val = _check_data(data)
    if len(val) == 0:
        val = train
    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    model = LatentRouter(mc, InputDims.from_data(data, mc))
    model.set_input_stats(data, train)
    if tc.init_head_mean:
        _init_head(model, data, train)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    state = _Optimiser(model, torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay),
                       params, [p.detach().clone() for p in params] if tc.ema_decay > 0 else None, device,
                       math.ceil(len(train) / tc.batch_size))

    history: list[EpochLog] = []
    best_val, best_epoch, best_state = -np.inf, -1, copy.deepcopy(model.state_dict())
    curve_train = train[:: max(1, math.ceil(len(train) / tc.curve_rows))] if tc.curve_rows else train[:0]
    reference = group_best_reference(data, curve_train, val) if tc.curve_rows else {}
    for epoch in range(tc.epochs):
        t0 = time.perf_counter()
        parts = _train_epoch(state, data, rng.permutation(train), rng, mc, tc)
        live = _swap_in(params, state.ema) if state.ema is not None else None  # validate (and keep) the EMA
        val_u = pick_utility(model, data, val, tc.eval_lams, tc.eval_batch_size)
        val_l = _val_loss(model, data, val, mc, tc, device)
        tr_acc = _curve_accuracy(model, data, curve_train, tc.eval_batch_size) if len(curve_train) else np.nan
        va_acc = np.nan if not tc.curve_rows else val_u if tc.eval_lams == (0.0,) else \
            _curve_accuracy(model, data, val, tc.eval_batch_size)
        history.append(EpochLog(epoch, parts.pop("total"), parts, val_u, time.perf_counter() - t0, val_l,
                                float(tr_acc), float(va_acc)))
        if progress:
            print(f"[LatentRouter] epoch {epoch + 1}/{tc.epochs} loss={history[-1].train_loss:.4f} "
                  f"val_utility={val_u:.4f} train_acc={tr_acc:.4f} val_acc={va_acc:.4f} "
                  f"({history[-1].seconds:.2f}s)", flush=True)
        _report_epoch(epoch + 1, tc.epochs, history[-1].train_loss, val_u, history[-1].seconds)
        if val_u > best_val:
            best_val, best_epoch, best_state = val_u, epoch, copy.deepcopy(model.state_dict())
        if live is not None:
            _swap_in(params, live)
        if tc.restore_best and val_u <= best_val and epoch - best_epoch >= tc.patience:
            break
    if not tc.restore_best:  # the fixed budget's last epoch (the EMA weights, as validated)
        if state.ema is not None:
            _swap_in(params, state.ema)
        best_epoch, best_val = len(history) - 1, history[-1].val_utility
        best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch, model.n_parameters(), float(best_val), mc, tc, reference)


def _val_loss(model: LatentRouter, data: RoutingData, rows: np.ndarray, mc: LatentRouterConfig, tc: TrainConfig,
              device: torch.device) -> float:
    """Mean training objective at lambda 0 over ``rows`` (no availability dropout, no gradient): the learning
    curve's validation loss."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), tc.eval_batch_size):
            r = rows[start : start + tc.eval_batch_size]
            batch = make_batch(data, r, mc, device, data.avail[r])
            q = torch.as_tensor(data.quality[r].astype(np.float32), device=device)
            losses = routing_losses(model(**batch, lam=0.0), q, q, 0.0 * batch["model_cost"], batch["avail"], mc, tc)
            total += float(losses["total"]) * len(r)
    return total / max(len(rows), 1)


def _train_epoch(state: _Optimiser, data: RoutingData, perm: np.ndarray, rng: np.random.Generator,
                 mc: LatentRouterConfig, tc: TrainConfig) -> dict[str, float]:
    """One pass over ``perm`` in batches (lambda and availability dropout drawn per batch); mean loss terms."""
    model, opt, device = state.model, state.opt, state.device
    model.train()
    quality_all = data.quality.astype(np.float32)
    sums: dict[str, float] = {}
    for start in range(0, len(perm), tc.batch_size):
        rows = perm[start : start + tc.batch_size]
        lam = float(rng.choice(tc.lam_choices)) if tc.lam_choices else tc.lam
        av = _drop_avail(data.avail[rows], tc.avail_drop, rng)
        batch = make_batch(data, rows, mc, device, av)
        if tc.token_drop > 0:
            _drop_tokens(batch, tc.token_drop, rng)
        out = model(**batch, lam=lam)
        q = torch.as_tensor(quality_all[rows], device=device)
        u = torch.as_tensor(quality_all[rows] - lam * data.cost[rows].astype(np.float32), device=device)
        losses = routing_losses(out, q, u, lam * batch["model_cost"], batch["avail"], mc, tc)
        for group in opt.param_groups:
            group["lr"] = tc.lr * tc.lr_factor(state.step, state.steps_per_epoch)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        state.step += 1
        if state.ema is not None:  # bias-corrected start: early averages do not over-weight the initialisation
            d = min(tc.ema_decay, (1 + state.step) / (10 + state.step))
            torch._foreach_lerp_(state.ema, [p.detach() for p in state.params], 1 - d)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(rows)
    return {k: v / len(perm) for k, v in sums.items()}


class LatentRouterRouter(Router):
    """LatentRouter behind the common ``Router`` interface; ablations are just other configs and names."""

    name = "LatentRouter"
    learned = True

    def __init__(
        self,
        model_cfg: LatentRouterConfig | None = None,
        train_cfg: TrainConfig | None = None,
        name: str | None = None,
        progress: bool = False,
    ) -> None:
        self.model_cfg = model_cfg or LatentRouterConfig()
        self.train_cfg = train_cfg or TrainConfig()
        if name is not None:
            self.name = name
        self.progress = progress
        self.model: LatentRouter | None = None
        self.result: TrainResult | None = None

    def fit(self, data: RoutingData, seed: int = 0) -> LatentRouterRouter:
        self.result = train_latent_router(data, self.model_cfg, replace(self.train_cfg, seed=seed), self.progress)
        self.model = self.result.model
        return self

    def _model(self) -> LatentRouter:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        return self.model

    def predict(self, data: RoutingData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu_tilde at the train lambda, expected normalised cost) over the pool in data.avail."""
        mu_t, _, _ = predict(self._model(), data, rows, self.train_cfg.lam, batch_size=self.train_cfg.eval_batch_size)
        return mu_t, data.exp_cost[rows].astype(np.float32)

    def scores(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        """mu_tilde - lambda * expected cost, with the feedback layers run at this lambda and pool."""
        mu_t, _, _ = predict(self._model(), data, rows, lam, avail, self.train_cfg.eval_batch_size)
        return mu_t - lam * data.exp_cost[rows]

    def select(self, data: RoutingData, rows: np.ndarray, lam: float, avail: np.ndarray | None = None) -> np.ndarray:
        mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
        s = np.where(mask, self.scores(data, rows, lam, mask), -np.inf)
        return np.argmax(s, axis=1)

    def n_parameters(self) -> int:
        return 0 if self.model is None else self.model.n_parameters()
