"""The official ``openai`` client (sync and async, streaming and not) against the gateway, with the
simulator's OpenAI-compatible endpoint as upstream: routing, policies, images, fallback, Ollama's API."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import openai
import pytest

from collectors.simulator.faults import FaultConfig
from router.serving.gateway.config import Upstream, UpstreamTable

QUESTION = "What word is written in the box?"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def _image_url(home: Path) -> str:
    image = next((home / "warehouse" / "images").glob("*.png"))
    return "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()


def test_sync_client_routes_and_reports_the_choice(gateway, router_service):
    client = _client(gateway.url)
    raw = client.chat.completions.with_raw_response.create(
        model="lrouter", messages=[{"role": "system", "content": "Answer briefly."},
                                   {"role": "user", "content": QUESTION}])
    out = raw.parse()
    routable = gateway.state.routable()
    assert out.model in routable and raw.headers["x-lrouter-model"] == out.model
    assert out.choices[0].message.content and out.usage.total_tokens > 0
    assert raw.headers["x-lrouter-policy"] == "lrouter" and raw.headers["x-lrouter-fallbacks"] == "0"
    assert float(raw.headers["x-lrouter-lambda"]) == gateway.state.cfg.default_lambda
    expected = router_service.route(None, QUESTION, pool=routable, lam=gateway.state.cfg.default_lambda)
    assert out.model == expected[0]["model_id"]  # what the router ranks first
    assert float(raw.headers["x-lrouter-predicted-quality"]) == pytest.approx(expected[0]["quality"], abs=1e-3)
    assert float(raw.headers["x-lrouter-expected-cost-usd"]) == pytest.approx(expected[0]["cost_usd"], rel=1e-2)
    assert out.id == raw.headers["x-lrouter-request-id"]


def test_sync_stream_with_usage_and_an_image(gateway, trained_home):
    client = _client(gateway.url)
    with client.chat.completions.with_streaming_response.create(
            model="lrouter:0.3", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION},
                                                   {"type": "image_url", "image_url": {"url": _image_url(trained_home)}}]}]
    ) as resp:
        assert resp.headers["x-lrouter-lambda"] == "0.3"
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 100  # the image's tokens
    assert {c.model for c in chunks} == {resp.headers["x-lrouter-model"]}
    no_usage = list(client.chat.completions.create(model="lrouter", stream=True,
                                                   messages=[{"role": "user", "content": QUESTION}]))
    assert all(c.usage is None for c in no_usage) and no_usage[-1].choices[0].finish_reason == "stop"


def test_async_client_streaming_and_not(gateway):
    async def main() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
        out = await client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": QUESTION}])
        stream = await client.chat.completions.create(model="quality", stream=True,
                                                      messages=[{"role": "user", "content": QUESTION}])
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return out.choices[0].message.content, text

    many = asyncio.run(asyncio.wait_for(main(), 60))
    assert all(many)


def test_policies_restrict_and_cap_the_pick(gateway):
    client = _client(gateway.url)
    pool = ["simvl-nano:1b", "simvl-ultra:72b"]
    out = client.chat.completions.create(model="quality", messages=[{"role": "user", "content": QUESTION}],
                                         extra_body={"models": pool})
    assert out.model in pool
    ranked = out.model_extra["lrouter"]
    cheap_cost = client.chat.completions.create(
        model="lrouter", messages=[{"role": "user", "content": QUESTION}], extra_body={"target": "cheap"}
    ).model_extra["lrouter"]["expected_cost_usd"]
    capped = client.chat.completions.with_raw_response.create(
        model="quality", messages=[{"role": "user", "content": QUESTION}],
        extra_body={"max_cost_usd": cheap_cost * 1.0001})
    assert float(capped.headers["x-lrouter-expected-cost-usd"]) <= cheap_cost * 1.01
    assert ranked["policy"] == "quality" and ranked["lambda"] == 0.0
    proxied = client.chat.completions.create(model="simvl-nano:1b", messages=[{"role": "user", "content": QUESTION}])
    assert proxied.model == "simvl-nano:1b" and proxied.model_extra["lrouter"]["policy"] == "model"
    listed = {m.id for m in client.models.list()}
    assert {"lrouter", "quality", "balanced", "cheap", "simvl-nano:1b"} <= listed


def test_fallback_to_the_next_model_then_502_naming_each_attempt(gateway_factory):
    pool = ["simvl-nano:1b", "simdoc-ocr:4b"]
    msg = [{"role": "user", "content": QUESTION}]
    with gateway_factory() as gw:
        client = _client(gw.url)
        first = client.chat.completions.create(model="quality", messages=msg, extra_body={"models": pool}).model
        other = next(m for m in pool if m != first)
        gw.sim.set_faults(FaultConfig(down_models={first}))
        raw = client.chat.completions.with_raw_response.create(model="quality", messages=msg,
                                                               extra_body={"models": pool})
        assert raw.parse().model == other and raw.headers["x-lrouter-fallbacks"] == "1"
        assert first in raw.headers["x-lrouter-attempts"]
        chunks = list(client.chat.completions.create(model="quality", messages=msg, stream=True,
                                                     extra_body={"models": pool}))
        assert {c.model for c in chunks} == {other}
        gw.sim.set_faults(FaultConfig(down_models=set(pool)))
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="quality", messages=msg, extra_body={"models": pool})
        assert err.value.status_code == 502
        body = err.value.body
        assert [a["model"] for a in body["attempts"]] == [first, other]
        assert first in body["message"] and other in body["message"]
        metrics = httpx.get(gw.url + "/metrics").text
        assert "lrouter_gateway_fallbacks_total 2.0" in metrics
        assert f'lrouter_gateway_upstream_errors_total{{kind="http_5xx",model="{first}"}}' in metrics


def test_timeout_before_the_first_byte_falls_back(gateway_factory):
    from router.serving.gateway.config import GatewayConfig

    with gateway_factory(cfg=GatewayConfig(first_byte_timeout_s=0.5, max_fallbacks=3)) as gw:
        gw.sim.set_faults(FaultConfig(timeout=0.5, timeout_s=2.0))  # half the calls stall past the deadline
        client, fell_back = _client(gw.url), 0
        for i in range(6):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="lrouter", messages=[{"role": "user", "content": f"Question {i}: {QUESTION}"}])
            except openai.APIStatusError as exc:  # every attempt stalled: a 502 naming each
                assert exc.status_code == 502 and len(exc.body["attempts"]) == 4
                continue
            assert raw.parse().choices[0].message.content
            if raw.headers["x-lrouter-fallbacks"] != "0":
                assert "(timeout)" in raw.headers["x-lrouter-attempts"]
                fell_back += 1
        assert fell_back >= 1


def test_ollama_native_upstream_is_translated(gateway_factory, sim):
    sim_models = ["simvl-nano:1b", "simdoc-ocr:4b"]
    ups = UpstreamTable({m: Upstream(m, "ollama", sim.url, price_in_per_mtok=0.1, price_out_per_mtok=0.2)
                         for m in sim_models})
    with gateway_factory(upstreams=ups) as gw:
        client = _client(gw.url)
        out = client.chat.completions.create(model="lrouter", messages=[{"role": "user", "content": QUESTION}],
                                             max_tokens=64)
        assert out.model in sim_models and out.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="simdoc-ocr:4b", stream=True,
                                                     stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": QUESTION}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert chunks[-1].usage.completion_tokens > 0
    assert gw.sim.stats["endpoints"].get("/api/chat", 0) >= 2


def test_a_slow_client_does_not_block_others(gateway):
    """A client that sent its headers and half its body, then stalls, holds only its own request: the openai
    client's requests meanwhile are routed and answered, and the stalled one is answered once its body ends."""
    import json
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    url = urlsplit(gateway.url)
    body = json.dumps({"model": "lrouter", "messages": [{"role": "user", "content": QUESTION}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as stalled:
        stalled.sendall(head + body[: len(body) // 2])
        client = _client(gateway.url)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: client.chat.completions.with_raw_response.create(
                model="lrouter", messages=[{"role": "user", "content": f"{QUESTION} ({i})"}]), range(4)))
        assert [a.status_code for a in answers] == [200] * 4
        assert all(a.parse().choices[0].message.content for a in answers)
        stalled.settimeout(0.3)
        with pytest.raises(TimeoutError):  # still waiting for the rest of its body: nothing sent back yet
            stalled.recv(1)
        stalled.settimeout(30)
        stalled.sendall(body[len(body) // 2:])
        raw = b""
        while chunk := stalled.recv(65536):
            raw += chunk
    status, _, payload = raw.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), raw[:300]
    assert json.loads(payload)["choices"][0]["message"]["content"]
