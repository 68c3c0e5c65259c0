"""A misbehaving OpenAI-compatible upstream on loopback (uvicorn in a thread): what third-party endpoints send
in production and the simulator does not. Each model id gets a mode, changeable while it runs:

- ``ok``: a normal answer with usage (JSON or SSE);
- ``nan_usage``: a normal answer whose usage holds NaN, a string and a negative count;
- ``auth``: HTTP 401 whose error text echoes the bearer token and an ``sk-`` key;
- ``huge``: an answer of ``huge_bytes`` bytes of content;
- ``slow``: a normal answer after ``slow_s`` seconds.

Used by the gateway tests and by ``bench/gateway.py --chaos``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

LEAKED_KEY = "sk-live-LEAKEDKEY0123456789abcdef"  # what an `auth` upstream echoes back


class HostileUpstream:
    """``with HostileUpstream() as h:`` ``h.url`` ends in ``/v1``; ``h.modes[model] = "auth"`` etc."""

    def __init__(self, huge_bytes: int = 4 * 1024 * 1024, slow_s: float = 0.5, latency_s: float = 0.0,
                 port: int = 0):
        self.modes: dict[str, str] = {}
        self.huge_bytes, self.slow_s, self.latency_s = huge_bytes, slow_s, latency_s
        self.calls: dict[str, int] = {}
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/control", self._control, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                                     log_level="warning", access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        t0 = time.monotonic()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > 30:
                raise RuntimeError("the hostile upstream did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(15)

    async def _control(self, request: Request) -> Response:
        """``{"modes": {model: mode}, "latency_s": s}`` from another process (bench/gateway.py --chaos)."""
        body = await request.json()
        self.modes = dict(body.get("modes", self.modes))
        self.latency_s = float(body.get("latency_s", self.latency_s))
        return JSONResponse({"modes": self.modes, "latency_s": self.latency_s, "calls": self.calls})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        model = str(body.get("model"))
        mode = self.modes.get(model, "ok")
        self.calls[model] = self.calls.get(model, 0) + 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if mode == "auth":
            auth = request.headers.get("authorization", "Bearer sk-proj-fromtheclient0123456789")
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {auth}. Your key "
                                                      f"{LEAKED_KEY} was rejected; api_key={LEAKED_KEY}",
                                           "type": "invalid_request_error", "code": "invalid_api_key"}},
                                status_code=401)
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        text = "x" * self.huge_bytes if mode == "huge" else f"Answer from {model}."
        usage: dict[str, Any] = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        if mode == "nan_usage":
            usage = {"prompt_tokens": float("nan"), "completion_tokens": "5 tokens", "total_tokens": -3}
        rid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if body.get("stream"):
            return StreamingResponse(self._events(rid, model, text, usage), media_type="text/event-stream")
        obj = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
               "usage": usage}
        return Response(json.dumps(obj), media_type="application/json")  # json.dumps writes NaN as NaN

    async def _events(self, rid: str, model: str, text: str, usage: dict[str, Any]):
        base = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        step = 64 * 1024
        for i in range(0, len(text), step):
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {'content': text[i:i + step]}, 'finish_reason': None}]})}\n\n"
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
