"""The simulator's OpenAI-compatible endpoint: ``POST /v1/chat/completions`` (JSON or SSE, with usage) and
``GET /v1/models``, answered by the same simulated models, answer key and fault injection as Ollama's API.

Why: the routing gateway forwards to OpenAI-compatible upstreams, so tests, the bench and the demo run it end
to end offline with the embedded simulator on loopback. Requests take OpenAI's message schema (text and
``image_url`` parts with ``data:`` URLs); errors come in OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}``. Besides the faults of ``/api/chat``, two are OpenAI-shaped: ``http_429`` (with
``Retry-After`` and ``retry-after-ms``) and ``unauthorized_models`` (HTTP 401, a rejected key), so the
OpenAI-protocol collector is tested against both. ``set_fixed_latency(sim, s)`` makes every answer here take ``s`` real seconds instead
of its scaled simulated duration (the bench's "200 ms upstream").
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from collectors.simulator.faults import draw_fault
from collectors.simulator.protocol import (
    MODIFIED_AT,
    PIECE_RE,
    BadRequest,
    InferenceRequest,
    content_hash,
    truncate_reply,
)

# The handler (collectors.simulator.handler.SimHandler) and the server (collectors.simulator.server.SimServer)
# import this module, so it names their types in prose only: ``h`` is the SimHandler of one request, ``sim``
# its SimServer. No import cycle, not even a type-only one.
SimHandler = Any
SimServer = Any

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


def set_fixed_latency(sim: SimServer, seconds: float | None) -> None:
    """Answer every OpenAI-endpoint request after exactly ``seconds`` (None: the scaled simulated time)."""
    if seconds is not None and seconds < 0:
        raise ValueError(f"fixed latency must be >= 0, got {seconds}")
    sim.openai_fixed_latency_s = seconds  # type: ignore[attr-defined]


def _error(h: SimHandler, status: int, message: str, kind: str = "invalid_request_error",
           param: str | None = None, code: str | None = None) -> None:
    h._send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _data_url_bytes(url: str, where: str) -> bytes:
    if not url.startswith("data:") or ";base64," not in url:
        raise BadRequest(f"{where}: only data:...;base64, image URLs are supported")
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: illegal base64 data") from None


def parse_openai_chat(body: Mapping[str, Any]) -> InferenceRequest:
    """OpenAI chat messages as the simulator's `InferenceRequest` (question = the last user message's text)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, Mapping) for m in msgs):
        raise BadRequest("messages must be a non-empty list of objects")
    texts: list[str] = []
    images: list[bytes] = []
    question = ""
    for i, m in enumerate(msgs):
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if not isinstance(parts, list):
            raise BadRequest(f"messages[{i}].content must be a string or a list of parts")
        text = []
        for j, p in enumerate(parts):
            if not isinstance(p, Mapping):
                raise BadRequest(f"messages[{i}].content[{j}] must be an object")
            if p.get("type") == "text":
                text.append(str(p.get("text") or ""))
            elif p.get("type") == "image_url":
                url = (p.get("image_url") or {}).get("url") if isinstance(p.get("image_url"), Mapping) else None
                images.append(_data_url_bytes(str(url or ""), f"messages[{i}].content[{j}].image_url"))
        texts.append(" ".join(text))
        if m.get("role", "user") == "user":
            question = " ".join(text)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    num_predict = int(max_tokens) if isinstance(max_tokens, int) and max_tokens > 0 else None
    return InferenceRequest("chat", model, question, "\n".join(texts), images, body.get("stream") is True,
                            num_predict, False)


def handle_models(h: SimHandler) -> None:
    sim = h.server.sim
    sim._count(endpoint=MODELS_PATH)
    created = int(time.mktime(time.strptime(MODIFIED_AT[:19], "%Y-%m-%dT%H:%M:%S")))
    h._send_json(200, {"object": "list", "data": [
        {"id": s.name, "object": "model", "created": created, "owned_by": "lrouter-simulator"}
        for s in sim.models if sim._served(s.name)]})


def handle_chat(h: SimHandler, body: Mapping[str, Any]) -> None:
    """One ``/v1/chat/completions`` request: faults first (as on ``/api/chat``), then the answer."""
    sim = h.server.sim
    try:
        req = parse_openai_chat(body)
    except BadRequest as exc:
        sim._count(endpoint=CHAT_PATH, bad_requests=1)
        _error(h, 400, str(exc), param="messages")
        return
    sim._count(endpoint=CHAT_PATH, model=req.model)
    faults = sim.faults
    if req.model in faults.down_models:
        sim._count(model=req.model, fault="down")
        if faults.down_mode == "drop":
            h._drop()
        else:
            _error(h, 503, f"model '{req.model}' runner is not available", "server_error")
        return
    if req.model in faults.unauthorized_models:
        sim._count(model=req.model, fault="unauthorized")
        _error(h, 401, "Incorrect API key provided.", code="invalid_api_key")
        return
    spec = sim._admit(req.model)
    if spec is None:
        sim._count(model=req.model, not_found=1)
        _error(h, 404, f"The model '{req.model}' does not exist", param="model", code="model_not_found")
        return
    fault = None
    if faults.active:
        key = content_hash(body)
        fault = draw_fault(faults, sim.seed, key, sim._next_attempt(key))
        if fault is not None:
            sim._count(model=req.model, fault=fault)
    if fault == "http_429":
        h._send_429(faults.retry_after_s, json.dumps({"error": {
            "message": "Rate limit reached; please try again later.", "type": "requests", "param": None,
            "code": "rate_limit_exceeded"}}).encode())
        return
    if fault in ("http_500", "http_503"):
        _error(h, int(fault[-3:]), "simulated upstream failure", "server_error")
        return
    if fault == "dropped_connection":
        h._drop()
        return
    if fault == "timeout":
        sim._wait(faults.timeout_s)
        if faults.timeout_then == "drop" or sim._stop.is_set():
            h._drop()
            return
    if fault == "slow":
        sim._wait(faults.slow_extra_s)
    ans, truncated = truncate_reply(sim._answer(spec, req), req.num_predict)
    sim._count(model=req.model, ok=1)
    fixed = getattr(sim, "openai_fixed_latency_s", None)
    total_s = fixed if fixed is not None else ans.total_duration_ns / 1e9 * sim.time_scale
    usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
             "total_tokens": ans.prompt_tokens + ans.completion_tokens}
    rid, created = f"chatcmpl-sim-{uuid.uuid4().hex[:16]}", int(time.time())
    finish = "length" if truncated else "stop"
    base = {"id": rid, "created": created, "model": req.model, "system_fingerprint": f"sim-{spec.digest[:8]}",
            "simulated": True}  # an extra field clients keep: the built-in simulator answered, not a real model
    if not req.stream:
        sim._wait(total_s)
        obj = {**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ans.text}, "finish_reason": finish,
             "logprobs": None}]}
        data = json.dumps(obj).encode()
        if fault == "malformed_json":
            data = data[: len(data) // 2]
        h._send_bytes(200, data, "application/json")
        return
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    pieces = PIECE_RE.findall(ans.text) or [ans.text]
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Cache-Control", "no-cache")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()

    def event(obj: dict[str, Any] | str, broken: bool = False) -> None:
        line = obj if isinstance(obj, str) else json.dumps(obj)
        h._chunk(f"data: {line[: len(line) // 2] if broken else line}\n\n".encode())

    chunk = {**base, "object": "chat.completion.chunk"}
    first_s = total_s * 0.3  # time to first token; the rest is spread over the pieces
    sim._wait(first_s)
    event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}]})
    bad_at = len(pieces) // 2 if fault == "malformed_json" else -1
    for i, piece in enumerate(pieces):
        sim._wait((total_s - first_s) / len(pieces))
        event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]},
              broken=i == bad_at)
    event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if include_usage:
        event({**chunk, "choices": [], "usage": usage})
    event("[DONE]")
    h._end_stream()
