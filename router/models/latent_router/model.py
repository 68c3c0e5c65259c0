"""LatentRouter: latent capability matching between multimodal routing capsules and model tokens.

Implements section 2.2 of the LatentRouter paper. The query is summarised by C learned routing capsules that
cross-attend to the joint image/question/side token sequence; each candidate model is a capability token
built from its (standardised) profile vector and its expected cost. H communication layers let model tokens
read the capsules, compare with the other *available* models (masked self-attention with a pairwise bias) and
feed back to the capsules. A shared distributional head predicts (mu, sigma) per model token and a bounded
capsule correction refines mu by at most rho. There is no K-way classifier and no model-ID embedding, so the
same weights score any pool, including models unseen at training time (Prop. B.3).

Unavailable models are zeroed at the input and masked everywhere (self-attention keys, feedback, pools), so
their features can never change the scores of available models, and they always get a score of -inf.

Cost notes (targets: ~1 ms for one query and 0.1 ms per query in batches of 256, on 2 CPU cores; see
bench/router.py): the capsules read a reduced token sequence (the 7x7 image grid average-pooled to 4x4, the
first 16 question tokens; ``image_token_pool`` / ``max_text_tokens``, 0 = all), their cross-attention is
evaluated in whichever of two exact forms needs fewer FLOPs (see ``CapsuleExtractor``), the per-dimension
input standardisation is folded into the projections, attention layers run through ``attend`` (the maths of
``nn.MultiheadAttention`` without its per-call checks), and every model is handled in one batched tensor op
(no Python loop over models).

Parts: pooling (input-token reduction), capsules (CapsuleExtractor), layers (attend,
FFN, PairwiseBias, CommunicationLayer); config (LatentRouterConfig, InputDims); this module holds the model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from router.data.routing_data import RoutingData
from router.models.latent_router.capsules import CapsuleExtractor
from router.models.latent_router.config import LEGACY_VALUES as LEGACY_VALUES  # re-exported
from router.models.latent_router.config import InputDims, LatentRouterConfig
from router.models.latent_router.layers import FFN, CommunicationLayer
from router.models.latent_router.pooling import first_valid_tokens, pool_image_tokens


def side_input(data: RoutingData, rows: np.ndarray, cfg: LatentRouterConfig) -> np.ndarray:
    """The per-query vector that becomes the extra side tokens: side features (+ pooled vector)."""
    parts = [data.side[rows]]
    if cfg.use_pooled:
        parts.insert(0, data.pooled[rows])
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)



class LatentRouter(nn.Module):
    """Scores every (query, candidate model) pair; see the module docstring."""

    def __init__(self, cfg: LatentRouterConfig, dims: InputDims) -> None:
        super().__init__()
        self.cfg, self.dims = cfg, dims
        d = cfg.hidden
        self.capsules = CapsuleExtractor(cfg, dims)
        # model capability tokens a_i^(0) = phi([p_i; c_i]): p_i is the standardised profile (accuracy, latency,
        # slice and pairwise statistics), c_i the expected cost; no model-ID embedding anywhere
        if cfg.use_model_tokens:
            self.phi = FFN(dims.model_feat_dim + 1, d, d)
        else:
            self.shared_token = nn.Parameter(torch.randn(d) * 0.02)
            self.cost_proj = nn.Linear(1, d)
        self.token_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(CommunicationLayer(cfg) for _ in range(cfg.effective_layers))
        # heads shared across model tokens
        self.head = FFN(d, d, 2 if cfg.distributional else 1)
        self.correction = FFN(2 * d, d // 2, 1) if cfg.bounded_correction else None

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def set_input_stats(self, data: RoutingData, rows: np.ndarray) -> None:
        """Per-dimension mean/std of image tokens, question tokens and side input over ``rows``: the valid
        tokens the capsules read (after pooling / truncation), rows evenly subsampled to about 20k vectors.
        Stored as buffers, so they travel with the state dict and the checkpoint."""
        caps = self.capsules

        def put(name: str, x: np.ndarray) -> None:
            x = x.astype(np.float32, copy=False)
            mean, std = x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)
            std = np.where(std > 1e-6, std, 1.0)
            getattr(caps, f"{name}_mean").copy_(torch.as_tensor(mean, dtype=torch.float32))
            getattr(caps, f"{name}_std").copy_(torch.as_tensor(std, dtype=torch.float32))

        def reduced(tokens: np.ndarray, mask: np.ndarray | None, is_img: bool) -> np.ndarray:
            sub = rows[:: max(1, len(rows) * tokens.shape[1] // 20_000)]
            x = torch.as_tensor(np.asarray(tokens[sub], dtype=np.float32))
            m = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else torch.as_tensor(mask[sub]).bool()
            x, m = self._reduce(x, m, is_img)
            return x[m].numpy()

        if self.dims.img_dim > 0 and data.img_tokens is not None:
            put("img", reduced(data.img_tokens, data.img_mask, True))
        put("txt", reduced(data.txt_tokens, data.txt_mask, False))
        if self.dims.side_dim > 0:
            put("side", side_input(data, rows[:: max(1, len(rows) // 20_000)], self.cfg))
        caps._cache = None

    def _reduce(self, tokens: torch.Tensor, valid: torch.Tensor, is_img: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured input-token reduction of one segment (valid = True for real tokens)."""
        if is_img:
            return pool_image_tokens(tokens, valid, self.cfg.image_token_pool)
        return first_valid_tokens(tokens, valid, self.cfg.max_text_tokens)

    def _check(self, name: str, x: torch.Tensor, ndim: tuple[int, ...], last: int | None) -> None:
        if x.dim() not in ndim:
            raise ValueError(f"LatentRouter.forward: {name} has shape {tuple(x.shape)}, expected {ndim}-d")
        if last is not None and x.shape[-1] != last:
            raise ValueError(f"LatentRouter.forward: {name} has last dimension {x.shape[-1]}, "
                             f"the router was built for {last}")

    def query_inputs(
        self,
        img_tokens: torch.Tensor | None,
        img_mask: torch.Tensor | None,
        txt_tokens: torch.Tensor,
        txt_mask: torch.Tensor,
        side: torch.Tensor,
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Raw token segments with ignore masks, and the projected side tokens.

        Padded tokens get an attention weight of exactly 0, so they must be finite (the feature store pads
        with zeros; training checks the whole token arrays once)."""
        b = txt_tokens.shape[0]
        segs = []
        if self.dims.img_dim > 0:
            if img_tokens is None:  # a text-only query: an empty image segment (same as all tokens masked)
                img_tokens = txt_tokens.new_zeros(b, 0, self.dims.img_dim)
                img_mask = None
            self._check("img_tokens", img_tokens, (3,), self.dims.img_dim)
            im = torch.ones(img_tokens.shape[:2], dtype=torch.bool, device=img_tokens.device) \
                if img_mask is None else img_mask.bool()
            img_tokens, im = self._reduce(img_tokens, im, True)
            segs.append((img_tokens, ~im))
        self._check("txt_tokens", txt_tokens, (3,), self.dims.txt_dim)
        txt_tokens, tm = self._reduce(txt_tokens, txt_mask.bool(), False)
        segs.append((txt_tokens, ~tm))
        if self.dims.side_dim > 0:
            self._check("side", side, (2,), self.dims.side_dim)
        return segs, self.capsules.side_tokens(side, b)

    def _model_tokens(self, model_feats: torch.Tensor, cost: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        b, k = cost.shape
        if self.cfg.use_model_tokens:
            self._check("model_feats", model_feats, (2, 3), self.dims.model_feat_dim)
            if model_feats.shape[-2] != k or (model_feats.dim() == 3 and model_feats.shape[0] != b):
                raise ValueError(f"LatentRouter.forward: model_feats has shape {tuple(model_feats.shape)}, "
                                 f"expected [K={k}, P] or [B={b}, K={k}, P]")
            mf = model_feats.expand(b, k, -1) if model_feats.dim() == 2 else model_feats
            x = torch.cat([mf, cost.unsqueeze(-1)], dim=-1)
            x = torch.where(avail.unsqueeze(-1), x, torch.zeros_like(x))  # masked inputs carry nothing
            a = self.phi(x)
        else:
            a = self.shared_token + self.cost_proj(cost.unsqueeze(-1))
        return self.token_norm(a)

    def forward(
        self,
        img_tokens: torch.Tensor | None,
        img_mask: torch.Tensor | None,
        txt_tokens: torch.Tensor,
        txt_mask: torch.Tensor,
        side: torch.Tensor,
        model_feats: torch.Tensor,
        model_cost: torch.Tensor,
        avail: torch.Tensor,
        lam: float | torch.Tensor = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Per-model outputs for a batch of queries.

        Shapes: img_tokens [B, Ti, Di] (None in text-only mode), img_mask [B, Ti] bool (True = valid),
        txt_tokens [B, Tq, Dq], txt_mask [B, Tq], side [B, S] (see ``side_input``), model_feats [K, P] or
        [B, K, P], model_cost [B, K] expected normalised cost known before answering, avail [B, K] bool,
        lam a float or [B] tensor. Returns mu, sigma, delta, mu_tilde, score ([B, K]; score is -inf for
        unavailable models) and layer_scores [B, H, K] (H = 0 when feedback is off).
        """
        if model_cost.dim() != 2:
            raise ValueError(f"LatentRouter.forward: model_cost has shape {tuple(model_cost.shape)}, expected [B, K]")
        b, k = model_cost.shape
        if tuple(avail.shape) != (b, k):
            raise ValueError(f"LatentRouter.forward: avail has shape {tuple(avail.shape)}, expected {(b, k)}")
        if txt_tokens.shape[0] != b:
            raise ValueError(f"LatentRouter.forward: batch size of txt_tokens ({txt_tokens.shape[0]}) and "
                             f"model_cost ({b}) differ")
        avail = avail.bool()
        cost = torch.where(avail, model_cost, torch.zeros_like(model_cost))
        lam_t = torch.as_tensor(lam, dtype=cost.dtype, device=cost.device)
        cost_pen = (lam_t.reshape(-1, 1) if lam_t.dim() > 0 else lam_t) * cost
        # a query with no available model attends to everything (its scores are all -inf anyway): no NaN
        key_ignore = ~avail & avail.any(dim=1, keepdim=True)
        key_bias = torch.zeros_like(cost).masked_fill(key_ignore, float("-inf"))[:, None, None, :]

        r = self.capsules(*self.query_inputs(img_tokens, img_mask, txt_tokens, txt_mask, side))
        a = self._model_tokens(model_feats, cost, avail)
        layer_scores = []
        for layer in self.layers:
            a, r, ls = layer(a, r, key_ignore, key_bias, avail, cost_pen)
            if ls is not None:
                layer_scores.append(ls)

        out = self.head(a)
        mu = out[..., 0]
        sigma = F.softplus(out[..., 1]) + self.cfg.eps if self.cfg.distributional else torch.ones_like(mu)
        if self.correction is not None:
            pool = r.mean(dim=1, keepdim=True).expand(b, k, -1)
            delta = self.cfg.rho * torch.tanh(self.correction(torch.cat([a, pool], dim=-1)).squeeze(-1))
        else:
            delta = torch.zeros_like(mu)
        mu_tilde = mu + delta
        score = (mu_tilde - cost_pen).masked_fill(~avail, float("-inf"))
        ls = torch.stack(layer_scores, dim=1) if layer_scores else mu.new_zeros(b, 0, k)
        return {"mu": mu, "sigma": sigma, "delta": delta, "mu_tilde": mu_tilde, "score": score,
                "layer_scores": ls}
