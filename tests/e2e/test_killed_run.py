"""A SIGKILLed collection run must not wedge the `model_calls` pool (limit 1), and its rows must resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from warehouse.store import Warehouse

pytestmark = pytest.mark.slow  # subprocess runs / the whole graph: `pytest -m 'not slow'` skips them

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture()
def instance_home(tmp_path: Path) -> Path:
    """A persistent SQLite instance with the project's pool limits (model_calls = 1), as `make dev` has."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    return dagster_home


def _lrouter(args: list[str], dagster_home: Path, home: Path, time_scale: float = 0.0) -> subprocess.Popen:
    """`lrouter run ...` as a user starts it, against the persistent instance."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LROUTER_HOME": str(home), "PYTHONPATH": str(ROOT),
           "OMP_WAIT_POLICY": "PASSIVE", "LROUTER_SIM_TIME_SCALE": str(time_scale)}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.timeout(240)
def test_sigkilled_collection_does_not_block_the_next_run(instance_home: Path, tmp_path: Path, monkeypatch):
    from pipelines.recovery import reap_dead_runs

    home = tmp_path / "home"
    setup = _lrouter(["setup", "--queries", "600", "--seed", "3"], instance_home, home)
    assert setup.wait(120) == 0, setup.stderr.read().decode()[-2000:]
    model = "simvl-nano:1b"
    staging = Warehouse(home / "warehouse").traces_dir / "_staging"
    # ~250 ms per call (simulated latency x 0.2), 8 at a time: 600 queries take ~20 s; kill after a flush
    child = _lrouter(["collect", "--model", model], instance_home, home, time_scale=0.2)
    deadline = time.time() + 90
    while time.time() < deadline and not list(staging.glob("*/part-*.parquet")):
        time.sleep(0.2)
    assert list(staging.glob("*/part-*.parquet")), "the collection never flushed a batch"
    child.send_signal(signal.SIGKILL)
    child.wait(10)

    monkeypatch.setenv("DAGSTER_HOME", str(instance_home))
    with dg.DagsterInstance.get() as instance:
        held = [s.run_id for s in instance.event_log_storage.get_concurrency_info("model_calls").claimed_slots]
    assert held, "the killed run should still hold the model_calls slot (the failure being fixed)"

    # the next run, started as a user would, completes without any manual slot freeing, and resumes
    again = _lrouter(["collect", "--model", model], instance_home, home)
    assert again.wait(120) == 0, again.stderr.read().decode()[-2000:]
    traces = Warehouse(home / "warehouse").read_trace_partition(model)
    assert traces.height == 600 and traces["query_id"].n_unique() == 600
    assert traces.filter(pl.col("status") == "ok").height == 600
    with dg.DagsterInstance.get() as instance:
        killed = instance.get_run_by_id(held[0])
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("model_calls").claimed_slots
        assert reap_dead_runs(instance) == []  # idempotent; finished and live runs are left alone


@pytest.mark.timeout(240)
def test_sigterm_stops_collection_promptly_and_keeps_its_rows(instance_home: Path, tmp_path: Path):
    home = tmp_path / "home"
    setup = _lrouter(["setup", "--queries", "600", "--seed", "3"], instance_home, home)
    assert setup.wait(120) == 0, setup.stderr.read().decode()[-2000:]
    model = "simvl-lite:3b"
    wh = Warehouse(home / "warehouse")
    staging = wh.traces_dir / "_staging"
    child = _lrouter(["collect", "--model", model], instance_home, home, time_scale=0.2)
    deadline = time.time() + 90
    while time.time() < deadline and not list(staging.glob("*/part-*.parquet")):
        time.sleep(0.2)
    t0 = time.monotonic()
    child.send_signal(signal.SIGTERM)
    child.wait(60)
    stopped_in = time.monotonic() - t0
    # the old behaviour: the signal was swallowed as one failed call and the whole model was collected (~20 s)
    assert stopped_in < 12, f"collection took {stopped_in:.1f}s to stop after SIGTERM"
    assert "stopped by a signal" in child.stderr.read().decode()
    staged = pl.concat([pl.read_parquet(f) for f in staging.glob("*/part-*.parquet")])
    assert 0 < staged.height < 600 and set(staged["status"]) == {"ok"}  # no bogus error row for the signal
    assert wh.read_trace_partition(model).height == 0  # the partition is only written when complete
    again = _lrouter(["collect", "--model", model], instance_home, home)
    assert again.wait(120) == 0, again.stderr.read().decode()[-2000:]
    traces = wh.read_trace_partition(model)
    assert traces.height == 600 and traces["query_id"].n_unique() == 600
    assert set(staged["query_id"].to_list()) <= set(traces["query_id"].to_list())
