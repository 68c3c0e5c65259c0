"""The trained LatentRouter and the re-scoring of the current model pool with it (no retraining)."""

import time

import dagster as dg
import numpy as np
import polars as pl

from assets.common import SIMULATED_NOTE, png_markdown, rounded, routing_inputs, table_value
from assets.config import config_from
from assets.io_manager import table_metadata
from assets.resources import WarehouseResource
from router.data.warehouse_inputs import routing_data, strongest_on
from router.evaluation.config import EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.decisions import decision_rows
from router.evaluation.deploy import (
    DEPLOY_FILE,
    DeployConfig,
    candidate_fits,
    decide,
    decide_oof,
    read_deployment,
    save_deployment,
    serving_router,
)
from router.evaluation.fits import FitStore
from router.features.feature_set import FeatureSet
from router.models.latent_router.model import LatentRouterConfig
from router.models.registry import LATENT, STRONGEST, config_dict
from router.training.artifacts import latest_checkpoint_dir, new_checkpoint_dir, publish
from router.training.checkpoint import load_checkpoint, meta_from_data, save_checkpoint
from router.training.trainer import LatentRouterRouter, TrainConfig, predict, train_latent_router

GROUP = "routing"


LatentRouterTrainConfig = config_from(
    "LatentRouterTrainConfig", LatentRouterConfig, TrainConfig,
    exclude=("lam",),  # the asset trains cost-aware: lambda is drawn per batch from lam_choices
    defaults={"lam_choices": (0.0, 0.1, 0.3, 1.0)},  # one router serves the whole lambda sweep
    doc="Hyper-parameters of the paper (section 2.3, appendix A): every field of ``LatentRouterConfig`` and "
        "``TrainConfig`` with the library's defaults (the paper's hidden size 48, input-token reduction).",
)
DeployedRouterConfig = config_from(
    "DeployedRouterConfig", DeployConfig,
    doc="Which router serves: LatentRouter or a validation-tuned baseline, by validation utility at "
        "``deploy_lambda``; ``preset`` is the evaluation preset whose fits are shared with evaluation_report.",
)


@dg.asset(group_name=GROUP, kinds={"pytorch", "safetensors"}, code_version="1",
                    description="LatentRouter trained on train rows, early-stopped on val; checkpoint as safetensors + JSON.")
def latent_router(context: dg.AssetExecutionContext, config: LatentRouterTrainConfig,
                  query_features: FeatureSet, benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                  capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    inputs = routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    data = routing_data(inputs)
    mc, tc = config.build(LatentRouterConfig), config.build(TrainConfig)
    t0 = time.perf_counter()
    result = train_latent_router(data, mc, tc, progress=False)
    train_s = time.perf_counter() - t0
    ckpt = new_checkpoint_dir(wh, context.run_id)
    test = data.idx("test")
    _, _, score = predict(result.model, data, test, 0.0)
    pick = np.argmax(score, axis=1)
    test_quality = float(data.quality[test, pick].mean())
    strongest, strongest_q = strongest_on(data, data.idx("val"))
    test_strongest = float(data.quality[test, data.model_ids.index(strongest)].mean())
    meta = meta_from_data(data, run_id=context.run_id, best_epoch=result.best_epoch,
                          best_val_utility=result.best_val_utility, test_quality_lambda0=test_quality,
                          train_config={k: v for k, v in tc.__dict__.items()},
                          features_dir=str(wh.features_dir / "current"))
    save_checkpoint(result.model, result.model_cfg, meta, ckpt)
    publish(wh, ckpt)  # without a deployment decision yet, a checkpoint serves its LatentRouter
    curve = pl.DataFrame({
        "epoch": [h.epoch + 1 for h in result.history],
        "train_loss": [h.train_loss for h in result.history],
        "val_utility": [h.val_utility for h in result.history],
        "val_loss": [h.val_loss for h in result.history],
        "seconds": [h.seconds for h in result.history],
    })
    calib, optimal = _calibration(result.model, data)
    return dg.MaterializeResult(metadata={
        "parameters": result.n_params,
        "val_calibration": table_value(calib),
        "val_pick_is_oracle_optimal": rounded(optimal),
        "best_epoch": result.best_epoch + 1,
        "val_utility": rounded(result.best_val_utility),
        "seconds_per_epoch": rounded(float(np.mean([h.seconds for h in result.history])), 3),
        "train_seconds": rounded(train_s, 3),
        "test_quality_lambda0": rounded(test_quality),
        "strongest_model": strongest,
        "strongest_test_quality": rounded(test_strongest),
        "checkpoint": dg.MetadataValue.path(str(ckpt)),
        "model_config": dg.MetadataValue.json(result.model_cfg.to_dict()),
        "training_curve_plot": png_markdown({"training_curve": _curve_png(curve, result.best_epoch + 1)}),
        "training_curve": table_value(curve),
        "models": ", ".join(data.model_ids),
    })


@dg.asset(group_name=GROUP, kinds={"json"}, code_version="1", deps=[latent_router],
          description="The one deployment decision: LatentRouter or a validation-tuned baseline, by validation "
                      "utility at deploy_lambda, with the validation table and the reason. Every surface "
                      "(report, route, serve, gateway, /health) reads it.")
def deployed_router(context: dg.AssetExecutionContext, config: DeployedRouterConfig,
                    query_features: FeatureSet, benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                    capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    ckpt = latest_checkpoint_dir(wh)
    if ckpt is None:
        raise dg.Failure("no trained router yet: materialize latent_router first")
    inputs = routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    data = routing_data(inputs)
    dc = config.build(DeployConfig)
    model, model_cfg, meta = load_checkpoint(ckpt)
    latent = LatentRouterRouter(model_cfg, TrainConfig(), name=LATENT)
    latent.model = model
    previous = _previous_deployment(wh, ckpt)
    t0 = time.perf_counter()
    candidates: dict = {}
    ctx: EvalContext | None = None
    store = fit_store(wh)
    if dc.deploy_select and len(data.idx("val")):
        ctx = EvalContext(data, EvalConfig.preset(dc.preset, experiments=("main_table",)), context.run_id,
                          progress=context.log.info, fit_store=store)
        candidates = candidate_fits(ctx, dc.deploy_candidates, dc.workers)
    if ctx is not None and dc.select_by == "oof":  # K-fold cross-fitting; the ensemble competes too
        train_cfg = _checkpoint_train_config(meta)
        factories = {n: (lambda n=n: ctx.make_baseline(n)) for n in candidates}
        chosen, table, reason, router = decide_oof(
            latent, lambda: LatentRouterRouter(model_cfg, train_cfg, name=LATENT), candidates, factories, data,
            dc.deploy_lambda, dc.oof_folds, previous)
    else:
        chosen, table, reason = decide(latent, candidates, data, dc.deploy_lambda, previous)
        router = candidates.get(chosen)
    if chosen == LATENT or ctx is None:
        cfg_doc = model_cfg.to_dict()
    elif chosen in candidates:
        cfg_doc = config_dict(ctx.baseline_config(chosen))
    else:  # the ensemble: its members' weights
        cfg_doc = {"weights": dict(getattr(router, "weights", None) or {})}
    save_deployment(ckpt, chosen, dc.deploy_lambda, table, router, config=cfg_doc, reason=reason,
                    run_id=context.run_id, previous=previous)
    seconds = time.perf_counter() - t0
    (context.log.warning if previous and previous != chosen else context.log.info)(f"deployed router: {reason}")
    return dg.MaterializeResult(metadata={
        "deployed_router": chosen,
        "deploy_lambda": dc.deploy_lambda,
        "reason": dg.MetadataValue.text(reason),  # plain text: shown in the asset's row, no click needed
        "previous": previous or "none",
        "checkpoint": ckpt.name,
        "validation": table_value(pl.DataFrame(table)),
        "config": dg.MetadataValue.json(cfg_doc),
        "fits_reused": store.hits,
        "fits_written": store.writes,
        "seconds": rounded(seconds, 3),
    })


@dg.asset_check(asset=deployed_router, blocking=False,
                description="The deployed router's validation utility at deploy_lambda is not below Strongest's "
                            "(a warning: a tiny or noisy validation split can lose to one model).")
def deployed_router_beats_strongest(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.warehouse()
    ckpt = latest_checkpoint_dir(wh)
    doc = read_deployment(ckpt) if ckpt is not None else {}
    rows = {r.get("router"): r.get("val_utility", r.get("oof_utility")) for r in doc.get("validation", [])}
    chosen, strongest = rows.get(doc.get("deployed")), rows.get(STRONGEST)
    if chosen is None or strongest is None:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"note": "Strongest was not a candidate (or no validation rows)"})
    return dg.AssetCheckResult(passed=bool(chosen >= strongest), severity=dg.AssetCheckSeverity.WARN,
                               metadata={"deployed": str(doc.get("deployed")), "deployed_val_utility": chosen,
                                         "strongest_val_utility": strongest})


@dg.asset_check(asset=latent_router, blocking=True,
                additional_ins={n: dg.AssetIn(n) for n in ("query_features", "benchmark_queries", "outcome_traces",
                                                            "data_splits", "capability_profiles", "candidate_models")},
                description="The published checkpoint loads and scores the validation rows with finite numbers "
                            "for every available model (a diverged or torn checkpoint never reaches serving).")
def latent_router_scores_validation(query_features: FeatureSet, benchmark_queries: pl.DataFrame,
                                    outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                                    capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame,
                                    warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.warehouse()
    ckpt = latest_checkpoint_dir(wh)
    if ckpt is None:
        return dg.AssetCheckResult(passed=False, metadata={"problem": "no published checkpoint"})
    model, _cfg, _meta = load_checkpoint(ckpt)
    data = routing_data(routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits,
                                       capability_profiles, candidate_models))
    rows = data.idx("val")
    rows = rows[data.avail[rows].any(axis=1)]
    if len(rows) == 0:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no validation rows to score"})
    mu, sigma, _ = predict(model, data, rows, 0.0)
    av = data.avail[rows]
    finite = bool(np.isfinite(mu[av]).all() and np.isfinite(sigma[av]).all())
    return dg.AssetCheckResult(passed=finite, metadata={
        "checkpoint": ckpt.name, "rows": int(len(rows)), "finite": finite,
        "predicted_quality_min": float(np.nanmin(np.where(av, mu, np.nan))) if finite else float("nan"),
        "predicted_quality_max": float(np.nanmax(np.where(av, mu, np.nan))) if finite else float("nan")})


def _checkpoint_train_config(meta: dict) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (its meta), for refitting it on cross-fitting folds."""
    import dataclasses

    stored = meta.get("train_config") or {}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names})


def fit_store(wh) -> FitStore:
    """The warehouse's store of fitted routers, shared by deployed_router and evaluation_report."""
    return FitStore(wh.artifacts_dir / "fits")


def _previous_deployment(wh, ckpt) -> str | None:
    """What served before this decision: the decision of ``ckpt`` itself when it has one, else of the newest
    earlier checkpoint that has one."""
    from router.training.artifacts import router_root

    dirs = sorted((d for d in router_root(wh).iterdir() if (d / DEPLOY_FILE).is_file()),
                  key=lambda d: (d != ckpt, -(d / DEPLOY_FILE).stat().st_mtime_ns))
    return str(read_deployment(dirs[0])["deployed"]) if dirs else None


def _calibration(model, data) -> tuple[pl.DataFrame, float]:
    """Per model on the validation rows: mean predicted vs realised quality (calibration), and its share of the
    router's lambda-0 picks vs its share of the rows where it is among the best (oracle picks); plus the share
    of rows where the pick is oracle-optimal."""
    va = data.idx("val")
    va = va[data.avail[va].any(axis=1)]
    if len(va) == 0:
        return pl.DataFrame({"model_id": list(data.model_ids)}), float("nan")
    mu, _, score = predict(model, data, va, 0.0)
    av = data.avail[va]
    q = np.where(av, data.quality[va], np.nan)
    pick = np.argmax(score, axis=1)
    best = np.nanmax(q, axis=1, keepdims=True)
    top = (q >= best - 1e-9) & av
    frame = pl.DataFrame({
        "model_id": list(data.model_ids),
        "predicted_quality": np.nanmean(np.where(av, mu, np.nan), axis=0).round(4),
        "realised_quality": np.nanmean(q, axis=0).round(4),
        "share_of_picks": np.bincount(pick, minlength=data.k).astype(float).round(4) / len(va),
        "share_of_oracle_best": (top / top.sum(axis=1, keepdims=True).clip(1)).sum(axis=0).round(4) / len(va),
    })
    return frame, float(top[np.arange(len(va)), pick].mean())


def _curve_png(curve: pl.DataFrame, best_epoch: int) -> bytes:
    """Train and validation loss and val utility per epoch, the early-stopping epoch marked: what the table says,
    at a glance (validation loss rising while train loss falls is overfitting)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    loss_ax.plot(curve["epoch"], curve["train_loss"], color="tab:blue", label="train loss")
    if curve["val_loss"].is_not_null().any():
        loss_ax.plot(curve["epoch"], curve["val_loss"], color="tab:blue", linestyle="--", label="val loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss (train solid, val dashed)", color="tab:blue")
    util_ax = loss_ax.twinx()
    util_ax.plot(curve["epoch"], curve["val_utility"], color="tab:orange", label="val utility")
    util_ax.set_ylabel("val utility", color="tab:orange")
    loss_ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    loss_ax.set_title(f"LatentRouter training (best epoch {best_epoch}, EMA weights kept)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


class PoolRoutingConfig(dg.Config):
    lambdas: list[float] = []  # empty: 0 and the deployment's lambda


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=[latent_router, deployed_router],
          metadata=table_metadata("pool_decisions"),
          description="The deployed router re-scores the CURRENT pool on the test split through the models' "
                      "capability tokens: a model added after training is routed to without retraining.")
def current_pool_routing(context: dg.AssetExecutionContext, config: PoolRoutingConfig,
                         query_features: FeatureSet, benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame,
                         data_splits: pl.DataFrame, capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame,
                         warehouse: WarehouseResource) -> dg.Output[pl.DataFrame]:
    wh = warehouse.warehouse()
    ckpt = latest_checkpoint_dir(wh)
    if ckpt is None:
        raise dg.Failure("no trained router yet: materialize latent_router first")
    model, _cfg, meta = load_checkpoint(ckpt)
    inputs = routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    data = routing_data(inputs)
    test = data.idx("test")
    trained_on = set(meta.get("model_ids", []))
    deployed, baseline, doc, note = serving_router(ckpt, data.model_ids)
    if note:
        context.log.warning(f"deployed router: {note}")
    serving = deployed if baseline is not None else LATENT
    seed = (meta.get("train_config") or {}).get("seed")
    frames = []
    shares = []
    lambdas = list(config.lambdas) or sorted({0.0, float(doc.get("lambda") or 0.0)})
    for lam in lambdas:
        if baseline is not None:
            score = np.where(data.avail[test], np.asarray(baseline.scores(data, test, lam), np.float64), -np.inf)
        else:
            _, _, score = predict(model, data, test, lam)
        frame = decision_rows(data, test, score, router=f"{serving} (deployed)", lam=lam, pool="current",
                              run_id=context.run_id, seed=seed)
        frames.append(frame)
        picks = frame["chosen_model"].to_list()
        for m in data.model_ids:
            shares.append({"lambda": lam, "model_id": m, "share_of_picks": picks.count(m) / max(len(picks), 1),
                           "new_since_training": m not in trained_on})
    share_df = pl.DataFrame(shares).filter(pl.col("lambda") == lambdas[0]).drop("lambda")
    new_models = [m for m in data.model_ids if m not in trained_on]
    q0 = float(np.mean(frames[0]["quality"].to_numpy()))
    return dg.Output(pl.concat(frames, how="vertical"), metadata={
        "checkpoint": ckpt.name,
        "deployed_router": serving,
        "lambdas": dg.MetadataValue.json(lambdas),
        "models_scored": data.k,
        "models_new_since_training": ", ".join(new_models) or "none",
        "test_quality_lambda0": rounded(q0),
        "picks": table_value(share_df),
        "note": dg.MetadataValue.md(SIMULATED_NOTE),
    })


