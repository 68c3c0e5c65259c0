"""The trained LatentRouter and the re-scoring of the current model pool with it (no retraining)."""

import json
import time

import dagster as dg
import numpy as np
import polars as pl

from assets.collection import candidate_models, outcome_traces
from assets.common import SIMULATED_NOTE, md_table
from assets.features import capability_profiles, data_splits, query_features
from assets.resources import WarehouseResource
from router.data.warehouse_inputs import load_inputs, routing_data, strongest_on
from router.models.latent_router.model import LatentRouterConfig
from router.training.artifacts import latest_checkpoint_dir, new_checkpoint_dir, publish
from router.training.checkpoint import load_checkpoint, meta_from_data, save_checkpoint
from router.training.trainer import TrainConfig, predict, train_latent_router
from warehouse.schemas import ROUTING_DECISIONS

GROUP = "routing"
DEPLOYED = "LatentRouter (deployed)"


_MODEL, _TRAIN = LatentRouterConfig(), TrainConfig()  # one source of defaults: the library's dataclasses


class LatentRouterTrainConfig(dg.Config):
    """Hyper-parameters of the paper (section 2.3, appendix A); defaults are ``LatentRouterConfig`` and
    ``TrainConfig`` (the paper's hidden size 48, input-token reduction for CPU latency)."""

    hidden: int = _MODEL.hidden
    n_capsules: int = _MODEL.n_capsules
    n_layers: int = _MODEL.n_layers
    n_heads: int = _MODEL.n_heads
    dropout: float = _MODEL.dropout
    rho: float = _MODEL.rho
    tau_feedback: float = _MODEL.tau_feedback
    image_token_pool: int = _MODEL.image_token_pool  # 7x7 image grid pooled to this x this (0 = all 49)
    max_text_tokens: int = _MODEL.max_text_tokens  # first question tokens the capsules read (0 = all)
    w_nll: float = _TRAIN.w_nll
    w_pair: float = _TRAIN.w_pair
    w_list: float = _TRAIN.w_list
    tau_list: float = _TRAIN.tau_list
    w_util: float = _TRAIN.w_util
    w_mean: float = _TRAIN.w_mean
    w_res: float = _TRAIN.w_res
    lr: float = _TRAIN.lr
    weight_decay: float = _TRAIN.weight_decay
    grad_clip: float = _TRAIN.grad_clip
    batch_size: int = _TRAIN.batch_size
    epochs: int = _TRAIN.epochs
    patience: int = _TRAIN.patience
    avail_drop: float = _TRAIN.avail_drop
    lam_choices: list[float] = [0.0, 0.1, 0.3, 1.0]  # cost weights drawn per batch: one router for a sweep
    seed: int = _TRAIN.seed

    def configs(self) -> tuple[LatentRouterConfig, TrainConfig]:
        mc = LatentRouterConfig(hidden=self.hidden, n_capsules=self.n_capsules, n_layers=self.n_layers,
                                n_heads=self.n_heads, dropout=self.dropout, rho=self.rho,
                                tau_feedback=self.tau_feedback, image_token_pool=self.image_token_pool,
                                max_text_tokens=self.max_text_tokens)
        tc = TrainConfig(w_nll=self.w_nll, w_pair=self.w_pair, w_list=self.w_list, tau_list=self.tau_list,
                         w_util=self.w_util, w_mean=self.w_mean, w_res=self.w_res, lr=self.lr,
                         weight_decay=self.weight_decay, grad_clip=self.grad_clip, batch_size=self.batch_size,
                         epochs=self.epochs, patience=self.patience, avail_drop=self.avail_drop,
                         lam_choices=tuple(self.lam_choices), seed=self.seed)
        return mc, tc


@dg.asset(group_name=GROUP, kinds={"pytorch", "safetensors"}, code_version="1",
          deps=[query_features, capability_profiles, data_splits, outcome_traces, candidate_models],
          description="LatentRouter trained on train rows, early-stopped on val; checkpoint as safetensors + JSON.")
def latent_router(context: dg.AssetExecutionContext, config: LatentRouterTrainConfig,
                  warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    inputs = load_inputs(wh)
    data = routing_data(inputs)
    mc, tc = config.configs()
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
    publish(wh, ckpt)
    curve = pl.DataFrame({
        "epoch": [h.epoch + 1 for h in result.history],
        "train_loss": [h.train_loss for h in result.history],
        "val_utility": [h.val_utility for h in result.history],
        "seconds": [h.seconds for h in result.history],
    })
    return dg.MaterializeResult(metadata={
        "parameters": result.n_params,
        "best_epoch": result.best_epoch + 1,
        "val_utility": result.best_val_utility,
        "seconds_per_epoch": float(np.mean([h.seconds for h in result.history])),
        "train_seconds": train_s,
        "test_quality_lambda0": test_quality,
        "strongest_model": strongest,
        "strongest_test_quality": test_strongest,
        "checkpoint": dg.MetadataValue.path(str(ckpt)),
        "model_config": dg.MetadataValue.json(result.model_cfg.to_dict()),
        "training_curve": dg.MetadataValue.md(md_table(curve)),
        "models": ", ".join(data.model_ids),
    })


class PoolRoutingConfig(dg.Config):
    lambdas: list[float] = [0.0, 0.3]


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=[latent_router, capability_profiles, candidate_models],
          description="The deployed router re-scores the CURRENT pool on the test split through the models' "
                      "capability tokens: a model added after training is routed to without retraining.")
def current_pool_routing(context: dg.AssetExecutionContext, config: PoolRoutingConfig,
                         warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    ckpt = latest_checkpoint_dir(wh)
    if ckpt is None:
        raise dg.Failure("no trained router yet: materialize latent_router first")
    model, _cfg, meta = load_checkpoint(ckpt)
    inputs = load_inputs(wh)
    data = routing_data(inputs)
    test = data.idx("test")
    trained_on = set(meta.get("model_ids", []))
    rows = []
    shares = []
    for lam in config.lambdas:
        mu, sigma, score = predict(model, data, test, lam)
        pick = np.argmax(score, axis=1)
        util = data.quality[test] - lam * data.cost[test]
        oracle = np.argmax(np.where(data.avail[test], util, -np.inf), axis=1)
        for r, i in enumerate(test):
            rows.append({
                "run_id": context.run_id, "query_id": data.query_ids[i], "router": DEPLOYED, "lambda": float(lam),
                "pool": "current", "chosen_model": data.model_ids[pick[r]],
                "oracle_model": data.model_ids[oracle[r]], "quality": float(data.quality[i, pick[r]]),
                "cost_usd": float(data.cost_usd[i, pick[r]]),
                "scores": json.dumps({m: round(float(s), 5) for m, s in zip(data.model_ids, score[r], strict=True)
                                      if np.isfinite(s)}),
            })
        counts = np.bincount(pick, minlength=data.k) / len(test)
        for j, m in enumerate(data.model_ids):
            shares.append({"lambda": lam, "model_id": m, "share_of_picks": float(counts[j]),
                           "new_since_training": m not in trained_on})
    decisions = pl.DataFrame(rows, schema=ROUTING_DECISIONS)
    old = wh.read_table("routing_decisions") if wh.has_table("routing_decisions") else None
    if old is not None:
        decisions = pl.concat([old.filter(pl.col("router") != DEPLOYED), decisions], how="diagonal_relaxed")
    wh.write_table("routing_decisions", decisions)
    share_df = pl.DataFrame(shares).filter(pl.col("lambda") == config.lambdas[0]).drop("lambda")
    new_models = [m for m in data.model_ids if m not in trained_on]
    q0 = float(np.mean([r["quality"] for r in rows[: len(test)]]))
    return dg.MaterializeResult(metadata={
        "checkpoint": ckpt.name,
        "models_scored": data.k,
        "models_new_since_training": ", ".join(new_models) or "none",
        "test_quality_lambda0": q0,
        "picks": dg.MetadataValue.md(SIMULATED_NOTE + "\n\n" + md_table(share_df)),
    })


