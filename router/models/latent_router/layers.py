"""Attention building blocks of LatentRouter: the functional attention, the FFN, the pairwise bias and one
communication layer (read, compare, feedback) between model tokens and capsules.

Why functional: ``attend`` is the maths of ``nn.MultiheadAttention`` without its per-call Python checks, which
dominate a single-query forward (target ~1 ms per query on 2 CPU cores), and every model is handled in one
batched tensor op (no Python loop over models).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from router.models.latent_router.config import LatentRouterConfig


class FFN(nn.Module):
    """Linear -> GELU -> dropout -> Linear, called functionally (fewer module calls per forward)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.p = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out), dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(F.linear(x, self.fc1.weight, self.fc1.bias), approximate="tanh")
        if self.training and self.p > 0:
            h = F.dropout(h, self.p, True)
        return F.linear(h, self.fc2.weight, self.fc2.bias)


def small_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis from plain elementwise ops: on CPU several times faster than
    ``torch.softmax`` or the fused attention kernel for rows of a few keys (the K models, the C capsules).
    Every row needs a finite entry."""
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


def attend(
    mha: nn.MultiheadAttention,
    q: torch.Tensor,
    kv: torch.Tensor,
    bias: torch.Tensor | None = None,
    key_ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mha(q, kv, kv)`` computed functionally from the module's own weights.

    Same maths as ``nn.MultiheadAttention`` (packed in-projection, 1/sqrt(d_head) scaling, dropout on the
    attention weights, output projection) without its per-call Python checks, which dominate a single-query
    forward, and, for large batches of short rows, without the fused CPU kernel, which is slower there.
    ``bias`` is an additive float mask broadcastable to [B, heads, Lq, Lk];
    ``key_ignore`` [B, Lk] marks keys to drop (the caller guarantees no row drops every key).
    """
    d, h = mha.embed_dim, mha.num_heads
    dh = d // h
    b, lq, _ = q.shape
    lk = kv.shape[1]
    w, wb = mha.in_proj_weight, mha.in_proj_bias
    k, v = F.linear(kv, w[d:], wb[d:]).view(b, lk, 2, h, dh).permute(2, 0, 3, 1, 4).unbind(0)
    mask = bias
    if key_ignore is not None:
        ign = torch.zeros(b, 1, 1, lk, dtype=q.dtype, device=q.device).masked_fill(
            key_ignore[:, None, None, :], float("-inf"))
        mask = ign if mask is None else mask + ign
    p = mha.dropout if mha.training else 0.0
    if b < 32:  # few rows: one fused call has the least per-op overhead
        qh = F.linear(q, w[:d], wb[:d]).view(b, lq, h, dh).transpose(1, 2)
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, dropout_p=p)
    else:  # large batches of short rows: plain ops are several times faster than the fused CPU kernel
        scale = dh**-0.5  # folded into the (tiny) query projection instead of a pass over the logits
        qh = F.linear(q, w[:d] * scale, wb[:d] * scale).view(b, lq, h, dh).transpose(1, 2)
        if mask is not None and mask.shape == (b, h, lq, lk):  # a full bias is the GEMM's accumulator
            att = torch.baddbmm(mask.reshape(b * h, lq, lk), qh.reshape(b * h, lq, dh),
                                k.reshape(b * h, lk, dh).transpose(1, 2)).view(b, h, lq, lk)
        else:
            att = torch.matmul(qh, k.transpose(-2, -1))
            att = att if mask is None else att + mask
        att = F.dropout(small_softmax(att), p, True) if p > 0 else small_softmax(att)
        out = torch.matmul(att, v)
    return F.linear(out.transpose(1, 2).reshape(b, lq, d), mha.out_proj.weight, mha.out_proj.bias)


class PairwiseBias(nn.Module):
    """psi([a_i; a_j; a_i - a_j; a_i * a_j]) -> one additive attention bias per head.

    The first linear layer on the concatenation splits into W1 a_i + W2 a_j + W3 (a_i - a_j) + W4 (a_i*a_j),
    computed as one [K, 2m] projection plus a projection of the [B, K, K, d] products: the same function as a
    Linear on the concatenation, without materialising the [B, K, K, 4d] input.
    """

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        m = max(8, d // 4)
        self.w_ij = nn.Linear(d, 2 * m)  # [W1 + W3; W2 - W3]
        self.w_prod = nn.Parameter(torch.randn(m, d) / math.sqrt(d))  # W4
        self.out = nn.Linear(m, n_heads)

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # a [B, K, d] -> [B, heads, K, K]
        b, k, d = a.shape
        hi, hj = F.linear(a, self.w_ij.weight, self.w_ij.bias).chunk(2, dim=-1)
        pair = (hi.unsqueeze(2) + hj.unsqueeze(1)).view(b * k * k, -1)
        # the pair term is the GEMM's accumulator (addmm): one pass less over the [B*K*K, m] activations
        hid = torch.addmm(pair, (a.unsqueeze(2) * a.unsqueeze(1)).view(b * k * k, d), self.w_prod.t())
        out = F.linear(F.gelu(hid, approximate="tanh"), self.out.weight, self.out.bias)
        return out.view(b, k, k, -1).permute(0, 3, 1, 2)


class CommunicationLayer(nn.Module):
    """One round of read (model tokens <- capsules), compare (masked self-attention) and feedback."""

    def __init__(self, cfg: LatentRouterConfig) -> None:
        super().__init__()
        d, h, p = cfg.hidden, cfg.n_heads, cfg.dropout
        self.cfg = cfg
        self.read = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
        self.read_ffn = FFN(3 * d, d, d, p)
        self.read_norm = nn.LayerNorm(d)
        exchange = cfg.use_model_exchange
        self.pair_bias = PairwiseBias(d, h) if cfg.use_pairwise_bias and exchange else None
        self.self_attn = nn.MultiheadAttention(d, h, dropout=p, batch_first=True) if exchange else None
        self.self_norm = nn.LayerNorm(d) if exchange else None
        if cfg.use_feedback and exchange:
            self.score_head: nn.Module | None = FFN(d, d // 2, 1)
            self.feedback = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
            self.feedback_norm = nn.LayerNorm(d)
        else:
            self.score_head = None

    def forward(
        self,
        a: torch.Tensor,  # [B, K, d]
        r: torch.Tensor,  # [B, C, d]
        key_ignore: torch.Tensor,  # [B, K] bool, True = unavailable key (never a whole row)
        key_bias: torch.Tensor,  # [B, 1, 1, K] the same as an additive mask (0 / -inf)
        avail: torch.Tensor,  # [B, K] bool
        cost_pen: torch.Tensor,  # [B, K] lambda * cost
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        # (1) model-conditioned read of the capsules: each model token queries the capsules
        r_hat = attend(self.read, a, r)
        a_bar = self.read_norm(a + self.read_ffn(torch.cat([a, r_hat, a * r_hat], dim=-1)))
        if self.self_attn is None or self.self_norm is None:  # read-only: no model-model exchange, no feedback
            return a_bar, r, None
        # (2) availability-masked comparison with an additive pairwise bias per head
        bias = self.pair_bias(a_bar) if self.pair_bias is not None else None
        bias = key_bias if bias is None else bias + key_bias
        a_next = self.self_norm(a_bar + attend(self.self_attn, a_bar, a_bar, bias))
        # (3) decision-aware feedback: capsules attend to the models near the decision boundary
        layer_score = None
        if self.score_head is not None:
            layer_score = self.score_head(a_next).squeeze(-1) - cost_pen
            logits = layer_score.masked_fill(key_ignore, float("-inf"))
            gap = logits.max(dim=1, keepdim=True).values - logits
            omega = torch.softmax(-gap / self.cfg.tau_feedback, dim=1)
            omega = torch.where(avail, omega, torch.zeros_like(omega))
            kv = omega.unsqueeze(-1) * a_next
            r = self.feedback_norm(r + attend(self.feedback, r, kv, key_bias))
        return a_next, r, layer_score
