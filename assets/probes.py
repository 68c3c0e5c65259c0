"""Probe routing over the real local model: its captured hidden states as a feature table, and the hybrid
small/large evaluation (probes vs LatentRouter and the baselines) that the report renders."""


import shutil
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.common import md_table, routing_inputs
from assets.resources import OllamaResource, WarehouseResource
from collectors.collection.client import DEFAULT_PROMPT, MAX_QUESTION_CHARS
from collectors.local.capture import HiddenStateStore, capture_key
from collectors.local.server import capture_dir
from collectors.registry import ensure_registry
from router.data.warehouse_inputs import routing_data
from router.evaluation.hybrid import HYBRID_DIR, HybridConfig, evaluate_hybrid, save_hybrid
from router.features.feature_set import FeatureSet
from router.models.probes import ProbeFeatures
from warehouse.store import Warehouse

GROUP = "probes"
PROBES_DIR = "probes"


def _local_model(warehouse: WarehouseResource) -> str | None:
    local = [e.model_id for e in ensure_registry(warehouse.registry()) if e.backend == "local" and e.active]
    return local[0] if local else None


def probe_features_path(wh: Warehouse, model_id: str) -> Path:
    return wh.features_dir / PROBES_DIR / f"{model_id.replace(':', '_').replace('/', '_')}.npz"


@dg.asset(group_name=GROUP, kinds={"numpy"}, deps=["outcome_traces"],
          description="Hidden states the local model computed while answering (last token at every layer, "
                      "token states at layer l-1), joined to query ids: one .npz next to the warehouse.")
def probe_features(context: dg.AssetExecutionContext, benchmark_queries: pl.DataFrame, warehouse: WarehouseResource,
                   ollama: OllamaResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    model_id = _local_model(warehouse)
    if model_id is None:
        return dg.MaterializeResult(metadata={"local_model": "none registered", "queries": 0})
    store = HiddenStateStore(capture_dir(ollama.capture_root(), model_id))
    traces = wh.read_trace_partition(model_id)
    ok = set(traces.filter(pl.col("status") == "ok")["query_id"].to_list())
    ids, last, seq, notes = [], [], [], 0
    for q in benchmark_queries.filter(pl.col("query_id").is_in(list(ok))).iter_rows(named=True):
        prompt = DEFAULT_PROMPT.format(question=(q["question"] or "")[:MAX_QUESTION_CHARS])
        cap = store.read(capture_key(q["image_sha256"] or "", prompt))
        if cap is None:
            continue
        ids.append(q["query_id"])
        last.append(cap.last)
        seq.append(cap.seq)
        notes += bool(cap.meta.get("note"))
        layer = int(cap.meta["layer"])
    if not ids:  # the hybrid section is optional: its absence must not fail the training job around it
        why = (f"no hidden states of {model_id} under {store.root} for its {len(ok)} ok traces (collect its traces "
               "with this home's local server; a local server another home started captures into that home)")
        context.log.warning(f"probe_features skipped: {why}")
        return dg.MaterializeResult(metadata={"local_model": model_id, "queries": 0, "skipped": why})
    layer_dir = store.root / "layer"
    feats = ProbeFeatures.from_lists(ids, last, seq, layer, layer_dir if (layer_dir / "layer.json").exists() else None,
                                     {"model_id": model_id})
    path = feats.save(probe_features_path(wh, model_id))
    return dg.MaterializeResult(metadata={
        "local_model": model_id, "queries": feats.n, "ok_traces": len(ok), "layer": layer,
        "hidden_dim": feats.dim, "layers": int(feats.last.shape[1]),
        "kb_per_query": round(feats.bytes_per_query / 1024, 1),
        "file_mb": round(path.stat().st_size / 2**20, 2), "ocr_found_no_text": notes,
        "path": dg.MetadataValue.path(str(path)),
    })


class HybridRoutingConfig(dg.Config):
    large_model: str = ""  # empty = the strongest model on train rows
    seeds: list[int] = [0, 1, 2]
    # query-only routers compared on the two-model decision, fitted per seed (through the fit store; the slow part:
    # 529 s with MLPMFRouter too, under a load average of 8 on 2 cores), so the default keeps the cheap ones
    routers: list[str] = ["LatentRouter", "KNNRouter", "KMeansRouter"]
    workers: int = 0  # processes for the probes' and the routers' fits (0 = one per core)


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, deps=[probe_features],
          description="Hybrid small (local) / large routing: probe AUCs (3 seeds) and quality vs share sent to "
                      "the large model, against LatentRouter and baselines restricted to the two models.")
def hybrid_routing(context: dg.AssetExecutionContext, config: HybridRoutingConfig, query_features: FeatureSet,
                   benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame, capability_profiles: pl.DataFrame,
                   candidate_models: pl.DataFrame, warehouse: WarehouseResource) -> dg.MaterializeResult:
    from dataclasses import replace

    from assets.routing import fit_store
    from router.evaluation.config import LATENT, EvalConfig
    from router.evaluation.context import EvalContext
    from router.evaluation.parallel import FitUnit, fit_units, plan_main

    wh = warehouse.warehouse()
    out_dir = wh.features_dir / HYBRID_DIR
    model_id = _local_model(warehouse)
    path = probe_features_path(wh, model_id) if model_id else None
    if model_id is None or path is None or not path.exists():
        shutil.rmtree(out_dir, ignore_errors=True)  # no stale section in the next report
        return dg.MaterializeResult(metadata={"skipped": "no local model with probe features"})
    feats = ProbeFeatures.load(path)
    inputs = routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    data = routing_data(inputs)
    tr = outcome_traces.filter((pl.col("model_id") == model_id) & (pl.col("status") == "ok"))
    right = dict(zip(tr["query_id"].to_list(), tr["correct"].to_list(), strict=True))
    correct = np.array([float(right[q]) if right.get(q) is not None else np.nan for q in data.query_ids])
    t0 = time.perf_counter()
    # the routers' fits go through the fit store (a rerun on the same data loads them), on `workers` processes
    ctx = EvalContext(data, EvalConfig.demo(seeds=tuple(config.seeds)), progress=context.log.info,
                      fit_store=fit_store(wh))
    units = [replace(u, seeds=()) if u.router == LATENT else u  # LatentRouter: tuning, then one unit per seed
             for u in plan_main(ctx, routers=config.routers, seeds=config.seeds, splits=[0])]
    fit_units(ctx, units, config.workers)
    if LATENT in config.routers:
        fit_units(ctx, [FitUnit(0, LATENT, setting="oriented", seed=int(s)) for s in config.seeds], config.workers)
    routers = {n: (lambda s, n=n: ctx.latent("oriented", s) if n == LATENT else ctx.baseline(n, s))
               for n in config.routers}
    result = evaluate_hybrid(data, feats, correct, HybridConfig(small_model=model_id, large_model=config.large_model
                                                                or None, seeds=tuple(config.seeds),
                                                                workers=config.workers),
                             routers, log=context.log.info)
    seconds = time.perf_counter() - t0
    result.meta["seconds"] = seconds
    save_hybrid(result, out_dir)
    return dg.MaterializeResult(metadata={
        "small_model": model_id, "large_model": result.meta["large_model"], "seconds": round(seconds, 1),
        "rows": dg.MetadataValue.json(result.meta["n_rows"]),
        "small_accuracy_test": round(result.meta["small_accuracy_test"], 4),
        "auc_and_quality": dg.MetadataValue.md(md_table(result.summary)),
        "curve": dg.MetadataValue.md(md_table(result.curve.filter(pl.col("share").is_in([0.0, 0.2, 0.5, 1.0])))),
    })
