"""The Dagster code location: assets, checks, resources, jobs, sensors and schedules.

``dagster dev`` (or ``dg dev``) loads this module; ``dagster definitions validate -m pipelines.definitions``
checks it in CI.
"""

import dagster as dg

from assets import collection, features, routing
from assets.resources import OllamaResource, WarehouseResource
from pipelines.automation import (
    RECALIBRATE_JOB,
    RETRAIN_JOB,
    model_pool_sensor,
    recalibration_schedule,
)


def _evaluation_module():
    import importlib

    try:
        evaluation = importlib.import_module("assets.evaluation")
    except ModuleNotFoundError as exc:  # the evaluation stage is optional while it is being built
        if exc.name != "assets.evaluation":
            raise
        return None
    return evaluation


asset_modules = [collection, features, routing]
if (_ev := _evaluation_module()) is not None:
    asset_modules.append(_ev)
all_assets = dg.load_assets_from_modules(asset_modules)
all_checks = dg.load_asset_checks_from_modules(asset_modules)
_asset_names = {a.key.to_user_string() for a in all_assets}


def assets_with_checks(names: list[str]) -> list:
    """The named assets and every asset check that targets one of them, ready for ``dg.materialize``."""
    chosen = [a for a in all_assets if a.key.to_user_string() in names]
    checks = [c for c in all_checks if any(k.asset_key.to_user_string() in names for k in c.check_keys)]
    return chosen + checks


def resources() -> dict:
    return {
        "warehouse": WarehouseResource(),  # LROUTER_HOME / LROUTER_REGISTRY read from the environment
        "ollama": OllamaResource(),  # OLLAMA_HOST / OLLAMA_API_KEY read from the environment at call time
    }


collect_job = dg.define_asset_job(
    "collect_traces_job",
    selection=dg.AssetSelection.assets("outcome_traces"),
    partitions_def=collection.MODELS_PARTITIONS,
    description="Collect one model's outcome traces (one partition per model).",
)
recalibrate_job = dg.define_asset_job(
    RECALIBRATE_JOB,
    selection=dg.AssetSelection.assets("warehouse_views", "capability_profiles", "current_pool_routing"),
    description="Recompute capability profiles and re-score the current pool with the existing router.",
)
retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets(
        *[n for n in ("warehouse_views", "capability_profiles", "latent_router", "current_pool_routing",
                      "evaluation_report") if n in _asset_names]),
    description="Recalibrate, retrain the router and re-run the evaluation.",
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[collect_job, recalibrate_job, retrain_job],
    sensors=[model_pool_sensor],
    schedules=[recalibration_schedule],
    resources=resources(),
)
