"""`lrouter run --preset P` gives every sized asset of a stage the preset: the run config each stage's job gets
is valid for that job (a renamed op or field would fail here), and quick sizes train's hybrid section too."""

from __future__ import annotations

import dagster as dg
import pytest

from pipelines.definitions import build_defs
from pipelines.runner import STAGE_JOBS, RunOptions, _run_config


@pytest.mark.parametrize("preset", ["quick", "demo", "paper"])
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_preset_run_config_is_valid_for_the_stage_job(stage, preset, tmp_path):
    job = build_defs(tmp_path).resolve_job_def(STAGE_JOBS[stage])
    config = _run_config(stage, RunOptions(preset=preset))
    assert dg.validate_run_config(job, config)
    ops = config["ops"]
    if stage == "evaluate":  # the fits and the report: one preset, so the report finds the fits by key
        assert ops["evaluation_fits"] == ops["evaluation_report"] == {"config": {"preset": preset}}
    else:
        assert ops["deployed_router"] == {"config": {"preset": preset}}
        assert ("hybrid_routing" in ops) == (preset == "quick")
        if preset == "quick":
            assert ops["hybrid_routing"]["config"]["seeds"] == [0]
