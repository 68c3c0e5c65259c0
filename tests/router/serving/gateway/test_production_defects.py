"""The gateway in front of real users: each numbered defect of the production probe has a test here, with the
official ``openai`` client over real HTTP on loopback (simulator or a misbehaving upstream behind it).

1 pool changes while requests are in flight; 2 malformed usage; 3 upstream auth errors and leaked keys;
4 oversized upstream answers; 5 overload; 7 bounded echoes, caches and the rows-written counter.
(6, access control, is in test_access.py.)
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import polars as pl
import pytest

from router.serving.gateway.config import GatewayConfig, Upstream, UpstreamTable, upstreams_from_models
from router.serving.gateway.served_log import read_served
from router.serving.limits import ServeLimits
from router.serving.service import load_router
from tests.router.serving.gateway.conftest import run_gateway
from tests.router.serving.gateway.hostile import LEAKED_KEY, HostileUpstream

QUESTION = "What word is written in the box?"
MSG = [{"role": "user", "content": QUESTION}]


def _client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=60, **kw)


def _hostile_table(router_service, hostile: HostileUpstream) -> UpstreamTable:
    return UpstreamTable({m: Upstream(m, "openai", hostile.url, price_in_per_mtok=1.0, price_out_per_mtok=2.0)
                          for m in router_service.data.model_ids})


def _rows(root: Path) -> pl.DataFrame:
    return read_served(root)


def _all_text_under(root: Path) -> str:
    out = []
    for f in root.rglob("*"):
        if f.is_file():
            out.append(f.read_bytes().decode("latin-1"))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ 1. pool changes


def _set_active(home: Path, model: str, active: bool) -> None:
    from warehouse.store import Warehouse

    wh = Warehouse(home / "warehouse")
    models = wh.read_table("models")
    wh.write_table("models", models.with_columns(
        pl.when(pl.col("model_id") == model).then(pl.lit(active)).otherwise(pl.col("active")).alias("active")))


def test_disabling_models_under_concurrent_load_fails_no_request(trained_home, sim, tmp_path):
    """32 clients send model=lrouter (no pool) while a model is disabled and re-enabled: every request is
    answered 200 by a model active when its batch routed; a plain proxy to the disabled model sees the disable
    within one refresh interval, without any routed request in between."""
    home = tmp_path / "home"
    shutil.copytree(trained_home, home, ignore=shutil.ignore_patterns("*.duckdb*"))
    service = load_router(home)
    service.warm_up()
    victim = service.data.model_ids[0]
    cfg = GatewayConfig(first_byte_timeout_s=10.0, refresh_interval_s=0.2)
    stop = threading.Event()
    statuses: list[int] = []
    errors: list[str] = []
    with run_gateway(service, sim, home, tmp_path / "log", cfg=cfg) as gw:
        def client_loop(i: int) -> None:
            client = _client(gw.url)
            n = 0
            while not stop.is_set() or n < 2:
                n += 1
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="lrouter", messages=[{"role": "user", "content": f"{QUESTION} ({i}.{n})"}])
                    statuses.append(raw.status_code)
                except openai.APIStatusError as exc:
                    statuses.append(exc.status_code)
                    errors.append(f"{exc.status_code}: {exc.body}")

        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(client_loop, i) for i in range(32)]
            for active in (False, True, False, True):
                time.sleep(0.4)
                _set_active(home, victim, active)
            time.sleep(0.4)
            stop.set()
            for f in futures:
                f.result()
        assert not errors, errors[:5]
        assert len(statuses) >= 64 and set(statuses) == {200}

        # plain proxy: disabled, then seen by the periodic refresh (no routed request meanwhile)
        _set_active(home, victim, False)
        t_disable = time.monotonic()
        deadline = t_disable + 30
        while gw.state.refreshed_at <= t_disable + 0.05:
            assert time.monotonic() < deadline, "the gateway never re-read the models table"
            time.sleep(0.05)
        with pytest.raises(openai.NotFoundError):
            _client(gw.url).chat.completions.create(model=victim, messages=MSG)
        # a named pool holding only the disabled model: refused up front, a clear 4xx naming the field
        with pytest.raises(openai.BadRequestError) as named:
            _client(gw.url).chat.completions.create(model="lrouter", messages=MSG, extra_body={"models": [victim]})
        assert named.value.body["param"] == "models"
    rows = _rows(tmp_path / "log")
    assert rows.height == len(statuses) + 2


# ------------------------------------------------------------------------------------------ 2. malformed usage


def test_malformed_usage_is_recorded_as_unknown_not_a_crash(router_service, sim, tmp_path):
    with HostileUpstream() as hostile, run_gateway(router_service, sim, tmp_path, tmp_path / "log",
                                                   upstreams=_hostile_table(router_service, hostile)) as gw:
        for m in router_service.data.model_ids:
            hostile.modes[m] = "nan_usage"
        client = _client(gw.url)
        out = client.chat.completions.create(model="lrouter", messages=MSG)
        assert out.choices[0].message.content.startswith("Answer from")
        chunks = list(client.chat.completions.create(model="lrouter", messages=MSG, stream=True,
                                                     stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("Answer from")
        metrics = httpx.get(gw.url + "/metrics").text
        assert 'lrouter_gateway_requests_total{policy="lrouter",status="ok"} 2.0' in metrics
    rows = _rows(tmp_path / "log")
    assert rows.height == 2 and rows["status"].to_list() == ["ok", "ok"]
    assert rows["prompt_tokens"].null_count() == 2 and rows["completion_tokens"].null_count() == 2
    assert rows["realised_cost_usd"].null_count() == 2


# ------------------------------------------------------------------------- 3. upstream auth errors, leaked keys


def test_upstream_401_is_a_502_with_fallback_and_its_text_is_scrubbed(router_service, sim, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("HOSTILE_UPSTREAM_KEY", "sk-gateway-own-secret-0123456789")
    with HostileUpstream() as hostile:
        table = UpstreamTable({m: Upstream(m, "openai", hostile.url, api_key_env="HOSTILE_UPSTREAM_KEY")
                               for m in router_service.data.model_ids})
        with run_gateway(router_service, sim, tmp_path, tmp_path / "log", upstreams=table) as gw:
            pool = list(router_service.data.model_ids[:2])
            client = _client(gw.url)
            first = client.chat.completions.create(model="quality", messages=MSG, extra_body={"models": pool}).model
            other = next(m for m in pool if m != first)
            hostile.modes[first] = "auth"
            raw = client.chat.completions.with_raw_response.create(model="quality", messages=MSG,
                                                                   extra_body={"models": pool})
            assert raw.parse().model == other and raw.headers["x-lrouter-fallbacks"] == "1"
            assert "(upstream_auth)" in raw.headers["x-lrouter-attempts"]
            with pytest.raises(openai.APIStatusError) as err:  # a plain proxy: nothing to fall back to
                client.chat.completions.create(model=first, messages=MSG)
            assert err.value.status_code == 502 and not isinstance(err.value, openai.AuthenticationError)
            assert first in err.value.body["message"]
            leaked = json.dumps(err.value.body)
            assert LEAKED_KEY not in leaked and "sk-gateway-own-secret" not in leaked and "sk-proj" not in leaked
            with pytest.raises(openai.APIStatusError) as streamed:
                list(client.chat.completions.create(model=first, messages=MSG, stream=True))
            assert streamed.value.status_code == 502
    rows = _rows(tmp_path / "log")
    assert rows.height == 4
    stored = " ".join(rows["error"].to_list() + rows["attempts"].to_list())
    assert "[redacted]" in stored
    for text in (stored, _all_text_under(tmp_path / "log")):
        assert LEAKED_KEY not in text and "sk-gateway-own-secret" not in text


# ------------------------------------------------------------------------------------ 4. oversized answers


def test_an_oversized_upstream_answer_is_a_clear_502_and_a_row(router_service, sim, tmp_path):
    cfg = GatewayConfig(first_byte_timeout_s=10.0, max_upstream_bytes=512 * 1024)
    with HostileUpstream(huge_bytes=2 * 1024 * 1024) as hostile, run_gateway(
            router_service, sim, tmp_path, tmp_path / "log", cfg=cfg,
            upstreams=_hostile_table(router_service, hostile)) as gw:
        model = router_service.data.model_ids[0]
        hostile.modes[model] = "huge"
        client = _client(gw.url)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=model, messages=MSG)
        assert err.value.status_code == 502 and err.value.body["code"] == "upstream_too_large"
        assert "524288" in err.value.body["message"]
        with pytest.raises(openai.APIError) as streamed:  # streamed: cut mid-stream, said in-stream
            for _ in client.chat.completions.create(model=model, messages=MSG, stream=True):
                pass
        assert "exceeds 524288 bytes" in str(streamed.value)
        assert httpx.get(gw.url + "/health").status_code == 200
    rows = _rows(tmp_path / "log")
    assert rows.height == 2 and set(rows["status"]) <= {"upstream_error", "error"}
    assert all("524288" in e for e in rows["error"])


# ------------------------------------------------------------------------------------------- 5. overload


def _stalled(url: str, body: bytes) -> socket.socket:
    """A connection that sent its headers and half its body, then waits (holds a slot or a queue place)."""
    u = urlsplit(url)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sock = socket.create_connection((u.hostname, u.port), timeout=60)
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _finish_stalled(sock: socket.socket, body: bytes) -> int:
    sock.sendall(body[len(body) // 2:])
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    return int(raw.split(b" ", 2)[1])


def test_overload_is_shed_in_the_openai_error_shape_with_retry_after(router_service, sim, tmp_path):
    """Two requests in flight and two queued (stalled bodies): the next ones get an immediate JSON 503 with
    Retry-After that the openai client parses; the held ones are answered once their bodies end; one row each."""
    from router.serving.gateway.app import make_gateway_app, make_gateway_server
    from router.serving.limits import bound_port

    limits = ServeLimits(max_body_bytes=2_000_000, limit_concurrency=2, max_queue=2, queue_timeout_s=60)
    app = make_gateway_app(router_service, lambda m: upstreams_from_models(m, sim.url), home=tmp_path,
                           cfg=GatewayConfig(first_byte_timeout_s=10.0), limits=limits, log_root=tmp_path / "log")
    server = make_gateway_server(app, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{bound_port(server)}"
    body = json.dumps({"model": "lrouter", "messages": MSG}).encode()
    try:
        held = []
        for _ in range(4):  # two take the slots, two wait in the queue
            held.append(_stalled(url, body))
            time.sleep(0.3)
        client = _client(url)
        shed = []
        for _ in range(6):
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="lrouter", messages=MSG)
            shed.append(err.value)
        assert httpx.get(url + "/health").status_code == 200  # probes are never queued
        held_codes = [_finish_stalled(s, body) for s in held]
    finally:
        server.should_exit = True
        thread.join(15)
    assert held_codes == [200] * 4
    for exc in shed:
        r = exc.response
        assert exc.status_code == 503 and r.headers["content-type"].startswith("application/json")
        assert int(r.headers["retry-after"]) >= 1 and exc.body["code"] == "overloaded"
        assert "x-lrouter-request-id" in r.headers
    rows = _rows(tmp_path / "log")
    assert rows.height == 10 and rows.filter(pl.col("status") == "shed").height == 6


def test_the_openai_client_retries_a_shed_request(router_service, sim, tmp_path):
    """Retry-After on a 503 is what the SDK's retry loop reads: with retries on, every request succeeds."""
    limits = ServeLimits(max_body_bytes=2_000_000, limit_concurrency=1, max_queue=1, queue_timeout_s=30)
    with HostileUpstream(latency_s=0.2) as hostile:
        from router.serving.gateway.app import make_gateway_app, make_gateway_server
        from router.serving.limits import bound_port

        app = make_gateway_app(router_service, _hostile_table(router_service, hostile), home=tmp_path,
                               limits=limits, log_root=tmp_path / "log")
        server = make_gateway_server(app, port=0)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{bound_port(server)}/v1", api_key="unused",
                                   max_retries=8, timeout=60)
            model = router_service.data.model_ids[0]
            with ThreadPoolExecutor(4) as pool:
                outs = list(pool.map(lambda i: client.chat.completions.create(model=model, messages=MSG), range(4)))
        finally:
            server.should_exit = True
            thread.join(15)
    assert all(o.choices[0].message.content for o in outs)


# ------------------------------------------------------------------------------------------- 7. smaller ones


def test_a_huge_model_name_is_not_echoed_in_full(gateway):
    name = "m" * 1_000_000
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": name, "messages": MSG}, timeout=30)
    assert r.status_code == 404 and len(r.text) < 5000 and r.json()["error"]["param"] == "model"
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                   json={"model": "lrouter", "messages": MSG, "models": ["x" * 100_000]})
    assert r.status_code == 400 and len(r.text) < 5000


def test_served_rows_written_counter_counts_flushed_rows(gateway_factory):
    with gateway_factory() as gw:
        client = _client(gw.url)
        for _ in range(3):
            client.chat.completions.create(model="lrouter", messages=MSG)
        deadline = time.monotonic() + 30
        while gw.state.log.written < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        metrics = httpx.get(gw.url + "/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("lrouter_gateway_served_rows_written_total"))
        assert float(line.split()[-1]) == gw.state.log.written >= 3


def test_expected_cost_memo_is_bounded(router_service, monkeypatch):
    import router.serving.service as svc_mod

    monkeypatch.setattr(svc_mod, "MAX_EXP_COST_ENTRIES", 8)
    saved = dict(router_service._exp_cost)
    try:
        for i in range(40):
            router_service._expected_cost(False, f"client-made-group-{i}")
        assert len(router_service._exp_cost) <= 8
    finally:
        router_service._exp_cost.clear()
        router_service._exp_cost.update(saved)
