"""A simulated Ollama server on 127.0.0.1: the default candidate pool, reached with the real ``ollama`` client.

It implements the parts of Ollama's HTTP API a collector uses: ``/api/version``, ``/api/tags``,
``/api/show``, ``/api/ps``, ``/api/chat`` and ``/api/generate`` (non-streaming JSON and streaming NDJSON),
with Ollama's reply fields and error shapes (unknown model -> 404 ``{"error": "model 'x' not found"}``).

Answers come from `collectors.simulator.behaviour`: the server finds the query in its `AnswerKey` by the
sha256 of the first decoded image (or by the question text when there is no image); anything else gets a
plausible reply with no ground truth. Durations are reported as a real server would (nanoseconds,
unscaled) while the server only sleeps ``time_scale`` of them, so tests and demos run fast yet record
realistic latencies. Faults (`FaultConfig`) are drawn per (request content, attempt), so a retry can
succeed and a rerun of the whole collection injects the same faults.

The pieces live next to it: `specs` (the pool), `behaviour` (answers, tokens, latencies), `answer_key`,
`faults`, `protocol` (request parsing, reply shapes) and `handler` (the HTTP request handler).
"""

from __future__ import annotations

import copy
import hashlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from collectors.simulator.answer_key import AnswerKey
from collectors.simulator.behaviour import SimAnswer, answer_for, answer_unknown
from collectors.simulator.faults import ALL_FAULT_KINDS, FaultConfig
from collectors.simulator.handler import SimHandler, SimHTTPServer
from collectors.simulator.protocol import InferenceRequest
from collectors.simulator.specs import DEFAULT_POOL, HELD_OUT, SimModelSpec


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
        self._httpd: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_stats()

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> str:
        if self._httpd is not None:
            return self.url
        self._stop.clear()
        httpd = SimHTTPServer((self.host, self.port), SimHandler)
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
                "faults": dict.fromkeys((*ALL_FAULT_KINDS, "vanished", "down", "unauthorized"), 0),
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

    def _answer(self, spec: SimModelSpec, req: InferenceRequest) -> SimAnswer:
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
