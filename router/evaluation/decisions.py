"""Decision rows: one per (query, router, lambda, pool), built the same way for the evaluation's routers (the
``routing_decisions`` table) and for the deployed router re-scoring the current pool (``pool_decisions``).

One builder keeps the two tables comparable: the same columns, the same oracle rule (best realised utility
over the available models, ties to the cheaper one) and one rounding rule for the scores JSON (6 significant
digits, available models with a finite score only, keys sorted).
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.config import FULL_POOL, ORACLE
from router.evaluation.context import EvalContext
from router.models.baselines import OracleRouter
from warehouse.schemas import ROUTING_DECISIONS, conform


def score_json(scores: np.ndarray, available: np.ndarray, model_ids: list[str]) -> str:
    """``{model_id: score}`` of one query as JSON: available models with a finite score, 6 significant digits."""
    sc = {m: float(f"{scores[j]:.6g}") for j, m in enumerate(model_ids) if available[j] and np.isfinite(scores[j])}
    return json.dumps(sc, sort_keys=True)


def decision_rows(
    data: RoutingData,
    rows: np.ndarray,
    score: np.ndarray,
    *,
    router: str,
    lam: float,
    pool: str,
    run_id: str,
    chosen: np.ndarray | None = None,
    seed: int | None = None,
) -> pl.DataFrame:
    """``routing_decisions`` rows of one router at one lambda on ``rows`` (conformed to ROUTING_DECISIONS).

    ``score`` [len(rows), K] is the router's per-model score at ``lam``; ``chosen`` [len(rows)] its picks
    (default: the available model with the highest score; routers whose ``select`` is not an argmax of
    ``scores``, e.g. Random, pass their own). Rows with no available model are left out: nothing can be routed.
    ``seed`` is the router's seed (null when unknown); the column is always there, so both writers' rows
    have the same columns.
    """
    rows = np.asarray(rows, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    if score.shape != (len(rows), data.k):
        raise ValueError(f"decision_rows: score has shape {score.shape}, expected {(len(rows), data.k)}")
    avail = data.avail[rows]
    if chosen is None:
        chosen = np.argmax(np.where(avail, score, -np.inf), axis=1)
    chosen = np.asarray(chosen, dtype=np.int64)
    keep = avail.any(axis=1)
    rows, score, avail, chosen = rows[keep], score[keep], avail[keep], chosen[keep]
    oracle = OracleRouter().select(data, rows, float(lam), avail)
    frame = pl.DataFrame({
        "run_id": [run_id] * len(rows),
        "query_id": [data.query_ids[r] for r in rows],
        "router": [router] * len(rows),
        "lambda": [float(lam)] * len(rows),
        "pool": [pool] * len(rows),
        "chosen_model": [data.model_ids[j] for j in chosen],
        "oracle_model": [data.model_ids[j] for j in oracle],
        "quality": data.quality[rows, chosen].astype(np.float64),
        "cost_usd": data.cost_usd[rows, chosen].astype(np.float64),
        "scores": [score_json(score[i], avail[i], data.model_ids) for i in range(len(rows))],
        "seed": pl.Series([seed] * len(rows), dtype=pl.Int64),
    }, schema_overrides=ROUTING_DECISIONS)
    return conform(frame, ROUTING_DECISIONS, "routing_decisions")


def routing_decisions(ctx: EvalContext) -> pl.DataFrame:
    """One row per (test query, router, lambda) for lambda in {0, decision_lambda} on the full pool.

    LatentRouter uses its oriented fit at lambda 0 and its cost fit at ``decision_lambda``; scores are the
    router's own per-model scores at that lambda (see :func:`decision_rows`), picks those of its test sweep.
    """
    cfg, d = ctx.cfg, ctx.data
    seed = cfg.seeds[0] if cfg.decisions_seed is None else cfg.decisions_seed
    if seed not in cfg.seeds:
        raise ValueError(f"EvalConfig.decisions_seed={seed} is not one of seeds {cfg.seeds}")
    frames = []
    for lam, st in ((0.0, "oriented"), (cfg.decision_lambda, "cost")):
        osw = ctx.sweep(ORACLE, st, seed)
        for name in ctx.routers:
            sw = ctx.sweep(name, st, seed)
            if not np.array_equal(sw.rows, osw.rows):
                raise RuntimeError("routing_decisions: routers evaluated on different rows")
            scores = ctx.router_for(name, st, seed).scores(d, sw.rows, lam)
            frames.append(decision_rows(d, sw.rows, scores, router=name, lam=lam, pool=FULL_POOL,
                                        run_id=ctx.run_id, chosen=sw.choices[sw.at(lam)], seed=int(seed)))
    return pl.concat(frames, how="vertical")
