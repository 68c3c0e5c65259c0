"""The [N, K] outcome matrices scattered by a join equal the row-by-row build they replaced: latest ok
attempt wins, errors and unknown queries/models leave a cell unavailable, nulls and out-of-range values are
handled as before."""

from __future__ import annotations

import numpy as np
import polars as pl

from router.data.build import _outcomes
from router.data.calibration import latest_attempts


def _row_loop(traces: pl.DataFrame, query_ids: list[str], model_ids: list[str]):
    """The build as it was: one Python iteration per (query, model) row."""
    n = len(query_ids)
    qi = {q: i for i, q in enumerate(query_ids)}
    mi = {m: j for j, m in enumerate(model_ids)}
    t = latest_attempts(traces.filter(pl.col("query_id").is_in(query_ids) & pl.col("model_id").is_in(model_ids)))
    quality = np.zeros((n, len(model_ids)), dtype=np.float32)
    cost_usd = np.zeros((n, len(model_ids)), dtype=np.float64)
    latency = np.full((n, len(model_ids)), np.nan, dtype=np.float64)
    avail = np.zeros((n, len(model_ids)), dtype=bool)
    for r in t.filter(pl.col("status") == "ok").iter_rows(named=True):
        i, j = qi[r["query_id"]], mi[r["model_id"]]
        quality[i, j] = float(np.clip(r["quality"], 0.0, 1.0))
        cost_usd[i, j] = float(r["cost_usd"] or 0.0)
        latency[i, j] = float(r["latency_ms"]) if r["latency_ms"] is not None else np.nan
        avail[i, j] = True
    return quality, cost_usd, latency, avail


def _traces(seed: int = 0, n: int = 60, k: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        for m in range(k):
            for attempt in range(1, int(rng.integers(1, 4)) + 1):
                status = rng.choice(["ok", "ok", "ok", "error", "timeout"])
                cost = rng.choice([None, 0.0, -0.0, float("nan"), float(rng.random() * 1e-3)])
                rows.append({
                    "query_id": f"q{q}", "model_id": f"m{m}", "attempt": attempt, "status": str(status),
                    "quality": float(rng.choice([-0.2, 0.0, 0.4, 1.0, 1.3])) if status == "ok" else None,
                    "correct": bool(rng.random() < 0.5), "prompt_tokens": 10, "completion_tokens": 5,
                    "image_tokens": 0, "cost_usd": cost,
                    "latency_ms": None if rng.random() < 0.2 else float(rng.random() * 900),
                    "collected_at": f"2026-01-01T00:00:{attempt:02d}+00:00"})
    rows.append({**rows[0], "query_id": "not-asked", "status": "ok", "quality": 1.0})  # outside query_ids
    rows.append({**rows[0], "model_id": "not-in-pool", "status": "ok", "quality": 1.0})
    return pl.DataFrame(rows, schema_overrides={"cost_usd": pl.Float64, "quality": pl.Float64,
                                                "latency_ms": pl.Float64})


def test_joined_matrices_equal_the_row_loop():
    traces = _traces()
    query_ids = [f"q{i}" for i in (5, 0, 59, 17, 3, 44)] + [f"q{i}" for i in range(6, 40)]
    model_ids = ["m3", "m0", "m4", "m1"]
    got, want = _outcomes(traces, query_ids, model_ids), _row_loop(traces, query_ids, model_ids)
    for g, w, name in zip(got, want, ("quality", "cost_usd", "latency_ms", "avail"), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_array_equal(g, w, err_msg=name)
        assert (np.signbit(g) == np.signbit(w)).all(), name  # -0.0 cost reads as 0.0, as before
    assert 0 < got[3].mean() < 1


def test_no_ok_rows_and_no_queries():
    traces = _traces().with_columns(pl.lit("error").alias("status"))
    for got, want in zip(_outcomes(traces, ["q1", "q2"], ["m0"]), _row_loop(traces, ["q1", "q2"], ["m0"]),
                         strict=True):
        np.testing.assert_array_equal(got, want)
    assert all(a.shape == (0, 2) for a in _outcomes(_traces(), [], ["m0", "m1"]))
