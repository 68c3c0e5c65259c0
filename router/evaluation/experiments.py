"""The experiments behind "which router should I deploy, and what does it buy me?" (LatentRouter paper §4, App. C).

Every experiment is a pure function of a :class:`RoutingData`, an :class:`EvalConfig` and a seed list, run
through one :class:`EvalContext` so that fitted routers and their test sweeps are shared between experiments
(the main-table LatentRouter is the same object the pool-change, efficiency and decision experiments use).
Each returns :class:`ExperimentResult`: rows in the long ``eval_results`` shape of
``warehouse.schemas.EVAL_RESULTS`` plus small summary frames for tables and plots. :func:`run_all` runs the
selected experiments and returns an :class:`EvalOutput`. This module holds the main table, the frontier, task
groups and outcome prediction; ``ablations``, ``pool_changes`` (with the cold start) and ``efficiency`` hold
the others, ``decisions`` the routing-decision rows.

Protocol (documented choices; they are the same for every router):

* Fits read only ``data.idx('train')`` / ``data.idx('val')`` (routers' ``fit`` contract); every metric is
  computed on ``data.idx('test')`` only. The split is fixed; seeds change router initialisation / sampling.
* Settings (paper Table 1): **oriented** = the performance-oriented router (LatentRouter trained at
  lambda = 0) judged at its lambda = 0 pick; its Rank Score is the Rank Score of that single operating point
  and its nAUC is that point's quality (a one-point frontier). **cost** = the cost-aware router (LatentRouter
  trained with a lambda drawn per batch from ``cost_train_lambdas``) judged over the whole lambda sweep; its
  Rank Score is the best over the sweep (VL-RouterBench) and nAUC is reported in both variants of
  ``router.evaluation.metrics.cost.nauc``: ``nauc_interp`` (MMR-Bench: strict Pareto frontier, linear interpolation) and
  ``nauc_step`` (LatentRouter's evaluator: running-max step curve). Baselines have one fit that serves both
  settings (they predict quality and cost, or train one classifier per lambda).
* The **primary metric** (``EvalConfig.primary_metric``, Rank Score by default) of a router is the mean of
  its oriented and cost values, the paper's "average over the main settings"; it is written with
  ``setting = "avg"``. Rank Score cost bounds are a benchmark constant: ``cost_bounds(data)`` over all rows
  and the full pool, also for changed pools.
* Oracle regret is ``max_available u - u_chosen`` at lambda = 0 (``regret``) and averaged over the sweep for
  the cost setting; in changed pools the oracle is recomputed over the available models.
* Mean +- std are over seeds (sample std); Welch's t-test compares LatentRouter with the best non-oracle
  baseline of each setting over the per-seed values (``router.evaluation.metrics.statistics.welch_t``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.ablations import ablations
from router.evaluation.config import (
    ALL_GROUPS,
    AVG,
    EXPERIMENTS,
    FULL_POOL,
    LATENT,
    NO_SEED,
    ROUTERS,
    STRONGEST,
    EvalConfig,
)
from router.evaluation.context import EvalContext
from router.evaluation.decisions import routing_decisions
from router.evaluation.efficiency import efficiency
from router.evaluation.metrics.prediction import outcome_metrics
from router.evaluation.metrics.statistics import mean_std, welch_t
from router.evaluation.pool_changes import cold_start, pool_changes
from router.evaluation.profile_sources import ProfileSource, default_cold_start_model
from router.evaluation.results import EvalOutput, ExperimentResult, result_rows, results_frame, summarise
from router.models.base import Router
from warehouse.schemas import EVAL_RESULTS, conform
from warehouse.vocabulary import SETTINGS


def main_table(ctx: EvalContext) -> ExperimentResult:
    """Table 1: every router x {oriented, cost} x seeds, plus Welch's t-test of LatentRouter vs the best baseline.

    Rows: all oriented/* and cost/* metrics of ``router.evaluation.metrics.sweep.evaluate_sweep`` and avg/<primary>; the Welch
    statistics are aggregate rows (seed -1) with metrics ``welch_t:<metric>`` / ``welch_p:<metric>``.
    """
    cfg, rows = ctx.cfg, []
    for name in ROUTERS:
        for seed in cfg.seeds:
            rows += result_rows(ctx.run_id, "main_table", name, seed, ctx.seed_metrics(name, seed))
    welch = []
    metrics = list(dict.fromkeys([cfg.primary_metric, "rank_score", "nauc_interp"]))
    for st in (*SETTINGS, AVG):
        for metric in metrics if st != AVG else [cfg.primary_metric]:
            key = f"{st}/{metric}"
            lat = np.array([ctx.seed_metrics(LATENT, s)[key] for s in cfg.seeds])
            best = ctx.best_baseline(st, metric)
            base = np.array([ctx.seed_metrics(best, s)[key] for s in cfg.seeds])
            try:
                t, p = welch_t(lat, base)
            except ValueError:  # fewer than 2 seeds (or a non-finite value): no test
                t, p = float("nan"), float("nan")
            lm, ls = mean_std(lat)
            bm, bs = mean_std(base)
            welch.append({"setting": st, "metric": metric, "latent_mean": lm, "latent_std": ls,
                          "best_baseline": best, "baseline_mean": bm, "baseline_std": bs, "t": t, "p": p,
                          "latent_is_best": bool(lm > bm), "significant": bool(lm > bm and p < 0.05),
                          "n_seeds": len(cfg.seeds)})
            for stat, val in (("welch_t", t), ("welch_p", p)):
                rows.append({"run_id": ctx.run_id, "experiment": "main_table", "router": LATENT, "setting": st,
                             "seed": NO_SEED, "metric": f"{stat}:{metric}", "value": val, "pool": FULL_POOL,
                             "task_group": ALL_GROUPS})
    res = results_frame(rows)
    summary = summarise(res.filter(pl.col("seed") >= 0), ("router", "setting", "metric"))
    return ExperimentResult(res, {"main_summary": summary, "welch": pl.DataFrame(welch)})


def frontier(ctx: EvalContext) -> ExperimentResult:
    """Cost-quality operating points over the lambda sweep (test split, cost-setting fits) for every router.

    Extra frames: ``frontier`` (router, seed, lambda, cost, cost_usd, quality) and ``frontier_models`` (the
    always-pick-one-model points). Rows: nauc_interp, nauc_step, ps per router and seed (setting cost).
    """
    pts, rows = [], []
    for name in ROUTERS:
        for seed in ctx.cfg.seeds:
            sw = ctx.sweep(name, "cost", seed)
            for i, lam in enumerate(sw.lambdas):
                pts.append({"router": name, "seed": int(seed), "lambda": float(lam), "cost": float(sw.cost[i]),
                            "cost_usd": float(sw.cost_usd[i]), "quality": float(sw.quality[i])})
            m = ctx.seed_metrics(name, seed)
            rows += result_rows(ctx.run_id, "frontier", name, seed,
                          {k: m[f"cost/{k}"] for k in ("nauc_interp", "nauc_step", "ps")}, setting="cost")
    d, te = ctx.data, ctx.test
    models = []
    for j, mid in enumerate(d.model_ids):
        ok = te[d.avail[te, j]]
        if len(ok):
            models.append({"model": mid, "cost": float(d.cost[ok, j].mean()),
                           "cost_usd": float(d.cost_usd[ok, j].mean()), "quality": float(d.quality[ok, j].mean()),
                           "simulated": bool(d.simulated[j]) if d.simulated else False})
    return ExperimentResult(results_frame(rows), {"frontier": pl.DataFrame(pts), "frontier_models": pl.DataFrame(models)})


def _group_quality(data: RoutingData, rows: np.ndarray, choice: np.ndarray) -> dict[str, tuple[float, float]]:
    """(mean quality, mean USD cost) of the picks per task group and over all rows."""
    labels = np.asarray(data.task_group)[rows].astype(str)
    out = {}
    for g in sorted(set(labels.tolist())):
        sel = labels == g
        out[g] = (float(data.quality[rows[sel], choice[sel]].mean()), float(data.cost_usd[rows[sel], choice[sel]].mean()))
    out[ALL_GROUPS] = (float(data.quality[rows, choice].mean()), float(data.cost_usd[rows, choice].mean()))
    return out


def task_groups(ctx: EvalContext) -> ExperimentResult:
    """Per task group quality (and USD cost) of each router, and its gain over Strongest on the same rows.

    Oriented: the lambda = 0 pick of the oriented fit; cost: the pick at ``decision_lambda`` of the cost fit.
    """
    rows = []
    for seed in ctx.cfg.seeds:
        for st in SETTINGS:
            lam = 0.0 if st == "oriented" else ctx.cfg.decision_lambda
            ref_sw = ctx.sweep(STRONGEST, st, seed)
            ref = _group_quality(ctx.data, ref_sw.rows, ref_sw.choices[ref_sw.at(lam)])
            for name in ROUTERS:
                sw = ctx.sweep(name, st, seed)
                if not np.array_equal(sw.rows, ref_sw.rows):
                    raise RuntimeError("task_groups: routers evaluated on different rows")
                for g, (q, c) in _group_quality(ctx.data, sw.rows, sw.choices[sw.at(lam)]).items():
                    rows += result_rows(ctx.run_id, "task_groups", name, seed,
                                  {"quality": q, "cost_usd": c, "gain_vs_strongest": q - ref[g][0]},
                                  task_group=g, setting=st)
    res = results_frame(rows)
    return ExperimentResult(res, {"task_groups": summarise(res, ("router", "setting", "metric", "task_group"))})


OUTCOME_METHODS: tuple[str, ...] = ("Direct classifier (VL feature)", "MLPMFRouter", "Point-score router",
                                    "No latent communication", LATENT)


def outcome_prediction(ctx: EvalContext) -> ExperimentResult:
    """Table 2: how well each method predicts the full per-model outcome vector on test rows (lambda 0 fits).

    Direct classifier = the VL feature router's lambda-0 class probabilities used as outcome scores (its MSE
    compares probabilities with outcomes, as the paper's "direct classifier" row does); point-score router =
    LatentRouter with ``distributional=False``; no latent communication = ``use_communication=False``.
    """
    d, te, rows = ctx.data, ctx.test, []
    variants: dict[str, Callable[[int], Router]] = {
        "Direct classifier (VL feature)": lambda s: ctx.baseline("VL feature router", s),
        "MLPMFRouter": lambda s: ctx.baseline("MLPMFRouter", s),
        "Point-score router": lambda s: ctx.latent("oriented", s, replace(ctx.cfg.model, distributional=False)),
        "No latent communication": lambda s: ctx.latent("oriented", s, replace(ctx.cfg.model, use_communication=False)),
        LATENT: lambda s: ctx.latent("oriented", s),
    }
    te = te[d.avail[te].any(axis=1)]
    for name in OUTCOME_METHODS:
        for seed in ctx.cfg.seeds:
            q_hat, _ = variants[name](seed).predict(d, te)
            m = outcome_metrics(np.asarray(q_hat, dtype=np.float64), d.quality[te], d.avail[te])
            rows += result_rows(ctx.run_id, "outcome_prediction", name, seed, m, setting="oriented")
    res = results_frame(rows)
    return ExperimentResult(res, {"outcome": summarise(res, ("router", "metric"))})



EXPERIMENT_FUNCS: dict[str, Callable[[EvalContext], ExperimentResult]] = {
    "main_table": main_table,
    "frontier": frontier,
    "task_groups": task_groups,
    "outcome_prediction": outcome_prediction,
    "ablations": ablations,
    "pool_changes": pool_changes,
    "cold_start": cold_start,
    "efficiency": efficiency,
}



# --------------------------------------------------------------------------------------------- run all


def run_all(
    data: RoutingData,
    cfg: EvalConfig | None = None,
    run_id: str = "eval",
    progress: Callable[[str], None] | bool | None = None,
    *,
    profile_source: ProfileSource | None = None,
) -> EvalOutput:
    """Run ``cfg.experiments`` (in the canonical order) and the routing decisions; see the module docstring.

    ``profile_source`` feeds the cold-start experiment (see :func:`insertion_view`,
    :func:`warehouse_profile_source`); without one, :func:`fallback_profile_source` is used.
    """
    return run_experiments(EvalContext(data, cfg, run_id, progress, profile_source))


def run_experiments(ctx: EvalContext) -> EvalOutput:
    """:func:`run_all` on an existing context (its fitted routers stay available, e.g. to save a checkpoint)."""
    cfg, data, run_id, profile_source = ctx.cfg, ctx.data, ctx.run_id, ctx.profile_source
    t_all = time.perf_counter()
    frames, tables, timings = [], {}, {}
    for name in EXPERIMENTS:
        if name not in cfg.experiments:
            continue
        ctx.log(f"experiment {name} ...")
        t0 = time.perf_counter()
        out = EXPERIMENT_FUNCS[name](ctx)
        timings[name] = time.perf_counter() - t0
        frames.append(out.results)
        tables.update(out.tables)
        ctx.log(f"experiment {name} done in {timings[name]:.1f}s")
    t0 = time.perf_counter()
    decisions = routing_decisions(ctx)
    timings["routing_decisions"] = time.perf_counter() - t0
    timings["fits"] = ctx.fit_seconds
    timings["total"] = time.perf_counter() - t_all
    results = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=EVAL_RESULTS)
    d = data
    meta = {
        "model_ids": list(d.model_ids),
        "simulated_models": [m for m, s in zip(d.model_ids, d.simulated or [False] * d.k, strict=True) if s],
        "text_only": bool(d.text_only),
        "n_queries": {s: int(len(d.idx(s))) for s in ("train", "val", "test")},
        "task_groups": sorted(set(np.asarray(d.task_group).astype(str).tolist())),
        "primary_metric": cfg.primary_metric,
        "lambdas": ctx.lambdas.tolist(),
        "decision_lambda": cfg.decision_lambda,
        "seeds": list(cfg.seeds),
        "rank_bounds_usd": list(ctx.bounds),
        "experiments": [e for e in EXPERIMENTS if e in cfg.experiments],
        "profile_source": "caller" if profile_source is not None else "fallback_profile_source",
        "notes": list(ctx.notes),
        "config": cfg.to_dict(),
    }
    if "cold_start" in cfg.experiments:
        meta["cold_start_model"] = cfg.cold_start_model or default_cold_start_model(d)
    return EvalOutput(run_id, conform(results, EVAL_RESULTS, "eval_results"), decisions, tables, timings, meta)
