"""Proof that no val/test row fed a capability profile or a normaliser (the ``leakage`` check of the features
asset).

Why: a profile built from evaluation rows would leak the answers the router is judged on; this recomputes what
the profiles table records (query sets, trace hashes, counts, outcome parts, the cost normaliser) from the
calibration rows alone and, given queries and models, rebuilds the whole table and compares.

Production rows (labelled gateway requests) are the one allowed exception: they are not benchmark queries, so
never val/test rows. Given the production table, the check accepts exactly the production rows the profiles
recorded (ids, labelled no later than ``production_until``) and recomputes every number with them; a
benchmark id outside calibration, or a production id the table does not hold, still fails.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from router.data.calibration import (
    CALIBRATION_SPLIT,
    calibration_query_ids,
    calibration_rows,
    production_rows,
    trace_hash,
)
from router.data.profiles import build_profiles, profile_matrix, with_production_rows


def _query_sets(splits: pl.DataFrame, profiles: pl.DataFrame, checks: dict[str, bool],
                details: dict[str, object], production_ids: set[str] | None = None) -> set[str]:
    """Calibration lies inside train and every profile's recorded queries inside calibration (or among the
    production rows ``production_ids``, never a benchmark query); returns the calibration query ids."""
    bad_calib = splits.filter(pl.col("in_calibration") & (pl.col("split") != "train"))
    checks["calibration_within_train"] = bad_calib.height == 0
    if bad_calib.height:
        details["calibration_outside_train"] = bad_calib["query_id"].head(5).to_list()
    calib = calibration_query_ids(splits)
    allowed = calib | ((production_ids or set()) - set(splits["query_id"].to_list()))

    outside: dict[str, int] = {}
    for m, qs in zip(profiles["model_id"].to_list(), profiles["source_query_ids"].to_list(), strict=True):
        extra = set(qs or []) - allowed
        if extra:
            outside[m] = len(extra)
            details.setdefault("example_leaked_queries", sorted(extra)[:5])
    checks["profile_queries_in_calibration"] = not outside
    if outside:
        details["queries_outside_calibration"] = outside
    return calib


def _recomputed_parts(profiles: pl.DataFrame, per_model: dict[str, pl.DataFrame], cost_scale: float,
                      atol: float, checks: dict[str, bool], details: dict[str, object],
                      n_production: dict[str, int] | None = None) -> None:
    """Each profile's trace hash, row counts and metadata-free outcome parts equal their recomputation
    (``per_model``: calibration rows, then the production rows used; ``n_production``: how many of those)."""
    hash_bad, count_bad, parts_bad = [], [], []
    for r in profiles.iter_rows(named=True):
        m, mine = r["model_id"], per_model[r["model_id"]]
        n_prod = (n_production or {}).get(m, 0)
        if trace_hash(mine) != r["trace_hash"]:
            hash_bad.append(m)
        if mine.height - n_prod != r["n_calib_rows"] or n_prod != (r.get("n_production_rows") or 0):
            count_bad.append(m)
        names = list(r["feature_names"])
        raw = dict(zip(names, r["raw"], strict=True))
        ok = mine.filter(pl.col("status") == "ok")
        expect = {
            "quality_overall": float(ok["quality"].mean()) if ok.height else float("nan"),
            "availability": ok.height / mine.height if mine.height else float("nan"),
            "cost_norm": (float(ok["cost_usd"].cast(pl.Float64).mean()) / cost_scale) if ok.height else float("nan"),
        }
        for k, e in expect.items():
            got = raw.get(k)
            got = float("nan") if got is None else float(got)
            if not ((math.isnan(e) and math.isnan(got)) or abs(e - got) <= atol):
                parts_bad.append(f"{m}:{k} stored {got:.6g} recomputed {e:.6g}")
    checks["trace_rows_match_calibration"] = not hash_bad
    checks["row_counts_match"] = not count_bad
    checks["outcome_parts_recompute"] = not parts_bad
    if hash_bad:
        details["trace_hash_mismatch"] = hash_bad
    if count_bad:
        details["row_count_mismatch"] = count_bad
    if parts_bad:
        details["recompute_mismatch"] = parts_bad[:10]


def _rebuild_matches(traces: pl.DataFrame, splits: pl.DataFrame, profiles: pl.DataFrame, queries: pl.DataFrame,
                     models: pl.DataFrame, meta: dict, model_ids: list[str], checks: dict[str, bool],
                     details: dict[str, object], production: pl.DataFrame | None = None) -> None:
    """The whole profile table rebuilt from calibration rows (and the production rows used) with the recorded
    settings equals the stored one."""
    reference = meta.get("reference_models", [])
    ids = profiles["model_id"].to_list()
    try:
        rebuilt = build_profiles(traces, splits, queries, models.filter(pl.col("model_id").is_in(model_ids)),
                                 shrink_k0=meta.get("shrink_k0", 16.0), calib_limit=meta.get("calib_limit") or {},
                                 reference_models=reference or None, production=production)
        a, names_a = profile_matrix(profiles, ids)
        b, names_b = profile_matrix(rebuilt, ids)
        checks["full_rebuild_matches"] = names_a == names_b and bool(np.allclose(a, b, atol=1e-4))
    except (KeyError, ValueError) as e:  # ValueError: a production row under a benchmark id
        checks["full_rebuild_matches"] = False
        details["rebuild_error"] = str(e)


def _production_used(production: pl.DataFrame | None, profiles: pl.DataFrame, meta: dict) -> pl.DataFrame | None:
    """The production rows the profiles recorded: their ids among ``source_query_ids``, labelled no later
    than ``production_until``, latest label per (request, model), pool models only."""
    if production is None or not meta.get("n_production_rows"):
        return None
    recorded = {q for qs in profiles["source_query_ids"].to_list() for q in (qs or [])}
    return production_rows(production, profiles["model_id"].to_list(), until=meta.get("production_until"),
                           query_ids=recorded)


def leakage_report(
    traces: pl.DataFrame,
    splits: pl.DataFrame,
    profiles: pl.DataFrame,
    queries: pl.DataFrame | None = None,
    models: pl.DataFrame | None = None,
    atol: float = 1e-6,
    production: pl.DataFrame | None = None,
) -> dict:
    """Prove no val/test row fed a profile or a normaliser; ``passed`` is False on any violation.

    Checks: calibration rows are train rows; every profile's recorded query set is inside calibration (or
    among the rows of ``production``, the gateway's production traces, which are never benchmark queries);
    the trace rows a profile recorded (content hash, counts) equal the calibration rows recomputed from
    ``traces`` and ``splits`` plus the production rows it recorded; the outcome parts that need no query
    metadata (quality, availability, normalised cost) and the cost normaliser (calibration rows only)
    recompute to the stored values. With ``queries`` and ``models`` the whole profile table is rebuilt and
    compared.
    """
    need = ("model_id", "feature_names", "raw", "n_calib_rows", "trace_hash", "source_query_ids", "built_from")
    missing = [c for c in need if c not in profiles.columns]
    if missing:
        raise ValueError(f"profiles: missing column(s) {missing} (not built by router.data.profiles.build_profiles?)")
    checks: dict[str, bool] = {}
    details: dict[str, object] = {}
    meta = json.loads(profiles["built_from"][0]) if profiles.height else {}
    prod = _production_used(production, profiles, meta)
    prod_ids = set(prod["query_id"].to_list()) if prod is not None else set()
    calib = _query_sets(splits, profiles, checks, details, prod_ids)

    checks["built_from_calibration"] = meta.get("split") == CALIBRATION_SPLIT
    rows = calibration_rows(traces, splits, meta.get("calib_limit") or {})
    reference = meta.get("reference_models", [])
    per_model = {m: rows.filter(pl.col("model_id") == m) for m in profiles["model_id"].to_list()}
    calib_per_model = per_model
    if prod is not None and prod.height:
        per_model = with_production_rows(per_model, prod)
    n_production = {m: per_model[m].height - calib_per_model[m].height for m in per_model}
    ref_costs = []
    for m in reference:
        ok = rows.filter((pl.col("model_id") == m) & (pl.col("status") == "ok"))
        if ok.height:
            ref_costs.append(float(ok["cost_usd"].cast(pl.Float64).mean()))
    cost_scale = max(ref_costs) if ref_costs and max(ref_costs) > 0 else 1.0
    checks["cost_normaliser_from_calibration"] = math.isclose(cost_scale, meta.get("cost_scale", float("nan")),
                                                              rel_tol=1e-9, abs_tol=1e-15)
    _recomputed_parts(profiles, per_model, cost_scale, atol, checks, details, n_production)
    if queries is not None and models is not None:
        _rebuild_matches(traces, splits, profiles, queries, models, meta, list(per_model), checks, details, prod)
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "details": details,
        "n_calibration_queries": len(calib),
        "n_production_rows": sum(n_production.values()),
        "n_profiles": profiles.height,
    }
