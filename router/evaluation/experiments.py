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
  computed on ``data.idx('test')`` only. The main table runs on ``n_splits`` seeded, group-aware splits
  (split 0 = the data's own; ``router.evaluation.resampling``), each with every seed; the other experiments
  judge split 0. Hyperparameters of every trainable router are chosen per split on validation rows only, the
  same number of trials each (``router.evaluation.tuning``), then fixed.
* Rank Score bounds (cmin, cmax, beta): a shipped ``cost_bounds.json`` or min / max of the per-sample cost
  matrix over all rows (``router.evaluation.metrics.cost.rank_bounds``), the same for every split and pool.
* nAUC, Ps and QNC come from MMR-Bench's budget sweep over each router's predicted costs (``nauc_budget``,
  ``ps``, ``qnc``; a fixed router has one point, so nAUC NaN); the lambda-sweep view is kept, labelled
  (``nauc_interp``, ``nauc_step``, ``ps_lambda``, ``qnc_lambda``).
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
* Means with sample std and 95% t intervals are over splits x seeds; LatentRouter is compared with every
  baseline by a paired t-test over splits (per-split means over seeds), and with Welch's test over all values
  when there is one split; zero spread gives NaN ("n/a"), never "significant".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
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
    MIN_SPLITS_FOR_SIGNIFICANCE,
    NO_SEED,
    STRONGEST,
    EvalConfig,
)
from router.evaluation.context import EvalContext
from router.evaluation.decisions import routing_decisions
from router.evaluation.efficiency import efficiency
from router.evaluation.metrics.prediction import outcome_metrics
from router.evaluation.metrics.statistics import ci95, mean_std, paired_t, welch_t
from router.evaluation.pool_changes import cold_start, pool_changes
from router.evaluation.profile_sources import ProfileSource, default_cold_start_model
from router.evaluation.resampling import SplitSource
from router.evaluation.results import EvalOutput, ExperimentResult, result_rows, results_frame, summarise
from router.models.base import Router
from warehouse.schemas import EVAL_RESULTS, conform
from warehouse.vocabulary import SETTINGS


def _per_split(ctx: EvalContext, name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """([splits x seeds] values, [splits] per-split means over seeds) of ``name``'s ``key``."""
    vals = np.array([[ctx.split_ctx(r).seed_metrics(name, s)[key] for s in ctx.cfg.seeds]
                     for r in range(ctx.cfg.n_splits)], dtype=np.float64)
    return vals, vals.mean(axis=1)


def _compare(ctx: EvalContext, st: str, metric: str, base_name: str, best: str) -> dict[str, object]:
    """LatentRouter vs one baseline on ``st/metric``: means with 95% intervals over splits x seeds, the paired
    t-test over splits and Welch's test over all values (both NaN without spread)."""
    key = f"{st}/{metric}"
    lat, lat_r = _per_split(ctx, LATENT, key)
    base, base_r = _per_split(ctx, base_name, key)
    t, p = paired_t(lat_r, base_r)
    try:
        wt, wp = welch_t(lat.ravel(), base.ravel())
    except ValueError:  # fewer than 2 values or a non-finite one: no test
        wt, wp = float("nan"), float("nan")
    lm, ls = mean_std(lat.ravel())
    bm, bs = mean_std(base.ravel())
    p_used = p if ctx.cfg.n_splits >= 2 else wp
    tested = ctx.cfg.n_splits >= MIN_SPLITS_FOR_SIGNIFICANCE
    return {"setting": st, "metric": metric, "baseline": base_name, "best_baseline": best,
            "is_best_baseline": base_name == best,
            "latent_mean": lm, "latent_std": ls, "latent_ci95": ci95(lat.ravel())[1], "latent_se": _se(lat),
            "baseline_mean": bm, "baseline_std": bs, "baseline_ci95": ci95(base.ravel())[1],
            "baseline_se": _se(base),
            "diff": lm - bm, "paired_t": t, "paired_p": p, "welch_t": wt, "welch_p": wp,
            "test": "paired t over splits" if ctx.cfg.n_splits >= 2 else "Welch over seeds",
            "p": p_used, "latent_is_best": bool(lm > bm),
            # a claim needs the paired test over >= 3 splits (fewer: the p-value is shown, nothing is claimed)
            "significant": bool(tested and np.isfinite(p) and lm > bm and p < 0.05),
            "n_splits": ctx.cfg.n_splits, "n_seeds": len(ctx.cfg.seeds)}


def _se(values: np.ndarray) -> float:
    """Standard error of the mean over splits x seeds (NaN for a single value)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def main_table(ctx: EvalContext) -> ExperimentResult:
    """Table 1: every router x {oriented, cost} x splits x seeds, and LatentRouter vs every baseline.

    Rows: all oriented/* and cost/* metrics of ``router.evaluation.metrics.sweep.evaluate_sweep`` (with the
    budget sweep) and avg/<primary>, per split; the tests are aggregate rows (seed -1, split -1) with metrics
    ``paired_p:<metric>`` / ``welch_p:<metric>`` against the best baseline. Extra frames: ``welch`` (LatentRouter
    vs the best non-oracle baseline per setting; p of the paired test when n_splits >= 2, else Welch over
    seeds), ``comparisons`` (vs every baseline, primary metric) and ``tuning`` (chosen hyperparameters).
    """
    cfg, rows = ctx.cfg, []
    for r in range(cfg.n_splits):
        sc = ctx.split_ctx(r)
        for name in ctx.routers:
            for seed in cfg.seeds:
                rows += result_rows(ctx.run_id, "main_table", name, seed, sc.seed_metrics(name, seed), split=r)
    res_seeds = results_frame(rows)
    summary = summarise(res_seeds, ("router", "setting", "metric"))
    welch, comps = [], []
    metrics = list(dict.fromkeys([cfg.primary_metric, "rank_score", "nauc_budget"]))
    for st in (*SETTINGS, AVG):
        for metric in metrics if st != AVG else [cfg.primary_metric]:
            if st == "oriented" and metric.startswith("nauc"):
                continue  # one operating point: no area
            means = {n: lookup_mean(summary, n, st, metric) for n in ctx.baseline_names()}
            best = ctx.best_baseline(st, metric, means)
            w = _compare(ctx, st, metric, best, best)
            welch.append(w)
            for stat in ("paired_p", "welch_p"):
                rows.append({"run_id": ctx.run_id, "experiment": "main_table", "router": LATENT, "setting": st,
                             "seed": NO_SEED, "metric": f"{stat}:{metric}", "value": w[stat], "pool": FULL_POOL,
                             "task_group": ALL_GROUPS, "split": NO_SEED})
            if metric == cfg.primary_metric:
                comps += [_compare(ctx, st, metric, b, best) for b in ctx.baseline_names()]
    for metric, val in (("rank_cmin", ctx.rank.cmin), ("rank_cmax", ctx.rank.cmax), ("rank_beta", ctx.rank.beta)):
        rows.append({"run_id": ctx.run_id, "experiment": "main_table", "router": "benchmark", "setting": "cost",
                     "seed": NO_SEED, "metric": metric, "value": float(val), "pool": FULL_POOL,
                     "task_group": ALL_GROUPS, "split": NO_SEED})
    tuning = [{"split": r, "router": n, "chosen": json.dumps(log["chosen"], sort_keys=True),
               "trials": log["trials"], "scores": json.dumps([round(x, 4) for x in log["scores"]])}
              for r in range(cfg.n_splits) for n, log in ctx.split_ctx(r).tuning_log.items()]
    return ExperimentResult(results_frame(rows), {"main_summary": summary, "welch": pl.DataFrame(welch),
                                                  "comparisons": pl.DataFrame(comps),
                                                  "tuning": pl.DataFrame(tuning)})


def lookup_mean(summary: pl.DataFrame, router: str, setting: str, metric: str) -> float:
    """Mean of one summary cell (NaN when absent)."""
    f = summary.filter((pl.col("router") == router) & (pl.col("setting") == setting) & (pl.col("metric") == metric))
    return float(f["mean"][0]) if f.height else float("nan")


def frontier(ctx: EvalContext) -> ExperimentResult:
    """Cost-quality operating points over the lambda sweep (test split, cost-setting fits) for every router.

    Extra frames: ``frontier`` (router, seed, lambda, cost, cost_usd, quality) and ``frontier_models`` (the
    always-pick-one-model points). Rows: nauc_interp, nauc_step, ps per router and seed (setting cost).
    """
    pts, bpts, rows = [], [], []
    for name in ctx.routers:
        for seed in ctx.cfg.seeds:
            sw = ctx.sweep(name, "cost", seed)
            for i, lam in enumerate(sw.lambdas):
                pts.append({"router": name, "seed": int(seed), "lambda": float(lam), "cost": float(sw.cost[i]),
                            "cost_usd": float(sw.cost_usd[i]), "quality": float(sw.quality[i])})
            bs = ctx.budget(name, seed)
            for i, b in enumerate(bs.budgets):
                bpts.append({"router": name, "seed": int(seed), "budget": float(b), "cost": float(bs.cost[i]),
                             "cost_usd": float(bs.cost_usd[i]), "quality": float(bs.quality[i])})
            m = ctx.seed_metrics(name, seed)
            rows += result_rows(ctx.run_id, "frontier", name, seed,
                                {k: m[f"cost/{k}"] for k in ("nauc_budget", "ps", "nauc_interp", "nauc_step",
                                                             "ps_lambda")}, setting="cost")
    d, te = ctx.data, ctx.test
    models = []
    for j, mid in enumerate(d.model_ids):
        ok = te[d.avail[te, j]]
        if len(ok):
            models.append({"model": mid, "cost": float(d.cost[ok, j].mean()),
                           "cost_usd": float(d.cost_usd[ok, j].mean()), "quality": float(d.quality[ok, j].mean()),
                           "simulated": bool(d.simulated[j]) if d.simulated else False})
    return ExperimentResult(results_frame(rows), {"frontier": pl.DataFrame(pts), "budget_frontier": pl.DataFrame(bpts),
                                                  "frontier_models": pl.DataFrame(models)})


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
            for name in ctx.routers:
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
    LatentRouter with ``distributional=False``; no latent communication = ``use_model_exchange=False`` (model
    tokens read the query once, no model-model exchange or feedback).
    """
    d, te, rows = ctx.data, ctx.test, []
    variants: dict[str, Callable[[int], Router]] = {
        "Direct classifier (VL feature)": lambda s: ctx.baseline("VL feature router", s),
        "MLPMFRouter": lambda s: ctx.baseline("MLPMFRouter", s),
        "Point-score router": lambda s: ctx.latent("oriented", s, replace(ctx.model_cfg, distributional=False)),
        "No latent communication": lambda s: ctx.latent("oriented", s, replace(ctx.model_cfg, use_model_exchange=False)),
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
    shipped_bounds: Mapping[str, object] | None = None,
    split_source: SplitSource | None = None,
    workers: int = 1,
) -> EvalOutput:
    """Run ``cfg.experiments`` (in the canonical order) and the routing decisions; see the module docstring.

    ``profile_source`` feeds the cold-start experiment (see :func:`insertion_view`,
    :func:`warehouse_profile_source`); without one, :func:`fallback_profile_source` is used.
    ``shipped_bounds`` is a benchmark's parsed ``cost_bounds.json`` (Rank Score constants); ``split_source``
    builds repeated split r >= 1 (default: :func:`router.evaluation.resampling.resplit` of ``data``).
    ``workers`` processes make the fits (0 = one per core); the tables are the same for any count.
    """
    return run_experiments(EvalContext(data, cfg, run_id, progress, profile_source,
                                       shipped_bounds=shipped_bounds, split_source=split_source), workers)


def run_experiments(ctx: EvalContext, workers: int = 1) -> EvalOutput:
    """:func:`run_all` on an existing context (its fitted routers stay available, e.g. to save a checkpoint).

    Every fit the experiments need is made first, on ``workers`` processes (``router.evaluation.parallel``;
    fits already in the context or its fit store are reused); the experiments then only judge them.
    """
    from router.evaluation.parallel import prefit

    cfg, data, run_id, profile_source = ctx.cfg, ctx.data, ctx.run_id, ctx.profile_source
    t_all = time.perf_counter()
    frames, tables, timings = [], {}, {}
    timings["prefit"] = prefit(ctx, workers)
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
    timings["fits"] = ctx.total_fit_seconds
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
        "rank_beta": ctx.rank.beta,
        "rank_bounds_source": ctx.rank.source,
        "n_splits": cfg.n_splits,
        "tuning_trials": cfg.tuning_trials,
        "routers": list(ctx.routers),
        "experiments": [e for e in EXPERIMENTS if e in cfg.experiments],
        "profile_source": "caller" if profile_source is not None else "fallback_profile_source",
        "notes": list(ctx.notes),
        "fit_units": {"run": ctx.units_run, "loaded": ctx.units_loaded},
        "config": cfg.to_dict(),
    }
    if "cold_start" in cfg.experiments:
        meta["cold_start_model"] = cfg.cold_start_model or default_cold_start_model(d)
    return EvalOutput(run_id, conform(results, EVAL_RESULTS, "eval_results"), decisions, tables, timings, meta)
