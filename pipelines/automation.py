"""Keeping the pipeline current: a sensor for pool changes and a schedule for recalibration.

The sensor is the everyday "add a model" workflow: when a model appears (or is re-enabled) in the
registry it adds the model's dynamic partition and requests its trace collection (calibration rows first);
once that partition is materialized it requests a recalibration run, which recomputes the capability
profiles and lets the EXISTING router score the new model through its capability token (no retraining).
The schedule recalibrates from fresh calibration traces and retrains only when enough new traces exist.
"""


import json
import os
import time
from dataclasses import dataclass, field

import dagster as dg

from assets.common import MODELS_PARTITIONS
from assets.resources import WarehouseResource
from collectors.registry import ensure_registry
from pipelines.jobs import (
    COLLECT_JOB,
    RECALIBRATE_ASSETS,
    RECALIBRATE_JOB,
    RETRAIN_JOB,
    collect_job,
    recalibrate_job,
    retrain_job,
)

DEFAULT_CRON = "0 3 * * 1"  # weekly, Monday 03:00
RETRAIN_MIN_NEW_TRACES = int(os.environ.get("LROUTER_RETRAIN_MIN_NEW_TRACES", "2000"))


@dataclass
class PoolState:
    """What the sensor remembers between ticks (stored as JSON in its cursor)."""

    collecting: dict[str, float] = field(default_factory=dict)  # model -> time collection was requested
    inactive: list[str] = field(default_factory=list)  # models seen disabled (re-enabling re-collects)

    @classmethod
    def load(cls, cursor: str | None) -> "PoolState":
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        return json.dumps({"collecting": self.collecting, "inactive": sorted(self.inactive)}, sort_keys=True)


def _partition_materialized_since(instance: dg.DagsterInstance, model_id: str, since: float) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("outcome_traces"), asset_partitions=[model_id]), limit=1
    ).records
    return bool(records) and records[0].timestamp >= since


@dg.sensor(jobs=[collect_job, recalibrate_job], minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="New or re-enabled model -> collect its traces, then recalibrate (no retraining).")
def model_pool_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    state = PoolState.load(context.cursor)
    entries = ensure_registry(warehouse.registry())
    active = [e.model_id for e in entries if e.active]
    inactive = {e.model_id for e in entries if not e.active}
    partitions = set(context.instance.get_dynamic_partitions(MODELS_PARTITIONS.name))
    now = time.time()
    new = [m for m in active if m not in partitions]
    reenabled = [m for m in active if m in partitions and m in state.inactive]
    requests: list[dg.RunRequest] = []
    for m in new + reenabled:
        if m in state.collecting:
            continue
        requests.append(dg.RunRequest(run_key=f"collect:{m}:{now:.0f}", job_name=COLLECT_JOB, partition_key=m,
                                      tags={"lrouter/reason": "new model" if m in new else "re-enabled model"}))
        state.collecting[m] = now
    done = [m for m, t in state.collecting.items() if _partition_materialized_since(context.instance, m, t)]
    if done:
        requests.append(dg.RunRequest(run_key=f"recalibrate:{'+'.join(sorted(done))}:{now:.0f}",
                                      job_name=RECALIBRATE_JOB,
                                      tags={"lrouter/reason": f"traces collected for {', '.join(sorted(done))}"}))
        for m in done:
            state.collecting.pop(m)
    state.inactive = sorted(inactive)
    add = [dg.AddDynamicPartitionsRequest(MODELS_PARTITIONS.name, new)] if new else []
    if not requests and not add:
        return dg.SensorResult(skip_reason="model pool unchanged", cursor=state.dump())
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=add, cursor=state.dump())


def new_traces_since_training(warehouse: WarehouseResource) -> tuple[int, float | None]:
    """Trace rows collected after the latest router checkpoint (all rows when there is none)."""
    import polars as pl

    from router.training.artifacts import latest_checkpoint_time

    wh = warehouse.warehouse()
    trained_at = latest_checkpoint_time(wh)
    traces = wh.read_traces()
    if trained_at is None:
        return traces.height, None
    import datetime as dt

    cut = dt.datetime.fromtimestamp(trained_at, dt.UTC).isoformat(timespec="milliseconds")
    return traces.filter(pl.col("collected_at") > cut).height, trained_at


@dg.schedule(cron_schedule=os.environ.get("LROUTER_RECALIBRATE_CRON", DEFAULT_CRON), job=retrain_job,
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Recalibrate profiles weekly; retrain the router when enough new traces exist. A schedule "
                         "targets one job: recalibration runs retrain_job's recalibration assets only.")
def recalibration_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    n_new, _ = new_traces_since_training(warehouse)
    stamp = context.scheduled_execution_time.isoformat()
    if n_new >= RETRAIN_MIN_NEW_TRACES:
        return dg.RunRequest(run_key=f"retrain:{stamp}", job_name=RETRAIN_JOB,
                             tags={"lrouter/reason": f"{n_new} new traces since the last training"})
    return dg.RunRequest(run_key=f"recalibrate:{stamp}", job_name=RETRAIN_JOB, asset_selection=RECALIBRATE_ASSETS,
                         tags={"lrouter/reason": f"weekly recalibration ({n_new} new traces)"})
