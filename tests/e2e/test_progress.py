"""`lrouter run` says what a running stage is doing: step starts and ends, the steps' own messages (Dagster's
``context.log`` and the library's ``lrouter.progress`` logger, captured into the run's event log), as lines in
a log file or one updating line on a terminal."""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipelines.progress import MANAGED_LOGS, StageProgress
from warehouse.vocabulary import PROGRESS_LOGGER


@dg.asset
def slow_step(context) -> None:
    for epoch in range(3):
        logging.getLogger(PROGRESS_LOGGER).info("epoch %d/3", epoch + 1)
    context.log.info("fitted   the\nbaseline")


@pytest.fixture
def instance(tmp_path: Path):
    from dagster._core.instance.ref import InstanceRef

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False},
                                                           "python_logs": MANAGED_LOGS}))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as inst:
        yield inst


def _run(instance: dg.DagsterInstance, progress_kw: dict) -> list[str]:
    job = dg.Definitions(assets=[slow_step]).resolve_implicit_global_asset_job_def()
    lines: list[str] = []
    run_id = str(uuid.uuid4())
    with StageProgress("train", instance, run_id, lines.append, poll=0.05, **progress_kw):
        assert job.execute_in_process(instance=instance, run_id=run_id,
                                      run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
                                      ).success
    return lines


def test_a_log_file_gets_a_line_per_step_event_and_the_steps_messages(instance) -> None:
    lines = _run(instance, {"tty": False, "every": 0.0, "quiet": 0.0})
    assert lines[0].startswith("[train] ") and lines[0].endswith("slow_step: started")
    assert [line.split("slow_step: ")[1] for line in lines[1:5]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3",
                                                                     "fitted the baseline"]
    assert "slow_step: done in " in lines[-1] and len(lines) == 6


def test_messages_are_thinned_to_one_per_step_and_interval(instance) -> None:
    lines = _run(instance, {"tty": False, "every": 3600.0, "quiet": 0.0})
    assert [line.split("slow_step: ")[1] for line in lines][:2] == ["started", "epoch 1/3"]
    assert len(lines) == 3 and "done in" in lines[-1]  # started, one message, done


def test_quick_steps_stay_quiet_in_a_log_file(instance) -> None:
    assert _run(instance, {"tty": False, "quiet": 3600.0}) == []


def test_a_terminal_gets_one_updating_line_cleared_at_the_end(instance) -> None:
    screen = io.StringIO()
    lines = _run(instance, {"tty": True, "stream": screen})
    text = screen.getvalue()
    assert lines == [] and "\n" not in text
    assert "\r[train] " in text and "slow_step: epoch 3/3" in text and "slow_step: done in" in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""  # the last write blanks the line
