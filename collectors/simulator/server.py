"""A simulated Ollama server on 127.0.0.1: the default candidate pool, reached with the real ``ollama`` client.

It implements the parts of Ollama's HTTP API a collector uses: ``/api/version``, ``/api/tags``,
``/api/show``, ``/api/ps``, ``/api/chat`` and ``/api/generate`` (non-streaming JSON and streaming NDJSON),
with Ollama's reply fields and error shapes (unknown model -> 404 ``{"error": "model 'x' not found"}``).

Answers come from `collectors.simulator.pool`: the server finds the query by the sha256 of the first decoded
image (disambiguated by the question when several queries share an image), or, for a request without an
image, by the question text among the key's text-only queries. Anything else gets a plausible reply with
no ground truth. Durations are reported as a real server would (nanoseconds, unscaled) while the server
only sleeps ``time_scale`` of them, so tests and demos run fast yet record realistic latencies.

Faults (`FaultConfig`) are drawn per (request content, attempt): the n-th identical request gets its own
seeded draw, so a retry can succeed and a rerun of the whole collection injects the same faults.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl

from collectors.simulator.pool import (
    CHARS_PER_TOKEN,
    DEFAULT_POOL,
    HELD_OUT,
    TASK_GROUPS,
    SimAnswer,
    SimModelSpec,
    answer_for,
    answer_unknown,
    check_visual,
    count_tokens,
    normalise_question,
    parse_source_meta,
    question_hash,
    stable_rng,
)

SIM_OLLAMA_VERSION = "0.12.6"
FAULT_KINDS: tuple[str, ...] = (
    "timeout",
    "http_500",
    "http_503",
    "malformed_json",
    "slow",
    "dropped_connection",
)
KEY_COLUMNS = ("query_id", "task_group", "question", "answer", "answer_kind", "image_sha256", "source_meta")
_MODIFIED_AT = "2026-01-01T00:00:00Z"  # fixed so /api/tags is reproducible


# ------------------------------------------------------------------------------------------------ faults


@dataclass
class FaultConfig:
    """Fault injection for ``/api/chat`` and ``/api/generate``; rates are per request and mutually exclusive.

    timeout: stall ``timeout_s`` real seconds, then reply normally (``timeout_then="reply"``) or close the
    connection without a reply (``"drop"``). slow: add ``slow_extra_s`` real seconds (also reported in
    ``total_duration``). malformed_json: a 200 reply whose JSON (or one NDJSON line) is cut short.
    dropped_connection: close the socket without replying. vanish_after: model -> number of inference calls
    after which the model is gone (404, no longer listed). down_models: models whose runner is down
    (``down_mode`` "503": HTTP 503; "drop": connection closed), checked before anything else.
    """

    timeout: float = 0.0
    http_500: float = 0.0
    http_503: float = 0.0
    malformed_json: float = 0.0
    slow: float = 0.0
    dropped_connection: float = 0.0
    timeout_s: float = 30.0
    timeout_then: str = "reply"
    slow_extra_s: float = 1.0
    vanish_after: dict[str, int] = field(default_factory=dict)
    down_models: set[str] = field(default_factory=set)
    down_mode: str = "503"

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            r = getattr(self, kind)
            if not 0.0 <= float(r) <= 1.0:
                raise ValueError(f"FaultConfig.{kind} = {r!r}: rate must be in [0, 1]")
        total = sum(float(getattr(self, k)) for k in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"FaultConfig: fault rates sum to {total:.3f} > 1 (they are mutually exclusive)")
        if self.timeout_then not in ("reply", "drop"):
            raise ValueError(f"FaultConfig.timeout_then = {self.timeout_then!r}: expected 'reply' or 'drop'")
        if self.down_mode not in ("503", "drop"):
            raise ValueError(f"FaultConfig.down_mode = {self.down_mode!r}: expected '503' or 'drop'")
        if self.timeout_s < 0 or self.slow_extra_s < 0:
            raise ValueError("FaultConfig: timeout_s and slow_extra_s must be >= 0")
        for m, n in self.vanish_after.items():
            if int(n) < 0:
                raise ValueError(f"FaultConfig.vanish_after[{m!r}] = {n!r}: must be >= 0")
        self.down_models = set(self.down_models)

    def draw(self, u: float) -> str | None:
        """The fault kind for a uniform draw ``u`` (None = no fault)."""
        acc = 0.0
        for kind in FAULT_KINDS:
            acc += float(getattr(self, kind))
            if u < acc:
                return kind
        return None


# -------------------------------------------------------------------------------------------- answer key


class AnswerKey:
    """Queries indexed by image hash and by question hash, validated once when loaded."""

    def __init__(self, df: pl.DataFrame | None = None, source: str = "answer key"):
        self.rows: list[dict[str, Any]] = []
        self.by_sha: dict[str, list[dict[str, Any]]] = {}
        self.text_by_qhash: dict[str, list[dict[str, Any]]] = {}
        self.text_rows: list[tuple[str, dict[str, Any]]] = []  # (normalised question, row), no image
        if df is None:
            return
        missing = [c for c in KEY_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {missing}; have {df.columns}")
        for i, row in enumerate(df.select(KEY_COLUMNS).iter_rows(named=True)):
            where = f"{source}: row {i} (query_id={row['query_id']!r})"
            if row["task_group"] not in TASK_GROUPS:
                raise ValueError(
                    f"{where}: field 'task_group' = {row['task_group']!r}; expected one of {TASK_GROUPS}"
                )
            meta = parse_source_meta(row["source_meta"], f"{where}: field 'source_meta'")
            check_visual(meta.get("visual"), f"{where}: field 'source_meta.visual'")
            row = {k: ("" if v is None else v) for k, v in row.items()}
            row["source_meta"] = meta
            self.rows.append(row)
            sha = str(row["image_sha256"]).lower()
            if sha:
                self.by_sha.setdefault(sha, []).append(row)
            else:
                self.text_by_qhash.setdefault(question_hash(row["question"]), []).append(row)
                self.text_rows.append((normalise_question(row["question"]), row))

    @classmethod
    def load(cls, key: pl.DataFrame | Path | str | None) -> AnswerKey:
        if key is None:
            return cls()
        if isinstance(key, pl.DataFrame):
            return cls(key)
        path = Path(key)
        if path.is_dir():  # a warehouse root
            path = path / "tables" / "queries.parquet"
        if not path.exists():
            raise FileNotFoundError(f"answer key {path} not found")
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise ValueError(f"answer key {path}: not a readable Parquet file ({exc})") from exc
        return cls(df, source=str(path))

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, image_sha: str, prompt: str) -> dict[str, Any] | None:
        """The key row for a request: by image (then question), or by question alone when no image."""
        nprompt = normalise_question(prompt)
        if image_sha:
            rows = self.by_sha.get(image_sha)
            if not rows:
                return None
            if len(rows) == 1:
                return rows[0]
            return (
                _best_containing(((normalise_question(r["question"]), r) for r in rows), nprompt) or rows[0]
            )
        rows = self.text_by_qhash.get(question_hash(prompt))
        if rows:
            return rows[0]
        return _best_containing(self.text_rows, nprompt) if nprompt else None


def _best_containing(cands: Iterable[tuple[str, dict[str, Any]]], nprompt: str) -> dict[str, Any] | None:
    """The row whose (normalised) question is the longest one contained in the prompt."""
    best: tuple[int, dict[str, Any]] | None = None
    for q, row in cands:
        if q and q in nprompt and (best is None or len(q) > best[0]):
            best = (len(q), row)
    return None if best is None else best[1]


# ---------------------------------------------------------------------------------------------- helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _param_size(params_b: float) -> str:
    return f"{params_b:.1f}B" if params_b >= 1 else f"{params_b * 1000:.0f}M"


def _details(spec: SimModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family, "clip"],
        "parameter_size": _param_size(spec.params_b),
        "quantization_level": spec.quantization,
    }


class _BadRequest(Exception):
    pass


def _decode_images(images: Any) -> list[bytes]:
    if images is None:
        return []
    if not isinstance(images, list):
        raise _BadRequest("images must be a list of base64 strings")
    out = []
    for i, im in enumerate(images):
        if not isinstance(im, str):
            raise _BadRequest(f"images[{i}] must be a base64 string")
        try:
            out.append(base64.b64decode(im, validate=True))
        except (binascii.Error, ValueError):
            raise _BadRequest(f"images[{i}]: illegal base64 data") from None
    return out


@dataclass
class _Request:
    """What an inference request asks, whichever endpoint it came through."""

    endpoint: str  # chat | generate
    model: str
    question: str  # the text matched against the key (last user message / prompt)
    prompt_text: str  # all prompt text, for token counts
    images: list[bytes]
    stream: bool
    num_predict: int | None
    empty: bool  # no messages / no prompt: Ollama answers with a "load" reply


def _parse_inference(endpoint: str, body: Mapping[str, Any]) -> _Request:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model is required")
    options = body.get("options") or {}
    num_predict = options.get("num_predict") if isinstance(options, Mapping) else None
    num_predict = int(num_predict) if isinstance(num_predict, int | float) and num_predict > 0 else None
    stream = body.get("stream", True) is not False  # Ollama streams unless told not to
    if endpoint == "chat":
        msgs = body.get("messages") or []
        if not isinstance(msgs, list) or not all(isinstance(m, Mapping) for m in msgs):
            raise _BadRequest("messages must be a list of objects")
        images: list[bytes] = []
        texts = []
        question = ""
        for i, m in enumerate(msgs):
            content = m.get("content") or ""
            if not isinstance(content, str):
                raise _BadRequest(f"messages[{i}].content must be a string")
            texts.append(content)
            images += _decode_images(m.get("images"))
            if m.get("role", "user") == "user":
                question = content
        return _Request("chat", model, question, "\n".join(texts), images, stream, num_predict, not msgs)
    prompt = body.get("prompt") or ""
    system = body.get("system") or ""
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise _BadRequest("prompt and system must be strings")
    images = _decode_images(body.get("images"))
    return _Request(
        "generate",
        model,
        prompt,
        f"{system}\n{prompt}" if system else prompt,
        images,
        stream,
        num_predict,
        not prompt and not images,
    )


def _content_hash(body: Mapping[str, Any]) -> str:
    """Hash of what a request asks (not how: stream / options / keep_alive are left out)."""
    core = {k: v for k, v in body.items() if k not in ("stream", "options", "keep_alive")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def _truncate(ans: SimAnswer, num_predict: int | None) -> tuple[SimAnswer, bool]:
    """Cut the reply at ``num_predict`` tokens as Ollama does (done_reason "length"), durations included."""
    if num_predict is None or ans.completion_tokens <= num_predict:
        return ans, False
    text = ans.text[: int(num_predict * CHARS_PER_TOKEN)]
    frac = num_predict / ans.completion_tokens
    return replace(
        ans,
        text=text,
        completion_tokens=count_tokens(text),
        eval_duration_ns=int(ans.eval_duration_ns * frac),
    ), True


_PIECE_RE = re.compile(r"\s*\S+")


# ------------------------------------------------------------------------------------------------ server


class SimServer:
    """The simulated Ollama server. ``start()`` returns its base URL; use as a context manager in tests."""

    def __init__(
        self,
        answer_key: pl.DataFrame | Path | str | None = None,
        models: list[SimModelSpec] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        time_scale: float = 0.01,
        faults: FaultConfig | None = None,
    ):
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        self.host, self.port, self.seed, self.time_scale = host, port, int(seed), float(time_scale)
        self.faults = faults or FaultConfig()
        self._key = AnswerKey.load(answer_key)
        self._lock = threading.Lock()
        self._models: dict[str, SimModelSpec] = {}
        for spec in DEFAULT_POOL if models is None else models:
            self.add_model(spec)
        self._stop = threading.Event()
        self._attempts: dict[str, int] = {}
        self._inference_calls: dict[str, int] = {}
        self._loaded: dict[str, float] = {}
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> str:
        if self._httpd is not None:
            return self.url
        self._stop.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.sim = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-ollama:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stop.set()  # wakes every simulated wait
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # close idle keep-alive connections so clients see the server go
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- configuration at run time -------------------------------------------------------------
    def add_model(self, spec: SimModelSpec) -> None:
        """Serve ``spec`` from now on (a re-add of an identical spec is a no-op)."""
        old = self._models.get(spec.name)
        if old is not None and old.digest != spec.digest:
            raise ValueError(
                f"model {spec.name!r} is already served with a different spec (digest {old.digest[:12]})"
            )
        self._models = {**self._models, spec.name: spec}

    def remove_model(self, name: str) -> None:
        if name not in self._models:
            raise KeyError(f"model {name!r} is not served; serving {sorted(self._models)}")
        self._models = {k: v for k, v in self._models.items() if k != name}

    @property
    def models(self) -> list[SimModelSpec]:
        return list(self._models.values())

    def set_answer_key(self, answer_key: pl.DataFrame | Path | str | None) -> None:
        self._key = AnswerKey.load(answer_key)  # built fully before the swap, so requests see old or new

    def set_faults(self, faults: FaultConfig | None) -> None:
        self.faults = faults or FaultConfig()

    # --- stats ---------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self._lock:
            self._stats: dict[str, Any] = {
                "calls": 0,
                "endpoints": {},
                "faults": dict.fromkeys((*FAULT_KINDS, "vanished", "down"), 0),
                "not_found": 0,
                "bad_requests": 0,
                "unknown_queries": 0,
                "models": {},
            }

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: total calls, calls per endpoint, faults injected by kind, and the same per model."""
        with self._lock:
            return copy.deepcopy(self._stats)

    def _count(
        self, endpoint: str | None = None, model: str | None = None, fault: str | None = None, **totals: int
    ) -> None:
        with self._lock:
            s = self._stats
            if endpoint is not None:
                s["calls"] += 1
                s["endpoints"][endpoint] = s["endpoints"].get(endpoint, 0) + 1
            m = None
            if model is not None:
                m = s["models"].setdefault(model, {"calls": 0, "ok": 0, "not_found": 0, "faults": {}})
                if endpoint is not None:
                    m["calls"] += 1
            if fault is not None:
                s["faults"][fault] = s["faults"].get(fault, 0) + 1
                if m is not None:
                    m["faults"][fault] = m["faults"].get(fault, 0) + 1
            for k, v in totals.items():
                if k == "ok" and m is not None:
                    m["ok"] += v
                elif k == "not_found":
                    s["not_found"] += v
                    if m is not None:
                        m["not_found"] += v
                else:
                    s[k] = s.get(k, 0) + v

    # --- simulation ----------------------------------------------------------------------------
    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _served(self, name: str) -> SimModelSpec | None:
        """The spec of a model that is currently served (not removed, not vanished)."""
        spec = self._models.get(name)
        if spec is None:
            return None
        limit = self.faults.vanish_after.get(name)
        if limit is not None and self._inference_calls.get(name, 0) >= int(limit):
            return None
        return spec

    def _answer(self, spec: SimModelSpec, req: _Request) -> SimAnswer:
        sha = hashlib.sha256(req.images[0]).hexdigest() if req.images else ""
        row = self._key.lookup(sha, req.question)
        if row is None:
            self._count(unknown_queries=1)
            return answer_unknown(spec, req.question, sha, self.seed, n_images=len(req.images))
        return answer_for(spec, row, self.seed, prompt_text=req.prompt_text, n_images=len(req.images))

    def _next_attempt(self, h: str) -> int:
        with self._lock:
            n = self._attempts.get(h, 0)
            self._attempts[h] = n + 1
            return n

    def _admit(self, name: str) -> SimModelSpec | None:
        """Check that ``name`` is served and count the inference call, atomically (vanish_after is exact)."""
        with self._lock:
            spec = self._served(name)
            if spec is not None:
                self._inference_calls[name] = self._inference_calls.get(name, 0) + 1
                self._loaded[name] = time.time()
            return spec


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
    sim: SimServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, dropped faults) are expected; report anything else."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-sim"
    timeout = 120  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = (
        True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    )
    server: _HTTPServer

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
            raise _BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
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
            elif path in ("/api/version", "/api/tags", "/api/ps"):
                self._error(405, "method not allowed")
            else:
                self._send_bytes(404, b"404 page not found", "text/plain")
        except _BadRequest as exc:
            sim._count(endpoint=path, bad_requests=1)
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- metadata endpoints -----------------------------------------------------------------------
    def _tag(self, s: SimModelSpec) -> dict[str, Any]:
        return {
            "name": s.name,
            "model": s.name,
            "modified_at": _MODIFIED_AT,
            "size": s.size_bytes,
            "digest": s.digest,
            "details": _details(s),
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
            raise _BadRequest("model is required")
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
                "details": _details(spec),
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
                "modified_at": _MODIFIED_AT,
            },
        )

    # --- inference ---------------------------------------------------------------------------------
    def _inference(self, path: str, body: Mapping[str, Any]) -> None:
        sim = self.server.sim
        req = _parse_inference(path.rsplit("/", 1)[1], body)
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
        if any(getattr(faults, k) > 0 for k in FAULT_KINDS):  # attempts are only tracked when faults can fire
            h = _content_hash(body)
            attempt = sim._next_attempt(h)
            fault = faults.draw(float(stable_rng(sim.seed, "fault", h, attempt).random()))
        extra_s = 0.0
        if fault is not None:
            sim._count(model=req.model, fault=fault)
        if fault == "http_500":
            self._error(500, "llama runner process has terminated: simulated failure")
            return
        if fault == "http_503":
            self._error(503, "server busy, please try again.  maximum pending requests exceeded")
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
        ans, truncated = _truncate(sim._answer(spec, req), req.num_predict)
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
        }

    def _content(self, req: _Request, text: str) -> dict[str, Any]:
        if req.endpoint == "chat":
            return {"message": {"role": "assistant", "content": text}}
        return {"response": text}

    def _reply_load(self, req: _Request, spec: SimModelSpec) -> None:
        obj = {
            "model": spec.name,
            "created_at": _now(),
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
        self, req: _Request, ans: SimAnswer, extra_s: float, truncated: bool, malformed: bool
    ) -> None:
        sim = self.server.sim
        sim._wait(ans.total_duration_ns / 1e9 * sim.time_scale)
        obj = {
            "model": req.model,
            "created_at": _now(),
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
        self, req: _Request, ans: SimAnswer, extra_s: float, truncated: bool, malformed: bool
    ) -> None:
        sim = self.server.sim
        pieces = _PIECE_RE.findall(ans.text) or [ans.text]
        scale = sim.time_scale / 1e9
        self._start_stream()
        sim._wait((ans.load_duration_ns + ans.prompt_eval_duration_ns) * scale)
        per_piece = ans.eval_duration_ns * scale / len(pieces)
        bad_at = len(pieces) // 2 if malformed else -1
        for i, piece in enumerate(pieces):
            sim._wait(per_piece)
            line = json.dumps(
                {"model": req.model, "created_at": _now(), **self._content(req, piece), "done": False}
            )
            if i == bad_at:
                line = line[: len(line) // 2]
            self._chunk((line + "\n").encode())
        final = {
            "model": req.model,
            "created_at": _now(),
            **self._content(req, ""),
            **self._final_fields(ans, extra_s, truncated),
        }
        if req.endpoint == "generate":
            final["context"] = []
        self._chunk((json.dumps(final) + "\n").encode())
        self._end_stream()


# -------------------------------------------------------------------------------------------------- CLI


def serve_forever(
    port: int,
    host: str = "127.0.0.1",
    answer_key: Path | None = None,
    time_scale: float = 1.0,
    seed: int = 0,
    include_held_out: bool = False,
    timeout: float = 0.0,
    http_500: float = 0.0,
    http_503: float = 0.0,
    malformed_json: float = 0.0,
    slow: float = 0.0,
    dropped_connection: float = 0.0,
    stop_event: threading.Event | None = None,
) -> None:
    """Run the simulator until Ctrl-C (or ``stop_event``): the body of ``lrouter sim-serve --port P``.

    ``answer_key`` is a queries Parquet file or a warehouse root (its ``tables/queries.parquet``); without
    one every request is answered with a plausible reply that has no ground truth.
    """
    models = [*DEFAULT_POOL, HELD_OUT] if include_held_out else list(DEFAULT_POOL)
    faults = FaultConfig(
        timeout=timeout,
        http_500=http_500,
        http_503=http_503,
        malformed_json=malformed_json,
        slow=slow,
        dropped_connection=dropped_connection,
    )
    server = SimServer(
        answer_key, models, host=host, port=port, seed=seed, time_scale=time_scale, faults=faults
    )
    url = server.start()
    print(
        f"simulated Ollama (SIMULATED models: {', '.join(s.name for s in models)}) listening on {url}; "
        f"answer key: {len(server._key)} queries; time_scale={time_scale}",
        flush=True,
    )
    try:
        (stop_event or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
