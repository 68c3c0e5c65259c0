"""The code location loads and validates the way `dagster dev` / CI load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(ROOT), "LROUTER_HOME": str(tmp_path)}
    exe = Path(sys.executable).with_name("dagster")
    proc = subprocess.run([str(exe), "definitions", "validate", "-m", "pipelines.definitions"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "passed validation" in (proc.stdout + proc.stderr)


def test_definitions_have_jobs_sensor_schedule_and_pools():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    assert {"setup_job", "collect_traces_job", "features_job", "train_job", "evaluate_job", "recalibrate_job",
            "retrain_job"} <= {j.name for j in repo.get_all_jobs()}
    assert sorted(s.name for s in repo.sensor_defs) == ["dead_run_sensor", "model_pool_sensor",
                                                        "production_feedback_sensor"]
    assert [s.name for s in repo.schedule_defs] == ["recalibration_schedule"]
    traces = next(a for a in defs.assets if a.key.to_user_string() == "outcome_traces")
    assert "model_calls" in {spec.pool for spec in [traces.get_op_def_for_asset_key(traces.key)]
                             if hasattr(spec, "pool")}


def test_sensors_target_every_job_they_request():
    """The daemon refuses a RunRequest for a job the sensor does not target (model_pool_sensor asks for
    collection, then recalibration); a schedule targets one job, so recalibration is a subset of retrain_job."""
    from pipelines.automation import model_pool_sensor, recalibration_schedule
    from pipelines.jobs import COLLECT_JOB, RECALIBRATE_JOB, RETRAIN_JOB
    from pipelines.production import production_feedback_sensor

    assert {t.job_name for t in model_pool_sensor.targets} == {COLLECT_JOB, RECALIBRATE_JOB}
    assert {t.job_name for t in production_feedback_sensor.targets} == {RECALIBRATE_JOB}
    assert recalibration_schedule.job_name == RETRAIN_JOB
