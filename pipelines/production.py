"""The production feedback loop: serve -> label -> recalibrate, run like the model-added loop.

``production_feedback_sensor`` watches the gateway's served_requests + served_feedback tables; labelled
rows it has not seen become trace rows in the ``outcome_traces`` contract, marked as production
(``run_id`` = ``source`` = "production", under ``warehouse/production_traces/``), and once at least
``LROUTER_RECALIBRATE_MIN_LABELS`` (default 50) new labels have arrived it requests ``recalibrate_job``.
"""

import json
import os

import dagster as dg
import polars as pl

from assets.resources import WarehouseResource
from pipelines.jobs import RECALIBRATE_JOB
from router.serving.gateway.served_log import production_traces, read_served, write_production_traces

MIN_LABELS = int(os.environ.get("LROUTER_RECALIBRATE_MIN_LABELS", "50"))


@dg.sensor(job_name=RECALIBRATE_JOB, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Labelled gateway requests -> production traces; enough new labels -> recalibrate.")
def production_feedback_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {"labelled_at": "", "pending": 0}
    wh = warehouse.warehouse()
    served = read_served(wh.root)
    new = served.filter(pl.col("label").is_not_null() & (pl.col("labelled_at") > state["labelled_at"]))
    if not new.height:
        return dg.SensorResult(skip_reason="no new labelled requests", cursor=json.dumps(state))
    new = new.sort("labelled_at")
    traces = production_traces(new)
    if traces.height:
        path = write_production_traces(wh.root, traces, new["labelled_at"][0])
        context.log.info(f"{traces.height} production trace row(s) -> {path.name}")
    state = {"labelled_at": new["labelled_at"][-1], "pending": state["pending"] + traces.height}
    if state["pending"] < MIN_LABELS:
        return dg.SensorResult(skip_reason=f"{state['pending']} new label(s); recalibrating at {MIN_LABELS}",
                               cursor=json.dumps(state))
    n, state["pending"] = state["pending"], 0
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"production-recalibrate:{state['labelled_at']}", job_name=RECALIBRATE_JOB,
        tags={"lrouter/reason": f"{n} production label(s) since the last recalibration"})], cursor=json.dumps(state))
