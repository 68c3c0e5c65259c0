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
