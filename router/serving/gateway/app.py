"""The gateway's ASGI app (Starlette on uvicorn) and server: ``lrouter gateway``.

Endpoints: ``POST /v1/chat/completions`` (see `chat`), ``GET /v1/models`` (policies and active models),
``POST /v1/feedback`` (``{"request_id", "label": 0..1}``), ``GET /health``, ``GET /metrics`` (Prometheus).
The lifespan opens the upstream HTTP client and the served-request writer, and on shutdown flushes every
queued row before the process exits. Every error is OpenAI-shaped: ``{"error": {"message", "type", "param",
"code"}}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.serving.gateway.chat import chat_completions, ensure_service, shed_row
from router.serving.gateway.config import GatewayConfig
from router.serving.gateway.metrics import GatewayMetrics
from router.serving.gateway.policies import POLICY_FILE, PolicyBook
from router.serving.gateway.schema import ApiError
from router.serving.gateway.served_log import ServedLog, spend_by_key
from router.serving.gateway.state import GatewayState, Unavailable, UpstreamSource, make_client
from router.serving.keys import AccessGate, AccessKey, Denied, open_gate
from router.serving.limits import Admission, RequestRefused, ServeLimits, read_body, server_config
from router.serving.service import RouterService

LOOPBACK_CLIENTS = ("127.0.0.1", "::1", "localhost")

MAX_FEEDBACK_BYTES = 64 * 1024


def _key(request: Request, loopback_ok: bool = False) -> AccessKey | None:
    """The request's access key; `Denied` (401) when access is required and it has none (``loopback_ok``:
    a client on this machine may read without one, e.g. a local Prometheus)."""
    state: GatewayState = request.app.state.gateway
    try:
        return state.access.authenticate(request.headers)
    except Denied:
        if loopback_ok and request.client is not None and request.client.host in LOOPBACK_CLIENTS:
            return None
        raise


def _refusal(exc: Denied) -> JSONResponse:
    kind = "authentication_error" if exc.status == 401 else "rate_limit_error"
    return ApiError(exc.status, exc.message, None, exc.code, kind).response(headers=exc.headers())


async def _models(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    try:
        _key(request)
    except Denied as exc:
        return _refusal(exc)
    try:
        await ensure_service(state)
    except Unavailable as exc:
        return ApiError(503, str(exc), None, "router_unavailable").response()
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "lrouter",
             "lrouter": {"kind": "policy", **p.to_json()}} for name, p in state.policies.policies().items()]
    routable = set(state.routable())
    for m, up in state.upstreams().by_model.items():
        data.append({"id": m, "object": "model", "created": 0, "owned_by": "lrouter-upstream",
                     "lrouter": {"kind": "model", "routable": m in routable, "protocol": up.protocol,
                                 "simulated": up.simulated, "price_in_per_mtok": up.price_in_per_mtok,
                                 "price_out_per_mtok": up.price_out_per_mtok}})
    return JSONResponse({"object": "list", "data": data})


async def _health(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    svc = state.service
    if svc is None:
        return JSONResponse({"status": "starting", "error": "the router is not built yet"}, status_code=503)
    log = state.log
    return JSONResponse({
        "status": "ok", "checkpoint": svc.checkpoint.name, "router": svc.deployment["serving"],
        "deployment": svc.deployment, "lambda": state.policies.default_lambda,
        "routable_models": state.routable(),
        "upstream_models": state.upstreams().ids(), "policies": sorted(state.policies.policies()),
        "policy_file_error": state.policies.load_error, "degraded": bool(svc.refresh_error),
        "refresh_error": svc.refresh_error, "encoders": svc.encoder_settings(),
        "served_rows_written": log.written if log else None,
        "served_log_error": log.last_error if log else None})


async def _metrics(request: Request) -> Response:
    try:
        _key(request, loopback_ok=True)
    except Denied as exc:
        return _refusal(exc)
    m: GatewayMetrics = request.app.state.gateway.metrics
    return Response(m.render(), media_type=m.content_type)


async def _feedback(request: Request) -> JSONResponse:
    """Attach a quality label (0..1) to a served request id; stored as its own rows, merged on read."""
    state: GatewayState = request.app.state.gateway
    try:
        state.access.admit(_key(request))  # labels recalibrate the router: only key holders write them
    except Denied as exc:
        return _refusal(exc)
    if state.log is None:
        return ApiError(503, "this gateway keeps no served-request log (started without a warehouse)", None,
                        "no_log").response()
    try:
        body = json.loads(await read_body(request, MAX_FEEDBACK_BYTES))
    except RequestRefused as exc:
        return ApiError(exc.status, str(exc), None, "invalid_body").response()
    except ValueError as exc:
        return ApiError(400, f"body is not JSON: {str(exc)[:200]}", None, "invalid_json").response()
    if not isinstance(body, dict):
        return ApiError(400, "body must be a JSON object", None, "invalid_json").response()
    rid, label = body.get("request_id"), body.get("label")
    if not isinstance(rid, str) or not rid:
        return ApiError(400, "'request_id' must be the id of a served response", "request_id",
                        "invalid_value").response()
    if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label) \
            or not 0.0 <= label <= 1.0:
        return ApiError(400, f"'label' must be a number in [0, 1], got {label!r}", "label", "invalid_value").response()
    source = body.get("source", "api")
    if not isinstance(source, str) or len(source) > 64:
        return ApiError(400, "'source' must be a short string", "source", "invalid_value").response()
    known = await anyio.to_thread.run_sync(state.log.known, rid)
    if not known:
        return ApiError(404, f"no served request with id {rid!r}", "request_id", "not_found").response()
    row = state.log.add_feedback(rid, float(label), source)
    return JSONResponse({"object": "feedback", **row})


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return ApiError(exc.status_code, str(exc.detail), None, "not_found" if exc.status_code == 404 else None,
                    "invalid_request_error").response(headers=exc.headers)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    return ApiError(500, f"{type(exc).__name__}: {exc}", None, "internal_error").response()


def make_gateway_app(service: RouterService | Callable[[], RouterService], upstreams: UpstreamSource,
                     home: Path | None = None, cfg: GatewayConfig | None = None,
                     limits: ServeLimits | None = None, log_root: Path | None = None,
                     auth_required: bool = False) -> Starlette:
    """The gateway app: routes with ``service`` (or what the callable builds on first use), calls
    ``upstreams`` (a table, or a function of the router's models table), reads named policies from
    ``<home>/policies.json`` and access keys from ``<home>/keys.json`` (required with ``auth_required``;
    otherwise a valid key is still attributed and limited), and logs served requests under ``log_root``
    (default ``<home>/warehouse``)."""
    cfg = cfg or GatewayConfig()
    limits = limits or ServeLimits()
    built = service if isinstance(service, RouterService) else None
    if log_root is None and home is not None:
        log_root = Path(home) / "warehouse"
    metrics = GatewayMetrics()
    log = ServedLog(log_root, cfg.flush_interval_s, cfg.flush_rows, on_written=metrics.log_rows.inc) \
        if log_root is not None else None
    spent = (lambda day: spend_by_key(log_root, day)) if log_root is not None else None
    access: AccessGate = open_gate(Path(home) if home is not None else None, auth_required, spent)
    state = GatewayState(service=built, factory=None if built else service, upstream_source=upstreams,
                         policies=PolicyBook(Path(home) / POLICY_FILE if home else None, cfg.default_lambda),
                         cfg=cfg, limits=limits, metrics=metrics, log=log, access=access)

    async def refresher() -> None:
        """Re-read the models table at least every ``refresh_interval_s``, so plain-proxy traffic (which
        does not route) sees a disabled model within one interval."""
        while True:
            await anyio.sleep(cfg.refresh_interval_s)
            if state.service is None or time.monotonic() - state.refreshed_at < cfg.refresh_interval_s:
                continue
            with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.refresh, limiter=state.route_threads)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.client = make_client(cfg)
        try:
            async with anyio.create_task_group() as tg:
                if log is not None:
                    tg.start_soon(log.run)
                tg.start_soon(refresher)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if log is not None:  # every queued row reaches disk before the process exits
                    await anyio.to_thread.run_sync(log.flush)
                await state.client.aclose()

    app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                            Route("/v1/models", _models, methods=["GET"]),
                            Route("/v1/feedback", _feedback, methods=["POST"]),
                            Route("/health", _health, methods=["GET"]),
                            Route("/metrics", _metrics, methods=["GET"])],
                    exception_handlers={HTTPException: _http_exception, Exception: _unhandled},
                    middleware=[Middleware(Admission, limits=limits, render=_error_body,
                                           exempt=("/health", "/metrics"),
                                           on_shed=lambda scope, status, msg: shed_row(state, scope, status, msg))],
                    lifespan=lifespan)
    app.state.gateway = state
    return app


def _error_body(status: int, message: str) -> bytes:
    return json.dumps(ApiError(status, message, None, "overloaded").payload()).encode()


def make_gateway_server(app: Starlette, host: str = "127.0.0.1", port: int = 8788,
                        limits: ServeLimits | None = None) -> uvicorn.Server:
    """A uvicorn server for the gateway app, with the limits of ``lrouter serve`` and its lifespan on (the
    served-request log is flushed on shutdown)."""
    config: Any = server_config(app, host, port, limits or app.state.gateway.limits,
                                _error_body(503, "overloaded: too many open connections; retry shortly"))
    config.lifespan = "on"
    return uvicorn.Server(config)
