"""A SIGKILLed collection run must not wedge the `model_calls` pool (limit 1), and its rows must resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from warehouse.store import Warehouse

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys
    import dagster as dg
    from assets.io_manager import WarehouseIOManager
    from assets.resources import OllamaResource, WarehouseResource
    from pipelines.definitions import materialize

    home, model, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
    wr = WarehouseResource(home=home)
    res = {"warehouse": wr, "io_manager": WarehouseIOManager(warehouse=wr),
           "ollama": OllamaResource(sim_time_scale=scale, concurrency=2)}
    instance = dg.DagsterInstance.get()
    if model == "-":
        cfg = {"ops": {"benchmark_queries": {"config": {"n_queries": 600, "seed": 3}}}}
        assert materialize(["benchmark_queries", "candidate_models"], instance=instance, resources=res,
                           run_config=cfg).success
    else:
        assert materialize(["outcome_traces"], instance=instance, resources=res, partition_key=model).success
""")


@pytest.fixture()
def instance_home(tmp_path: Path) -> Path:
    """A persistent SQLite instance with the project's pool limits (model_calls = 1), as `make dev` has."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    return dagster_home


def _child(args: list[str], dagster_home: Path, home: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LROUTER_HOME": str(home),
           "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.timeout(240)
def test_sigkilled_collection_does_not_block_the_next_run(instance_home: Path, tmp_path: Path, monkeypatch):
    from pipelines.recovery import reap_dead_runs

    home = tmp_path / "home"
    setup = _child(["-", "0"], instance_home, home)
    assert setup.wait(120) == 0, setup.stderr.read().decode()[-2000:]
    model = "simvl-nano:1b"
    staging = Warehouse(home / "warehouse").traces_dir / "_staging"
    # ~60 ms per call (simulated latency x 0.05), 2 at a time: 600 queries take ~20 s; kill after a flush
    child = _child([model, "0.05"], instance_home, home)
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
    again = _child([model, "0"], instance_home, home)
    assert again.wait(120) == 0, again.stderr.read().decode()[-2000:]
    traces = Warehouse(home / "warehouse").read_trace_partition(model)
    assert traces.height == 600 and traces["query_id"].n_unique() == 600
    assert traces.filter(pl.col("status") == "ok").height == 600
    with dg.DagsterInstance.get() as instance:
        killed = instance.get_run_by_id(held[0])
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("model_calls").claimed_slots
        assert reap_dead_runs(instance) == []  # idempotent; finished and live runs are left alone
