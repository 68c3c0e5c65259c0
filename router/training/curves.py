"""Training-curve and calibration instruments: is a router learning the label signal, and are its quality
estimates honest?

Why: LatentRouter's validation utility alone cannot tell underfitting from overfitting or from a badly
calibrated head. These helpers give (1) pick accuracy, the mean realised quality of the argmax pick at
lambda 0, of any router on any rows, with GroupBest's (the per-label lookup every learned router must beat)
as the reference line; (2) per-model calibration of predicted vs realised quality (reliability bins, ECE,
Brier), from any router that predicts outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router


def pick_accuracy(router: Router, data: RoutingData, rows: np.ndarray, lam: float = 0.0) -> float:
    """Mean realised quality of the router's picks at ``lam`` over ``rows`` with an available model."""
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[data.avail[rows].any(axis=1)]
    if len(rows) == 0:
        return float("nan")
    pick = np.asarray(router.select(data, rows, float(lam)))
    return float(data.quality[rows, pick].mean())


def group_best_reference(data: RoutingData, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
    """GroupBest fitted on ``data``'s train rows: its pick accuracy on ``train`` and ``val`` (the lookup line
    of the training curve)."""
    from router.models.baselines.group_best import GroupBestRouter

    gb = GroupBestRouter().fit(data)
    return {"group_best_train_acc": pick_accuracy(gb, data, train), "group_best_val_acc": pick_accuracy(gb, data, val)}


def calibration(q_hat: np.ndarray, data: RoutingData, rows: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Per model: mean predicted vs mean realised quality, Brier score and expected calibration error (ECE,
    equal-width bins of the prediction) over the available entries of ``rows``; one row per model plus
    ``"all"``. ``q_hat``: [len(rows), K] quality estimates for ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    q_hat = np.asarray(q_hat, dtype=np.float64)
    if q_hat.shape != (len(rows), data.k):
        raise ValueError(f"calibration: q_hat has shape {q_hat.shape}, expected {(len(rows), data.k)}")
    if bins < 1:
        raise ValueError(f"calibration: bins must be >= 1, got {bins}")
    y = data.quality[rows].astype(np.float64)
    av = data.avail[rows]
    out = []
    for j, name in [*enumerate(data.model_ids), (None, "all")]:
        m = av if j is None else np.zeros_like(av)
        if j is not None:
            m[:, j] = av[:, j]
        p, t = np.clip(q_hat[m], 0.0, 1.0), y[m]
        if len(p) == 0:
            out.append({"model": name, "n": 0, "mean_pred": float("nan"), "mean_real": float("nan"),
                        "brier": float("nan"), "ece": float("nan")})
            continue
        b = np.minimum((p * bins).astype(np.int64), bins - 1)
        ece = sum(abs(p[b == i].mean() - t[b == i].mean()) * (b == i).sum() for i in range(bins) if (b == i).any())
        out.append({"model": name, "n": int(len(p)), "mean_pred": float(p.mean()), "mean_real": float(t.mean()),
                    "brier": float(np.mean((p - t) ** 2)), "ece": float(ece / len(p))})
    return out


def reliability(q_hat: np.ndarray, data: RoutingData, rows: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Reliability diagram over all available entries: per prediction bin, count, mean predicted, mean realised."""
    rows = np.asarray(rows, dtype=np.int64)
    av = data.avail[rows]
    p = np.clip(np.asarray(q_hat, dtype=np.float64)[av], 0.0, 1.0)
    t = data.quality[rows].astype(np.float64)[av]
    b = np.minimum((p * bins).astype(np.int64), bins - 1)
    return [{"bin": f"[{i / bins:.1f}, {(i + 1) / bins:.1f})", "n": int((b == i).sum()),
             "mean_pred": float(p[b == i].mean()) if (b == i).any() else float("nan"),
             "mean_real": float(t[b == i].mean()) if (b == i).any() else float("nan")} for i in range(bins)]


def format_table(rows: Sequence[dict[str, Any]], digits: int = 4) -> str:
    """A markdown table of dict rows (floats rounded), for bench scripts and logs."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
