"""The routing HTTP server end to end on loopback (uvicorn in a thread, real clients): answers like the
service, holds a burst of concurrent clients, refuses oversized input fast while the model is busy, always
answers JSON, and keeps /health answering when the warehouse breaks under it."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from router.serving.limits import ServeLimits
from router.serving.service import RouterService, load_router
from warehouse.store import Warehouse

QUESTION = "What word is written in the box?"


@pytest.fixture(scope="module")
def svc(trained_home: Path) -> RouterService:
    service = load_router(trained_home)
    service.warm_up()  # what `lrouter serve` does before it listens
    return service


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: IHDR, a tiny IDAT, IEND (68 bytes, never decodable)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _raw(url: str, data: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; what comes back until the server closes or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b'"}' in out:
                    break
        except TimeoutError:
            pass
        return out


def test_http_routing_server_answers_like_the_service(trained_home, svc, serve):
    with serve(svc) as url:

        def post(payload) -> tuple[int, dict]:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            req = urllib.request.Request(url + "/route", data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        image = next((trained_home / "warehouse" / "images").glob("*.png"))
        status, out = post({"question": QUESTION, "image_b64": base64.b64encode(image.read_bytes()).decode(),
                            "lambda": 0.3, "pool": ["simvl-ultra:72b", "simdoc-ocr:4b"]})
        assert status == 200
        expected = svc.route(image, QUESTION, lam=0.3, pool=["simvl-ultra:72b", "simdoc-ocr:4b"])
        assert [r["model_id"] for r in out["ranked"]] == [r["model_id"] for r in expected]
        assert out["ranked"][0]["utility"] == pytest.approx(expected[0]["utility"], abs=1e-6)
        assert out["chosen_model"] == expected[0]["model_id"]
        with urllib.request.urlopen(url + "/health", timeout=60) as resp:
            health = json.loads(resp.read())
        assert health["status"] == "ok" and "simvl-ultra:72b" in health["models"]
        assert health["degraded"] is False and health["checkpoint"] == svc.checkpoint.name
        # bad input: 400 naming the problem, and the server keeps serving
        assert post({"image_b64": "aGVsbG8="}) == (400, {"error": "field 'question' must be a non-empty string"})
        status, err = post({"question": "q?", "image_b64": "not base64!"})
        assert status == 400 and "image_b64" in err["error"]
        status, err = post({"question": "q?", "image_b64": base64.b64encode(b"not an image").decode()})
        assert status == 400 and "cannot read image" in err["error"]
        status, err = post({"question": "q?", "pool": ["no-such-model"]})
        assert status == 400 and "no-such-model" in err["error"]
        status, err = post({"question": "q?", "lambda": -1})
        assert status == 400 and "lambda" in err["error"]
        status, err = post(b"{not json")
        assert status == 400 and "JSON" in err["error"]
        assert post({"question": "Which is larger, 3 or 5?"})[0] == 200  # text-only request
        # unknown paths and methods answer JSON too
        assert httpx.get(url + "/nope").status_code == 404 and "error" in httpx.get(url + "/nope").json()
        assert httpx.get(url + "/route").status_code == 405


def test_64_concurrent_clients_all_answered(trained_home, svc, serve):
    image_b64 = base64.b64encode(next((trained_home / "warehouse" / "images").glob("*.png")).read_bytes()).decode()
    with serve(svc) as url:
        barrier = threading.Barrier(64)

        def one(i: int) -> int:
            payload = {"question": f"{QUESTION} ({i})", "lambda": 0.1}
            if i % 2:
                payload["image_b64"] = image_b64
            with httpx.Client(timeout=120) as client:  # one connection per client, all opened together
                barrier.wait()
                return client.post(url + "/route", json=payload).status_code

        with ThreadPoolExecutor(64) as pool:
            codes = list(pool.map(one, range(64)))  # a reset connection raises here
    assert codes == [200] * 64


def test_oversized_input_refused_fast_while_the_model_is_busy(svc, serve, monkeypatch):
    limits = ServeLimits(max_question_chars=1000, max_image_pixels=4_000_000, max_body_bytes=1 << 20)
    started, release = threading.Event(), threading.Event()
    real_route = svc.route

    def slow_route(*args, **kwargs):
        started.set()
        release.wait(20)  # a valid request that holds the model
        return real_route(*args, **kwargs)

    monkeypatch.setattr(svc, "route", slow_route)
    with serve(svc, limits) as url:
        slow: dict = {}
        t = threading.Thread(target=lambda: slow.update(
            r=httpx.post(url + "/route", json={"question": QUESTION}, timeout=60)))
        t.start()
        assert started.wait(20)
        refused = {
            "question": {"question": "x" * 100_000},
            "image_b64": {"question": QUESTION, "image_b64": base64.b64encode(_png_header(13000, 13000)).decode()},
            "lambda": {"question": QUESTION, "lambda": float("inf")},
        }
        for field, payload in refused.items():
            t0 = time.monotonic()
            r = httpx.post(url + "/route", content=json.dumps(payload).encode(), timeout=10)
            assert time.monotonic() - t0 < 1.0, field
            assert r.status_code in (400, 413) and field in r.json()["error"], (field, r.text)
        # the body limit: refused from Content-Length, before a byte of the body is read
        t0 = time.monotonic()
        head = _raw(url, b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000000\r\n\r\n", read_timeout=5)
        assert time.monotonic() - t0 < 1.0 and head.startswith(b"HTTP/1.1 413") and b"max-body-bytes" in head
        r = httpx.get(url + "/health", timeout=10)  # the model is busy: the held snapshot, at once
        assert r.status_code == 200 and r.json()["busy"] is True
        release.set()
        t.join(60)
    assert slow["r"].status_code == 200 and slow["r"].json()["chosen_model"]


def test_a_request_that_waits_too_long_for_the_model_gets_503(svc, serve, monkeypatch):
    started, release = threading.Event(), threading.Event()
    real_route = svc.route

    def slow_route(*args, **kwargs):
        started.set()
        release.wait(20)
        return real_route(*args, **kwargs)

    monkeypatch.setattr(svc, "route", slow_route)
    with serve(svc, ServeLimits(request_timeout_s=1.0)) as url:
        slow: dict = {}
        t = threading.Thread(target=lambda: slow.update(
            r=httpx.post(url + "/route", json={"question": QUESTION}, timeout=60)))
        t.start()
        assert started.wait(20)
        r = httpx.post(url + "/route", json={"question": QUESTION}, timeout=10)
        assert r.status_code == 503 and "busy" in r.json()["error"] and r.headers["retry-after"]
        release.set()
        t.join(60)
    assert slow["r"].status_code == 200


def test_image_header_over_the_limit_names_its_size(svc, serve):
    with serve(svc) as url:
        r = httpx.post(url + "/route", json={"question": QUESTION,
                                             "image_b64": base64.b64encode(_png_header(13000, 13000)).decode()})
    assert r.status_code == 413 and "13000x13000" in r.json()["error"] and "image_b64" in r.json()["error"]


def test_lambda_must_be_a_finite_number(svc, serve):
    with serve(svc) as url:
        for raw in (b"1e400", b"-1e400", b"NaN", b"Infinity", b"1e300", b'"0.3"', b"true"):
            r = httpx.post(url + "/route", content=b'{"question": "q?", "lambda": ' + raw + b"}")
            assert r.status_code == 400 and "lambda" in r.json()["error"], raw


def test_answers_are_strict_json(svc, serve):
    with serve(svc) as url:
        r = httpx.post(url + "/route", json={"question": QUESTION, "lambda": 1000})
    assert r.status_code == 200
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the answer"))


def test_stalled_connections_are_closed(svc, serve):
    limits = ServeLimits(header_timeout_s=0.5, request_timeout_s=1.0)
    with serve(svc, limits) as url:
        t0 = time.monotonic()  # headers that never finish: the connection is closed
        assert _raw(url, b"POST /route HTTP/1.1\r\nHost: x\r\n", read_timeout=10) == b""
        assert time.monotonic() - t0 < 5
        t0 = time.monotonic()  # a body that stops halfway: 408, not a thread held forever
        out = _raw(url, b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"question\"", 10)
        assert out.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 5
        assert httpx.post(url + "/route", json={"question": QUESTION}).status_code == 200


def test_health_degrades_when_a_table_breaks_and_is_503_without_a_snapshot(trained_home, serve, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    service = load_router(home)
    with serve(service) as url:
        assert httpx.get(url + "/health").json()["degraded"] is False
        Warehouse(home / "warehouse").table_path("profiles").write_bytes(b"not parquet")
        r = httpx.get(url + "/health")
        assert r.status_code == 200, r.text
        health = r.json()
        assert health["degraded"] is True and health["status"] == "degraded" and health["refresh_error"]
        assert health["checkpoint"] == service.checkpoint.name and health["models"]
        r = httpx.post(url + "/route", json={"question": QUESTION})  # still routed from the held snapshot
        assert r.status_code == 200 and r.json()["degraded"] is True and r.json()["chosen_model"]

    def no_router() -> RouterService:
        raise FileNotFoundError("no trained router in /nowhere")

    with serve(no_router) as url:
        r = httpx.get(url + "/health")
        assert r.status_code == 503 and "no trained router" in r.json()["error"]
        r = httpx.post(url + "/route", json={"question": QUESTION})
        assert r.status_code == 503 and "no trained router" in r.json()["error"]


def test_serve_limits_refuse_a_short_backlog():
    with pytest.raises(ValueError, match="backlog"):
        ServeLimits(backlog=5)
    with pytest.raises(ValueError, match="max_question_chars"):
        ServeLimits(max_question_chars=0)
