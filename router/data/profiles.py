"""Capability profiles: one standardised vector per candidate model, from CALIBRATION traces only.

Why: LatentRouter scores a model through a token built from its profile, so a model added later is routed
without retraining once it has a profile. The profile must never see val/test outcomes (that would leak the
answers the router is evaluated on) and must have a length P independent of the pool size K, so pairwise
statistics against the other models are summarised (mean / max / min) instead of listed.

Every outcome-derived part is shrunk toward the pool mean with weight n / (n + k0), so a model with few
calibration rows gets a cautious profile and a model with none gets exactly the pool mean (z = 0 on those
parts) plus the ``cold_start`` flag. Parts known before any answer (price, size) are never shrunk.
Standardisation stats come from the reference pool (by default: the models with calibration rows that are
not being cold-started), so adding a model does not change the other models' vectors.

Production rows (labelled gateway requests, optional) are extra evidence of the model that answered them:
they enter that model's overall parts, and its group/dataset parts only where the request named a task
group/dataset the benchmark knows; never pairwise parts (one model answered each), never the reference pool
or the cost scale (both stay defined by calibration rows), so they move no other model's raw parts.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from router.data.calibration import (
    CALIBRATION_SPLIT,
    REQUIRED_TRACE_COLUMNS,
    calibration_rows,
    production_rows,
    trace_hash,
)
from warehouse.vocabulary import TASK_GROUPS

BASE_PARTS = (
    "quality_overall", "availability", "cost_norm", "log_prompt_tokens", "log_completion_tokens",
    "log_image_tokens", "log_latency_mean_ms", "log_latency_p90_ms",
)
PAIRWISE_PARTS = (
    "win_rate_mean", "win_rate_max", "win_rate_min", "tie_rate_mean", "loss_rate_mean",
    "fail_corr_mean", "fail_corr_max", "fail_corr_min",
)
PRIOR_PARTS = ("log_price_in", "log_price_out", "log_params_b", "params_missing")  # known before answering


@dataclass(frozen=True)
class ProfileSources:
    """Which evidence besides the benchmark's calibration rows the profiles asset reads (its run config)."""

    use_production_traces: bool = True  # labelled gateway requests as extra evidence of the models that served them


# ----------------------------------------------------------------------------------------------- stats


def _incorrect(rows: pl.DataFrame) -> np.ndarray:
    q = rows["quality"].to_numpy().astype(np.float64)
    c = rows["correct"].to_list()
    return np.array([(not ci) if ci is not None else (qi < 0.5) for ci, qi in zip(c, q, strict=True)], dtype=bool)


def _phi(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.all() or (~a).all() or b.all() or (~b).all():
        return float("nan")
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def _model_stats(rows: pl.DataFrame, groups: Sequence[str], datasets: Sequence[str],
                 qmeta: dict[str, tuple[str, str]]) -> tuple[dict[str, float], dict[str, int]]:
    """Unshrunk raw parts (NaN where unmeasured) and the row count each part rests on."""
    n_rows = rows.height
    ok = rows.filter(pl.col("status") == "ok")
    n_ok = ok.height
    v: dict[str, float] = {}
    c: dict[str, int] = {}
    nan = float("nan")

    def mean(col: str) -> float:
        return float(ok[col].cast(pl.Float64).mean()) if n_ok and ok[col].null_count() < n_ok else nan

    v["quality_overall"], c["quality_overall"] = mean("quality"), n_ok
    v["availability"], c["availability"] = (n_ok / n_rows if n_rows else nan), n_rows
    v["cost_usd_mean"], c["cost_norm"] = mean("cost_usd"), n_ok
    for col, name in (("prompt_tokens", "log_prompt_tokens"), ("completion_tokens", "log_completion_tokens"),
                      ("image_tokens", "log_image_tokens"), ("latency_ms", "log_latency_mean_ms")):
        m = mean(col)
        v[name], c[name] = (math.log1p(max(m, 0.0)) if m == m else nan), n_ok
    lat = ok["latency_ms"].drop_nulls().to_numpy() if n_ok else np.array([])
    v["log_latency_p90_ms"] = math.log1p(max(float(np.quantile(lat, 0.9)), 0.0)) if len(lat) else nan
    c["log_latency_p90_ms"] = len(lat)
    qids = ok["query_id"].to_list()
    qual = ok["quality"].to_numpy().astype(np.float64)
    tg = np.array([qmeta[q][0] for q in qids], dtype=object)
    ds = np.array([qmeta[q][1] for q in qids], dtype=object)
    for g in groups:
        sel = tg == g
        v[f"quality_group:{g}"], c[f"quality_group:{g}"] = (float(qual[sel].mean()) if sel.any() else nan), int(sel.sum())
    for d in datasets:
        sel = ds == d
        v[f"quality_dataset:{d}"], c[f"quality_dataset:{d}"] = (float(qual[sel].mean()) if sel.any() else nan), int(sel.sum())
    return v, c


def _pairwise(me: str, ok_by_model: dict[str, dict[str, tuple[float, bool]]],
              opponents: Sequence[str]) -> tuple[dict[str, float], int]:
    """Win/tie/loss rates and failure correlation vs each opponent on shared queries, summarised."""
    mine = ok_by_model.get(me, {})
    wins, ties, losses, corrs = [], [], [], []
    shared_total = 0
    for o in opponents:
        if o == me:
            continue
        theirs = ok_by_model.get(o, {})
        shared = sorted(set(mine) & set(theirs))
        if not shared:
            continue
        shared_total += len(shared)
        a = np.array([mine[q][0] for q in shared])
        b = np.array([theirs[q][0] for q in shared])
        wins.append(float(np.mean(a > b + 1e-9)))
        ties.append(float(np.mean(np.abs(a - b) <= 1e-9)))
        losses.append(float(np.mean(a < b - 1e-9)))
        corrs.append(_phi(np.array([mine[q][1] for q in shared]), np.array([theirs[q][1] for q in shared])))
    nan = float("nan")
    corrs = [x for x in corrs if x == x]
    out = {
        "win_rate_mean": float(np.mean(wins)) if wins else nan,
        "win_rate_max": float(np.max(wins)) if wins else nan,
        "win_rate_min": float(np.min(wins)) if wins else nan,
        "tie_rate_mean": float(np.mean(ties)) if ties else nan,
        "loss_rate_mean": float(np.mean(losses)) if losses else nan,
        "fail_corr_mean": float(np.mean(corrs)) if corrs else nan,
        "fail_corr_max": float(np.max(corrs)) if corrs else nan,
        "fail_corr_min": float(np.min(corrs)) if corrs else nan,
    }
    return out, (shared_total // max(1, len(wins)) if wins else 0)




def _vocab(queries: pl.DataFrame) -> tuple[list[str], list[str], dict[str, tuple[str, str]]]:
    for c in ("query_id", "task_group", "dataset"):
        if c not in queries.columns:
            raise ValueError(f"queries: missing column {c!r}; have {queries.columns}")
    tg = queries["task_group"].fill_null("").to_list()
    ds = queries["dataset"].fill_null("").to_list()
    groups = list(TASK_GROUPS) + sorted(set(tg) - set(TASK_GROUPS) - {""})
    datasets = sorted(set(ds) - {""})
    qmeta = dict(zip(queries["query_id"].to_list(), zip(tg, ds, strict=True), strict=True))
    return groups, datasets, qmeta



# ----------------------------------------------------------------------------------------------- profiles


Z_CLIP = 5.0  # bound of a standardised profile part


def _check_profile_inputs(models: pl.DataFrame, shrink_k0: float, calib_limit: Mapping[str, int] | None) -> None:
    if shrink_k0 < 0:
        raise ValueError(f"build_profiles: shrink_k0 must be >= 0, got {shrink_k0}")
    for c in ("model_id", "price_in_per_mtok", "price_out_per_mtok", "params_b"):
        if c not in models.columns:
            raise ValueError(f"models: missing column {c!r}; have {models.columns}")
    model_ids = models["model_id"].to_list()
    unknown = [m for m in (calib_limit or {}) if m not in model_ids]
    if unknown:
        raise ValueError(f"build_profiles: calib_limit names model(s) {unknown} not in the models table")


def _reference(model_ids: list[str], per_model: dict[str, pl.DataFrame], calib_limit: Mapping[str, int] | None,
               reference_models: Sequence[str] | None) -> list[str]:
    """The models whose statistics define the pool (shrinkage target, standardisation, cost scale)."""
    if reference_models is None:
        return [m for m in model_ids if per_model[m].height > 0 and m not in (calib_limit or {})]
    reference = [m for m in reference_models if m in model_ids]
    if len(reference) != len(reference_models):
        raise ValueError(f"build_profiles: reference_models {list(reference_models)} not all in models table")
    return reference


def _outcome_parts(
    model_ids: list[str], per_model: dict[str, pl.DataFrame], reference: list[str], groups: list[str],
    datasets: list[str], qmeta: dict[str, tuple[str, str]], evidence: dict[str, pl.DataFrame] | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, dict[str, tuple[float, bool]]], float]:
    """(part names, unshrunk raw [K, O], row counts [K, O], ok calibration outcomes per model, cost scale) of
    the outcome-derived parts: per-model parts from ``evidence`` (calibration + production rows; default
    ``per_model``), pairwise parts and the cost scale from the calibration rows ``per_model`` only."""
    evidence = per_model if evidence is None else evidence
    stats = {m: _model_stats(evidence[m], groups, datasets, qmeta) for m in model_ids}
    calib_stats = stats if evidence is per_model else {
        m: _model_stats(per_model[m], groups, datasets, qmeta) for m in reference}
    ref_cost = [calib_stats[m][0]["cost_usd_mean"] for m in reference]
    ref_cost = [x for x in ref_cost if x == x]
    cost_scale = float(max(ref_cost)) if ref_cost and max(ref_cost) > 0 else 1.0
    ok_by_model: dict[str, dict[str, tuple[float, bool]]] = {}
    for m in model_ids:
        ok = per_model[m].filter(pl.col("status") == "ok")
        ok_by_model[m] = dict(zip(ok["query_id"].to_list(),
                                  zip(ok["quality"].to_numpy().astype(float), _incorrect(ok), strict=True),
                                  strict=True))

    outcome_names = (list(BASE_PARTS) + [f"quality_group:{g}" for g in groups]
                     + [f"quality_dataset:{d}" for d in datasets] + list(PAIRWISE_PARTS))
    raw = np.full((len(model_ids), len(outcome_names)), np.nan)
    counts = np.zeros((len(model_ids), len(outcome_names)))
    for i, m in enumerate(model_ids):
        v, c = stats[m]
        v = dict(v)
        v["cost_norm"] = v.pop("cost_usd_mean") / cost_scale
        pw, n_shared = _pairwise(m, ok_by_model, reference)
        v.update(pw)
        c.update({p: n_shared for p in PAIRWISE_PARTS})
        raw[i] = [v[n] for n in outcome_names]
        counts[i] = [c[n] for n in outcome_names]
    return outcome_names, raw, counts, ok_by_model, cost_scale


def _shrink(raw: np.ndarray, counts: np.ndarray, ref_idx: list[int], outcome_names: list[str],
            shrink_k0: float) -> tuple[np.ndarray, np.ndarray]:
    """(pool mean [O], shrunk parts [K, O]): each part moves toward the pool with weight n / (n + k0)."""
    pool = np.full(len(outcome_names), np.nan)
    if ref_idx:
        with warnings.catch_warnings():  # all-NaN columns are handled right below
            warnings.simplefilter("ignore", RuntimeWarning)
            pool = np.nanmean(raw[ref_idx], axis=0)
    q_overall = pool[outcome_names.index("quality_overall")]
    for j, n in enumerate(outcome_names):
        if not np.isfinite(pool[j]):  # nobody measured it: a neutral value
            pool[j] = q_overall if n.startswith("quality_") and np.isfinite(q_overall) else 0.0
    w = counts / (counts + shrink_k0) if shrink_k0 > 0 else (counts > 0).astype(float)
    shrunk = np.where(np.isfinite(raw), w * np.nan_to_num(raw) + (1 - w) * pool[None, :], pool[None, :])
    return pool, shrunk


def _prior_parts(models: pl.DataFrame, ref_idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(prior parts [K, 4], params missing [K]): prices and size, known before any answer (never shrunk)."""
    prices = models.select("price_in_per_mtok", "price_out_per_mtok", "params_b").to_numpy().astype(np.float64)
    params = prices[:, 2]
    params_missing = ~np.isfinite(params) | (params <= 0)
    log_params = np.where(params_missing, np.nan, np.log(np.where(params_missing, 1.0, params)))
    ref_known = [i for i in ref_idx if not params_missing[i]] or [i for i in range(models.height)
                                                                    if not params_missing[i]]
    params_pool = float(np.mean(log_params[ref_known])) if ref_known else 0.0
    prior = np.stack([np.log1p(np.nan_to_num(prices[:, 0]).clip(min=0)),
                      np.log1p(np.nan_to_num(prices[:, 1]).clip(min=0)),
                      np.where(params_missing, params_pool, log_params),
                      params_missing.astype(np.float64)], axis=1)
    return prior, params_missing


def _standardise(full: np.ndarray, pool: np.ndarray, ref_idx: list[int],
                 n_outcome: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z [K, P], mean [P], std [P]) with pool statistics: outcome parts centred on the shrinkage target."""
    std_rows = full[ref_idx] if ref_idx else full
    mean = np.concatenate([pool, std_rows[:, n_outcome:].mean(axis=0)])
    sd = std_rows.std(axis=0) if len(std_rows) > 1 else np.ones(full.shape[1])
    sd = np.where(sd > 1e-8, sd, 1.0)
    # clip: with few reference models a tiny std can blow a new model's parts up to |z| ~ 50
    z = np.clip((full - mean[None, :]) / sd[None, :], -Z_CLIP, Z_CLIP)
    return z, mean, sd


def _production_evidence(production: pl.DataFrame | None, model_ids: list[str], splits: pl.DataFrame,
                         qmeta: dict[str, tuple[str, str]]) -> tuple[pl.DataFrame, dict[str, tuple[str, str]]]:
    """(latest production rows of the pool, their (task_group, dataset) with "" = not named). A production
    query id that is also a benchmark query is refused: it could be a val/test row under another name."""
    if production is None or production.height == 0:
        return pl.DataFrame(), {}
    rows = production_rows(production, model_ids)
    clash = (set(rows["query_id"].to_list()) & (set(qmeta) | set(splits["query_id"].to_list())))
    if clash:
        raise ValueError(f"production: query_id {sorted(clash)[0]!r} is a benchmark query; production rows "
                         f"must have their own ids (production:<request id>)")
    meta = dict(zip(rows["query_id"].to_list(),
                    zip(rows["task_group"].fill_null("").to_list(), rows["dataset"].fill_null("").to_list(),
                        strict=True), strict=True))
    return rows, meta


def with_production_rows(per_model: dict[str, pl.DataFrame], prod: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Each model's calibration rows followed by its production rows (the columns the statistics read)."""
    cols = [c for c in (*REQUIRED_TRACE_COLUMNS, "collected_at")
            if c in prod.columns and all(c in r.columns for r in per_model.values())]
    return {m: pl.concat([r.select(cols), prod.filter(pl.col("model_id") == m).select(cols)],
                         how="vertical_relaxed") for m, r in per_model.items()}


def build_profiles(
    traces: pl.DataFrame,
    splits: pl.DataFrame,
    queries: pl.DataFrame,
    models: pl.DataFrame,
    shrink_k0: float = 16.0,
    calib_limit: Mapping[str, int] | None = None,
    reference_models: Sequence[str] | None = None,
    production: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The ``profiles`` table: one row per model of ``models`` (in its order).

    Columns: model_id, vector (standardised, list[f32]), feature_names, raw (unshrunk, NaN = unmeasured),
    shrunk_raw, n_calib_rows, n_production_rows, n_ok_rows, shrink_weight, cold_start, shrunk,
    params_missing, trace_hash, source_query_ids, built_from (JSON). ``shrink_k0`` is the k0 of the shrinkage
    weight n / (n + k0). ``production``: labelled gateway rows in the traces contract (optional
    ``task_group`` / ``dataset`` columns), extra evidence of the models of ``models`` that served them (see
    the module docstring); ``calib_limit`` caps calibration rows only. None or empty = calibration only.
    """
    _check_profile_inputs(models, shrink_k0, calib_limit)
    model_ids = models["model_id"].to_list()
    groups, datasets, qmeta = _vocab(queries)
    rows = calibration_rows(traces, splits, calib_limit).filter(pl.col("model_id").is_in(model_ids))
    missing_q = set(rows["query_id"].to_list()) - set(qmeta)
    if missing_q:
        raise ValueError(f"traces: query_id {sorted(missing_q)[0]!r} is not in the queries table")
    prod, prod_meta = _production_evidence(production, model_ids, splits, qmeta)

    per_model = {m: rows.filter(pl.col("model_id") == m) for m in model_ids}
    evidence = with_production_rows(per_model, prod) if prod.height else per_model
    reference = _reference(model_ids, per_model, calib_limit, reference_models)
    outcome_names, raw, counts, ok_by_model, cost_scale = _outcome_parts(
        model_ids, per_model, reference, groups, datasets, {**qmeta, **prod_meta}, evidence)
    names = outcome_names + list(PRIOR_PARTS)
    ref_idx = [model_ids.index(m) for m in reference]
    pool, shrunk = _shrink(raw, counts, ref_idx, outcome_names, shrink_k0)
    prior, params_missing = _prior_parts(models, ref_idx)
    full = np.concatenate([shrunk, prior], axis=1)
    z, mean, sd = _standardise(full, pool, ref_idx, len(outcome_names))

    n_rows = np.array([per_model[m].height for m in model_ids])
    n_prod = np.array([evidence[m].height - per_model[m].height for m in model_ids])
    n_ok = np.array([evidence[m].filter(pl.col("status") == "ok").height for m in model_ids])
    built_from = json.dumps({
        "split": CALIBRATION_SPLIT,
        "n_rows": int(rows.height),
        "n_queries": int(rows["query_id"].n_unique()) if rows.height else 0,
        "trace_version": trace_hash(rows),
        "n_production_rows": int(prod.height),
        "production_until": max(prod["collected_at"].drop_nulls().to_list(), default=None) if prod.height else None,
        "shrink_k0": shrink_k0,
        "calib_limit": dict(calib_limit or {}),
        "reference_models": reference,
        "cost_scale": cost_scale,
        "standardise_mean": dict(zip(names, mean.tolist(), strict=True)),
        "standardise_std": dict(zip(names, sd.tolist(), strict=True)),
    }, sort_keys=True)
    return pl.DataFrame({
        "model_id": model_ids,
        "vector": [r.astype(np.float32).tolist() for r in z],
        "feature_names": [names] * len(model_ids),
        "raw": [list(r) + list(p) for r, p in zip(raw.tolist(), prior.tolist(), strict=True)],
        "shrunk_raw": full.tolist(),
        "n_calib_rows": n_rows.astype(np.int64),
        "n_production_rows": n_prod.astype(np.int64),
        "n_ok_rows": n_ok.astype(np.int64),
        "shrink_weight": (n_ok / (n_ok + shrink_k0) if shrink_k0 > 0 else (n_ok > 0)).astype(np.float64),
        "cold_start": (n_rows + n_prod) == 0,
        "shrunk": n_ok < shrink_k0,
        "params_missing": params_missing,
        "trace_hash": [trace_hash(evidence[m]) for m in model_ids],
        "source_query_ids": [sorted(evidence[m]["query_id"].to_list()) for m in model_ids],
        "built_from": [built_from] * len(model_ids),
    }, schema_overrides={"vector": pl.List(pl.Float32), "raw": pl.List(pl.Float64),
                         "shrunk_raw": pl.List(pl.Float64), "feature_names": pl.List(pl.String),
                         "source_query_ids": pl.List(pl.String)})


def profile_matrix(profiles: pl.DataFrame, model_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """[K, P] float32 standardised profile vectors in the order of ``model_ids``, and the part names."""
    if profiles.height == 0:
        raise ValueError("profiles table is empty")
    pos = {m: i for i, m in enumerate(profiles["model_id"].to_list())}
    missing = [m for m in model_ids if m not in pos]
    if missing:
        raise KeyError(f"profiles: no profile for model(s) {missing}")
    names = list(profiles["feature_names"][0])
    mat = np.array([profiles["vector"][pos[m]].to_list() for m in model_ids], dtype=np.float32).reshape(
        len(model_ids), len(names))
    return mat, names
