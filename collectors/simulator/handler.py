"""The HTTP side of the simulator: one request handler per connection, routing Ollama's endpoints to the
`SimServer` it belongs to (model lookup, fault injection, answers) and writing JSON or NDJSON replies."""

from __future__ import annotations

import datetime as dt
import json
import math
import socket
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from collectors.simulator import openai_compat
from collectors.simulator.behaviour import SimAnswer
from collectors.simulator.faults import draw_fault
from collectors.simulator.protocol import (
    MODIFIED_AT,
    PIECE_RE,
    SIM_OLLAMA_VERSION,
    BadRequest,
    InferenceRequest,
    content_hash,
    model_details,
    now_stamp,
    parse_inference,
    truncate_reply,
)
from collectors.simulator.specs import SimModelSpec


class SimHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows the `SimServer` its handlers answer for."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    sim: Any  # the collectors.simulator.server.SimServer these handlers answer for (set by it; it imports us)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, dropped faults) are expected; report anything else."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class SimHandler(BaseHTTPRequestHandler):
    """One connection's requests: Ollama's endpoints, answered from ``self.server.sim``."""

    protocol_version = "HTTP/1.1"
    server_version = "ollama-sim"
    timeout = 120  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = (
        True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    )
    server: SimHTTPServer

    # --- plumbing --------------------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        with self.server.sim._lock:
            self.server.sim._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sim._lock:
                self.server.sim._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet by design
        return

    def _send_json(self, status: int, obj: Any) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _send_bytes(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_429(self, retry_after_s: float, data: bytes) -> None:
        """HTTP 429 with ``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` (OpenAI's header)."""
        self.send_response(429)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", str(max(0, math.ceil(retry_after_s))))
        self.send_header("retry-after-ms", str(int(round(retry_after_s * 1000))))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, msg: str) -> None:
        self._send_json(status, {"error": msg})

    def _drop(self) -> None:
        """Close the socket without a reply (the client sees the server disconnect)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_json(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    # --- routing ---------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/":
            self._send_bytes(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version":
            sim._count(endpoint=path)
            self._send_json(200, {"version": SIM_OLLAMA_VERSION})
        elif path == "/api/tags":
            sim._count(endpoint=path)
            self._send_json(200, {"models": [self._tag(s) for s in sim.models if sim._served(s.name)]})
        elif path == "/api/ps":
            sim._count(endpoint=path)
            self._send_json(200, {"models": self._ps()})
        elif path in ("/api/chat", "/api/generate", "/api/show"):
            self._error(405, "method not allowed")
        elif path == openai_compat.MODELS_PATH:
            openai_compat.handle_models(self)
        else:
            self._send_bytes(404, b"404 page not found", "text/plain")

    def do_POST(self) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()
            if path == "/api/show":
                self._show(body)
            elif path in ("/api/chat", "/api/generate"):
                self._inference(path, body)
            elif path == openai_compat.CHAT_PATH:  # OpenAI-compatible (the routing gateway's upstream)
                openai_compat.handle_chat(self, body)
            elif path in ("/api/version", "/api/tags", "/api/ps"):
                self._error(405, "method not allowed")
            else:
                self._send_bytes(404, b"404 page not found", "text/plain")
        except BadRequest as exc:
            sim._count(endpoint=path, bad_requests=1)
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- metadata endpoints -----------------------------------------------------------------------
    def _tag(self, s: SimModelSpec) -> dict[str, Any]:
        return {
            "name": s.name,
            "model": s.name,
            "modified_at": MODIFIED_AT,
            "size": s.size_bytes,
            "digest": s.digest,
            "details": model_details(s),
        }

    def _ps(self) -> list[dict[str, Any]]:
        sim = self.server.sim
        out = []
        with sim._lock:
            loaded = dict(sim._loaded)
        for name, t in sorted(loaded.items()):
            s = sim._served(name)
            if s is None:
                continue
            expires = dt.datetime.fromtimestamp(t + 300, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out.append(
                {
                    **self._tag(s),
                    "expires_at": expires,
                    "size_vram": s.size_bytes,
                    "context_length": s.context_length,
                }
            )
        return out

    def _show(self, body: Mapping[str, Any]) -> None:
        sim = self.server.sim
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("model is required")
        sim._count(endpoint="/api/show", model=name)
        spec = sim._served(name)
        if spec is None:
            sim._count(model=name, not_found=1)
            self._error(404, f"model '{name}' not found")
            return
        self._send_json(
            200,
            {
                "license": "Simulated model (lrouter); no weights, answers are drawn from a documented skill model.",
                "modelfile": f"# Modelfile generated by the lrouter simulator\nFROM {spec.name}\n"
                "PARAMETER temperature 0\n",
                "parameters": "temperature                    0",
                "template": "{{ .System }}\n{{ .Prompt }}",
                "details": model_details(spec),
                "model_info": {
                    "general.architecture": spec.family,
                    "general.basename": spec.name.split(":")[0],
                    "general.parameter_count": int(spec.params_b * 1e9),
                    "general.context_length": spec.context_length,
                    "lrouter.simulated": True,
                    "lrouter.description": spec.description,
                    "lrouter.price_in_per_mtok": spec.price_in_per_mtok,
                    "lrouter.price_out_per_mtok": spec.price_out_per_mtok,
                    "lrouter.image_tokens": spec.image_tokens,
                },
                "capabilities": ["completion", "vision"],
                "modified_at": MODIFIED_AT,
            },
        )

    # --- inference ---------------------------------------------------------------------------------
    def _inference(self, path: str, body: Mapping[str, Any]) -> None:
        sim = self.server.sim
        req = parse_inference(path.rsplit("/", 1)[1], body)
        sim._count(endpoint=path, model=req.model)
        faults = sim.faults
        if req.model in faults.down_models:
            sim._count(model=req.model, fault="down")
            if faults.down_mode == "drop":
                self._drop()
            else:
                self._error(503, f"model '{req.model}' runner is not available")
            return
        spec = sim._admit(req.model)
        if spec is None:
            if req.model in sim._models:
                sim._count(model=req.model, fault="vanished")
            sim._count(model=req.model, not_found=1)
            self._error(404, f"model '{req.model}' not found")
            return
        if req.empty:  # Ollama loads the model and answers with an empty "load" reply
            sim._count(model=req.model, ok=1)
            self._reply_load(req, spec)
            return
        fault = None
        if faults.active:  # attempts are only tracked when faults can fire
            h = content_hash(body)
            fault = draw_fault(faults, sim.seed, h, sim._next_attempt(h))
        extra_s = 0.0
        if fault is not None:
            sim._count(model=req.model, fault=fault)
        if fault == "http_500":
            self._error(500, "llama runner process has terminated: simulated failure")
            return
        if fault == "http_503":
            self._error(503, "server busy, please try again.  maximum pending requests exceeded")
            return
        if fault == "http_429":
            self._send_429(faults.retry_after_s, json.dumps({"error": "too many requests"}).encode())
            return
        if fault == "dropped_connection":
            self._drop()
            return
        if fault == "timeout":
            sim._wait(faults.timeout_s)
            if faults.timeout_then == "drop" or sim._stop.is_set():
                self._drop()
                return
            extra_s = faults.timeout_s
        if fault == "slow":
            sim._wait(faults.slow_extra_s)
            extra_s = faults.slow_extra_s
        ans, truncated = truncate_reply(sim._answer(spec, req), req.num_predict)
        if fault != "malformed_json":
            sim._count(model=req.model, ok=1)  # counted before replying so a client never sees stale stats
        if req.stream:
            self._reply_stream(req, ans, extra_s, truncated, malformed=fault == "malformed_json")
        else:
            self._reply_once(req, ans, extra_s, truncated, malformed=fault == "malformed_json")

    def _final_fields(self, ans: SimAnswer, extra_s: float, truncated: bool) -> dict[str, Any]:
        return {
            "done": True,
            "done_reason": "length" if truncated else "stop",
            "total_duration": ans.total_duration_ns + int(extra_s * 1e9),
            "load_duration": ans.load_duration_ns,
            "prompt_eval_count": ans.prompt_tokens,
            "prompt_eval_duration": ans.prompt_eval_duration_ns,
            "eval_count": ans.completion_tokens,
            "eval_duration": ans.eval_duration_ns,
            "simulated": True,  # the built-in simulator answered, not a real model
        }

    def _content(self, req: InferenceRequest, text: str) -> dict[str, Any]:
        if req.endpoint == "chat":
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}

    def _reply_load(self, req: InferenceRequest, spec: SimModelSpec) -> None:
        obj = {
            "model": spec.name,
            "created_at": now_stamp(),
            **self._content(req, ""),
            "done": True,
            "done_reason": "load",
        }
        if req.stream:
            self._start_stream()
            self._chunk((json.dumps(obj) + "\n").encode())
            self._end_stream()
        else:
            self._send_json(200, obj)

    def _reply_once(
        self, req: InferenceRequest, ans: SimAnswer, extra_s: float, truncated: bool, malformed: bool
    ) -> None:
        sim = self.server.sim
        sim._wait(ans.total_duration_ns / 1e9 * sim.time_scale)
        obj = {
            "model": req.model,
            "created_at": now_stamp(),
            **self._content(req, ans.text),
            **self._final_fields(ans, extra_s, truncated),
        }
        if req.endpoint == "generate":
            obj["context"] = []
        data = json.dumps(obj).encode()
        if malformed:
            data = data[: max(1, len(data) // 2)]
        self._send_bytes(200, data, "application/json; charset=utf-8")

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _reply_stream(
        self, req: InferenceRequest, ans: SimAnswer, extra_s: float, truncated: bool, malformed: bool
    ) -> None:
        sim = self.server.sim
        pieces = PIECE_RE.findall(ans.text) or [ans.text]
        scale = sim.time_scale / 1e9
        self._start_stream()
        sim._wait((ans.load_duration_ns + ans.prompt_eval_duration_ns) * scale)
        per_piece = ans.eval_duration_ns * scale / len(pieces)
        bad_at = len(pieces) // 2 if malformed else -1
        for i, piece in enumerate(pieces):
            sim._wait(per_piece)
            line = json.dumps(
                {"model": req.model, "created_at": now_stamp(), **self._content(req, piece), "done": False}
            )
            if i == bad_at:
                line = line[: len(line) // 2]
            self._chunk((line + "\n").encode())
        final = {
            "model": req.model,
            "created_at": now_stamp(),
            **self._content(req, ""),
            **self._final_fields(ans, extra_s, truncated),
        }
        if req.endpoint == "generate":
            final["context"] = []
        self._chunk((json.dumps(final) + "\n").encode())
        self._end_stream()
