"""Features, splits and capability profiles: what a router learns from (thin wrappers over router/)."""


import json

import dagster as dg
import polars as pl

from assets.collection import benchmark_queries, candidate_models, outcome_traces
from assets.common import md_table
from assets.resources import WarehouseResource
from collectors.importing.ingest import load_imported_embeddings
from router.data.profiles import build_profiles, leakage_report
from router.data.splits import make_splits
from router.features.encoders import FeatureConfig, FeatureSet, extract_features
from router.features.imported import declared_side_features, with_imported_embeddings, with_side_features

GROUP = "features"
FEATURES_DIR = "current"


class SplitConfig(dg.Config):
    seed: int = 0
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    calib_fraction: float = 0.35
    calib_cap: int = 0  # 0 = no cap


class FeaturesConfig(dg.Config):
    image_batch_size: int = 32
    text_batch_size: int = 128
    max_text_tokens: int = 32
    clip_arch: str = ""  # set both to use an open_clip checkpoint as the encoder of record
    clip_checkpoint: str = ""
    device: str = "auto"
    use_imported_embeddings: bool = True  # an import's precomputed embeddings replace our encoders' output
    dtype: str = "auto"  # auto = bf16 on CPUs with native bf16, fp16 on CUDA, else fp32
    num_threads: int = 0  # torch threads for encoding; 0 = leave torch's setting


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=[benchmark_queries], code_version="1",
          description="Deterministic, stratified train/val/test split and the calibration subset of train.")
def data_splits(context: dg.AssetExecutionContext, config: SplitConfig,
                warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    queries = wh.read_table("queries")
    splits = make_splits(
        queries, seed=config.seed,
        fractions=(config.train_fraction, config.val_fraction, config.test_fraction),
        calib_fraction=config.calib_fraction, calib_cap=config.calib_cap or None,
    )
    wh.write_table("splits", splits)
    counts = splits.group_by("split").agg(pl.len().alias("rows"), pl.col("in_calibration").sum().alias("calibration"))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": splits.height,
        "splits": dg.MetadataValue.md(md_table(counts.sort("split"))),
        "seed": config.seed,
    })


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, deps=[benchmark_queries], code_version="1",
          description="Frozen-encoder image and question features (pooled vectors and token sequences), cached.")
def query_features(context: dg.AssetExecutionContext, config: FeaturesConfig,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    queries = wh.read_table("queries")
    cfg = FeatureConfig(
        image_batch_size=config.image_batch_size, text_batch_size=config.text_batch_size,
        max_text_tokens=config.max_text_tokens, clip_arch=config.clip_arch or None,
        clip_checkpoint=config.clip_checkpoint or None, device=config.device, dtype=config.dtype,
        num_threads=config.num_threads or None,
    )
    fs: FeatureSet = extract_features(queries, wh.images_dir, wh.features_dir / "cache", cfg)
    imported = load_imported_embeddings(wh) if config.use_imported_embeddings else None
    if imported is not None:
        fs = with_imported_embeddings(fs, *imported)
    declared = declared_side_features(queries)
    if declared is not None:  # an import's categorical columns declared as side features
        fs = with_side_features(fs, queries["query_id"].to_list(), *declared)
    fs.save(wh.features_dir / FEATURES_DIR)
    table = fs.to_table()
    wh.write_table("features", table)
    meta = {
        "dagster/row_count": table.height,
        "image_encoder": fs.image_encoder_id or "none (text-only)",
        "text_encoder": fs.text_encoder_id,
        "image_tokens": str(None if fs.img_tokens is None else list(fs.img_tokens.shape[1:])),
        "text_tokens": str(list(fs.txt_tokens.shape[1:])),
        "side_features": len(fs.side_names),
        "bytes_per_query": float(fs.bytes_per_query),
        "skipped": len(fs.skipped),
    }
    if fs.skipped:
        meta["skipped_examples"] = dg.MetadataValue.json(fs.skipped[:10])
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, kinds={"parquet"}, deps=[outcome_traces, data_splits, candidate_models],
          code_version="1",
          description="Per-model capability profiles from calibration rows only (standardised named parts).")
def capability_profiles(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    models = wh.read_table("models").filter(pl.col("active"))
    traces = wh.read_traces(models["model_id"].to_list())
    profiles = build_profiles(traces, wh.read_table("splits"), wh.read_table("queries"), models)
    wh.write_table("profiles", profiles)
    view = profiles.select([c for c in ("model_id", "n_calib_rows", "shrunk") if c in profiles.columns])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": profiles.height,
        "profiles": dg.MetadataValue.md(md_table(view)),
        "built_from": profiles["built_from"][0] if "built_from" in profiles.columns and profiles.height else "",
    })


@dg.asset_check(asset=capability_profiles, blocking=True,
                description="No val/test row fed any profile or normaliser; calibration rows are a subset of train.")
def profiles_leakage_free(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.warehouse()
    models = wh.read_table("models").filter(pl.col("active"))
    report = leakage_report(wh.read_traces(models["model_id"].to_list()), wh.read_table("splits"),
                            wh.read_table("profiles"), queries=wh.read_table("queries"), models=models)
    return dg.AssetCheckResult(passed=bool(report["passed"]),
                               metadata={k: (json.dumps(v) if not isinstance(v, (int, float, str, bool)) else v)
                                         for k, v in report.items()})
