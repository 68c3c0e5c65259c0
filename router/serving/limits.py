"""Request limits and JSON errors shared by the HTTP front ends in ``router.serving`` (Starlette + uvicorn).

Why: every limit is checked on the cheap part of a request (a header, a length, an image HEADER) before any
expensive work and before the lock that guards the model, so one hostile or oversized request is refused in
milliseconds while others are being served, and no single request can grow the process without bound.
Every answer is JSON (no NaN/Infinity, which are not JSON), errors as ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

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
    limit_concurrency: int = 128  # open connections + in-flight requests; beyond: 503
    timeout_keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this

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
    "limit_concurrency": ("--limit-concurrency", "open connections + in-flight requests before 503"),
    "timeout_keep_alive_s": ("--keep-alive-timeout", "seconds an idle keep-alive connection stays open"),
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


# ------------------------------------------------------------------------------------------------ server


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for request headers: uvicorn times out idle keep-alive
    connections but not one that opens and trickles (or never sends) its headers, which would hold a
    connection slot (``limit_concurrency``) forever."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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


def server_config(app: Any, host: str, port: int, limits: ServeLimits) -> uvicorn.Config:
    """A uvicorn config applying ``limits`` (backlog, concurrency, keep-alive, header deadline); port 0 = any."""
    protocol = type("HeaderTimeoutH11", (_HeaderTimeoutH11,), {"header_timeout_s": limits.header_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, backlog=limits.backlog,
                          limit_concurrency=limits.limit_concurrency,
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
