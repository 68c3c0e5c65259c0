"""The Dagster code location: assets, checks, resources, jobs, sensors and schedules.

``dagster dev`` (or ``dg dev``) loads this module; ``dagster definitions validate -m pipelines.definitions``
checks it in CI.
"""

from pathlib import Path

import dagster as dg

from assets import collection, evaluation, features, probes, routing
from assets.io_manager import FeatureSetIOManager, OpsIOManager, WarehouseIOManager
from assets.resources import OllamaResource, WarehouseResource
from pipelines.automation import model_pool_sensor, recalibration_schedule
from pipelines.deployment import executor
from pipelines.jobs import ALL_JOBS
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
    selection = dg.AssetSelection.assets(*names).required_multi_asset_neighbors()  # a multi-asset runs whole
    return dg.materialize([*all_assets, *all_checks], selection=selection, **kwargs)


def resources(home: Path | None = None) -> dict:
    """The resources of one deployment: ``home`` given (the CLI's ``--home``), the warehouse and registry of
    that home; else the ones the environment names when a step runs (LROUTER_HOME, LROUTER_WAREHOUSE,
    LROUTER_REGISTRY: the code location and Celery workers of a deployment set them)."""
    warehouse = WarehouseResource(home=str(home)) if home is not None else WarehouseResource()
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),  # asset tables <-> Parquet + DuckDB views
        "feature_io_manager": FeatureSetIOManager(warehouse=warehouse),  # FeatureSet <-> safetensors + table
        "ops_io_manager": OpsIOManager(warehouse=warehouse),  # the evaluation fits' plans and summaries
        "ollama": OllamaResource(),  # a model's endpoint / OLLAMA_HOST; its key from the variable it names
    }


def build_defs(home: Path | None = None) -> dg.Definitions:
    """The code location's definitions, with :func:`resources` of ``home``."""
    return dg.Definitions(
        assets=all_assets,
        asset_checks=all_checks,
        jobs=ALL_JOBS,
        sensors=[model_pool_sensor, dead_run_sensor, production_feedback_sensor],
        schedules=[recalibration_schedule],
        resources=resources(home),
        executor=executor(),  # None (Dagster's default) locally; dagster-celery with LROUTER_DEPLOYMENT=cluster
    )


defs = build_defs()
