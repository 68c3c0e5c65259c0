"""The Dagster code location: assets, checks, resources, jobs, sensors and schedules.

``dagster dev`` (or ``dg dev``) loads this module; ``dagster definitions validate -m pipelines.definitions``
checks it in CI.
"""

from __future__ import annotations

import dagster as dg

from assets import collection
from pipelines.resources import OllamaResource, WarehouseResource

ALL_ASSET_MODULES = [collection]


def _optional_modules() -> list:
    """Asset modules of later stages, loaded when present so the foundation works on its own."""
    mods = []
    for name in ("features", "routing", "evaluation"):
        try:
            mods.append(__import__(f"assets.{name}", fromlist=[name]))
        except ModuleNotFoundError as exc:
            if exc.name != f"assets.{name}":
                raise
    return mods


asset_modules = ALL_ASSET_MODULES + _optional_modules()
all_assets = dg.load_assets_from_modules(asset_modules)
all_checks = dg.load_asset_checks_from_modules(asset_modules)


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

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[collect_job],
    resources=resources(),
)
