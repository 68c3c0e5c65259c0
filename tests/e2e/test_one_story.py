"""One deployment decision, named alike everywhere: the report, RouterService (/health), `lrouter route`, the
gateway's /health and headers, and current_pool_routing name the deployed router and its lambda after the
decision, and again after a model is added and the pool recalibrated (a baseline fitted on the old pool then
hands serving to LatentRouter, and every surface says so)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from collectors.simulator.specs import HELD_OUT
from pipelines import cli
from pipelines.definitions import materialize
from pipelines.jobs import RECALIBRATE_JOB
from router.evaluation.deploy import read_deployment
from router.serving.service import load_router
from router.training.artifacts import latest_checkpoint_dir
from warehouse.store import Warehouse

LAM = 0.2
CANDIDATES = ["Strongest", "GroupBest", "KNNRouter"]


@pytest.fixture(scope="module")
def decided(tiny_pipeline):
    home, instance, defs = tiny_pipeline
    deploy = {"preset": "quick", "deploy_candidates": CANDIDATES, "deploy_lambda": LAM}
    evaluation = {"preset": "quick", "seeds": [0], "experiments": ["main_table"]}
    r = materialize(["deployed_router", "current_pool_routing", "evaluation_report"], instance=instance,
                    resources=defs.resources,
                    run_config={"ops": {"deployed_router": {"config": deploy},
                                        "evaluation_report": {"config": evaluation}}})
    assert r.success
    return home, instance, defs


def _lrouter(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout)


def _latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    rec = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


def _gateway_answer(home: Path) -> tuple[dict, dict[str, str]]:
    """`lrouter gateway` as a user starts it: (/health, the headers of one routed chat request)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--home", str(home), "gateway", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, line = time.monotonic() + 240, ""
        while "gateway on http://" not in line:
            assert proc.poll() is None and time.monotonic() < deadline, line
            line = proc.stdout.readline()
        url = re.search(r"(http://[\d.]+:\d+)/v1", line).group(1)
        health = httpx.get(f"{url}/health", timeout=30).json()
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                          json={"model": "lrouter", "messages": [{"role": "user", "content": "What is 2 + 3?"}]})
        assert chat.status_code == 200, chat.text
        return health, dict(chat.headers)
    finally:
        proc.terminate()
        proc.wait(30)


def test_every_surface_names_the_one_deployment_decision(decided):
    home, instance, _ = decided
    wh = Warehouse(home / "warehouse")
    doc = read_deployment(latest_checkpoint_dir(wh))
    name, lam = doc["deployed"], doc["lambda"]
    assert lam == LAM and name in ["LatentRouter", *CANDIDATES] and doc["reason"]
    # the UI's asset and the report
    assert _latest_metadata(instance, "deployed_router")["deployed_router"] == name
    report = Path(_latest_metadata(instance, "evaluation_report")["report"]).read_text()
    assert f"**Deployed: {name} at λ = {lam:g}**" in report
    # RouterService, hence `lrouter serve`'s /health and the gateway
    service = load_router(home)
    assert service.deployment["serving"] == name and service.deployment["lambda"] == lam
    # `lrouter route`: the router, and the deployment's lambda by default
    res = _lrouter(home, "route", "--image", str(next(wh.images_dir.glob("*.png"))), "--question", "What?")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith(f"router: {name} (deployed: {name}), lambda {lam:g}, ")
    # current_pool_routing's decisions
    assert _latest_metadata(instance, "current_pool_routing")["deployed_router"] == name
    assert set(wh.read_table("pool_decisions")["router"]) == {f"{name} (deployed)"}
    # the gateway: /health and the headers of a routed request
    health, headers = _gateway_answer(home)
    assert health["router"] == name and health["lambda"] == lam and health["deployment"]["deployed"] == name
    assert headers["x-lrouter-router"] == name and float(headers["x-lrouter-lambda"]) == lam
    assert headers["x-lrouter-simulated"] == "true"


def test_after_a_model_is_added_every_surface_says_who_serves(decided, capsys):
    home, instance, defs = decided
    wh = Warehouse(home / "warehouse")
    name = read_deployment(latest_checkpoint_dir(wh))["deployed"]
    assert cli.main(["--home", str(home), "models", "add", HELD_OUT.name, "--backend", "sim", "--price-in",
                     str(HELD_OUT.price_in_per_mtok), "--price-out", str(HELD_OUT.price_out_per_mtok)]) == 0
    instance.add_dynamic_partitions("models", [HELD_OUT.name])
    assert materialize(["outcome_traces"], instance=instance, resources=defs.resources,
                       partition_key=HELD_OUT.name).success
    assert defs.resolve_job_def(RECALIBRATE_JOB).execute_in_process(instance=instance).success
    # a baseline scores only the pool it was fitted on: LatentRouter serves the new pool until the next
    # decision, and every surface says both names
    serving = "LatentRouter"
    service = load_router(home)
    assert service.deployment["deployed"] == name and service.deployment["serving"] == serving
    assert HELD_OUT.name in service.data.model_ids
    if name != serving:
        assert "another model pool" in service.deployment["note"]
    assert _latest_metadata(instance, "current_pool_routing")["deployed_router"] == serving
    assert set(wh.read_table("pool_decisions")["router"]) == {f"{serving} (deployed)"}
    res = _lrouter(home, "route", "--image", str(next(wh.images_dir.glob("*.png"))), "--question", "What?",
                   "--format", "json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["router"], out["deployed"]) == (serving, name)
    assert HELD_OUT.name in [r["model_id"] for r in out["ranked"]]
