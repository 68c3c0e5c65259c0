"""Access keys (defect 6): bearer keys stored hashed in the home, per-key requests per minute and a USD budget per
UTC day, feedback and metrics behind a key, the key's id (never the key) in served_requests; the official
``openai`` client over real HTTP, against the gateway and against ``lrouter serve``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from router.serving.gateway.app import make_gateway_app, make_gateway_server
from router.serving.gateway.config import GatewayConfig, Upstream, UpstreamTable
from router.serving.gateway.served_log import read_served
from router.serving.keys import KeyError_, KeyStore, auth_required, open_gate
from router.serving.limits import ServeLimits, bound_port

QUESTION = "What word is written in the box?"
MSG = [{"role": "user", "content": QUESTION}]


@contextlib.contextmanager
def _gateway(router_service, sim, home: Path, required: bool = True) -> Iterator[str]:
    table = UpstreamTable({m: Upstream(m, "openai", sim.url + "/v1", price_in_per_mtok=1.0, price_out_per_mtok=2.0)
                           for m in router_service.data.model_ids})
    app = make_gateway_app(router_service, table, home=home, cfg=GatewayConfig(first_byte_timeout_s=10.0),
                           limits=ServeLimits(max_body_bytes=2_000_000), auth_required=required)
    server = make_gateway_server(app, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{bound_port(server)}"
    finally:
        server.should_exit = True
        thread.join(15)


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def test_binding_beyond_loopback_requires_keys(tmp_path):
    assert not auth_required("auto", "127.0.0.1") and not auth_required("auto", "::1")
    assert auth_required("auto", "0.0.0.0") and auth_required("auto", "10.1.2.3") and auth_required("auto", "")
    assert auth_required("required", "127.0.0.1")
    with pytest.raises(KeyError_, match="only allowed on loopback"):
        auth_required("off", "0.0.0.0")
    gate = open_gate(tmp_path, True)
    with pytest.raises(KeyError_, match="no active key"):
        gate.check_startable()
    KeyStore.in_home(tmp_path).add("ops")
    gate.check_startable()


def test_keys_are_stored_hashed_and_revocable(tmp_path):
    store = KeyStore.in_home(tmp_path)
    rec, key = store.add("team-a", rpm=10, budget_usd_per_day=1.5)
    text = (tmp_path / "keys.json").read_text()
    assert key not in text and key[3:] not in text and rec.digest in text
    assert (tmp_path / "keys.json").stat().st_mode & 0o077 == 0  # owner only
    assert store.lookup(key) == rec and store.lookup(key + "x") is None
    with pytest.raises(KeyError_, match="exists"):
        store.add("team-a")
    store.revoke("team-a")
    assert store.lookup(key) is None


def test_gateway_requires_a_key_and_records_its_id(router_service, sim, tmp_path):
    store = KeyStore.in_home(tmp_path)
    rec, key = store.add("team-a")
    with _gateway(router_service, sim, tmp_path) as url:
        with pytest.raises(openai.AuthenticationError) as none:
            _client(url, "unused").chat.completions.create(model="lrouter", messages=MSG)
        assert none.value.body["code"] == "invalid_api_key"
        r = httpx.post(url + "/v1/chat/completions", json={"model": "lrouter", "messages": MSG})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        out = _client(url, key).chat.completions.create(model="lrouter", messages=MSG)
        assert out.choices[0].message.content
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
        # feedback recalibrates the router: only key holders may write it
        fb = {"request_id": out.id, "label": 1.0}
        assert httpx.post(url + "/v1/feedback", json=fb).status_code == 401
        ok = httpx.post(url + "/v1/feedback", json=fb, headers={"authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
        assert httpx.get(url + "/metrics").status_code == 200  # loopback may scrape without a key
        assert httpx.get(url + "/health").status_code == 200
        store.revoke(rec.id)  # a running gateway stops accepting it at once
        with pytest.raises(openai.AuthenticationError):
            _client(url, key).chat.completions.create(model="lrouter", messages=MSG)
    rows = read_served(tmp_path / "warehouse")
    assert rows.height == 4
    assert rows.filter(rows["status"] == "ok")["key_id"].to_list() == [rec.id]
    assert rows.filter(rows["status"] == "unauthorized").height == 3
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert key.encode() not in f.read_bytes(), f


def test_requests_per_minute_and_daily_budget(router_service, sim, tmp_path):
    store = KeyStore.in_home(tmp_path)
    _, limited = store.add("limited", rpm=2)
    _, budgeted = store.add("budgeted", budget_usd_per_day=1e-9)
    with _gateway(router_service, sim, tmp_path) as url:
        client = _client(url, limited)
        for _ in range(2):
            client.chat.completions.create(model="lrouter", messages=MSG)
        with pytest.raises(openai.RateLimitError) as rl:
            client.chat.completions.create(model="lrouter", messages=MSG)
        assert rl.value.body["code"] == "rate_limit_exceeded"
        assert 1 <= int(rl.value.response.headers["retry-after"]) <= 60
        b = _client(url, budgeted)
        b.chat.completions.create(model="lrouter", messages=MSG)  # spends more than its budget
        with pytest.raises(openai.RateLimitError) as over:
            b.chat.completions.create(model="lrouter", messages=MSG)
        assert over.value.body["code"] == "budget_exceeded"
    # the budget holds across a restart: the spend is read back from served_requests
    with _gateway(router_service, sim, tmp_path) as url:
        with pytest.raises(openai.RateLimitError):
            _client(url, budgeted).chat.completions.create(model="lrouter", messages=MSG)


def test_an_open_loopback_gateway_still_attributes_a_valid_key(router_service, sim, tmp_path):
    rec, key = KeyStore.in_home(tmp_path).add("attributed")
    with _gateway(router_service, sim, tmp_path, required=False) as url:
        _client(url, "anything").chat.completions.create(model="lrouter", messages=MSG)
        _client(url, key).chat.completions.create(model="lrouter", messages=MSG)
    rows = read_served(tmp_path / "warehouse")
    assert rows.height == 2 and set(rows["key_id"].to_list()) == {rec.id, None}


def test_serve_requires_a_key_when_asked(router_service, tmp_path):
    store = KeyStore.in_home(tmp_path)
    _, key = store.add("router-client", rpm=1)
    gate = open_gate(tmp_path, True)
    from router.serving.http import make_server

    server = make_server(router_service, port=0, access=gate)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        url = f"http://127.0.0.1:{bound_port(server)}"
        r = httpx.post(url + "/route", json={"question": QUESTION}, timeout=30)
        assert r.status_code == 401 and "error" in r.json()
        auth = {"authorization": f"Bearer {key}"}
        r = httpx.post(url + "/route", json={"question": QUESTION}, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["chosen_model"]
        r = httpx.post(url + "/route", json={"question": QUESTION}, headers=auth, timeout=30)
        assert r.status_code == 429 and r.headers["retry-after"] and "per minute" in r.json()["error"]
        assert httpx.get(url + "/health", timeout=30).status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)
