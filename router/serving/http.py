"""Routing decisions over HTTP: ``lrouter serve`` puts one long-lived ``RouterService`` behind a JSON endpoint.

Why: requests arrive as a stream from whatever gateway fronts the candidate models; the gateway asks this
server which model to call before calling it. Starlette on uvicorn: the event loop keeps accepting and
refusing while the model works. The service is built once and follows the warehouse (retrains,
recalibrations, disabled models) by itself.

Each request is validated against ``ServeLimits`` (body size, question length, image pixels read from the
image header, finite lambda) in a worker thread BEFORE it queues for the model, so an oversized request is
refused in milliseconds even while others are being scored. Scoring (~30 ms, mostly the encoders) runs one
request at a time in its own worker thread, since the service's arrays are rebuilt in place when the
warehouse changes; requests wait for it on the event loop, not in threads.

Endpoints:
- ``POST /route`` with JSON ``{"question": str, "image_b64": str (optional, PNG/JPEG bytes, base64),
  "pool": [model ids] (optional), "lambda": float (optional, default 0), "task_group": str (optional),
  "dataset": str (optional)}`` -> ``{"ranked": [...], "chosen_model": id, "checkpoint": dir}`` (plus
  ``"degraded": true, "refresh_error"`` when the warehouse could not be re-read and the last good snapshot
  answered). Images are sent as bytes, never as server-side paths.
- ``GET /health`` -> 200 with the checkpoint in use, the active models, ``degraded`` and the last refresh
  error; 503 with the reason when there is no usable snapshot. It always answers.
Bad input gets HTTP 400 (413 over a limit) with ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from router.serving.keys import AccessGate, Denied
from router.serving.limits import (
    JSON_EXCEPTION_HANDLERS,
    Admission,
    RequestRefused,
    ServeLimits,
    check_image_header,
    check_text,
    error_response,
    finite_number,
    json_response,
    read_body,
    server_config,
)
from router.serving.service import RouterService

ROUTE_FIELDS = {"question", "image_b64", "pool", "lambda", "task_group", "dataset"}
MAX_LAMBDA = 1e3  # cost weights are trained on [0, 1]; past this only cost matters and float32 overflows
MAX_LABEL_CHARS = 256  # task_group / dataset / model ids are short names
HEALTH_WAIT_S = 2.0  # a health probe waits this long for the model, then reports the snapshot it holds

RequestError = RequestRefused  # the name this module exported before the limits moved to limits.py


def parse_route_request(body: bytes, limits: ServeLimits | None = None) -> dict[str, Any]:
    """Validate a /route body into ``RouterService.route`` keyword arguments (cheap: no pixel decoding)."""
    limits = limits or ServeLimits()
    try:
        req = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, a 5000-digit int, [[[[...
        raise RequestRefused(f"body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(req, dict):
        raise RequestRefused("body must be a JSON object")
    unknown = sorted(set(req) - ROUTE_FIELDS)
    if unknown:
        raise RequestRefused(f"unknown field(s) {unknown[:10]}; allowed: {sorted(ROUTE_FIELDS)}")
    question = check_text(req.get("question"), "question", limits.max_question_chars)
    image = None
    if req.get("image_b64") is not None:
        if not isinstance(req["image_b64"], str):
            raise RequestRefused("field 'image_b64' must be a base64 string")
        try:
            image = base64.b64decode(req["image_b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestRefused(f"field 'image_b64' is not valid base64: {exc}") from None
        check_image_header(image, "image_b64", limits.max_image_pixels)
    pool = req.get("pool")
    if pool is not None and (not isinstance(pool, list) or not all(isinstance(p, str) for p in pool)):
        raise RequestRefused("field 'pool' must be a list of model ids")
    if pool and any(len(p) > MAX_LABEL_CHARS for p in pool):
        raise RequestRefused(f"field 'pool' holds a model id longer than {MAX_LABEL_CHARS} characters")
    lam = finite_number(req.get("lambda", 0.0), "lambda", 0.0, MAX_LAMBDA)
    labels = {name: check_text(req.get(name), name, MAX_LABEL_CHARS, required=False)
              for name in ("task_group", "dataset")}
    return {"image": image, "question": question, "pool": pool or None, "lam": lam, **labels}


class Unavailable(RuntimeError):
    """There is no usable snapshot (the service could not be built); HTTP 503 with the reason."""


@dataclass
class _State:
    """The service (or how to build it) and the per-app concurrency primitives."""

    service: RouterService | None
    factory: Callable[[], RouterService] | None
    limits: ServeLimits
    access: AccessGate = field(default_factory=lambda: AccessGate(None, False))
    model_lock: anyio.Lock = field(default_factory=anyio.Lock)  # queued requests wait here, not in threads
    validate_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(4))
    score_threads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))

    def get(self) -> RouterService:
        """The service, built on first use when a factory was given (in a worker thread, under the model
        lock); a failed build is retried by the next request."""
        if self.service is None:
            assert self.factory is not None
            try:
                self.service = self.factory()
            except Exception as exc:
                raise Unavailable(f"no usable router snapshot: {type(exc).__name__}: {exc}") from exc
        return self.service


def _refresh_note(service: RouterService) -> dict[str, Any]:
    err = getattr(service, "refresh_error", None)
    return {"degraded": True, "refresh_error": err} if err else {}


def _score(state: _State, kwargs: dict[str, Any]) -> dict[str, Any]:
    """One /route answer (worker thread, under the model lock)."""
    service = state.get()
    ranked = service.route(**kwargs)  # re-reads the warehouse first; a failed re-read keeps the held snapshot
    return {"ranked": ranked, "chosen_model": ranked[0]["model_id"] if ranked else None,
            "checkpoint": service.checkpoint.name, "router": service.deployment["serving"], **_refresh_note(service)}


def _health(state: _State, refresh: bool) -> dict[str, Any]:
    """/health's answer from the held snapshot, after a refresh attempt when the model lock was free."""
    service = state.get()
    if refresh and service.auto_refresh:
        service.refresh(strict=False)
    note = _refresh_note(service)
    out = {"status": "degraded" if note else "ok", "degraded": bool(note), "refresh_error": None,
           "checkpoint": service.checkpoint.name, "models": list(service.data.model_ids),
           "router": service.deployment["serving"], "deployment": service.deployment,
           "limits": state.limits.as_dict()}
    out.update(note)
    if not refresh:
        out["busy"] = True  # the model was busy for HEALTH_WAIT_S; this is the snapshot held, not re-read
    return out


async def _route(request: Request) -> JSONResponse:
    state: _State = request.app.state.lrouter
    try:
        state.access.admit(state.access.authenticate(request.headers))
    except Denied as exc:
        return error_response(exc.status, exc.message, headers=exc.headers())
    limits = state.limits
    deadline = anyio.current_time() + limits.request_timeout_s
    try:
        with anyio.fail_after(limits.request_timeout_s):
            body = await read_body(request, limits.max_body_bytes)
            kwargs = await anyio.to_thread.run_sync(parse_route_request, body, limits,
                                                    limiter=state.validate_threads)
    except RequestRefused as exc:
        return error_response(exc.status, str(exc))
    except TimeoutError:
        return error_response(408, f"request not received within {limits.request_timeout_s:g} s "
                                   "(--request-timeout)")
    try:
        with anyio.fail_after(max(deadline - anyio.current_time(), 0.001)):
            await state.model_lock.acquire()
    except TimeoutError:
        return error_response(503, f"busy: the router did not become free within {limits.request_timeout_s:g} s "
                                   "(--request-timeout); retry", headers={"Retry-After": "1"})
    try:
        with anyio.CancelScope(shield=True):  # the thread cannot be interrupted; keep the lock until it ends
            payload = await anyio.to_thread.run_sync(_score, state, kwargs, limiter=state.score_threads)
    except Unavailable as exc:
        return _unavailable(exc)
    except ValueError as exc:  # the service's own input errors (pool, unreadable image, encoder mismatch)
        return error_response(400, str(exc))
    except Exception as exc:  # a broken checkpoint, ...: say so
        return error_response(500, f"{type(exc).__name__}: {exc}")
    finally:
        state.model_lock.release()
    return json_response(payload)


async def _health_endpoint(request: Request) -> JSONResponse:
    state: _State = request.app.state.lrouter
    acquired = False
    with anyio.move_on_after(min(HEALTH_WAIT_S, state.limits.request_timeout_s)):
        await state.model_lock.acquire()
        acquired = True
    try:
        if acquired:
            with anyio.CancelScope(shield=True):
                payload = await anyio.to_thread.run_sync(_health, state, True, limiter=state.score_threads)
        elif state.service is None:
            raise Unavailable("no usable router snapshot yet: the first build is still running")
        else:
            payload = _health(state, refresh=False)
    except Exception as exc:  # whatever went wrong, the probe gets an answer saying what
        return _unavailable(exc if isinstance(exc, Unavailable) else
                            Unavailable(f"no usable router snapshot: {type(exc).__name__}: {exc}"))
    finally:
        if acquired:
            state.model_lock.release()
    return json_response(payload)


def _unavailable(exc: Unavailable) -> JSONResponse:
    return json_response({"status": "unavailable", "error": str(exc)}, status=503, headers={"Retry-After": "5"})


def make_app(service: RouterService | Callable[[], RouterService], limits: ServeLimits | None = None,
             access: AccessGate | None = None) -> Starlette:
    """The ASGI app answering from ``service``, or from what the callable builds on first use (until it
    succeeds, /health and /route answer 503 with the reason). ``access``: who may call /route (keys,
    requests per minute); none: anyone who reaches the port. Past ``limits.limit_concurrency`` requests
    in flight the rest queue (``max_queue``, ``queue_timeout_s``) or get a JSON 503 with Retry-After."""
    limits = limits or ServeLimits()
    app = Starlette(routes=[Route("/route", _route, methods=["POST"]),
                            Route("/health", _health_endpoint, methods=["GET"])],
                    exception_handlers=JSON_EXCEPTION_HANDLERS,
                    middleware=[Middleware(Admission, limits=limits)])
    built = service if isinstance(service, RouterService) else None
    app.state.lrouter = _State(service=built, factory=None if built else service, limits=limits,
                               access=access or AccessGate(None, False))
    return app


def make_server(service: RouterService | Callable[[], RouterService], host: str = "127.0.0.1", port: int = 8787,
                limits: ServeLimits | None = None, access: AccessGate | None = None) -> uvicorn.Server:
    """A uvicorn server for ``make_app(service, limits, access)`` on (host, port); ``.run()`` blocks (port 0 =
    any)."""
    limits = limits or ServeLimits()
    return uvicorn.Server(server_config(make_app(service, limits, access), host, port, limits))
