"""Forwarding one chat request to one model's backend over HTTP (httpx.AsyncClient), in OpenAI's protocol or
translated to and from Ollama's ``/api/chat``, streaming or not.

Why a first-event boundary: the gateway may fall back to another model only while the client has seen
nothing, so ``complete`` returns a whole answer and ``open_stream`` returns once the first event has arrived;
every failure before that is an `UpstreamFailure` saying whether another model may be tried.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from router.serving.gateway.config import GatewayConfig, Upstream

RETRYABLE_STATUS = {404, 408, 409, 429}  # besides 5xx: gone, overloaded or racing; another model may answer
OLLAMA_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
                  "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}


class UpstreamFailure(Exception):
    """A call that produced no answer; ``retryable``: another model may be tried (nothing was sent yet)."""

    def __init__(self, kind: str, message: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.kind, self.retryable, self.status = kind, retryable, status


def _classify(exc: BaseException, timeout_s: float) -> UpstreamFailure:
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamFailure("timeout", f"no answer within {timeout_s:g} s", True)
    if isinstance(exc, httpx.HTTPError | OSError):
        return UpstreamFailure("connection", f"{type(exc).__name__}: {str(exc)[:200] or 'connection failed'}", True)
    return UpstreamFailure("error", f"{type(exc).__name__}: {str(exc)[:200]}", True)


async def _http_failure(resp: httpx.Response) -> UpstreamFailure:
    try:
        raw = await resp.aread()
        detail = json.loads(raw)
        err = detail.get("error") if isinstance(detail, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else raw[:200].decode()
    except Exception:
        msg = ""
    status = resp.status_code
    return UpstreamFailure("http_5xx" if status >= 500 else "http_4xx", f"HTTP {status}: {str(msg)[:300]}",
                           status >= 500 or status in RETRYABLE_STATUS, status)


# ------------------------------------------------------------------------------------------- translation


def _ollama_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        text = "\n".join(p["text"] for p in parts if p.get("type") == "text")
        images = [p["image_url"]["url"].split(";base64,", 1)[1] if isinstance(p["image_url"], dict)
                  else p["image_url"].split(";base64,", 1)[1] for p in parts if p.get("type") == "image_url"]
        msg: dict[str, Any] = {"role": m["role"] if m["role"] != "developer" else "system", "content": text}
        if images:
            msg["images"] = images
        out.append(msg)
    return out


def ollama_request(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat body as Ollama's ``/api/chat`` body (max_tokens -> num_predict, sampling options)."""
    options = {dst: body[src] for src, dst in OLLAMA_OPTIONS.items() if body.get(src) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        options["num_predict"] = max_tokens
    out: dict[str, Any] = {"model": model, "messages": _ollama_messages(body["messages"]), "stream": stream}
    if options:
        out["options"] = options
    return out


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(done_reason: Any) -> str:
    return "length" if done_reason == "length" else "stop"


def ollama_to_openai(obj: dict[str, Any], model: str) -> dict[str, Any]:
    """A non-streaming Ollama chat reply as an OpenAI ``chat.completion``."""
    msg = obj.get("message")
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
        raise UpstreamFailure("malformed", "Ollama reply has no message.content", True)
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": msg["content"]},
                                         "finish_reason": _finish(obj.get("done_reason")), "logprobs": None}],
            "usage": _usage(int(obj.get("prompt_eval_count") or 0), int(obj.get("eval_count") or 0))}


def openai_payload(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    out = {**body, "model": model, "stream": stream}
    if stream:
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}  # for the cost
    else:
        out.pop("stream_options", None)
    return out


# ------------------------------------------------------------------------------------------- calls


def _timeout(cfg: GatewayConfig) -> httpx.Timeout:
    return httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s)


async def complete(client: httpx.AsyncClient, up: Upstream, body: dict[str, Any],
                   cfg: GatewayConfig) -> dict[str, Any]:
    """One non-streaming answer as an OpenAI ``chat.completion`` (with ``usage``), or `UpstreamFailure`."""
    if up.protocol == "openai":
        url, payload = up.base_url + "/chat/completions", openai_payload(body, up.model_id, False)
    else:
        url, payload = up.base_url + "/api/chat", ollama_request(body, up.model_id, False)
    try:
        with anyio.fail_after(cfg.first_byte_timeout_s):
            resp = await client.post(url, json=payload, headers=up.headers(), timeout=_timeout(cfg))
            if resp.status_code >= 400:
                raise await _http_failure(resp)
            try:
                obj = resp.json()
            except ValueError as exc:
                raise UpstreamFailure("malformed", f"reply is not JSON: {str(exc)[:120]}", True) from None
    except Exception as exc:
        raise _classify(exc, cfg.first_byte_timeout_s) from None
    if up.protocol == "ollama":
        return ollama_to_openai(obj, up.model_id)
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        raise UpstreamFailure("malformed", "reply has no 'choices' list", True)
    return obj


def _parse_sse(line: str) -> dict[str, Any] | None:
    """One SSE ``data:`` line as JSON (None for blank lines, comments and ``[DONE]``)."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("event is not an object")
    return obj


class UpstreamStream:
    """An open streamed answer: OpenAI ``chat.completion.chunk`` dicts, the first already received.

    ``usage`` holds the upstream's token counts once the stream has ended (always requested upstream, so the
    realised cost is known even when the client did not ask for usage)."""

    def __init__(self, resp: httpx.Response, up: Upstream, cfg: GatewayConfig):
        self.resp, self.up, self.cfg = resp, up, cfg
        self.usage: dict[str, int] | None = None
        self._lines = resp.aiter_lines()
        self._rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._pending: list[dict[str, Any]] = []
        self._ended = False

    async def _next_events(self) -> list[dict[str, Any]]:
        """The next upstream line's events ([] at the end); ValueError on a malformed line."""
        while True:
            try:
                line = await self._lines.__anext__()
            except StopAsyncIteration:
                self._ended = True
                return []
            if self.up.protocol == "openai":
                obj = _parse_sse(line)
                if obj is None:
                    if line.strip() == "data: [DONE]":
                        self._ended = True
                        return []
                    continue
                if isinstance(obj.get("error"), dict | str):
                    raise ValueError(f"upstream error event: {str(obj['error'])[:200]}")
                if obj.get("usage"):
                    self.usage = obj["usage"]
                return [obj]
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("NDJSON line is not an object")
            if "error" in obj:
                raise ValueError(f"upstream error: {str(obj['error'])[:200]}")
            base = {"id": self._rid, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": self.up.model_id}
            piece = (obj.get("message") or {}).get("content") or ""
            out = [{**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}] \
                if piece or not obj.get("done") else []
            if obj.get("done"):
                self.usage = _usage(int(obj.get("prompt_eval_count") or 0), int(obj.get("eval_count") or 0))
                out.append({**base, "choices": [{"index": 0, "delta": {},
                                                 "finish_reason": _finish(obj.get("done_reason"))}]})
                out.append({**base, "choices": [], "usage": self.usage})
                self._ended = True
            if out:
                return out

    async def first(self) -> None:
        """Wait for the first event (bounded by ``first_byte_timeout_s``); `UpstreamFailure` if none came."""
        try:
            with anyio.fail_after(self.cfg.first_byte_timeout_s):
                self._pending = await self._next_events()
        except Exception as exc:
            await self.aclose()
            raise _classify(exc if not isinstance(exc, ValueError) else
                            UpstreamFailure("malformed", f"malformed stream: {exc}", True),
                            self.cfg.first_byte_timeout_s) from None
        if not self._pending:
            await self.aclose()
            raise UpstreamFailure("malformed", "the stream ended before its first event", True)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event; raises `UpstreamFailure` (not retryable: the client has seen events) mid-stream."""
        try:
            while self._pending:
                for ev in self._pending:
                    yield ev
                if self._ended:
                    return
                try:
                    with anyio.fail_after(self.cfg.read_timeout_s):
                        self._pending = await self._next_events()
                except Exception as exc:
                    f = _classify(exc, self.cfg.read_timeout_s) if not isinstance(exc, ValueError) else \
                        UpstreamFailure("malformed", f"malformed stream: {exc}", False)
                    f.retryable = False
                    raise f from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.resp.aclose()


async def open_stream(client: httpx.AsyncClient, up: Upstream, body: dict[str, Any],
                      cfg: GatewayConfig) -> UpstreamStream:
    """Start a streamed answer and wait for its first event, or raise `UpstreamFailure`."""
    if up.protocol == "openai":
        url, payload = up.base_url + "/chat/completions", openai_payload(body, up.model_id, True)
    else:
        url, payload = up.base_url + "/api/chat", ollama_request(body, up.model_id, True)
    req = client.build_request("POST", url, json=payload, headers=up.headers(), timeout=_timeout(cfg))
    try:
        with anyio.fail_after(cfg.first_byte_timeout_s):
            resp = await client.send(req, stream=True)
    except Exception as exc:
        raise _classify(exc, cfg.first_byte_timeout_s) from None
    if resp.status_code >= 400:
        try:
            raise await _http_failure(resp)
        finally:
            await resp.aclose()
    stream = UpstreamStream(resp, up, cfg)
    await stream.first()
    return stream


@dataclass
class Attempt:
    """One upstream call of a request, as the 502 body and the served_requests row report it."""

    model: str
    ok: bool
    error: str = ""
    kind: str = ""
    latency_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "ok": self.ok, "error": self.error, "kind": self.kind,
                "latency_ms": round(self.latency_ms, 2)}
