"""``POST /v1/chat/completions``: validate, resolve the policy, route (worker thread), forward with fallback,
answer (JSON or SSE) and log exactly one served_requests row per request.

Why this order: everything cheap and refusable (body size, JSON, images, policy) happens before routing;
routing runs in one worker thread, requests that queued meanwhile routed together in one batch (batcher.py),
while the event loop keeps serving; upstream calls are plain async I/O, so a slow model
or a slow client only holds its own request. Fallback happens only while the client has received nothing.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from router.features.extract import PreparedImage
from router.serving.gateway.batcher import QueueFull, RouteBatcher
from router.serving.gateway.policies import ROUTER_POLICY, Plan, PolicyError
from router.serving.gateway.schema import ApiError, ChatRequest, parse_chat, refused
from router.serving.gateway.served_log import now_iso
from router.serving.gateway.state import GatewayState, PoolGone, PoolRoute, Unavailable
from router.serving.gateway.upstream import (
    AUTH_STATUS,
    OFF_LOOP_JSON_BYTES,
    Attempt,
    UpstreamFailure,
    UpstreamStream,
    complete,
    open_stream,
    safe_usage,
)
from router.serving.keys import Denied
from router.serving.limits import RequestRefused, read_body
from router.serving.redact import scrub
from router.serving.service import RouteRequest

MAX_LOGGED_MODEL_CHARS = 256  # a request's model field as stored in served_requests


@dataclass
class Served:
    """The served_requests row of one request, filled in as it goes."""

    request_id: str
    received_at: str
    t0: float
    requested_model: str | None = None
    policy: str | None = None
    lam: float | None = None
    chosen_model: str | None = None
    predicted_quality: float | None = None
    expected_cost_usd: float | None = None
    realised_cost_usd: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    routing_ms: float | None = None  # wall time of the routing batch this request was in
    route_batch: int | None = None  # requests routed together with it (itself included)
    upstream_ms: float | None = None
    status: str = "ok"
    http_status: int = 200
    attempts: list[Attempt] = field(default_factory=list)
    stream: bool = False
    has_image: bool = False
    error: str = ""
    prompt: str | None = None
    task_group: str | None = None  # the request's extra_body task_group / dataset: lets its label count toward
    dataset: str | None = None  # that group's / dataset's profile parts at recalibration
    key_id: str | None = None  # the access key's id (never the key)
    router: str | None = None  # the deployed router that ranked the models (routed requests)
    simulated: bool = False  # the chosen model is the built-in simulator's
    finished: bool = False  # its row was recorded (exactly once)

    @property
    def fallbacks(self) -> int:
        return max(0, len(self.attempts) - 1) if self.chosen_model else 0

    def row(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "received_at": self.received_at, "policy": self.policy,
                "requested_model": self.requested_model, "lambda": self.lam, "chosen_model": self.chosen_model,
                "predicted_quality": self.predicted_quality, "expected_cost_usd": self.expected_cost_usd,
                "realised_cost_usd": self.realised_cost_usd, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "latency_ms": (time.perf_counter() - self.t0) * 1e3, "routing_ms": self.routing_ms,
                "upstream_ms": self.upstream_ms, "status": self.status, "http_status": self.http_status,
                "fallbacks": self.fallbacks, "attempts": json.dumps([a.as_dict() for a in self.attempts]),
                "stream": self.stream, "has_image": self.has_image, "error": scrub(self.error, 2000),
                "prompt": self.prompt, "task_group": self.task_group, "dataset": self.dataset,
                "key_id": self.key_id}

    def headers(self) -> dict[str, str]:
        h = {"x-lrouter-request-id": self.request_id}
        if self.policy:
            h["x-lrouter-policy"] = self.policy
        if self.lam is not None:
            h["x-lrouter-lambda"] = f"{self.lam:g}"
        if self.router:
            h["x-lrouter-router"] = self.router
        if self.chosen_model:
            h["x-lrouter-model"] = self.chosen_model
            h["x-lrouter-fallbacks"] = str(self.fallbacks)
            if self.simulated:
                h["x-lrouter-simulated"] = "true"
        if self.predicted_quality is not None:
            h["x-lrouter-predicted-quality"] = f"{self.predicted_quality:.4f}"
        if self.expected_cost_usd is not None:
            h["x-lrouter-expected-cost-usd"] = f"{self.expected_cost_usd:.3e}"
        if self.routing_ms is not None:
            h["x-lrouter-routing-ms"] = f"{self.routing_ms:.2f}"
            h["x-lrouter-route-batch"] = str(self.route_batch)
        if self.attempts:
            h["x-lrouter-attempts"] = ", ".join(a.model + ("" if a.ok else f" ({a.kind})") for a in self.attempts)
        return h

    def info(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "policy": self.policy, "lambda": self.lam,
                "chosen_model": self.chosen_model, "predicted_quality": self.predicted_quality,
                "expected_cost_usd": self.expected_cost_usd, "fallbacks": self.fallbacks,
                "attempts": [a.as_dict() for a in self.attempts]}


def _metric_policy(policy: str | None) -> str:
    if policy is None:
        return "invalid"
    return f"{ROUTER_POLICY}:*" if policy.startswith(ROUTER_POLICY + ":") else policy


def _finish(state: GatewayState, rec: Served) -> None:
    """Log the row, charge the key and count the request (once per request, whatever its outcome)."""
    if rec.finished:
        return
    rec.finished = True
    state.metrics.requests.labels(_metric_policy(rec.policy), rec.status).inc()
    if rec.chosen_model:
        state.metrics.chosen.labels(rec.chosen_model).inc()
        if rec.fallbacks:
            state.metrics.fallbacks.inc()
    state.access.charge(rec.key_id, rec.realised_cost_usd if rec.realised_cost_usd is not None
                        else rec.expected_cost_usd if rec.chosen_model else None)
    if state.log is not None:
        state.log.record(rec.row())


def _fail(state: GatewayState, rec: Served, err: ApiError, status: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    err.message = scrub(err.message, 2000)
    rec.status = status or ("invalid" if err.status < 500 else "error")
    rec.http_status, rec.error = err.status, err.message
    _finish(state, rec)
    return err.response(headers={**rec.headers(), **(headers or {})})


def shed_row(state: GatewayState, scope: dict[str, Any], status: int, message: str) -> dict[str, str]:
    """The served_requests row of a request the admission queue refused (overload): one row, like any other."""
    if scope.get("path") != "/v1/chat/completions":
        return {}
    rec = Served(request_id=f"chatcmpl-lr-{uuid.uuid4().hex}", received_at=now_iso(), t0=time.perf_counter())
    rec.status, rec.http_status, rec.error = "shed", status, message
    _finish(state, rec)
    return {"x-lrouter-request-id": rec.request_id}


async def ensure_service(state: GatewayState) -> None:
    """Build the router on first use (worker thread, under the route lock)."""
    if state.service is None:
        async with state.route_lock:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.get, limiter=state.route_threads)


async def _candidates(state: GatewayState, req: ChatRequest, plan: Plan, rec: Served) -> list[dict[str, Any]]:
    """The models to try, best first: the router's ranking within the request's pool and budget."""
    if plan.concrete is not None:
        return [{"model_id": plan.concrete, "quality": None, "cost_usd": None}]
    if plan.models:  # a named pool must be routable now (the batch drops what is disabled meanwhile)
        routable = state.routable()
        missing = [m for m in plan.models if m not in routable]
        if len(missing) == len(plan.models):
            raise ApiError(400, f"model(s) {missing[:10]} cannot be routed to (no capability profile or no "
                           f"upstream); routable: {routable}", "models", "model_not_routable")
    image: PreparedImage | None = None
    try:
        if req.image is not None:  # decoded and resized on a request thread while the router runs a batch
            image = await anyio.to_thread.run_sync(state.get().prepare_image, req.image, limiter=state.parse_threads)
    except ValueError as exc:
        raise ApiError(400, str(exc), "messages", "invalid_image") from None
    item = RouteRequest(image, req.question, None, float(plan.lam or 0.0), req.extras.get("task_group"),
                        req.extras.get("dataset"))
    t = time.perf_counter()
    try:
        # an image request is encoded ahead, in small batches on every lane (state.encoders); a question alone
        # is encoded in its routing batch (one pass for the batch's questions, one refresh, one forward)
        encoders = state.encoders() if image is not None else None
        if encoders is not None:
            item = replace(item, image=None, encoded=await _encode(encoders, req.question, image))
        routed = await state.batcher.submit(PoolRoute(item, tuple(plan.models) if plan.models else None))
    except QueueFull as exc:
        raise ApiError(503, f"busy: {exc}; retry shortly", None, "router_busy") from None
    except Unavailable as exc:
        raise ApiError(503, str(exc), None, "router_unavailable") from None
    ranked = routed.result
    if isinstance(ranked, PoolGone):
        raise ApiError(503, str(ranked), "models" if plan.models else None, "pool_unavailable")
    if isinstance(ranked, ValueError):  # the request's own input (an image PIL cannot decode, ...)
        raise ApiError(400, str(ranked), "messages", "invalid_image" if "image" in str(ranked) else "invalid_value")
    # encoding (queue included) + the routing batch; where the batch encodes, its own wall time (as before)
    rec.routing_ms = (time.perf_counter() - t) * 1e3 if encoders is not None else routed.batch_ms
    rec.route_batch = routed.batch_size
    rec.router = state.service.deployment.get("serving") if state.service is not None else None
    state.metrics.routing.observe(rec.routing_ms / 1e3)
    state.metrics.route_batch.observe(routed.batch_size)
    cap = plan.max_cost_usd
    ok = [r for r in ranked if cap is None or r["cost_usd"] <= cap]
    if not ok:
        cheapest = min(ranked, key=lambda r: r["cost_usd"])
        raise ApiError(400, f"no model's expected cost is within max_cost_usd={cap:g}; the cheapest is "
                       f"{cheapest['model_id']} at {cheapest['cost_usd']:.3e} USD", "max_cost_usd", "budget_too_low")
    return ok


async def _encode(encoders: tuple[RouteBatcher[str], RouteBatcher[PreparedImage]], question: str,
                  image: PreparedImage | None) -> dict[str, Any]:
    """One request's features from the encoder micro-batchers: its question and its image at the same time."""
    texts, images = encoders
    out: dict[str, Any] = {"img_tokens": None, "img_pooled": None, "image_wh": None}
    if image is None:
        out.update((await texts.submit(question)).result)
        return out

    async def encode(batcher: RouteBatcher[Any], item: Any) -> None:
        out.update((await batcher.submit(item)).result)

    async with anyio.create_task_group() as tg:
        tg.start_soon(encode, images, image)
        tg.start_soon(encode, texts, question)
    return out


def _use(rec: Served, cand: dict[str, Any]) -> None:
    rec.chosen_model = cand["model_id"]
    rec.predicted_quality = cand.get("quality")
    rec.expected_cost_usd = cand.get("cost_usd")


def _account(state: GatewayState, rec: Served, usage: Any) -> None:
    """Token counts and realised cost from the upstream's usage; a malformed count (NaN, a string, negative)
    is recorded as unknown (null), never a crash."""
    up = state.upstreams().get(rec.chosen_model or "")
    p, c = safe_usage(usage)
    rec.prompt_tokens, rec.completion_tokens = p, c
    if up is not None and p is not None and c is not None:
        cost = up.cost_usd(p, c)
        rec.realised_cost_usd = cost if math.isfinite(cost) else None


def _denied(state: GatewayState, rec: Served, exc: Denied) -> JSONResponse:
    kind = "authentication_error" if exc.status == 401 else "rate_limit_error"
    return _fail(state, rec, ApiError(exc.status, exc.message, None, exc.code, kind),
                 "unauthorized" if exc.status == 401 else "rate_limited", exc.headers())


async def chat_completions(request: Request) -> Response:
    """One answer and one served_requests row per request, whatever happens (the last resort is a 500)."""
    state: GatewayState = request.app.state.gateway
    rec = Served(request_id=f"chatcmpl-lr-{uuid.uuid4().hex}", received_at=now_iso(), t0=time.perf_counter())
    try:
        return await _chat(state, request, rec)
    except Exception as exc:  # a bug or a strange upstream: still one answer and one row
        if rec.finished:
            raise
        return _fail(state, rec, ApiError(500, f"{type(exc).__name__}: {exc}", None, "internal_error"))


async def _chat(state: GatewayState, request: Request, rec: Served) -> Response:
    try:
        key = state.access.authenticate(request.headers)
        rec.key_id = key.id if key is not None else None
        state.access.admit(key)
    except Denied as exc:
        return _denied(state, rec, exc)
    try:
        with anyio.fail_after(state.limits.request_timeout_s):
            raw = await read_body(request, state.limits.max_body_bytes)
    except TimeoutError:
        return _fail(state, rec, ApiError(408, f"the body did not arrive within {state.limits.request_timeout_s:g} s",
                                          None, "request_timeout"))
    except RequestRefused as exc:
        return _fail(state, rec, refused(exc, "body"))
    try:
        req = await anyio.to_thread.run_sync(parse_chat, raw, state.limits, limiter=state.parse_threads)
        rec.requested_model = req.model[:MAX_LOGGED_MODEL_CHARS] if req.model is not None else None
        rec.stream, rec.has_image = req.stream, req.image is not None
        rec.prompt = req.question if state.cfg.log_prompts else None
        rec.task_group, rec.dataset = req.extras.get("task_group"), req.extras.get("dataset")
        await ensure_service(state)
        try:
            plan = state.policies.resolve(req.model, req.extras, state.upstreams().ids())
        except PolicyError as exc:
            raise ApiError(exc.status, str(exc), exc.param, exc.code or "invalid_value") from None
        rec.policy, rec.lam = plan.policy, plan.lam
        candidates = await _candidates(state, req, plan, rec)
    except ApiError as err:
        return _fail(state, rec, err)
    except Unavailable as exc:
        return _fail(state, rec, ApiError(503, str(exc), None, "router_unavailable"))
    release = request.scope.get("lrouter.release")
    if release is not None:  # routed: from here on it only waits for I/O (see limits.Admission)
        release()
    return await _forward(state, req, rec, candidates)


async def _forward(state: GatewayState, req: ChatRequest, rec: Served, candidates: list[dict[str, Any]]) -> Response:
    upstreams, pool, cfg = state.upstreams(), state.http(), state.cfg
    for cand in candidates[: 1 + cfg.max_fallbacks]:
        model = cand["model_id"]
        up = upstreams.get(model)
        if up is None:
            rec.attempts.append(Attempt(model, False, "no upstream configured", "config"))
            continue
        t = time.perf_counter()
        shard, client = pool.acquire()
        try:
            result: dict[str, Any] | UpstreamStream = (await open_stream(client, up, req.body, cfg) if req.stream
                                                      else await complete(client, up, req.body, cfg))
        except BaseException as exc:
            pool.release(shard)
            if not isinstance(exc, UpstreamFailure):
                raise
            f = exc
        else:
            if isinstance(result, UpstreamStream):
                result.on_close = lambda shard=shard: pool.release(shard)  # the stream holds its connection
            else:
                pool.release(shard)
            f = None
        if f is not None:
            ms = (time.perf_counter() - t) * 1e3
            rec.attempts.append(Attempt(model, False, str(f), f.kind, ms))
            state.metrics.upstream_errors.labels(model, f.kind).inc()
            if not f.retryable:  # the upstream refused the request itself: another model would too
                # its 4xx about the request is the client's; anything else (auth, size) is the gateway's 502
                status = f.status if f.status and 400 <= f.status < 500 and f.status not in AUTH_STATUS else 502
                return _fail(state, rec, ApiError(status, f"upstream {model}: {f}", None,
                                                  "upstream_too_large" if f.kind == "too_large" else "upstream_error"),
                             "upstream_error")
            continue
        rec.upstream_ms = (time.perf_counter() - t) * 1e3
        state.metrics.upstream_latency.labels(model).observe(rec.upstream_ms / 1e3)
        rec.attempts.append(Attempt(model, True, latency_ms=rec.upstream_ms))
        _use(rec, cand)
        rec.simulated = up.simulated
        if isinstance(result, UpstreamStream):
            return StreamingResponse(_sse(state, req, rec, result), media_type="text/event-stream",
                                     headers={**rec.headers(), "cache-control": "no-cache"})
        _account(state, rec, result.get("usage"))
        result.update(id=rec.request_id, model=model, lrouter=rec.info())
        body = await _render(result)
        _finish(state, rec)
        return Response(body, media_type="application/json", headers=rec.headers())
    tried = "; ".join(f"{a.model}: {a.error}" for a in rec.attempts)
    return _fail(state, rec, ApiError(502, f"every upstream attempt failed ({len(rec.attempts)}): {tried}", None,
                                      "upstream_failed", extra={"attempts": [a.as_dict() for a in rec.attempts]}),
                 "upstream_error")


def _text_size(obj: Any, depth: int = 0) -> int:
    """Characters of the strings in a parsed answer (cheap: no copy), capped in depth and breadth."""
    if isinstance(obj, str):
        return len(obj)
    if depth > 6:
        return 0
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, list):
        items = obj
    else:
        return 0
    if len(items) > 256:
        return OFF_LOOP_JSON_BYTES
    return sum(_text_size(v, depth + 1) for v in items)


def _dumps(obj: Any) -> bytes:
    return json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def _render(result: dict[str, Any]) -> bytes:
    """The answer's JSON bytes; a large one is rendered in a worker thread (the event loop keeps serving)."""
    if _text_size(result) > OFF_LOOP_JSON_BYTES // 4:
        return await anyio.to_thread.run_sync(_dumps, result)
    return _dumps(result)


def _finite(obj: Any) -> Any:
    """Replace non-finite floats (never valid JSON) by null, so a strange upstream cannot break the answer."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


async def _sse(state: GatewayState, req: ChatRequest, rec: Served, stream: UpstreamStream):
    """The client's event stream: upstream chunks re-labelled with the request id and chosen model; the
    usage chunk only when asked for (``stream_options.include_usage``)."""
    try:
        async for ev in stream.events():
            ev["id"], ev["model"] = rec.request_id, rec.chosen_model
            if "usage" in ev and not ev.get("choices"):
                if not req.include_usage:
                    continue
            elif not req.include_usage:
                ev.pop("usage", None)
            yield f"data: {json.dumps(_finite(ev))}\n\n"
        yield "data: [DONE]\n\n"
    except UpstreamFailure as f:  # after the first byte: no fallback, the client is told in-stream
        rec.status, rec.error = "error", f"mid-stream: {f}"
        state.metrics.upstream_errors.labels(rec.chosen_model or "", f.kind).inc()
        err = ApiError(502, f"upstream {rec.chosen_model} failed mid-stream: {f}", None, "upstream_stream_error")
        yield f"data: {json.dumps(err.payload())}\n\n"
    except Exception as exc:  # a bug or a strange event: the client is told in-stream, the row says why
        rec.status, rec.error = "error", f"mid-stream: {type(exc).__name__}: {exc}"
        err = ApiError(500, f"the gateway failed mid-stream: {type(exc).__name__}", None, "internal_error")
        yield f"data: {json.dumps(err.payload())}\n\n"
    except BaseException:
        rec.status, rec.error = "client_disconnected", "the client went away mid-stream"
        raise
    finally:
        try:
            _account(state, rec, stream.usage)
        finally:
            _finish(state, rec)
