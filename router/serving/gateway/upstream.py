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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from router.serving.gateway.config import GatewayConfig, Upstream
from router.serving.redact import scrub

RETRYABLE_STATUS = {404, 408, 409, 429}  # besides 5xx: gone, overloaded or racing; another model may answer
AUTH_STATUS = {401, 403, 407}  # the gateway's credentials for that upstream: never the client's problem
ERROR_BODY_BYTES = 64 * 1024  # read of an upstream error body (its text is scrubbed and cut further)
OFF_LOOP_JSON_BYTES = 256 * 1024  # bodies above this are parsed / rendered in a worker thread
OLLAMA_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
                  "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}


class UpstreamFailure(Exception):
    """A call that produced no answer; ``retryable``: another model may be tried (nothing was sent yet).
    ``status``: the upstream's HTTP status when it answered with an error (the client gets it only for a
    4xx that is about the request itself, never for the gateway's own credentials)."""

    def __init__(self, kind: str, message: str, retryable: bool, status: int | None = None):
        super().__init__(scrub(message))
        self.kind, self.retryable, self.status = kind, retryable, status


def _classify(exc: BaseException, timeout_s: float) -> UpstreamFailure:
    if isinstance(exc, UpstreamFailure):
        return exc
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return UpstreamFailure("timeout", f"no answer within {timeout_s:g} s", True)
    if isinstance(exc, httpx.HTTPError | OSError):
        return UpstreamFailure("connection", f"{type(exc).__name__}: {str(exc)[:200] or 'connection failed'}", True)
    return UpstreamFailure("error", f"{type(exc).__name__}: {str(exc)[:200]}", True)


async def _read_capped(resp: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether there was more (the rest is not read)."""
    chunks, size = [], 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > cap:
            chunks.append(chunk[: len(chunk) - (size - cap)])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


async def _http_failure(resp: httpx.Response, up: Upstream) -> UpstreamFailure:
    """An error answer as a failure; its text cut and scrubbed of the upstream's key and any token."""
    try:
        raw, _ = await _read_capped(resp, ERROR_BODY_BYTES)
        try:
            detail = json.loads(raw)
        except ValueError:
            detail = None
        err = detail.get("error") if isinstance(detail, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else \
            raw[:300].decode("utf-8", "replace")
    except Exception:
        msg = ""
    status = resp.status_code
    text = scrub(f"HTTP {status}: {msg}", secrets=up.secrets())
    if status in AUTH_STATUS:  # the gateway's key for this model was refused: try another model
        return UpstreamFailure("upstream_auth", f"{text} (the gateway's credentials for {up.model_id} were "
                               f"refused; check its api_key_env)", True, status)
    return UpstreamFailure("http_5xx" if status >= 500 else "http_4xx", text,
                           status >= 500 or status in RETRYABLE_STATUS, status)


def _tokens(value: Any) -> int | None:
    """A token count as an int, or None when the upstream sent something else (NaN, a string, -3, 1e30)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**53 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    return None


def safe_usage(usage: Any) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) of an upstream ``usage``; a malformed count is None (unknown)."""
    if not isinstance(usage, dict):
        return None, None
    return _tokens(usage.get("prompt_tokens")), _tokens(usage.get("completion_tokens"))


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


def _usage(prompt: Any, completion: Any) -> dict[str, int | None]:
    p, c = _tokens(prompt or 0), _tokens(completion or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c if p is not None and c is not None
            else None}


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
            "usage": _usage(obj.get("prompt_eval_count"), obj.get("eval_count"))}


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
        url, payload = up.base_url + "/chat/completions", openai_payload(body, up.served_name, False)
    else:
        url, payload = up.base_url + "/api/chat", ollama_request(body, up.served_name, False)
    req = client.build_request("POST", url, json=payload, headers=up.headers(), timeout=_timeout(cfg))
    try:
        with anyio.fail_after(cfg.first_byte_timeout_s):
            resp = await client.send(req, stream=True)
            try:
                if resp.status_code >= 400:
                    raise await _http_failure(resp, up)
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > cfg.max_upstream_bytes:
                    raise _too_large(up, cfg)
                raw, more = await _read_capped(resp, cfg.max_upstream_bytes)
                if more:
                    raise _too_large(up, cfg)
            finally:
                await resp.aclose()
            try:
                obj = await anyio.to_thread.run_sync(json.loads, raw) if len(raw) > OFF_LOOP_JSON_BYTES \
                    else json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise UpstreamFailure("malformed", f"reply is not JSON: {str(exc)[:120]}", True) from None
    except Exception as exc:
        raise _classify(exc, cfg.first_byte_timeout_s) from None
    if up.protocol == "ollama":
        return ollama_to_openai(obj, up.model_id)
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        raise UpstreamFailure("malformed", "reply has no 'choices' list", True)
    return obj


def _too_large(up: Upstream, cfg: GatewayConfig) -> UpstreamFailure:
    return UpstreamFailure("too_large", f"the answer of {up.model_id} exceeds {cfg.max_upstream_bytes} bytes "
                           "(--max-upstream-bytes); not read further", False, 502)


async def _capped_lines(resp: httpx.Response, cap: int, up: Upstream, cfg: GatewayConfig
                        ) -> AsyncIterator[str]:
    """The body's lines, failing once the whole body passes ``cap`` bytes (a line is never buffered past it)."""
    buf, total = b"", 0
    async for chunk in resp.aiter_bytes():
        total += len(chunk)
        if total > cap:
            raise _too_large(up, cfg)
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if buf:
        yield buf.rstrip(b"\r").decode("utf-8", "replace")


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
        self._lines = _capped_lines(resp, cfg.max_upstream_bytes, up, cfg)
        self._rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._pending: list[dict[str, Any]] = []
        self._ended = False
        self.on_close: Callable[[], None] | None = None  # called once, when the stream is closed

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
                    raise ValueError(f"upstream error event: {scrub(obj['error'], secrets=self.up.secrets())}")
                if isinstance(obj.get("usage"), dict):
                    self.usage = obj["usage"]
                return [obj]
            if not line.strip():
                continue
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("NDJSON line is not an object")
            if "error" in obj:
                raise ValueError(f"upstream error: {scrub(obj['error'], secrets=self.up.secrets())}")
            base = {"id": self._rid, "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": self.up.model_id}
            piece = (obj.get("message") or {}).get("content") or ""
            out = [{**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}] \
                if piece or not obj.get("done") else []
            if obj.get("done"):
                self.usage = _usage(obj.get("prompt_eval_count"), obj.get("eval_count"))
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
        done, self.on_close = self.on_close, None
        if done is not None:
            done()


async def open_stream(client: httpx.AsyncClient, up: Upstream, body: dict[str, Any],
                      cfg: GatewayConfig) -> UpstreamStream:
    """Start a streamed answer and wait for its first event, or raise `UpstreamFailure`."""
    if up.protocol == "openai":
        url, payload = up.base_url + "/chat/completions", openai_payload(body, up.served_name, True)
    else:
        url, payload = up.base_url + "/api/chat", ollama_request(body, up.served_name, True)
    req = client.build_request("POST", url, json=payload, headers=up.headers(), timeout=_timeout(cfg))
    try:
        with anyio.fail_after(cfg.first_byte_timeout_s):
            resp = await client.send(req, stream=True)
    except Exception as exc:
        raise _classify(exc, cfg.first_byte_timeout_s) from None
    if resp.status_code >= 400:
        try:
            raise await _http_failure(resp, up)
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
