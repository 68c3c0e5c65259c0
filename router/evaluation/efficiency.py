"""Router-side efficiency: parameters and ``select`` latency of every learned router, on the routing API's
thread setting."""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.config import AVG, LATENCY_THREADS, LATENT, LEARNED_BASELINES
from router.evaluation.context import EvalContext
from router.evaluation.results import ExperimentResult, result_rows, results_frame
from router.models.base import Router
from router.threads import torch_threads


def time_select(router: Router, data: RoutingData, rows: np.ndarray, avail: np.ndarray | None,
                 repeats: int) -> float:
    """Median wall time of one ``select`` call over ``rows`` at lambda 0, in ms per query (one warm-up call)."""
    router.select(data, rows, 0.0, avail)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        router.select(data, rows, 0.0, avail)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / len(rows)


def latency_rows(ctx: EvalContext) -> np.ndarray:
    """``latency_batch`` test rows (test rows repeated when there are fewer), fixed for every router."""
    return np.resize(ctx.test, ctx.cfg.latency_batch)


def efficiency(ctx: EvalContext) -> ExperimentResult:
    """Parameters (stored numbers for KNN / KMeans) and router-side latency of every learned router.

    Latency is ``select`` at lambda 0 (batch building, forward pass, argmax; no MLLM call) on ``LATENCY_THREADS`` CPU
    thread(s), as the routing API serves a request: ms per query at batch ``latency_batch`` (median of
    repeats) and the p50 of ``latency_single_calls`` single-query calls; seed ``seeds[0]``, oriented fits.
    Also the router's mean primary metric over seeds.
    """
    cfg, d = ctx.cfg, ctx.data
    seed = cfg.seeds[0]
    rows_b = latency_rows(ctx)
    singles = rows_b[: cfg.latency_single_calls]
    rows, recs = [], []
    for name in (*LEARNED_BASELINES, LATENT):
        router = ctx.router_for(name, "oriented", seed)
        with torch_threads(LATENCY_THREADS):  # one stated count, whatever the run's settings (OpenMP policy)
            b256 = time_select(router, d, rows_b, None, cfg.latency_repeats)
            one = []
            for r in singles:
                t0 = time.perf_counter()
                router.select(d, np.array([r]), 0.0)
                one.append(1000.0 * (time.perf_counter() - t0))
        primary = float(np.mean([ctx.seed_metrics(name, s)[f"{AVG}/{cfg.primary_metric}"] for s in cfg.seeds]))
        vals = {"params": float(router.n_parameters()), "latency_ms_batch": b256,
                "latency_ms_single_p50": float(np.median(one))}
        rows += result_rows(ctx.run_id, "efficiency", name, seed, {**vals, f"{AVG}/{cfg.primary_metric}": primary},
                      setting="oriented")
        recs.append({"router": name, **vals, "primary": primary, "batch": len(rows_b)})
    return ExperimentResult(results_frame(rows), {"efficiency": pl.DataFrame(recs)})
