"""Routing queued requests together: ``RouteBatcher``'s guarantees, ``RouterService.route_many`` = one
``route`` per request, and the gateway batching concurrent requests without changing any routing decision."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest

from router.serving.gateway.batcher import QueueFull, RouteBatcher
from router.serving.service import RouteRequest

QUESTION = "What word is written in the box?"


class _Recorder:
    """A route_batch that records its batches; item i -> i * 10, item "bad" -> its own ValueError."""

    def __init__(self, delay_s: float = 0.02, fail: bool = False):
        self.batches: list[list] = []
        self.delay_s, self.fail = delay_s, fail
        self.threads: set[int] = set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("router exploded")
        return [ValueError(f"bad item {i}") if i == "bad" else i * 10 for i in items]


def test_batcher_routes_queued_requests_together_fifo_and_returns_each_its_own_result():
    rec = _Recorder()
    batcher = RouteBatcher(rec, max_batch=8)
    results: dict[int, object] = {}

    async def one(i: int) -> None:
        results[i] = (await batcher.submit(i))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(one, i)
                await anyio.sleep(0)

    anyio.run(main)
    assert {i: r.result for i, r in results.items()} == {i: i * 10 for i in range(30)}
    sizes = [len(b) for b in rec.batches]
    assert sum(sizes) == 30 and max(sizes) <= 8 and max(sizes) > 1  # queued requests shared a batch
    assert [i for b in rec.batches for i in b] == list(range(30))  # FIFO, nobody routed twice
    assert all(results[i].batch_size == len(b) for b in rec.batches for i in b)
    assert batcher.batches == len(rec.batches) and batcher.queued == 0


def test_batcher_routes_a_lone_request_at_once():
    rec = _Recorder(delay_s=0.0)
    batcher = RouteBatcher(rec)

    async def main() -> list:
        return [await batcher.submit(i) for i in range(3)]

    out = anyio.run(main)
    assert [r.result for r in out] == [0, 10, 20] and [len(b) for b in rec.batches] == [1, 1, 1]


def test_batcher_item_errors_stay_with_their_item_and_batch_errors_reach_everyone():
    rec = _Recorder()
    batcher = RouteBatcher(rec)

    async def gather(items) -> list:
        out: dict[int, object] = {}

        async def one(k: int, item) -> None:
            out[k] = (await batcher.submit(item)).result

        async with anyio.create_task_group() as tg:
            for k, item in enumerate(items):
                tg.start_soon(one, k, item)
        return [out[k] for k in range(len(items))]

    got = anyio.run(gather, [1, "bad", 3])
    assert got[0] == 10 and got[2] == 30 and isinstance(got[1], ValueError) and "bad item" in str(got[1])

    failing = RouteBatcher(_Recorder(fail=True))
    errors: list[str] = []

    async def fail_all() -> None:
        async def one(i: int) -> None:
            try:
                await failing.submit(i)
            except RuntimeError as exc:
                errors.append(str(exc))

        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(one, i)

    anyio.run(fail_all)
    assert errors == ["router exploded"] * 5 and failing.queued == 0


def test_batcher_refuses_past_its_queue_and_survives_a_cancelled_client():
    rec = _Recorder(delay_s=0.05)
    batcher = RouteBatcher(rec, max_batch=2, max_queue=3)
    outcomes: dict[int, str] = {}

    async def one(i: int) -> None:
        try:
            outcomes[i] = f"ok {(await batcher.submit(i)).result}"
        except QueueFull:
            outcomes[i] = "full"

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
            await anyio.sleep(0)
        # a client that goes away while waiting: the others are still answered, the lead is handed on
        async with anyio.create_task_group() as tg:
            for i in (10, 11, 12):
                tg.start_soon(one, i)
            await anyio.sleep(0.01)
            with anyio.move_on_after(0.001):
                await batcher.submit(13)
        outcomes[99] = f"ok {(await batcher.submit(99)).result}"

    anyio.run(main)
    # one routing + 3 queued at most: the other two are refused at once (the gateway answers 503)
    assert [outcomes[i] for i in range(6)] == ["ok 0", "ok 10", "ok 20", "ok 30", "full", "full"]
    assert [outcomes[i] for i in (10, 11, 12, 99)] == ["ok 100", "ok 110", "ok 120", "ok 990"]
    assert batcher.queued == 0


def _image_bytes(home: Path, n: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted((home / "warehouse" / "images").glob("*.png"))[:n]]


def test_route_many_equals_one_route_per_request(router_service, trained_home):
    models = router_service.data.model_ids
    images = _image_bytes(trained_home, 3)
    requests = [RouteRequest(None, f"Request {i}: {QUESTION}", None, lam) for i, lam in enumerate((0.0, 0.1, 0.5, 2.0))]
    requests += [RouteRequest(img, f"What is shown in picture {i}?", models[:2] if i % 2 else None, 0.3)
                 for i, img in enumerate(images)]
    bad = [RouteRequest(None, "   "), RouteRequest(b"not an image", QUESTION), RouteRequest(None, QUESTION, ["nope:1b"])]
    out = router_service.route_many(requests[:4] + bad + requests[4:])
    got = out[:4] + out[7:]
    assert [type(e) for e in out[4:7]] == [ValueError] * 3
    assert "question is empty" in str(out[4]) and "cannot read image" in str(out[5]) and "nope:1b" in str(out[6])
    for r, ranked in zip(requests, got, strict=True):
        alone = router_service.route(r.image, r.question, pool=r.pool, lam=r.lam)
        assert [x["model_id"] for x in ranked] == [x["model_id"] for x in alone]
        for a, b in zip(ranked, alone, strict=True):
            assert a["utility"] == pytest.approx(b["utility"], abs=1e-4)
            assert a["quality"] == pytest.approx(b["quality"], abs=1e-4)
            assert a["cost_usd"] == pytest.approx(b["cost_usd"], rel=1e-6)
    assert {x["model_id"] for x in got[5]} == set(models[:2])  # the request's own pool


def test_gateway_batches_concurrent_requests_and_routes_each_as_alone(gateway, router_service, trained_home):
    images = ["data:image/png;base64," + base64.b64encode(b).decode() for b in _image_bytes(trained_home, 2)]
    routable = gateway.state.routable()

    def body(i: int) -> dict:
        text = f"Request {i}: {QUESTION}"
        content = text if i % 3 else [{"type": "text", "text": text},
                                      {"type": "image_url", "image_url": {"url": images[i % 2]}}]
        return {"model": "lrouter:0.3" if i % 2 else "lrouter", "messages": [{"role": "user", "content": content}]}

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/chat/completions", json=body(i)) for i in range(24)))

    before = gateway.state.batcher.batches
    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 24
    assert max(int(r.headers["x-lrouter-route-batch"]) for r in responses) > 1
    assert gateway.state.batcher.batches - before < 24  # fewer router passes than requests
    for i, r in enumerate(responses):
        lam = 0.3 if i % 2 else gateway.state.cfg.default_lambda
        img = None if i % 3 else base64.b64decode(images[i % 2].split(",", 1)[1])
        alone = router_service.route(img, f"Request {i}: {QUESTION}", pool=routable, lam=lam)
        assert r.headers["x-lrouter-model"] == alone[0]["model_id"], i
    metrics = httpx.get(gateway.url + "/metrics").text
    assert "lrouter_gateway_route_batch_size_count" in metrics
