"""Input-token reduction before the capsule attention: mask-aware pooling of the image grid and the first
valid question tokens.

Why: the capsule attention's cost is linear in the token count and it is most of the CPU time, so the 7x7 image
grid is average-pooled to 4x4 and only the first question tokens are kept (``LatentRouterConfig.image_token_pool``
/ ``max_text_tokens``). Padded or masked tokens never leak into a pooled cell.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F


def graph_capture() -> bool:
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

    if not graph_capture() and bool(valid.all()):  # a captured graph must not bake in one request's mask
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
    if not graph_capture() and is_prefix_mask(valid):
        return tokens[:, :n].contiguous(), valid[:, :n]  # contiguous: the projection is then one GEMM
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :n]
    picked = torch.gather(tokens, 1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return picked, torch.gather(valid, 1, order)

