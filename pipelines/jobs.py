"""The named jobs: one per pipeline stage (what `lrouter run STAGE` launches) and the two maintenance jobs the
sensors and the schedule request. Their own module, so sensors can name the jobs they target."""

import dagster as dg

from assets.common import MODELS_PARTITIONS

COLLECT_JOB = "collect_traces_job"
RECALIBRATE_JOB = "recalibrate_job"
RETRAIN_JOB = "retrain_job"
RECALIBRATE_ASSETS = [dg.AssetKey(n) for n in ("warehouse_views", "capability_profiles", "current_pool_routing")]

setup_job = dg.define_asset_job(
    "setup_job", selection=dg.AssetSelection.assets("benchmark_queries", "candidate_models", "data_splits"),
    description="Benchmark queries (built-in or imported), the registry mirror and the train/val/test splits.",
)
collect_job = dg.define_asset_job(
    COLLECT_JOB,
    selection=dg.AssetSelection.assets("outcome_traces"),
    partitions_def=MODELS_PARTITIONS,
    description="Collect one model's outcome traces (one partition per model).",
    tags={"lrouter/queue": "collect"},  # the cluster profile's run queue limits collections by this tag
)
features_job = dg.define_asset_job(
    "features_job", selection=dg.AssetSelection.assets("query_features", "capability_profiles", "warehouse_views"),
    description="Frozen-encoder features, calibration-only capability profiles and the DuckDB views.",
)
train_job = dg.define_asset_job(
    "train_job", selection=dg.AssetSelection.assets("latent_router", "deployed_router", "current_pool_routing",
                                                    "probe_features", "hybrid_routing"),
    description="Train LatentRouter, decide which router serves (validation-tuned fits the evaluation reuses), "
                "re-score the current pool with it, and the local model's probe routing.",
)
evaluate_job = dg.define_asset_job(
    "evaluate_job", selection=dg.AssetSelection.assets("evaluation_fits", "evaluation_report").required_multi_asset_neighbors(),
    description="The evaluation report and its tables (eval_results, routing_decisions): every router and "
                "experiment on the test split.",
)
recalibrate_job = dg.define_asset_job(
    RECALIBRATE_JOB,
    selection=dg.AssetSelection.assets(*RECALIBRATE_ASSETS),
    description="Recompute capability profiles and re-score the current pool with the existing router.",
    tags={"lrouter/queue": "recalibrate"},  # queued one at a time on the cluster profile
)
retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets(
        "warehouse_views", "capability_profiles", "latent_router", "deployed_router", "current_pool_routing",
        "evaluation_fits", "evaluation_report").required_multi_asset_neighbors(),
    description="Recalibrate, retrain the router and re-run the evaluation.",
    tags={"lrouter/queue": "recalibrate"},
)

ALL_JOBS = [setup_job, collect_job, features_job, train_job, evaluate_job, recalibrate_job, retrain_job]
