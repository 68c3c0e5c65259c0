"""Routing decisions over HTTP: ``lrouter serve`` puts one long-lived ``RouterService`` behind a JSON endpoint.

Why: requests arrive as a stream from whatever gateway fronts the candidate models; the gateway asks this
server which model to call before calling it. Standard library only (no web framework to install). The
service is built once and follows the warehouse (retrains, recalibrations, disabled models) by itself.
Requests are served one at a time: a request is ~30 ms of encoder work on one thread, and the service's
arrays are rebuilt in place when the warehouse changes.

Endpoints:
- ``POST /route`` with JSON ``{"question": str, "image_b64": str (optional, PNG/JPEG bytes, base64),
  "pool": [model ids] (optional), "lambda": float (optional, default 0), "task_group": str (optional),
  "dataset": str (optional)}`` -> ``{"ranked": [...], "chosen_model": id, "checkpoint": dir}``. Images are
  sent as bytes, never as server-side paths.
- ``GET /health`` -> the checkpoint in use and the active models.
Bad input gets HTTP 400 with ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from router.serving.service import RouterService

MAX_BODY_BYTES = 32 * 1024 * 1024  # a base64 image of a few megapixels fits; larger bodies are refused
ROUTE_FIELDS = {"question", "image_b64", "pool", "lambda", "task_group", "dataset"}


class RequestError(ValueError):
    """A request the server refuses (HTTP 400); the message names the field."""


def parse_route_request(body: bytes) -> dict[str, Any]:
    """Validate a /route body into ``RouterService.route`` keyword arguments."""
    try:
        req = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(req, dict):
        raise RequestError("body must be a JSON object")
    unknown = sorted(set(req) - ROUTE_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}; allowed: {sorted(ROUTE_FIELDS)}")
    question = req.get("question")
    if not isinstance(question, str) or not question.strip():
        raise RequestError("field 'question' must be a non-empty string")
    image = None
    if req.get("image_b64") is not None:
        if not isinstance(req["image_b64"], str):
            raise RequestError("field 'image_b64' must be a base64 string")
        try:
            image = base64.b64decode(req["image_b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"field 'image_b64' is not valid base64: {exc}") from exc
    pool = req.get("pool")
    if pool is not None and (not isinstance(pool, list) or not all(isinstance(p, str) for p in pool)):
        raise RequestError("field 'pool' must be a list of model ids")
    lam = req.get("lambda", 0.0)
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not lam >= 0:
        raise RequestError("field 'lambda' must be a number >= 0")
    for name in ("task_group", "dataset"):
        if req.get(name) is not None and not isinstance(req[name], str):
            raise RequestError(f"field {name!r} must be a string")
    return {"image": image, "question": question, "pool": pool or None, "lam": float(lam),
            "task_group": req.get("task_group"), "dataset": req.get("dataset")}


def make_server(service: RouterService, host: str = "127.0.0.1", port: int = 8787) -> ThreadingHTTPServer:
    """An HTTP server bound to (host, port) answering from ``service`` (port 0 = any free port)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "lrouter-route/1"

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") != "/health":
                self._send(404, {"error": f"no such endpoint {self.path!r}; use GET /health or POST /route"})
                return
            with lock:
                if service.auto_refresh:
                    service.refresh()
                self._send(200, {"status": "ok", "checkpoint": service.checkpoint.name,
                                 "models": service.data.model_ids})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/route":
                self._send(404, {"error": f"no such endpoint {self.path!r}; use POST /route"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY_BYTES:
                self._send(400 if length <= 0 else 413,
                           {"error": f"Content-Length must be 1..{MAX_BODY_BYTES} bytes, got {length}"})
                return
            try:
                kwargs = parse_route_request(self.rfile.read(length))
                with lock:
                    ranked = service.route(**kwargs)
                    ckpt = service.checkpoint.name
            except ValueError as exc:  # RequestError and the service's own input errors (pool, image)
                self._send(400, {"error": str(exc)})
                return
            except Exception as exc:  # the warehouse changed under us, a broken checkpoint, ...: say so
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self._send(200, {"ranked": ranked, "chosen_model": ranked[0]["model_id"] if ranked else None,
                             "checkpoint": ckpt})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # request lines would print questions; the gateway keeps its own access log

    return ThreadingHTTPServer((host, port), Handler)
