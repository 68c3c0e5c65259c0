"""An Ollama-API server for the local pipelines on 127.0.0.1 (``lrouter local-serve --port P``, or in-process
from ``OllamaResource.endpoint`` for tests and the demo).

It speaks what the collector uses: ``/api/version``, ``/api/tags``, ``/api/show``, ``/api/ps``,
``/api/chat`` and ``/api/generate`` (JSON, or NDJSON when streaming), with Ollama's reply fields and error
shapes (unknown model -> 404, undecodable image -> 400). Durations are the real measured ones; requests are
answered one at a time (a lock), since the models already use every core. Replies carry an ``lrouter``
extension object (OCR chars, notes such as "OCR found no text", the capture key).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from collectors.local.ocr import BadImage
from collectors.local.pipeline import OcrLmPipeline
from collectors.simulator.protocol import MODIFIED_AT, BadRequest, now_stamp, parse_inference

LOCAL_OLLAMA_VERSION = "0.12.6"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    local: LocalServer


class LocalServer:
    """Serves ``pipelines`` (name -> `OcrLmPipeline`); ``start()`` returns the base URL."""

    def __init__(self, pipelines: Mapping[str, OcrLmPipeline], host: str = "127.0.0.1", port: int = 0):
        self.pipelines = dict(pipelines)
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.stats: dict[str, int] = {"calls": 0, "answered": 0, "bad_requests": 0, "not_found": 0}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self._httpd is None:
            httpd = _HTTPServer((self.host, self.port), _Handler)
            httpd.local = self
            self._httpd, self.port = httpd, httpd.server_address[1]
            self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"local-ollama:{self.port}", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1


def _details(p: OcrLmPipeline) -> dict[str, Any]:
    s = p.spec
    size = f"{s.params_b:.1f}B" if s.params_b >= 1 else f"{s.params_b * 1000:.0f}M"
    return {"parent_model": "", "format": "gguf", "family": s.family, "families": [s.family, "ocr"],
            "parameter_size": size, "quantization_level": s.quantization}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-local"
    timeout = 300
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet by design
        return

    def _send(self, status: int, obj: Any, ctype: str = "application/json; charset=utf-8") -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _tag(self, p: OcrLmPipeline) -> dict[str, Any]:
        s = p.spec
        return {"name": s.name, "model": s.name, "modified_at": MODIFIED_AT, "size": s.size_bytes,
                "digest": s.digest, "details": _details(p)}

    def do_GET(self) -> None:
        srv = self.server.local
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/":
            self._send(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/version":
            self._send(200, {"version": LOCAL_OLLAMA_VERSION})
        elif path in ("/api/tags", "/api/ps"):
            self._send(200, {"models": [self._tag(p) for p in srv.pipelines.values()]})
        else:
            self._send(404, b"404 page not found", "text/plain")

    def do_POST(self) -> None:
        srv = self.server.local
        path = self.path.split("?", 1)[0].rstrip("/")
        srv.count("calls")
        try:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw) if raw else {}
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"invalid JSON body: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            if path == "/api/show":
                self._show(body)
            elif path in ("/api/chat", "/api/generate"):
                self._inference(path.rsplit("/", 1)[1], body)
            else:
                self._send(404, b"404 page not found", "text/plain")
        except BadRequest as exc:
            srv.count("bad_requests")
            self._send(400, {"error": str(exc)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _show(self, body: Mapping[str, Any]) -> None:
        srv = self.server.local
        name = body.get("model") or body.get("name")
        p = srv.pipelines.get(name) if isinstance(name, str) else None
        if p is None:
            srv.count("not_found")
            self._send(404, {"error": f"model '{name}' not found"})
            return
        self._send(200, {
            "license": "SmolLM2: Apache-2.0; RapidOCR / PP-OCRv4: Apache-2.0",
            "modelfile": f"# lrouter local pipeline\nFROM {p.spec.name}\nPARAMETER temperature 0\n",
            "parameters": "temperature                    0",
            "template": "{{ .Prompt }}",
            "details": _details(p),
            "model_info": {"general.architecture": p.spec.family, "general.parameter_count": int(p.spec.params_b * 1e9),
                           "general.context_length": p.spec.context_length, "lrouter.simulated": False,
                           "lrouter.local": True, "lrouter.description": p.spec.description,
                           "lrouter.usd_per_compute_s": p.spec.usd_per_compute_s},
            "capabilities": ["completion", "vision"],
            "modified_at": MODIFIED_AT,
        })

    def _inference(self, endpoint: str, body: Mapping[str, Any]) -> None:
        srv = self.server.local
        req = parse_inference(endpoint, body)
        p = srv.pipelines.get(req.model)
        if p is None:
            srv.count("not_found")
            self._send(404, {"error": f"model '{req.model}' not found"})
            return
        content_key = "message" if endpoint == "chat" else "response"
        if req.empty:
            obj = {"model": req.model, "created_at": now_stamp(),
                   content_key: {"role": "assistant", "content": ""} if endpoint == "chat" else "",
                   "done": True, "done_reason": "load"}
            self._send(200, obj)
            return
        t_wait = time.perf_counter()
        with srv.lock:  # one request at a time: the model already uses every core
            load_s = time.perf_counter() - t_wait
            try:
                ans = p.answer(req.question, req.images, req.num_predict)
            except BadImage as exc:
                raise BadRequest(f"images[0]: {exc}") from None
        srv.count("answered")
        text = ans.text
        content: Any = {"role": "assistant", "content": text} if endpoint == "chat" else text
        final = {"done": True, "done_reason": ans.done_reason,
                 "total_duration": int(ans.total_s * 1e9), "load_duration": int(load_s * 1e9),
                 "prompt_eval_count": ans.prompt_tokens, "prompt_eval_duration": int((ans.ocr_s + ans.prompt_s) * 1e9),
                 "eval_count": ans.completion_tokens, "eval_duration": int(ans.eval_s * 1e9),
                 "lrouter": ans.metadata()}
        if not req.stream:
            self._send(200, {"model": req.model, "created_at": now_stamp(), content_key: content, **final})
            return
        empty: Any = {"role": "assistant", "content": ""} if endpoint == "chat" else ""
        lines = [{"model": req.model, "created_at": now_stamp(), content_key: content, "done": False},
                 {"model": req.model, "created_at": now_stamp(), content_key: empty, **final}]
        data = b"".join((json.dumps(x) + "\n").encode() for x in lines)
        self._send(200, data, "application/x-ndjson")


def build_default_server(capture_root: Path | None = None, host: str = "127.0.0.1", port: int = 0,
                         eager: bool = False) -> LocalServer:
    """The local pool with its real models (SmolLM2 + RapidOCR; loading takes ~20 s on 2 cores, on the first
    request unless ``eager``)."""
    from collectors.local.capture import HiddenStateStore
    from collectors.local.lm import CausalLM
    from collectors.local.ocr import RapidOcrEngine
    from collectors.local.specs import SMOLLM2_OCR

    store = HiddenStateStore(capture_dir(capture_root, SMOLLM2_OCR.name)) if capture_root else None
    pipe = OcrLmPipeline(SMOLLM2_OCR, None, None, store, loader=lambda: (CausalLM.smollm2(), RapidOcrEngine()))
    if eager:
        pipe.ensure_loaded()
    return LocalServer({SMOLLM2_OCR.name: pipe}, host=host, port=port)


def capture_dir(capture_root: Path, model_id: str) -> Path:
    """Where the hidden states of ``model_id`` are stored under ``capture_root``."""
    return Path(capture_root) / model_id.replace(":", "_").replace("/", "_")


def serve_forever(port: int, host: str = "127.0.0.1", capture_root: Path | None = None,
                  stop_event: threading.Event | None = None) -> None:
    """The body of ``lrouter local-serve --port P``: load the models, serve until Ctrl-C."""
    t0 = time.perf_counter()
    server = build_default_server(capture_root, host, port, eager=True)
    url = server.start()
    print(f"local Ollama-API server (REAL local models: {', '.join(server.pipelines)}) listening on {url}; "
          f"loaded in {time.perf_counter() - t0:.0f}s; hidden states -> {capture_root or 'not stored'}", flush=True)
    try:
        (stop_event or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
