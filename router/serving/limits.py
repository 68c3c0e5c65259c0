"""Request limits and JSON errors shared by the HTTP front ends in ``router.serving`` (Starlette + uvicorn).

Why: every limit is checked on the cheap part of a request (a header, a length, an image HEADER) before any
expensive work and before the lock that guards the model, so one hostile or oversized request is refused in
milliseconds while others are being served, and no single request can grow the process without bound.
Every answer is JSON (no NaN/Infinity, which are not JSON), errors as ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import anyio
import uvicorn
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost and how many the server holds; ``lrouter serve`` flags map 1:1 to fields."""

    max_body_bytes: int = 16 * 1024 * 1024  # a base64 photo of ~12 MP fits; larger bodies: 413 unread
    max_question_chars: int = 16_384  # the text encoder reads 256 tokens; longer text only costs tokenising
    max_image_pixels: int = 25_000_000  # width x height from the image header, checked before decoding
    request_timeout_s: float = 30.0  # body upload + validation + waiting for the model, per request
    header_timeout_s: float = 10.0  # a connection must send complete request headers within this
    backlog: int = 2048  # listen queue: a burst of connections waits instead of being reset
    limit_concurrency: int = 48  # requests in their CPU-bound part (parse, route); more wait in the queue
    timeout_keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    max_queue: int = 512  # requests waiting for a slot; beyond: an immediate JSON 503 with Retry-After
    queue_timeout_s: float = 10.0  # a request waiting longer for a slot gets a JSON 503 with Retry-After
    max_connections: int = 4096  # open connections; a connection beyond gets a JSON 503 and is closed

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"ServeLimits.{f.name} must be > 0, got {getattr(self, f.name)!r}")
        if self.backlog < 128:
            raise ValueError(f"ServeLimits.backlog must be >= 128 (a short listen queue resets clients in a "
                             f"burst), got {self.backlog}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FLAGS = {  # field -> (flag, help)
    "max_body_bytes": ("--max-body-bytes", "largest request body; larger: 413 before reading it"),
    "max_question_chars": ("--max-question-chars", "longest question (characters); longer: 413"),
    "max_image_pixels": ("--max-image-pixels", "largest image (width x height, read from its header); "
                                               "larger: 413 before decoding"),
    "request_timeout_s": ("--request-timeout", "seconds a request may take to upload and wait for the model"),
    "header_timeout_s": ("--header-timeout", "seconds a connection may take to send its request headers"),
    "backlog": ("--backlog", "listen queue length (>= 128)"),
    "limit_concurrency": ("--limit-concurrency", "requests being parsed and routed at once; more wait in the "
                                                 "admission queue"),
    "timeout_keep_alive_s": ("--keep-alive-timeout", "seconds an idle keep-alive connection stays open"),
    "max_queue": ("--max-queue", "requests waiting for a slot before an immediate 503 (JSON, Retry-After)"),
    "queue_timeout_s": ("--queue-timeout", "seconds a request may wait for a slot before a 503"),
    "max_connections": ("--max-connections", "open connections; one more gets a JSON 503 and is closed"),
}


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``ServeLimits`` field (defaults from the dataclass) to a CLI subcommand."""
    defaults = ServeLimits()
    for f in fields(ServeLimits):
        flag, text = _FLAGS[f.name]
        default = getattr(defaults, f.name)
        parser.add_argument(flag, dest=f.name, type=type(default), default=default,
                            metavar="S" if f.name.endswith("_s") else "N", help=f"{text} (default {default})")


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(**{f.name: getattr(args, f.name) for f in fields(ServeLimits)})


# ---------------------------------------------------------------------------------------------- JSON answers


class RequestRefused(ValueError):
    """A request the server refuses; ``status`` is 400 (malformed) or 413 (over a limit)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def json_response(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON answer; a non-finite number in ``payload`` becomes a 500 saying so, never invalid JSON."""
    try:
        return JSONResponse(payload, status_code=status, headers=headers)  # json.dumps(allow_nan=False)
    except ValueError as exc:
        return JSONResponse({"error": f"the answer held a non-finite number ({exc}); this is a server bug"},
                            status_code=500)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, f"{type(exc).__name__}: {exc}")


# Starlette's 404/405 and unhandled errors as JSON too (pass as ``Starlette(exception_handlers=...)``)
JSON_EXCEPTION_HANDLERS: dict[Any, Any] = {HTTPException: _http_exception, Exception: _unhandled}


# ------------------------------------------------------------------------------------------------ checks


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) from its Content-Length before reading, or as soon as a streamed
    body passes ``max_bytes``; the caller bounds the time (a stalled upload)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise RequestRefused(f"Content-Length {declared!r} is not a number") from None
        if n > max_bytes:
            raise RequestRefused(f"body is {n} bytes; the limit is {max_bytes} (--max-body-bytes)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestRefused(f"body exceeds {max_bytes} bytes (--max-body-bytes)", 413)
        chunks.append(chunk)
    if not size:
        raise RequestRefused("empty body; send a JSON object")
    return b"".join(chunks)


def check_text(value: Any, field: str, max_chars: int, required: bool = True) -> str | None:
    """A (non-empty when required) string of at most ``max_chars`` characters, or None when optional."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise RequestRefused(f"field {field!r} must be a {'non-empty ' if required else ''}string")
    if len(value) > max_chars:
        raise RequestRefused(f"field {field!r} is {len(value)} characters; the limit is {max_chars}", 413)
    return value


def finite_number(value: Any, field: str, lo: float, hi: float) -> float:
    """A finite JSON number in [lo, hi] (json parses 1e400 as inf and accepts NaN: both refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestRefused(f"field {field!r} must be a number")
    x = float(value)
    if not math.isfinite(x) or not lo <= x <= hi:
        raise RequestRefused(f"field {field!r} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")
    return x


def check_image_header(raw: bytes, field: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding its pixels (PIL's ``Image.open`` is lazy):
    a 13000x13000 PNG in a few bytes is refused here, not after allocating half a gigabyte."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
            with Image.open(io.BytesIO(raw)) as im:
                w, h = im.size
    except Image.DecompressionBombError as exc:
        raise RequestRefused(f"field {field!r}: {exc}; the limit is {max_pixels} pixels", 413) from exc
    except Exception as exc:
        raise RequestRefused(f"field {field!r}: cannot read image: {exc}") from exc
    if w * h > max_pixels:
        raise RequestRefused(f"field {field!r} is a {w}x{h} image ({w * h} pixels); the limit is {max_pixels} "
                             "pixels (--max-image-pixels)", 413)
    return w, h


# ------------------------------------------------------------------------------------------------ admission

Render = Callable[[int, str], bytes]  # (status, message) -> the app's JSON error body


def plain_error_body(status: int, message: str) -> bytes:
    """``lrouter serve``'s error shape: ``{"error": "..."}``."""
    return json.dumps({"error": message}).encode()


class Admission:
    """ASGI middleware bounding the work in flight: at most ``limits.limit_concurrency`` requests run, up to
    ``limits.max_queue`` wait (FIFO, at most ``limits.queue_timeout_s`` each) and the rest are shed at once with
    a 503 in the app's JSON error shape and ``Retry-After``.

    Why in front of the app: a request shed before its body is read costs microseconds, so past capacity the
    server keeps answering the requests it admitted at full speed instead of slowing every request down
    (goodput at 200 clients stays at its 64-client level); uvicorn's own ``limit_concurrency`` answers
    ``text/plain`` without ``Retry-After``, which OpenAI clients cannot parse. ``exempt`` paths (health
    probes) are never queued. ``on_shed(scope, status, message)`` lets the app record the refused request.

    A handler may give its slot back early by calling ``scope["lrouter.release"]()``: the gateway does so
    once a request is routed and only waits for its upstream (cheap I/O), so the limit bounds the CPU-bound
    part of requests small (on 2 loaded cores with 200 clients, 48 slots gave 35-48 ok/s where 128 gave
    18-25; bench/gateway.py --chaos) while slow upstreams do not cap throughput."""

    def __init__(self, app: Any, limits: ServeLimits, render: Render = plain_error_body,
                 exempt: tuple[str, ...] = ("/health",),
                 on_shed: Callable[[dict[str, Any], int, str], dict[str, str] | None] | None = None):
        self.app, self.limits, self.render, self.exempt, self.on_shed = app, limits, render, exempt, on_shed
        self.inflight = 0
        self.waiters: collections.deque[anyio.Event] = collections.deque()
        self.shed = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.inflight < self.limits.limit_concurrency and not self.waiters:
            self.inflight += 1
        elif len(self.waiters) >= self.limits.max_queue:
            await self._shed(scope, send, f"overloaded: {self.inflight} requests in flight and {len(self.waiters)} "
                                          "waiting (--limit-concurrency, --max-queue); retry shortly")
            return
        else:
            ev = anyio.Event()
            self.waiters.append(ev)
            try:
                with anyio.move_on_after(self.limits.queue_timeout_s):
                    await ev.wait()
            except BaseException:
                self._leave(ev)
                raise
            if not ev.is_set():
                self._leave(ev)
                await self._shed(scope, send, f"overloaded: no slot within {self.limits.queue_timeout_s:g} s "
                                              "(--queue-timeout); retry shortly")
                return
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release()

        scope["lrouter.release"] = release
        try:
            await self.app(scope, receive, send)
        finally:
            release()

    def _leave(self, ev: anyio.Event) -> None:
        """A waiter gives up: drop it from the queue, or pass on the slot it was handed meanwhile."""
        if ev.is_set():
            self._release()
        else:
            self.waiters.remove(ev)

    def _release(self) -> None:
        if self.waiters:  # hand the slot to the oldest waiter (the in-flight count stays)
            self.waiters.popleft().set()
        else:
            self.inflight -= 1

    async def _shed(self, scope: dict[str, Any], send: Any, message: str) -> None:
        self.shed += 1
        extra = None
        if self.on_shed is not None:
            try:
                extra = self.on_shed(scope, 503, message)
            except Exception:  # recording must never cost the answer
                extra = None
        body = self.render(503, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", b"1")]
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------------------------ server


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for request headers and a cap on open connections.

    uvicorn times out idle keep-alive connections but not one that opens and trickles (or never sends) its
    headers, which would hold a connection forever. A connection past ``max_connections`` is answered with
    a JSON 503 (``Retry-After``) and closed, instead of uvicorn's ``text/plain`` refusal."""

    header_timeout_s: float = 10.0
    max_connections: int = 4096
    overload_body: bytes = b'{"error": "overloaded: too many open connections; retry shortly"}'

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            body = self.overload_body
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                            b"retry-after: 1\r\nconnection: close\r\ncontent-length: " + str(len(body)).encode()
                            + b"\r\n\r\n" + body)
            transport.close()
            return
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self.loop.call_later(self.header_timeout_s, self._header_deadline, self.cycle)

    def _header_deadline(self, cycle_when_armed: Any) -> None:
        idle = self.cycle is cycle_when_armed and (self.cycle is None or self.cycle.response_complete)
        if idle and not self.transport.is_closing():  # no new request started since the deadline was armed
            self.transport.close()


def server_config(app: Any, host: str, port: int, limits: ServeLimits,
                  overload_body: bytes = plain_error_body(503, "overloaded: too many open connections; retry "
                                                               "shortly")) -> uvicorn.Config:
    """A uvicorn config applying ``limits`` (backlog, connections, keep-alive, header deadline); port 0 = any.
    Requests in flight are bounded by the app's `Admission` middleware, not by uvicorn (see there)."""
    protocol = type("HeaderTimeoutH11", (_HeaderTimeoutH11,), {
        "header_timeout_s": limits.header_timeout_s, "max_connections": limits.max_connections,
        "overload_body": overload_body})
    return uvicorn.Config(app, host=host, port=port, http=protocol, backlog=limits.backlog,
                          limit_concurrency=None,
                          timeout_keep_alive=limits.timeout_keep_alive_s, lifespan="off",
                          access_log=False,  # request lines would carry questions; the gateway logs its own
                          log_config=None, log_level="warning")  # leave the process's logging alone


def bound_port(server: uvicorn.Server) -> int:
    """The port a started server listens on (what port 0 picked)."""
    return server.servers[0].sockets[0].getsockname()[1]


def run_server(server: uvicorn.Server, on_started: Callable[[int], None] | None = None) -> None:
    """``server.run()`` (blocks; Ctrl-C stops it), calling ``on_started(port)`` once it listens."""

    async def main() -> None:
        async def announce() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.02)
            if server.started and on_started is not None:
                on_started(bound_port(server))

        task = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())
