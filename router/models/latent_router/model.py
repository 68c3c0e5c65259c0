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
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from router.data.routing_data import RoutingData

# value of each field added after the first release, for configs (checkpoints) that predate it
LEGACY_VALUES: dict[str, Any] = {"image_token_pool": 0, "max_text_tokens": 0}


@dataclass
class LatentRouterConfig:
    """Architecture hyper-parameters; the ``use_*`` switches produce the paper's ablations."""

    hidden: int = 48  # the paper's configuration (the released class defaults to 96)
    n_capsules: int = 7  # C
    n_layers: int = 2  # H communication layers
    n_heads: int = 4
    n_side_tokens: int = 4  # pooled/side features become this many extra query tokens
    dropout: float = 0.2  # 0.1 in the release; 0.2 overfits less on ~1k-query benchmarks
    rho: float = 0.05  # bound of the capsule correction
    tau_feedback: float = 0.25
    # input-token reduction before the capsule attention (its cost is linear in the token count and it is
    # most of the CPU time): a square s x s image-token grid is average-pooled to image_token_pool^2 tokens
    # (mask-aware) and only the first max_text_tokens valid question tokens are kept. 0 switches either off
    image_token_pool: int = 4
    max_text_tokens: int = 16
    eps: float = 1e-3  # sigma floor
    # append RoutingData.pooled to the side features. On ~1k-query benchmarks use_pooled=False generalises
    # better (the wide pooled vector is an overfitting shortcut; the capsules read the same tokens)
    use_pooled: bool = False
    use_capsules: bool = True  # False: one mean-pooled query token instead of C capsules
    use_model_tokens: bool = True  # False: a shared learned token + cost only
    use_communication: bool = True  # False: H = 0
    use_pairwise_bias: bool = True
    use_feedback: bool = True
    distributional: bool = True  # False: point head trained with MSE
    bounded_correction: bool = True

    def __post_init__(self) -> None:
        if self.hidden <= 0 or self.hidden % self.n_heads != 0:
            raise ValueError(f"LatentRouterConfig.hidden={self.hidden} must be positive and divisible by "
                             f"n_heads={self.n_heads}")
        for name in ("n_capsules", "n_heads", "n_side_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"LatentRouterConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ValueError(f"LatentRouterConfig.n_layers must be >= 0, got {self.n_layers}")
        if self.image_token_pool < 0 or self.max_text_tokens < 0:
            raise ValueError("LatentRouterConfig needs image_token_pool >= 0 and max_text_tokens >= 0 (0 = off)")
        if self.rho < 0 or self.tau_feedback <= 0 or self.eps <= 0:
            raise ValueError("LatentRouterConfig needs rho >= 0, tau_feedback > 0 and eps > 0")

    @property
    def effective_layers(self) -> int:
        return self.n_layers if self.use_communication else 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentRouterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"LatentRouterConfig: unknown field(s) {unknown}")
        # checkpoints written before a field existed were trained with its "off" value, not today's default
        return cls(**{**LEGACY_VALUES, **d})


@dataclass
class InputDims:
    """Feature sizes the router was built for (checked at every forward and stored in checkpoints)."""

    img_dim: int  # Di, 0 in text-only mode
    txt_dim: int  # Dq
    side_dim: int  # S (+ D when the pooled vector is appended)
    model_feat_dim: int  # P

    @classmethod
    def from_data(cls, data: RoutingData, cfg: LatentRouterConfig) -> InputDims:
        img = 0 if data.img_tokens is None else int(data.img_tokens.shape[-1])
        side = int(data.side.shape[1]) + (int(data.pooled.shape[1]) if cfg.use_pooled else 0)
        return cls(img, int(data.txt_tokens.shape[-1]), side, int(data.model_feats.shape[-1]))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def side_input(data: RoutingData, rows: np.ndarray, cfg: LatentRouterConfig) -> np.ndarray:
    """The per-query vector that becomes the extra side tokens: side features (+ pooled vector)."""
    parts = [data.side[rows]]
    if cfg.use_pooled:
        parts.insert(0, data.pooled[rows])
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def _graph_capture() -> bool:
    """True while torch.export / torch.compile / torch.jit.trace records the forward: branches on tensor
    values must then take their general path (it is also correct for the special case)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def adaptive_windows(s: int, p: int) -> list[tuple[int, int]]:
    """[start, end) windows of 1-d adaptive average pooling from s to p cells (as ``F.adaptive_avg_pool1d``)."""
    return [((i * s) // p, -((-(i + 1) * s) // p)) for i in range(p)]


@functools.cache
def _uniform_pool(s: int, p: int) -> tuple[int, int, int] | None:
    """(kernel, stride, padding) of an ``avg_pool2d`` (padding not counted) whose windows equal the adaptive
    ones, e.g. 7 -> 4 is kernel 3, stride 2, padding 1; None when there is none."""
    want = adaptive_windows(s, p)
    for k in range(1, s + 1):
        for stride in range(1, k + 1):
            for pad in range(k // 2 + 1):
                got = [(max(0, i * stride - pad), min(s, i * stride - pad + k)) for i in range(p)]
                if got == want and (s + 2 * pad - k) // stride + 1 == p:
                    return k, stride, pad
    return None


@functools.cache
def adaptive_pool_matrix(s: int, p: int) -> torch.Tensor:
    """[p*p, s*s] averaging matrix of 2-d adaptive average pooling over a row-major s x s grid (memoised;
    callers move a copy to their device)."""
    m = torch.zeros(p, s)
    for i, (lo, hi) in enumerate(adaptive_windows(s, p)):
        m[i, lo:hi] = 1.0 / (hi - lo)
    return torch.kron(m, m)


def pool_image_tokens(tokens: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-aware adaptive average pooling of a square s x s token grid [B, s*s, D] (row-major) to
    [B, size*size, D] with the windows of ``F.adaptive_avg_pool2d``.

    The grid is channels-last already, so when the windows are those of a plain ``avg_pool2d`` (7 -> 4 is)
    that kernel runs on it without a copy, several times faster on CPU than the adaptive kernel; otherwise
    one matmul with the pooling matrix. Each output token is the mean of the valid tokens in its cell; a cell
    without a valid token is masked, so a fully masked image stays fully masked. Non-square grids and grids
    no larger than size x size pass through."""
    b, t, dim = tokens.shape
    s = math.isqrt(t)
    if size <= 0 or s * s != t or s <= size:
        return tokens, valid
    uniform = _uniform_pool(s, size)

    def pool(x: torch.Tensor) -> torch.Tensor:  # [B, s*s, D'] -> [B, size*size, D']
        if uniform is None:
            return torch.matmul(adaptive_pool_matrix(s, size).to(x), x)
        k, stride, pad = uniform
        grid = x.reshape(b, s, s, x.shape[-1]).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        out = F.avg_pool2d(grid, k, stride, pad, count_include_pad=False)
        return out.permute(0, 2, 3, 1).reshape(b, size * size, x.shape[-1])

    if not _graph_capture() and bool(valid.all()):  # a captured graph must not bake in one request's mask
        return pool(tokens), valid.new_ones(b, size * size)
    m = valid.to(tokens.dtype).unsqueeze(-1)
    den = pool(m)
    pooled = pool(tokens * m) / den.clamp_min(1e-6)  # cell means; empty cells are masked below
    return pooled, den.squeeze(-1) > 0


def is_prefix_mask(valid: np.ndarray | torch.Tensor) -> bool:
    """True when the valid tokens of every row [B, T] come first (the feature store pads at the end)."""
    return valid.shape[1] < 2 or not bool((valid[:, 1:] & ~valid[:, :-1]).any())


def first_valid_tokens(tokens: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` valid tokens of every row (order kept, padded with masked tokens) of [B, T, D].

    ``make_batch`` already cuts prefix-padded batches to ``n`` columns while converting to float32, so the
    slice here is normally a no-op."""
    b, t, _ = tokens.shape
    if n <= 0 or t <= n:
        return tokens, valid
    if not _graph_capture() and is_prefix_mask(valid):
        return tokens[:, :n].contiguous(), valid[:, :n]  # contiguous: the projection is then one GEMM
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :n]
    picked = torch.gather(tokens, 1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return picked, torch.gather(valid, 1, order)


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
        use_cache = not (self.training or torch.is_grad_enabled() or _graph_capture())
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
        r = self.norm(self.capsule_q + out)
        return self.norm2(r + self.ffn(r))


class CommunicationLayer(nn.Module):
    """One round of read (model tokens <- capsules), compare (masked self-attention) and feedback."""

    def __init__(self, cfg: LatentRouterConfig) -> None:
        super().__init__()
        d, h, p = cfg.hidden, cfg.n_heads, cfg.dropout
        self.cfg = cfg
        self.read = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
        self.read_ffn = FFN(3 * d, d, d, p)
        self.read_norm = nn.LayerNorm(d)
        self.pair_bias = PairwiseBias(d, h) if cfg.use_pairwise_bias else None
        self.self_attn = nn.MultiheadAttention(d, h, dropout=p, batch_first=True)
        self.self_norm = nn.LayerNorm(d)
        if cfg.use_feedback:
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
