"""The Dagster code location: assets, checks, resources, jobs, sensors and schedules.

``dagster dev`` (or ``dg dev``) loads this module; ``dagster definitions validate -m pipelines.definitions``
checks it in CI.
"""

import dagster as dg

from assets import collection, evaluation, features, probes, routing
from assets.io_manager import WarehouseIOManager
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
    return dg.materialize([*all_assets, *all_checks], selection=dg.AssetSelection.assets(*names), **kwargs)


def resources() -> dict:
    warehouse = WarehouseResource()  # LROUTER_HOME / LROUTER_REGISTRY read from the environment
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),  # asset tables <-> Parquet + DuckDB views
        "ollama": OllamaResource(),  # OLLAMA_HOST / OLLAMA_API_KEY read from the environment at call time
    }


defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=ALL_JOBS,
    sensors=[model_pool_sensor, dead_run_sensor, production_feedback_sensor],
    schedules=[recalibration_schedule],
    resources=resources(),
    executor=executor(),  # None (Dagster's default) locally; dagster-celery with LROUTER_DEPLOYMENT=cluster
)
