"""served_requests: exactly one row per request (answered, refused or failed), flushed on shutdown; feedback
attaches a label; the sensor turns labels into production traces; calibration meets a budget."""

from __future__ import annotations

import json

import dagster as dg
import httpx
import openai
import polars as pl

from collectors.simulator.faults import FaultConfig
from router.serving.gateway.calibrate import Calibrator, calibrate_policy
from router.serving.gateway.policies import POLICY_FILE, PolicyBook, save_policy
from router.serving.gateway.served_log import read_production_traces, read_served

MSG = [{"role": "user", "content": "What is 2 + 2?"}]


def test_one_row_per_request_and_feedback_attaches(gateway_factory, tmp_path):
    ids, n = [], 0
    with gateway_factory() as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        for i in range(5):
            ids.append(client.chat.completions.create(model="lrouter", messages=[
                {"role": "user", "content": f"Question {i}?"}]).id)
            n += 1
        ids.append(next(iter(client.chat.completions.create(model="cheap", messages=MSG, stream=True))).id)
        n += 1
        ids.append(client.chat.completions.create(model="lrouter", messages=MSG,
                                                  extra_body={"task_group": "ocr", "dataset": "textvqa"}).id)
        n += 1
        for bad in ({"model": "nope", "messages": MSG}, {"model": "lrouter", "messages": []}):
            r = httpx.post(gw.url + "/v1/chat/completions", json=bad)
            ids.append(r.headers["x-lrouter-request-id"])
            n += 1
        gw.sim.set_faults(FaultConfig(down_models={"simvl-nano:1b"}))
        r = httpx.post(gw.url + "/v1/chat/completions", json={"model": "simvl-nano:1b", "messages": MSG})
        assert r.status_code == 502
        ids.append(r.headers["x-lrouter-request-id"])
        n += 1
        gw.sim.set_faults(None)
        fb = httpx.post(gw.url + "/v1/feedback", json={"request_id": ids[0], "label": 0.8})
        assert fb.status_code == 200 and fb.json()["label"] == 0.8
        assert httpx.post(gw.url + "/v1/feedback", json={"request_id": ids[1], "label": 1}).status_code == 200
        bad = httpx.post(gw.url + "/v1/feedback", json={"request_id": "chatcmpl-unknown", "label": 0.5})
        assert bad.status_code == 404 and bad.json()["error"]["param"] == "request_id"
        bad = httpx.post(gw.url + "/v1/feedback", json={"request_id": ids[0], "label": 1.5})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "label"
        assert "lrouter_gateway_requests_total" in httpx.get(gw.url + "/metrics").text
        assert httpx.get(gw.url + "/health").json()["status"] == "ok"
    rows = read_served(gw.log_root)  # the server stopped: its lifespan flushed every queued row
    assert rows.height == n and sorted(rows["request_id"].to_list()) == sorted(ids)
    by_id = {r["request_id"]: r for r in rows.iter_rows(named=True)}
    ok = by_id[ids[0]]
    assert ok["status"] == "ok" and ok["chosen_model"] and ok["realised_cost_usd"] > 0 and ok["label"] == 0.8
    assert ok["prompt"] is None  # prompts only when the operator opts in
    assert by_id[ids[5]]["stream"] and by_id[ids[5]]["status"] in ("ok", "client_disconnected")
    assert (by_id[ids[6]]["task_group"], by_id[ids[6]]["dataset"]) == ("ocr", "textvqa")  # for recalibration
    assert ok["task_group"] is None
    assert by_id[ids[7]]["status"] == "invalid" and by_id[ids[7]]["http_status"] == 404
    failed = by_id[ids[9]]
    assert failed["status"] == "upstream_error" and json.loads(failed["attempts"])[0]["model"] == "simvl-nano:1b"
    assert rows.filter(pl.col("label").is_not_null()).height == 2


def test_sensor_turns_labels_into_production_traces(gateway_factory, tmp_path, monkeypatch):
    import pipelines.production as production
    from assets.resources import WarehouseResource

    with gateway_factory() as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
        rid = client.chat.completions.create(model="lrouter", messages=MSG).id
        assert httpx.post(gw.url + "/v1/feedback", json={"request_id": rid, "label": 1.0}).status_code == 200
    monkeypatch.setattr(production, "MIN_LABELS", 1)
    instance = dg.DagsterInstance.ephemeral()
    resource = WarehouseResource(home=str(tmp_path))
    with dg.build_sensor_context(instance=instance, resources={"warehouse": resource}) as ctx:
        result = production.production_feedback_sensor(ctx)
    assert [r.job_name for r in result.run_requests] == ["recalibrate_job"]
    traces = read_production_traces(tmp_path / "warehouse")
    assert traces.height == 1 and traces["run_id"][0] == "production" and traces["source"][0] == "production"
    assert traces["quality"][0] == 1.0 and traces["query_id"][0] == f"production:{rid}"
    with dg.build_sensor_context(instance=instance, resources={"warehouse": resource}, cursor=result.cursor) as ctx:
        again = production.production_feedback_sensor(ctx)
    assert not again.run_requests and read_production_traces(tmp_path / "warehouse").height == 1


def test_calibration_meets_a_budget_and_the_gateway_serves_it(router_service, gateway_factory, tmp_path):
    cal = Calibrator(router_service)
    free = cal.at(0.0).expected_cost_usd
    target = free / 3
    policy = calibrate_policy(router_service, "budget-test", target_cost_usd=target)
    assert policy.calibration["expected_cost_usd"] <= target and policy.lam > 0
    assert cal.at(max(policy.lam - 1e-3, 0.0)).expected_cost_usd >= policy.calibration["expected_cost_usd"]
    share = calibrate_policy(router_service, "strong-test", target_strong_share=0.0)
    assert share.calibration["strong_share"] == 0.0
    save_policy(tmp_path / POLICY_FILE, policy)
    assert PolicyBook(tmp_path / POLICY_FILE).policies()["budget-test"].lam == policy.lam
    with gateway_factory(home=tmp_path) as gw:
        raw = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused").chat.completions.with_raw_response.create(
            model="budget-test", messages=MSG)
        assert raw.headers["x-lrouter-policy"] == "budget-test"
        assert float(raw.headers["x-lrouter-lambda"]) == float(f"{policy.lam:g}")
        assert "budget-test" in {m.id for m in openai.OpenAI(base_url=gw.url + "/v1", api_key="u").models.list()}
