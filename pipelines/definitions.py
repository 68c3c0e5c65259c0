"""The Dagster code location: assets, checks, resources, jobs, sensors and schedules.

``dagster dev`` (or ``dg dev``) loads this module; ``dagster definitions validate -m pipelines.definitions``
checks it in CI.
"""

import dagster as dg

from assets import collection, evaluation, features, probes, routing
from assets.io_manager import WarehouseIOManager
from assets.resources import OllamaResource, WarehouseResource
from pipelines.automation import (
    COLLECT_JOB,
    RECALIBRATE_JOB,
    RETRAIN_JOB,
    model_pool_sensor,
    recalibration_schedule,
)
from pipelines.deployment import executor
from pipelines.production import production_feedback_sensor
from pipelines.recovery import dead_run_sensor, reap_dead_runs

asset_modules = [collection, features, routing, probes, evaluation]
all_assets = dg.load_assets_from_modules(asset_modules)
all_checks = dg.load_asset_checks_from_modules(asset_modules)


def materialize(names: list[str], **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize the named assets (and every check on them) in-process; unselected upstream assets are
    loaded from the warehouse by the IO manager. Runs killed earlier are cleaned up first, so their
    concurrency slots cannot block this one."""
    if kwargs.get("instance") is not None:
        reap_dead_runs(kwargs["instance"])
    return dg.materialize([*all_assets, *all_checks], selection=dg.AssetSelection.assets(*names), **kwargs)


def resources() -> dict:
    warehouse = WarehouseResource()  # LROUTER_HOME / LROUTER_REGISTRY read from the environment
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),  # asset tables <-> Parquet + DuckDB views
        "ollama": OllamaResource(),  # OLLAMA_HOST / OLLAMA_API_KEY read from the environment at call time
    }


setup_job = dg.define_asset_job(
    "setup_job", selection=dg.AssetSelection.assets("benchmark_queries", "candidate_models", "data_splits"),
    description="Benchmark queries (built-in or imported), the registry mirror and the train/val/test splits.",
)
collect_job = dg.define_asset_job(
    COLLECT_JOB,
    selection=dg.AssetSelection.assets("outcome_traces"),
    partitions_def=collection.MODELS_PARTITIONS,
    description="Collect one model's outcome traces (one partition per model).",
    tags={"lrouter/queue": "collect"},  # the cluster profile's run queue limits collections by this tag
)
features_job = dg.define_asset_job(
    "features_job", selection=dg.AssetSelection.assets("query_features", "capability_profiles", "warehouse_views"),
    description="Frozen-encoder features, calibration-only capability profiles and the DuckDB views.",
)
train_job = dg.define_asset_job(
    "train_job", selection=dg.AssetSelection.assets("latent_router", "current_pool_routing", "probe_features",
                                                    "hybrid_routing"),
    description="Train LatentRouter, re-score the current pool with it, and the local model's probe routing.",
)
evaluate_job = dg.define_asset_job(
    "evaluate_job", selection=dg.AssetSelection.assets("evaluation_report"),
    description="The evaluation report: every router and experiment on the test split.",
)
recalibrate_job = dg.define_asset_job(
    RECALIBRATE_JOB,
    selection=dg.AssetSelection.assets("warehouse_views", "capability_profiles", "current_pool_routing"),
    description="Recompute capability profiles and re-score the current pool with the existing router.",
    tags={"lrouter/queue": "recalibrate"},  # queued one at a time on the cluster profile
)
retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets(
        "warehouse_views", "capability_profiles", "latent_router", "current_pool_routing", "evaluation_report"),
    description="Recalibrate, retrain the router and re-run the evaluation.",
    tags={"lrouter/queue": "recalibrate"},
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[setup_job, collect_job, features_job, train_job, evaluate_job, recalibrate_job, retrain_job],
    sensors=[model_pool_sensor, dead_run_sensor, production_feedback_sensor],
    schedules=[recalibration_schedule],
    resources=resources(),
    executor=executor(),  # None (Dagster's default) locally; dagster-celery with LROUTER_DEPLOYMENT=cluster
)
