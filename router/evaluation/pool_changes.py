"""Changed candidate pools: the same trained routers under availability masks (Fig. 4a-b), and the cold-start
insertion of a model held out of training (App. C.5)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.config import AVG, FULL_POOL, LATENT, ORACLE, EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.efficiency import latency_rows, time_select
from router.evaluation.metrics.sweep import evaluate_sweep, lambda_sweep
from router.evaluation.profile_sources import (
    calibration_rows,
    default_cold_start_model,
    fallback_profile_source,
    insertion_view,
)
from router.evaluation.results import ExperimentResult, result_rows, results_frame, summarise, wide_summary
from router.models.baselines import CheapestRouter, StrongestRouter
from warehouse.vocabulary import SETTINGS


def pool_masks(data: RoutingData, cfg: EvalConfig, seed: int) -> list[tuple[str, list[np.ndarray]]]:
    """(pool name, [model masks [K] bool]) of the changed-pool settings; a setting's value averages its masks.

    Strongest / cheapest are decided on train + val rows only (the Strongest / Cheapest baselines' rules).
    """
    k = data.k
    one = np.ones(k, dtype=bool)
    probe = data.idx("train")[:1]
    full_av = np.ones((1, k), dtype=bool)
    strongest = int(StrongestRouter().fit(data).select(data, probe, 0.0, full_av)[0])
    cheapest = int(CheapestRouter().fit(data).select(data, probe, 0.0, full_av)[0])
    n_drop = min(k - 1, max(1, int(round(cfg.pool_random_frac * k))))
    rng = np.random.default_rng([int(seed), 30])
    rand = []
    for _ in range(cfg.pool_random_draws):
        m = one.copy()
        m[rng.choice(k, size=n_drop, replace=False)] = False
        rand.append(m)

    def without(j: int) -> np.ndarray:
        m = one.copy()
        m[j] = False
        return m

    return [
        (FULL_POOL, [one]),
        ("remove_strongest", [without(strongest)]),
        ("remove_cheapest", [without(cheapest)]),
        (f"remove_random_{int(round(100 * cfg.pool_random_frac))}pct", rand),
        ("leave_one_model_out", [without(j) for j in range(k)]),
        ("one_model", [np.eye(k, dtype=bool)[j] for j in range(k)]),
    ]



def pool_changes(ctx: EvalContext) -> ExperimentResult:
    """Changed candidate pools with the SAME trained routers (availability masks, no retraining; Fig. 4a-b).

    Per pool and seed: primary metric, oracle regret at lambda 0 (oracle over the available models) and the
    mean regret over the sweep (``cost_regret``), and LatentRouter forward latency in ms per query with that
    pool (batch of ``latency_batch`` test rows). Also the best non-oracle baseline and the pool Oracle.
    Multi-mask settings (random removal, leave-one-out, one model) average their masks per seed; the per-mask
    values are in the ``pool_changes_detail`` frame. Latency is timed on the first mask of a setting (all its
    masks keep the same number of models).
    """
    cfg, d, te = ctx.cfg, ctx.data, ctx.test
    pm = cfg.primary_metric
    best = ctx.best_baseline()
    lat_rows = latency_rows(ctx)
    rows, detail = [], []
    for seed in cfg.seeds:
        for pool, masks in pool_masks(d, cfg, seed):
            acc: dict[str, list[dict[str, float]]] = {LATENT: [], best: [], ORACLE: []}
            for mask in masks:
                av = d.avail[te] & mask[None, :]
                models = ",".join(m for m, keep in zip(d.model_ids, mask, strict=True) if keep)
                for name in acc:
                    m: dict[str, float] = {}
                    for st in SETTINGS:
                        if name == LATENT:
                            m.update(ctx.latent_metrics(st, seed, None, av))
                        else:
                            sw = lambda_sweep(ctx.baseline(name, seed), d, te,
                                              np.array([0.0]) if st == "oriented" else ctx.lambdas, av)
                            m.update({k: v for k, v in evaluate_sweep(sw, d, ctx.bounds, ctx.rank.beta).items()
                                      if k.startswith(f"{st}/")})
                    vals = {f"{AVG}/{pm}": ctx.primary_of(m, m), "oriented/regret": m["oriented/regret"],
                            "cost/regret": m["cost/regret"]}
                    if name == LATENT:
                        # every mask of a setting has the same pool size, so the first one is timed
                        if mask is masks[0]:
                            lav = d.avail[lat_rows] & mask[None, :]
                            latency = time_select(ctx.latent("oriented", seed), d, lat_rows, lav,
                                                   cfg.latency_repeats)
                        vals["oriented/latency_ms"] = latency
                    acc[name].append(vals)
                    detail.append({"pool": pool, "router": name, "seed": int(seed), "models": models,
                                   "n_available": int(mask.sum()), "primary": vals[f"{AVG}/{pm}"],
                                   "regret": vals["oriented/regret"], "cost_regret": vals["cost/regret"],
                                   "latency_ms": vals.get("oriented/latency_ms", float("nan"))})
            for name, vals in acc.items():
                mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
                rows += result_rows(ctx.run_id, "pool_changes", name, seed, mean, pool=pool)
    res = results_frame(rows)
    summary = wide_summary(summarise(res, ("pool", "router", "setting", "metric")), ("pool", "router"),
                    {"primary": (AVG, pm), "regret": ("oriented", "regret"), "cost_regret": ("cost", "regret"),
                     "latency_ms": ("oriented", "latency_ms")})
    return ExperimentResult(res, {"pool_changes": summary, "pool_changes_detail": pl.DataFrame(detail),
                                  "pool_best_baseline": pl.DataFrame({"best_baseline": [best]})})


def cold_start_training(ctx: EvalContext, seed: int, base: RoutingData | None = None) -> tuple[str, RoutingData]:
    """(fit tag, training view) of the cold start at ``seed``: the full-calibration insertion view with the
    held-out model unavailable on every row (``base``: that insertion view, when the caller has it)."""
    d = ctx.data
    model_id = ctx.cfg.cold_start_model or default_cold_start_model(d)
    if base is None:
        source = ctx.profile_source or fallback_profile_source(d, model_id, seed)
        base = insertion_view(source, None, d, model_id)
    masked = base.avail.copy()
    masked[:, d.model_ids.index(model_id)] = False
    return f"cold:{model_id}", replace(base, avail=masked)


def cold_start(ctx: EvalContext) -> ExperimentResult:
    """Hold one model out of training (its column masked everywhere), insert it at test time (App. C.5).

    The model's capability profile comes from ``ctx.profile_source(n)`` for n in ``cold_start_sizes`` and
    None (full calibration); without a source, :func:`fallback_profile_source`. The router is trained on the
    full-calibration view with the model's availability masked on every row, then evaluated on the test rows
    of each insertion view. Reference rows: the pool without the model ("excluded") and the main router that
    saw the model in training ("seen in training"). Pool labels: ``insert:<model>:calib=<n|full>``,
    ``without:<model>``, ``seen:<model>``.
    """
    cfg, d = ctx.cfg, ctx.data
    model_id = cfg.cold_start_model or default_cold_start_model(d)
    if model_id not in d.model_ids:
        raise ValueError(f"cold start: model {model_id!r} is not in the pool {d.model_ids}")
    j = d.model_ids.index(model_id)
    seeds = cfg.cold_start_seeds or cfg.seeds
    fallback = ctx.profile_source is None
    rows, info = [], []
    sizes: list[int | None] = [*cfg.cold_start_sizes, None]
    for seed in seeds:
        source = ctx.profile_source or fallback_profile_source(d, model_id, seed)
        base = insertion_view(source, None, d, model_id)
        tag, train_data = cold_start_training(ctx, seed, base)

        def record(pool: str, metrics: dict[str, float], seed: int = seed) -> None:
            metrics = {**metrics, f"{AVG}/{cfg.primary_metric}": ctx.primary_of(metrics, metrics)}
            rows.extend(result_rows(ctx.run_id, "cold_start", LATENT, seed, metrics, pool=pool))

        for n in sizes:
            label = "full" if n is None else str(n)
            view = base if n is None else insertion_view(source, n, d, model_id)
            m: dict[str, float] = {}
            for st in SETTINGS:
                m.update(ctx.latent_metrics(st, seed, None, tag=tag, data=train_data, eval_data=view))
            record(f"insert:{model_id}:calib={label}", m)
            if seed == seeds[0]:
                n_used = len(calibration_rows(d, model_id, n, seed)) if (fallback and n is not None) else None
                info.append({"pool": f"insert:{model_id}:calib={label}", "calib": label, "n_used": n_used,
                             "order": len(info)})
        av = d.avail[ctx.test].copy()
        av[:, j] = False
        m = {}
        for st in SETTINGS:
            m.update(ctx.latent_metrics(st, seed, None, av, tag=tag, data=train_data, eval_data=base))
        record(f"without:{model_id}", m)
        seen = ctx.seed_metrics(LATENT, seed)
        record(f"seen:{model_id}", {k: v for k, v in seen.items() if not k.startswith(f"{AVG}/")})
    info += [{"pool": f"without:{model_id}", "calib": "excluded", "n_used": None, "order": len(info)},
             {"pool": f"seen:{model_id}", "calib": "seen in training", "n_used": None, "order": len(info) + 1}]
    res = results_frame(rows)
    summary = wide_summary(summarise(res, ("pool", "setting", "metric")), ("pool",),
                    {"primary": (AVG, cfg.primary_metric), "regret": ("oriented", "regret"),
                     "cost_regret": ("cost", "regret"), "quality": ("oriented", "quality")})
    summary = summary.join(pl.DataFrame(info, schema_overrides={"n_used": pl.Int64}), on="pool",
                           how="left").sort("order")
    return ExperimentResult(res, {"cold_start": summary.with_columns(pl.lit(model_id).alias("model"))})
