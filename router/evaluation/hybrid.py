"""The hybrid small/large setting of the ReLope paper: keep the small model's answer or escalate to a large
one, decided per query by a score of the small model's chance of being right.

Small = the real local model, large = a pool model (default: the strongest on train rows). Judged on test
rows where both have an ok trace and the small model's hidden states were captured:
- correctness-prediction AUC of each probe (hidden states, several seeds) and of the query-only routers
  (LatentRouter and baselines, restricted to the two models: confidence = q_hat(small) - q_hat(large);
  they never see hidden states);
- the quality-vs-share-sent-to-large curve: at share s the s least confident queries go to the large model
  (as in the paper's routing-ratio figure), plus Random and the Oracle for reference.
Probes are fitted on train rows and early-stopped on val rows only; test rows are only ever predicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.parallel import resolve_workers
from router.models.base import Router
from router.models.probes import PROBES, ProbeFeatures, make_probe
from router.models.probes.training import ProbeTrainConfig, auc_or_nan

HYBRID_DIR = "probes/hybrid"  # under the warehouse's features folder
ORACLE_HYBRID = "Oracle"
RANDOM_HYBRID = "Random"


@dataclass
class HybridConfig:
    small_model: str
    large_model: str | None = None  # None = the model with the best mean train quality
    seeds: tuple[int, ...] = (0, 1, 2)
    shares: tuple[float, ...] = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))
    probes: tuple[str, ...] = PROBES
    probe_train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)
    workers: int = 1  # processes fitting the probes (0 = one per core); one thread each, so any count gives
    # the same predictions


@dataclass
class HybridResult:
    auc: pl.DataFrame  # method, kind (probe | router | reference), seed, auc
    curve: pl.DataFrame  # method, kind, share, quality_mean, quality_std
    summary: pl.DataFrame  # method, kind, auc_mean, auc_std, quality at a few shares
    meta: dict[str, Any]

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"hybrid_auc": self.auc, "hybrid_curve": self.curve, "hybrid_summary": self.summary}


def strongest_on_train(data: RoutingData, exclude: str) -> str:
    rows = data.idx("train")
    q = np.where(data.avail[rows], data.quality[rows], np.nan)
    means = {m: float(np.nanmean(q[:, k])) for k, m in enumerate(data.model_ids)
             if m != exclude and np.isfinite(q[:, k]).any()}
    return max(means, key=means.__getitem__)


def share_curve(confidence: np.ndarray, q_small: np.ndarray, q_large: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Mean quality when the ``round(s * n)`` least confident rows go to the large model, per share s."""
    order = np.argsort(confidence, kind="stable")  # least confident first
    n, out = len(order), []
    for s in shares:
        k = int(round(float(s) * n))
        to_large = np.zeros(n, dtype=bool)
        to_large[order[:k]] = True
        out.append(float(np.where(to_large, q_large, q_small).mean()) if n else float("nan"))
    return np.array(out)


def hybrid_rows(data: RoutingData, feats: ProbeFeatures, small: str, large: str) -> dict[str, np.ndarray]:
    """Data rows per split usable by the probes (small model ok and captured); test also needs the large."""
    have = np.array([q in set(feats.query_ids) for q in data.query_ids])
    ks, kl = data.model_ids.index(small), data.model_ids.index(large)
    ok = have & data.avail[:, ks]
    return {"train": np.flatnonzero(ok & (data.split == "train")),
            "val": np.flatnonzero(ok & (data.split == "val")),
            "test": np.flatnonzero(ok & data.avail[:, kl] & (data.split == "test"))}


def _probe_predictions(name: str, kw: Mapping[str, Any], seed: int, feats: ProbeFeatures, y: np.ndarray,
                       frow: Mapping[str, np.ndarray]) -> np.ndarray:
    """One probe fitted at ``seed`` on the train rows (early-stopped on val) and its test predictions, on one
    torch thread whatever process runs it."""
    from router.threads import torch_threads

    with torch_threads(1):
        probe = make_probe(name, **kw).fit(feats, y, frow["train"], frow["val"], seed=seed)
        return np.asarray(probe.predict(feats, frow["test"]))


def evaluate_hybrid(data: RoutingData, feats: ProbeFeatures, correct: np.ndarray, cfg: HybridConfig,
                    routers: Mapping[str, Callable[[int], Router]] | None = None,
                    log: Callable[[str], None] = lambda m: None) -> HybridResult:
    """Probes and query-only routers on the two-model decision. ``correct`` [N] is the small model's
    correctness per data row (NaN where unknown); ``routers`` maps a name to ``seed -> fitted Router``."""
    small = cfg.small_model
    large = cfg.large_model or strongest_on_train(data, exclude=small)
    rows = hybrid_rows(data, feats, small, large)
    if len(rows["train"]) < 4 or len(rows["test"]) < 2:
        raise ValueError(f"hybrid evaluation needs small-model rows: train {len(rows['train'])}, "
                         f"test {len(rows['test'])} (collect more local traces)")
    fpos = feats.row_of()
    frow = {s: np.array([fpos[data.query_ids[i]] for i in r], dtype=np.int64) for s, r in rows.items()}
    y = np.full(feats.n, np.nan, dtype=np.float32)
    for s, r in rows.items():
        y[frow[s]] = np.nan_to_num(correct[r].astype(np.float32))
    test = rows["test"]
    ks, kl = data.model_ids.index(small), data.model_ids.index(large)
    q_small, q_large = data.quality[test, ks], data.quality[test, kl]
    y_test = y[frow["test"]]
    shares = np.asarray(cfg.shares, dtype=np.float64)
    auc_rows: list[dict] = []
    curves: dict[tuple[str, str], list[np.ndarray]] = {}

    def record(method: str, kind: str, seed: int, conf: np.ndarray) -> None:
        auc_rows.append({"method": method, "kind": kind, "seed": seed, "auc": auc_or_nan(y_test, conf)})
        curves.setdefault((method, kind), []).append(share_curve(conf, q_small, q_large, shares))

    jobs = [(name, seed) for name in cfg.probes for seed in cfg.seeds]
    args = [(name, {} if name == PROBES[0] else {"train": cfg.probe_train}, seed) for name, seed in jobs]
    workers = min(resolve_workers(cfg.workers), len(jobs))
    if workers > 1:
        from joblib import Parallel, delayed

        preds = Parallel(n_jobs=workers, backend="loky")(
            delayed(_probe_predictions)(name, kw, seed, feats, y, frow) for name, kw, seed in args)
    else:
        preds = [_probe_predictions(name, kw, seed, feats, y, frow) for name, kw, seed in args]
    for (name, seed), pred in zip(jobs, preds, strict=True):
        record(name, "probe", seed, pred)
        if seed == cfg.seeds[-1]:
            log(f"hybrid: {name} done")
    for name, fitted in (routers or {}).items():
        for seed in cfg.seeds:
            q_hat, _ = fitted(seed).predict(data, test)
            record(name, "router", seed, np.asarray(q_hat[:, ks] - q_hat[:, kl], dtype=np.float64))
        log(f"hybrid: {name} done")
    rng = np.random.default_rng(0)
    for seed in cfg.seeds:
        record(RANDOM_HYBRID, "reference", seed, rng.random(len(test)))
    # the oracle escalates exactly the rows where the large model is better, biggest gain first
    record(ORACLE_HYBRID, "reference", -1, -(q_large - q_small))

    auc = pl.DataFrame(auc_rows, schema={"method": pl.String, "kind": pl.String, "seed": pl.Int64, "auc": pl.Float64})
    curve_rows = []
    for (method, kind), cs in curves.items():
        arr = np.stack(cs)
        for j, s in enumerate(shares):
            curve_rows.append({"method": method, "kind": kind, "share": float(s), "quality_mean": float(arr[:, j].mean()),
                               "quality_std": float(arr[:, j].std())})
    curve = pl.DataFrame(curve_rows)
    summary = _summary(auc, curve)
    meta = {"small_model": small, "large_model": large, "seeds": list(cfg.seeds),
            "n_rows": {s: int(len(r)) for s, r in rows.items()},
            "small_accuracy_test": float(np.mean(y_test)), "small_quality_test": float(q_small.mean()),
            "large_quality_test": float(q_large.mean()), "layer": feats.layer,
            "bytes_per_query": feats.bytes_per_query}
    return HybridResult(auc=auc, curve=curve, summary=summary, meta=meta)


def _summary(auc: pl.DataFrame, curve: pl.DataFrame) -> pl.DataFrame:
    """Per method: AUC mean +- std over seeds and quality at 20 / 50 % sent to the large model."""
    a = auc.group_by("method", "kind", maintain_order=True).agg(
        pl.col("auc").mean().alias("auc_mean"), pl.col("auc").std(ddof=0).alias("auc_std"))
    out = a
    for s in (0.2, 0.5):
        c = curve.filter((pl.col("share") - s).abs() < 1e-9).select(
            "method", pl.col("quality_mean").alias(f"quality_at_{int(s * 100)}pct"))
        out = out.join(c, on="method", how="left")
    return out


def save_hybrid(result: HybridResult, out_dir: Path) -> Path:
    """Write the result's tables (Parquet) and meta (JSON) into ``out_dir``; the report reads them back."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in result.tables().items():
        df.write_parquet(out_dir / f"{name}.parquet")
    (out_dir / "hybrid_meta.json").write_text(json.dumps(result.meta, default=float), encoding="utf-8")
    return out_dir


def load_hybrid_tables(out_dir: Path) -> dict[str, pl.DataFrame]:
    """The tables of a saved hybrid result (empty when there is none), meta as a one-row ``hybrid_meta``."""
    out_dir = Path(out_dir)
    if not (out_dir / "hybrid_meta.json").is_file():
        return {}
    tables = {p.stem: pl.read_parquet(p) for p in sorted(out_dir.glob("hybrid_*.parquet"))}
    tables["hybrid_meta"] = pl.DataFrame({"json": [(out_dir / "hybrid_meta.json").read_text(encoding="utf-8")]})
    return tables
