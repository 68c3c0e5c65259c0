"""The gateway's encoder micro-batchers (graph runtimes): ``RouteBatcher`` with several lanes, every request's
features exactly those of encoding it alone, the router fed pre-encoded requests routing them as it routes the
raw ones, and the gateway end to end (one answer and one row per request, each routed as alone)."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image

from router.features.extract import encode_requests
from router.serving.gateway.batcher import RouteBatcher
from router.serving.gateway.chat import _encode
from router.serving.gateway.served_log import read_served
from router.serving.gateway.state import IMAGE_BATCH
from router.serving.service import RouteRequest, RouterService, ServingOptions, serving_feature_config
from tests.router.serving.gateway.conftest import run_gateway
from warehouse.store import Warehouse

QUESTION = "What word is written in the box?"


@pytest.fixture(scope="module")
def graph_service(trained_home: Path) -> RouterService:
    """The trained router served from the encoders' ONNX Runtime graphs (int8 text weights), two lanes."""
    svc = RouterService(Warehouse(trained_home / "warehouse"), serving=ServingOptions(dtype="int8", lanes=2))
    svc.warm_up()
    assert svc.encodes_ahead()
    return svc


def _images(home: Path, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((home / "warehouse" / "images").glob("*.png"))[:n]]


def test_batcher_lanes_run_batches_at_once_bounded_and_each_caller_gets_its_own_result():
    active, peak, batches = [0], [0], []
    lock = threading.Lock()

    def run(items):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            batches.append(list(items))
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return [i * 10 for i in items]

    batcher = RouteBatcher(run, max_batch=2, lanes=2)
    out: dict[int, object] = {}

    async def one(i: int) -> None:
        out[i] = await batcher.submit(i)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(one, i)

    anyio.run(main)
    assert {i: r.result for i, r in out.items()} == {i: i * 10 for i in range(20)}
    assert sorted(i for b in batches for i in b) == list(range(20))  # each item encoded exactly once
    assert max(len(b) for b in batches) == 2 and peak[0] == 2  # bounded batches, both lanes busy, never more
    assert batcher.queued == 0 and batcher._leaders == 0


def test_micro_batched_encodes_equal_encoding_each_request_alone(graph_service, trained_home):
    """Concurrent requests through the (questions, images) micro-batchers: each gets its own row, bitwise what
    ``encode_requests`` gives that request alone; images run at most IMAGE_BATCH at a time."""
    svc = graph_service
    raw = _images(trained_home, 6)
    prepared = [svc.prepare_image(b) for b in raw]
    requests = [(f"Request {i}: {QUESTION}", prepared[i % 6] if i % 3 else None) for i in range(18)]
    threads = anyio.CapacityLimiter(2)
    sizes: list[int] = []

    def images(batch):
        sizes.append(len(batch))
        return svc.encode_images(batch)

    encoders = (RouteBatcher(svc.encode_questions, 16, limiter=threads, lanes=1),
                RouteBatcher(images, IMAGE_BATCH, limiter=threads, lanes=2))

    async def main() -> dict[int, dict]:
        out: dict[int, dict] = {}

        async def one(i: int) -> None:
            out[i] = await _encode(encoders, *requests[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(requests)):
                tg.start_soon(one, i)
        return out

    got = anyio.run(main)
    assert sizes and max(sizes) <= IMAGE_BATCH and max(sizes) > 1 and sum(sizes) == 12
    for i, (q, img) in enumerate(requests):
        alone = encode_requests([img], [q], svc.feature_cfg)[0]
        assert got[i].keys() == alone.keys()
        for k, v in alone.items():
            assert (v is None and got[i][k] is None) or np.array_equal(v, got[i][k]), (i, k)
            assert v is None or got[i][k].dtype == v.dtype


def test_route_many_of_pre_encoded_requests_equals_routing_the_raw_ones(graph_service, trained_home):
    svc = graph_service
    raw = _images(trained_home, 2)
    models = svc.data.model_ids
    plain = [RouteRequest(raw[0], QUESTION, None, 0.1), RouteRequest(None, "Solve 3x + 4 = 19.", models[:3], 0.5),
             RouteRequest(raw[1], "What is shown?", None, 0.0, "chart")]
    encoded = []
    for r in plain:
        img = svc.prepare_image(r.image) if r.image is not None else None
        features = {"img_tokens": None, "img_pooled": None, "image_wh": None}
        if img is not None:
            features.update(svc.encode_images([img])[0])
        features.update(svc.encode_questions([r.question])[0])
        encoded.append(RouteRequest(None, r.question, r.pool, r.lam, r.task_group, encoded=features))
    a, b = svc.route_many(plain), svc.route_many(encoded)
    assert a == b  # the same ranking and the same numbers, to the bit
    assert {x["model_id"] for x in b[1]} == set(models[:3])


def test_serving_lanes_follow_the_cpus_this_process_may_use(monkeypatch):
    import router.serving.service as service

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # e.g. under `taskset -c 0`
    assert serving_feature_config(service.FeatureConfig()).encode_lanes == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert serving_feature_config(service.FeatureConfig()).encode_lanes == 2
    assert serving_feature_config(service.FeatureConfig(), ServingOptions(lanes=3)).encode_lanes == 3


def test_gateway_encodes_image_requests_ahead_and_routes_each_request_as_alone(graph_service, sim, trained_home, tmp_path):
    images = ["data:image/png;base64," + base64.b64encode(b).decode() for b in _images(trained_home, 3)]

    def body(i: int) -> dict:
        text = f"Request {i}: {QUESTION}"
        content = text if i % 2 else [{"type": "text", "text": text},
                                      {"type": "image_url", "image_url": {"url": images[i % 3]}}]
        return {"model": "lrouter", "messages": [{"role": "user", "content": content}]}

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body(i)) for i in range(16)))

    with run_gateway(graph_service, sim, tmp_path, tmp_path / "warehouse") as gw:
        responses = asyncio.run(fire(gw.url))
        health = httpx.get(gw.url + "/health").json()
        texts, imgs = gw.state.encoders()
        routable = gw.state.routable()
        lam = gw.state.cfg.default_lambda
    assert [r.status_code for r in responses] == [200] * 16
    assert texts.routed == 8 and imgs.routed == 8  # each image request's question and image encoded once, ahead
    assert health["encoders"] == {"text_runtime": "onnx_int8", "image_runtime": "onnx", "dtype": "float32",
                                  "lanes": 2}
    for i, r in enumerate(responses):
        img = None if i % 2 else Image.open(__import__("io").BytesIO(base64.b64decode(images[i % 3].split(",")[1])))
        alone = graph_service.route(img, f"Request {i}: {QUESTION}", pool=routable, lam=lam)
        assert r.headers["x-lrouter-model"] == alone[0]["model_id"], i
        assert float(r.headers["x-lrouter-routing-ms"]) > 0
    rows = read_served(tmp_path / "warehouse")
    assert rows.height == 16 and set(rows["request_id"]) == {r.headers["x-lrouter-request-id"] for r in responses}
