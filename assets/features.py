"""Features, splits and capability profiles: what a router learns from (thin wrappers over router/)."""


import json

import dagster as dg
import polars as pl

from assets.common import rounded, table_value
from assets.config import config_from
from assets.io_manager import table_metadata
from assets.resources import WarehouseResource
from collectors.importing.ingest import load_imported_embeddings
from router.data.leakage import leakage_report
from router.data.profiles import ProfileSources, build_profiles
from router.data.splits import make_splits
from router.data.warehouse_inputs import pool_traces
from router.features.config import FeatureConfig
from router.features.extract import extract_features
from router.features.feature_set import FeatureSet
from router.features.imported import declared_side_features, with_imported_embeddings, with_side_features
from router.serving.gateway.served_log import read_production_traces

GROUP = "features"


class SplitConfig(dg.Config):
    seed: int = 0
    train_fraction: float = 0.7
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    calib_fraction: float = 0.35
    calib_cap: int = 0  # 0 = no cap


class FeaturesConfig(config_from("FeatureConfigBase", FeatureConfig,
                                  exclude=("task_group_vocab", "dataset_vocab", "progress"))):
    """Every ``FeatureConfig`` setting (set clip_arch and clip_checkpoint to use an open_clip checkpoint as the
    encoder of record), plus whether an import's precomputed embeddings replace our encoders' output."""

    use_imported_embeddings: bool = True


@dg.asset(group_name=GROUP, kinds={"parquet"}, code_version="1", metadata=table_metadata("splits"),
          description="Deterministic, stratified train/val/test split and the calibration subset of train.")
def data_splits(context: dg.AssetExecutionContext, config: SplitConfig,
                benchmark_queries: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    splits = make_splits(
        benchmark_queries, seed=config.seed,
        fractions=(config.train_fraction, config.val_fraction, config.test_fraction),
        calib_fraction=config.calib_fraction, calib_cap=config.calib_cap or None,
    )
    counts = splits.group_by("split").agg(pl.len().alias("rows"), pl.col("in_calibration").sum().alias("calibration"))
    return dg.Output(splits, metadata={
        "splits": table_value(counts.sort("split")),
        "seed": config.seed,
    })


@dg.asset(group_name=GROUP, kinds={"pytorch", "parquet"}, code_version="1", metadata=table_metadata("features"),
          io_manager_key="feature_io_manager",
          description="Frozen-encoder image and question features (pooled vectors and token sequences), cached.")
def query_features(context: dg.AssetExecutionContext, config: FeaturesConfig, benchmark_queries: pl.DataFrame,
                   warehouse: WarehouseResource) -> dg.Output[FeatureSet]:
    wh = warehouse.warehouse()
    queries = benchmark_queries
    fs: FeatureSet = extract_features(queries, wh.images_dir, wh.features_dir / "cache", config.build(FeatureConfig))
    imported = load_imported_embeddings(wh) if config.use_imported_embeddings else None
    if imported is not None:
        fs = with_imported_embeddings(fs, *imported)
    declared = declared_side_features(queries)
    if declared is not None:  # an import's categorical columns declared as side features
        fs = with_side_features(fs, queries["query_id"].to_list(), *declared)
    meta = {
        "image_encoder": fs.image_encoder_id or "none (text-only)",
        "text_encoder": fs.text_encoder_id,
        "image_tokens": str(None if fs.img_tokens is None else list(fs.img_tokens.shape[1:])),
        "text_tokens": str(list(fs.txt_tokens.shape[1:])),
        "side_features": len(fs.side_names),
        "bytes_per_query": int(fs.bytes_per_query),
        "skipped": len(fs.skipped),
    }
    if fs.skipped:
        meta["skipped_examples"] = dg.MetadataValue.json(fs.skipped[:10])
    return dg.Output(fs, metadata=meta)


ProfilesConfig = config_from(
    "ProfilesConfig", ProfileSources, doc="Which evidence besides calibration rows the capability profiles read.",
    descriptions={"use_production_traces": "labelled gateway requests (warehouse/production_traces) count as "
                  "extra calibration evidence of the active models that served them"})


@dg.asset(group_name=GROUP, kinds={"parquet"}, code_version="1", metadata=table_metadata("profiles"),
          description="Per-model capability profiles from calibration rows only (standardised named parts), plus "
                      "labelled production requests of the models that served them.")
def capability_profiles(context: dg.AssetExecutionContext, config: ProfilesConfig, outcome_traces: pl.DataFrame,
                        data_splits: pl.DataFrame, benchmark_queries: pl.DataFrame, candidate_models: pl.DataFrame,
                        warehouse: WarehouseResource) -> dg.Output[pl.DataFrame]:
    models = candidate_models.filter(pl.col("active"))
    traces = pool_traces(outcome_traces, models["model_id"].to_list())
    sources = config.build(ProfileSources)
    production = read_production_traces(warehouse.warehouse().root) if sources.use_production_traces else None
    profiles = build_profiles(traces, data_splits, benchmark_queries, models, production=production)
    view = profiles.select([c for c in ("model_id", "n_calib_rows", "n_production_rows", "n_ok_rows",
                                         "shrink_weight", "cold_start", "shrunk") if c in profiles.columns])
    built = json.loads(profiles["built_from"][0]) if "built_from" in profiles.columns and profiles.height else {}
    return dg.Output(profiles, metadata={
        "profiles": table_value(view),
        "n_production_rows": int(built.get("n_production_rows", 0)),
        "use_production_traces": sources.use_production_traces,
        "built_from": dg.MetadataValue.md(built_from_markdown(built)),
        **({"standardisation": standardisation_table(built)} if built.get("standardise_mean") else {}),
    })


def built_from_markdown(built: dict) -> str:
    """What the profiles were computed from, as a short list (the stored JSON is a wall of numbers)."""
    if not built:
        return "_(no profiles)_"
    refs = built.get("reference_models") or []
    lines = [f"- **split:** {built.get('split', '?')}",
             f"- **rows:** {built.get('n_rows', '?')} traces of {built.get('n_queries', '?')} calibration queries",
             f"- **reference models ({len(refs)}):** {', '.join(refs)}"]
    if "shrink_k0" in built:
        lines.append(f"- **shrinkage k0:** {built['shrink_k0']:g} (profiles of models with few rows shrink to the pool's)")
    if "cost_scale" in built:
        lines.append(f"- **cost scale:** {rounded(float(built['cost_scale']))} USD")
    if built.get("n_production_rows"):
        lines.append(f"- **production rows:** {built['n_production_rows']} labelled gateway requests (labelled up to "
                     f"{built.get('production_until') or '?'}), evidence of the models that served them")
    if built.get("calib_limit"):
        lines.append(f"- **calibration limit:** {', '.join(f'{k}={v}' for k, v in built['calib_limit'].items())}")
    lines.append("- per-feature standardisation (train/calibration only): see `standardisation`")
    return "\n".join(lines)


def standardisation_table(built: dict) -> dg.TableMetadataValue:
    mean, std = built.get("standardise_mean") or {}, built.get("standardise_std") or {}
    names = sorted(mean)
    return table_value(pl.DataFrame({"feature": names, "mean": [float(mean[n]) for n in names],
                                     "std": [float(std.get(n, float("nan"))) for n in names]}))


@dg.asset_check(asset=capability_profiles, blocking=True,
                additional_ins={"outcome_traces": dg.AssetIn("outcome_traces"), "data_splits": dg.AssetIn("data_splits"),
                                "benchmark_queries": dg.AssetIn("benchmark_queries"),
                                "candidate_models": dg.AssetIn("candidate_models")},
                description="No val/test row fed any profile or normaliser; calibration rows are a subset of train "
                            "(production rows, never benchmark queries, are the one allowed addition).")
def profiles_leakage_free(capability_profiles: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                          benchmark_queries: pl.DataFrame, candidate_models: pl.DataFrame,
                          warehouse: WarehouseResource) -> dg.AssetCheckResult:
    models = candidate_models.filter(pl.col("active"))
    traces = pool_traces(outcome_traces, models["model_id"].to_list())
    production = read_production_traces(warehouse.warehouse().root)
    report = leakage_report(traces, data_splits, capability_profiles, queries=benchmark_queries, models=models,
                            production=production)
    return dg.AssetCheckResult(passed=bool(report["passed"]),
                               metadata={k: (json.dumps(v) if not isinstance(v, (int, float, str, bool)) else v)
                                         for k, v in report.items()})
