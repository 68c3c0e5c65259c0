"""Outcome-prediction metrics: a predicted quality matrix against the realised one, available entries only."""

from __future__ import annotations

import numpy as np
from scipy import stats

_TIE = 1e-12  # true qualities this close to the row's best count as best

def outcome_mse(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> float:
    """Mean squared error over available (query, model) entries."""
    m = np.asarray(avail, dtype=bool)
    if not m.any():
        return float("nan")
    d = np.asarray(pred, dtype=np.float64)[m] - np.asarray(true, dtype=np.float64)[m]
    return float(np.mean(d * d))


def _rank_desc(x: np.ndarray) -> np.ndarray:
    """Indices sorting ``x`` descending, ties by position (deterministic)."""
    return np.argsort(-x, kind="stable")


def ndcg(pred: np.ndarray, true: np.ndarray, avail: np.ndarray, k: int | None = None) -> float:
    """Mean NDCG@k over queries (k=None: all available models); gain = true quality."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        if not m.any():
            continue
        p, t = p[m], t[m]
        kk = len(t) if k is None else min(k, len(t))
        disc = 1.0 / np.log2(np.arange(2, kk + 2))
        ideal = float(np.sum(np.sort(t)[::-1][:kk] * disc))
        if ideal <= 0:
            continue
        vals.append(float(np.sum(t[_rank_desc(p)][:kk] * disc)) / ideal)
    return float(np.mean(vals)) if vals else float("nan")


def spearman(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> float:
    """Mean per-query Spearman correlation between predicted and true quality over available models."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        p, t = p[m], t[m]
        if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
            continue
        vals.append(float(stats.spearmanr(p, t).statistic))
    return float(np.mean(vals)) if vals else float("nan")


def top3_recall(pred: np.ndarray, true: np.ndarray, avail: np.ndarray, top: int = 3) -> float:
    """Mean per-query recall of the true best models (max true quality) within the predicted top-``top``."""
    vals = []
    for p, t, m in zip(np.asarray(pred, float), np.asarray(true, float), np.asarray(avail, bool), strict=True):
        p, t = p[m], t[m]
        if len(t) == 0 or np.ptp(t) == 0:
            continue
        best = set(np.flatnonzero(t >= t.max() - _TIE).tolist())
        picked = set(_rank_desc(p)[:top].tolist())
        vals.append(len(best & picked) / len(best))
    return float(np.mean(vals)) if vals else float("nan")


def outcome_metrics(pred: np.ndarray, true: np.ndarray, avail: np.ndarray) -> dict[str, float]:
    """MSE, NDCG (all models and @3), Spearman and Top-3 recall of a predicted quality matrix."""
    return {
        "mse": outcome_mse(pred, true, avail),
        "ndcg": ndcg(pred, true, avail),
        "ndcg@3": ndcg(pred, true, avail, k=3),
        "spearman": spearman(pred, true, avail),
        "top3_recall": top3_recall(pred, true, avail),
    }
