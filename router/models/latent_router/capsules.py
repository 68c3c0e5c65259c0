"""The routing capsules: C learned queries cross-attending to the joint image / question / side sequence.

Why a module of its own: the capsule attention is most of a forward's cost, so it is evaluated in whichever of
two exact forms needs fewer FLOPs, with the input standardisation and the type embeddings folded into the
projections (cached in eval); both forms equal ``nn.MultiheadAttention`` over ``explicit_sequence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from router.models.latent_router.layers import FFN
from router.models.latent_router.pooling import graph_capture

if TYPE_CHECKING:
    from router.models.latent_router.config import InputDims, LatentRouterConfig


@dataclass
class _CapsuleFactors:
    """Folded matrices of the capsule attention (see ``CapsuleExtractor._factors``)."""

    g: torch.Tensor  # [C*h, d] scaled capsule queries times the key projection
    gk: torch.Tensor  # [C*h] their dot product with the key bias
    wv_t: torch.Tensor  # [h, d, dh] value projection per head (transposed)
    raw: list[tuple[torch.Tensor, ...]]  # factorised form, per segment: logit map, logit bias, value map, bias
    proj: list[tuple[torch.Tensor, torch.Tensor]]  # projected form, per segment: input projection (w, b)
    z_w: torch.Tensor  # [C*h + d, d] one map to every token's logits and values
    z_b: torch.Tensor


class CapsuleExtractor(nn.Module):
    """C learned capsule queries cross-attending to the joint sequence [V; Q; S] (paper eq. r_k^(0)).

    Image and question tokens enter the attention only through linear maps (input projection, then the
    key/value projections), and the capsule queries are fixed, so the attention is evaluated in one of two
    exact forms, whichever needs fewer FLOPs per token: *factorised* (large hidden sizes: logits are the raw
    tokens times a [C*heads, D_in] matrix, values are projected after the attention-weighted sum) or
    *projected* (the paper's 48: one GEMM gives every projected token's logits and values). Both are the same
    function as ``nn.MultiheadAttention`` over the projected sequence (``explicit_sequence`` + ``self.attn``;
    a test checks each), and the folded matrices are cached in eval.
    """

    def __init__(self, cfg: LatentRouterConfig, dims: InputDims) -> None:
        super().__init__()
        d, t = cfg.hidden, cfg.n_side_tokens
        self.cfg = cfg
        self.img_proj = nn.Linear(dims.img_dim, d) if dims.img_dim > 0 else None
        self.txt_proj = nn.Linear(dims.txt_dim, d)
        if dims.side_dim > 0:  # low-rank so a wide pooled vector stays cheap
            self.side_proj: nn.Module | None = FFN(dims.side_dim, d, t * d)
        else:
            self.side_proj = None
            self.side_const = nn.Parameter(torch.randn(t, d) * 0.02)
        self.type_emb = nn.Parameter(torch.randn(3, d) * 0.02)  # image, text, side
        # per-dimension standardisation of the inputs with train statistics (set_input_stats); folded into
        # the projections, so it costs nothing per token
        for name, dim in (("img", dims.img_dim), ("txt", dims.txt_dim), ("side", dims.side_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        if cfg.use_capsules:
            self.capsule_q = nn.Parameter(torch.randn(cfg.n_capsules, d) * 0.02)
            self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        else:
            self.pool_proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.ffn = FFN(d, 2 * d, d, cfg.dropout)
        self.norm2 = nn.LayerNorm(d)
        self._cache: tuple[tuple[int, ...], _CapsuleFactors] | None = None

    def _segments(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each linear token segment with the input standardisation and the type embedding
        folded in: W (x - m) / s + b + e = W' x + b'."""
        segs = []
        if self.img_proj is not None:
            segs.append((self.img_proj, self.img_mean, self.img_std, self.type_emb[0]))
        segs.append((self.txt_proj, self.txt_mean, self.txt_std, self.type_emb[1]))
        out = []
        for lin, mean, std, e in segs:
            w = lin.weight / std
            out.append((w, lin.bias + e - w @ mean))
        return out

    def side_tokens(self, side: torch.Tensor, b: int) -> torch.Tensor:
        t = self.cfg.n_side_tokens
        if self.side_proj is not None:
            st = self.side_proj((side - self.side_mean) / self.side_std).view(b, t, -1)
        else:
            st = self.side_const.expand(b, t, -1)
        return st + self.type_emb[2]

    def explicit_sequence(
        self, inputs: list[tuple[torch.Tensor, torch.Tensor]], side_tok: torch.Tensor,
        proj: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The projected joint sequence [V; Q; S] and its padding mask (True = ignore); ``proj`` are the
        folded segment projections when the caller has them (``_factors().proj``)."""
        proj = self._segments() if proj is None else proj
        seq = [F.linear(x, w, bias) for (w, bias), (x, _) in zip(proj, inputs, strict=True)]
        return torch.cat(seq + [side_tok], dim=1), self._ignore(inputs, side_tok)

    def _factors(self) -> _CapsuleFactors:
        """The folded matrices of both attention forms; cached in eval (keyed on every weight's version)."""
        use_cache = not (self.training or torch.is_grad_enabled() or graph_capture())
        key: tuple[int, ...] = ()
        if use_cache:
            params = [self.capsule_q, self.attn.in_proj_weight, self.attn.in_proj_bias, self.type_emb]
            params += [p for p in self.txt_proj.parameters()] + [self.txt_mean, self.txt_std]
            if self.img_proj is not None:
                params += [p for p in self.img_proj.parameters()] + [self.img_mean, self.img_std]
            key = tuple(p._version for p in params) + tuple(p.data_ptr() for p in params)
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        d, h, c = self.cfg.hidden, self.cfg.n_heads, self.cfg.n_capsules
        dh = d // h
        w, wb = self.attn.in_proj_weight, self.attn.in_proj_bias
        q = (F.linear(self.capsule_q, w[:d], wb[:d]) * dh**-0.5).view(c, h, dh)
        g = torch.einsum("chk,hkd->chd", q, w[d : 2 * d].view(h, dh, d)).reshape(c * h, d)
        gk = torch.einsum("chk,hk->ch", q, wb[d : 2 * d].view(h, dh)).reshape(c * h)
        wv = w[2 * d :].view(h, dh, d)
        proj = self._segments()
        out = _CapsuleFactors(
            g=g, gk=gk, wv_t=wv.transpose(1, 2),
            raw=[(g @ ws, g @ bs + gk, torch.matmul(wv, ws).transpose(1, 2), wv @ bs) for ws, bs in proj],
            proj=proj, z_w=torch.cat([g, w[2 * d :]]), z_b=torch.cat([gk, wb[2 * d :]]))
        if use_cache:
            self._cache = (key, out)
        return out

    def _factorised(self, inputs: list[tuple[torch.Tensor, torch.Tensor]], side_tok: torch.Tensor) -> torch.Tensor:
        """Capsule attention output (before the residual) with logits and values taken on the raw tokens."""
        b = side_tok.shape[0]
        d, h, c = self.cfg.hidden, self.cfg.n_heads, self.cfg.n_capsules
        fac = self._factors()
        g, gk, wv_t, segs = fac.g, fac.gk, fac.wv_t, fac.raw
        dh = d // h
        # logits laid out [B, T, C*heads]: one GEMM per segment; the softmax runs over the token axis
        logits = [F.linear(x, u, const) for (x, _), (u, const, _, _) in zip(inputs, segs, strict=True)]
        logits.append(F.linear(side_tok, g, gk))
        alpha = self._token_softmax(torch.cat(logits, dim=1), self._ignore(inputs, side_tok))  # [B, C*h, T]
        parts = torch.split(alpha, [lg.shape[1] for lg in logits], dim=2)

        def per_head(z: torch.Tensor) -> torch.Tensor:  # [B, C*h, D] -> [h, B*C, D]
            return z.view(b, c, h, -1).permute(2, 0, 1, 3).reshape(h, b * c, -1)

        # values: attention-weighted raw tokens, then the folded (value o input) projection per head
        out = torch.bmm(per_head(parts[-1] @ side_tok), wv_t)
        for (x, _), al, (_, _, m_t, cv) in zip(inputs, parts[:-1], segs, strict=True):
            out = out + torch.bmm(per_head(al @ x), m_t) + per_head(al.sum(-1, keepdim=True)) * cv.unsqueeze(1)
        out = out + per_head(alpha.sum(-1, keepdim=True)) * self.attn.in_proj_bias[2 * d :].view(h, 1, dh)
        return F.linear(out.view(h, b, c, dh).permute(1, 2, 0, 3).reshape(b, c, d), self.attn.out_proj.weight,
                        self.attn.out_proj.bias)

    def _projected(self, inputs: list[tuple[torch.Tensor, torch.Tensor]], side_tok: torch.Tensor) -> torch.Tensor:
        """Capsule attention output (before the residual) on the projected sequence.

        One GEMM gives every token's [C*heads logits | d values]; one batched matmul then sums the values of
        all heads for every (capsule, head) row, and each row keeps its own head's slice (the diagonal). That
        spends h x the (tiny) value FLOPs to avoid per-head reshuffles of the token tensors."""
        b = side_tok.shape[0]
        d, h, c = self.cfg.hidden, self.cfg.n_heads, self.cfg.n_capsules
        ch, dh = c * h, d // h
        fac = self._factors()
        seq, ignore = self.explicit_sequence(inputs, side_tok, fac.proj)
        z = F.linear(seq, fac.z_w, fac.z_b)  # [B, T, C*h + d]
        alpha = self._token_softmax(z[..., :ch], ignore)  # [B, C*h, T]
        full = torch.bmm(alpha, z[..., ch:])  # [B, C*h, d]: every head's values
        out = full.view(b, c, h, h, dh).diagonal(dim1=2, dim2=3).transpose(2, 3).reshape(b, c, d)
        return F.linear(out, self.attn.out_proj.weight, self.attn.out_proj.bias)

    @staticmethod
    def _ignore(inputs: list[tuple[torch.Tensor, torch.Tensor]], side_tok: torch.Tensor) -> torch.Tensor:
        """[B, T] ignore mask of the joint sequence (side tokens are always valid)."""
        side = side_tok.new_zeros(side_tok.shape[:2], dtype=torch.bool)
        return torch.cat([ig for _, ig in inputs] + [side], dim=1)

    def _token_softmax(self, logit: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
        """Attention weights [B, C*h, T] from [B, T, C*h] logits (softmax over tokens, ignored ones exactly 0).

        The transpose is free (the masked copy is made anyway) and the softmax then runs over contiguous rows
        of a few dozen tokens, where the fused kernel is fastest."""
        alpha = torch.softmax(logit.transpose(1, 2).masked_fill(ignore.unsqueeze(1), float("-inf")), dim=-1)
        return F.dropout(alpha, self.attn.dropout, self.training)

    def forward(self, inputs: list[tuple[torch.Tensor, torch.Tensor]], side_tok: torch.Tensor) -> torch.Tensor:
        """inputs: per linear segment (raw tokens [B, T, D_in], ignore mask [B, T]); side_tok [B, S, d]."""
        if not self.cfg.use_capsules:
            seq, ign = self.explicit_sequence(inputs, side_tok)
            wgt = (~ign).to(seq.dtype).unsqueeze(-1)
            r = self.norm(self.pool_proj((seq * wgt).sum(1) / wgt.sum(1).clamp_min(1.0))).unsqueeze(1)
            return self.norm2(r + self.ffn(r))
        # factorised form when it needs fewer FLOPs per token (2*C*h*D_in vs D_in*d + d*(C*h + d), D_in >= d)
        if 2 * self.cfg.n_capsules * self.cfg.n_heads <= self.cfg.hidden:
            out = self._factorised(inputs, side_tok)
        else:
            out = self._projected(inputs, side_tok)
        if self.cfg.side_residual:
            out = out + side_tok.mean(dim=1, keepdim=True)
        r = self.norm(self.capsule_q + out)
        return self.norm2(r + self.ffn(r))
