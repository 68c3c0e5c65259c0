"""Collect outcome traces: run one model over the benchmark queries through the real ``ollama`` client
(backends ``ollama``, ``sim``, ``local``) or the real ``openai`` client (backend ``openai``).

Why it is built this way:
- the wire protocol sits behind `collectors.collection.protocol.ChatProtocol` (one module per protocol), so
  everything below holds for every backend alike;
- async with a semaphore gives bounded concurrency without threads; each call has its own timeout;
- transient failures are retried with backoff and a per-model circuit breaker stops hammering a dead
  server (`collectors.collection.retries`): once it opens, the remaining calls are recorded as ``error``
  rows at once instead of each waiting for its timeout;
- every query yields exactly one row (ok / error / timeout / skipped), nothing is dropped, and completed
  rows are flushed in batches to a checkpoint so a killed run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from PIL import Image

from collectors.collection.limits import RateLimiter
from collectors.collection.protocol import ChatProtocol, ChatReply
from collectors.collection.retries import CircuitBreaker, backoff_delay
from collectors.registry import ModelEntry
from collectors.scoring import is_correct, score_answer
from warehouse.schemas import TRACES, conform

DEFAULT_PROMPT = "{question}\nAnswer the question using a single word, number or option letter."
MAX_QUESTION_CHARS = 4000


@dataclass
class CollectConfig:
    """How one collection run calls a model: concurrency, timeouts, retry and breaker limits, prompt."""

    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_max_s: float = 4.0
    breaker_threshold: int = 12  # consecutive transient failures that open the circuit
    batch_size: int = 200  # rows per checkpoint flush
    prompt_template: str = DEFAULT_PROMPT
    temperature: float = 0.0
    seed: int = 0
    progress: bool = True
    max_tokens: int = 1024  # reply cap sent to OpenAI-compatible servers (a runaway reply costs money)
    retry_after_max_s: float = 60.0  # a server's Retry-After is honoured up to this long


@dataclass
class CallStats:
    """What one model's run did (calls, retries, failures by kind, rows by status), for metadata and tests."""

    calls: int = 0
    retries: int = 0
    transient_failures: int = 0
    permanent_failures: int = 0
    breaker_opened: bool = False
    rate_limited: int = 0  # 429 replies (retried after the server's Retry-After)
    rate_wait_s: float = 0.0  # time calls waited for the rate limiter and Retry-After pauses
    by_status: dict[str, int] = field(default_factory=dict)


def estimate_text_tokens(text: str) -> int:
    """Rough text token count (4 characters per token), used to split Ollama's prompt count into
    text and image tokens, since Ollama reports only the total."""
    return max(1, (len(text) + 3) // 4)


def load_query_image(images_dir: Path, image_path: str) -> tuple[bytes | None, str | None]:
    """Read and verify an image; returns (bytes, None) or (None, reason). Paths may not escape the folder."""
    if not image_path:
        return None, None
    root = Path(images_dir).resolve()
    path = (root / image_path).resolve()
    if root not in path.parents:
        return None, f"image path {image_path!r} escapes the images folder"
    if not path.is_file():
        return None, f"image file missing: {path}"
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception as exc:  # PIL raises many types for corrupt data
        return None, f"corrupt image {path.name}: {type(exc).__name__}: {exc}"
    return data, None


def _options(q: dict) -> list[str] | None:
    """Multiple-choice option texts from source_meta, so a reply naming the option maps to its letter."""
    try:
        opts = json.loads(q.get("source_meta") or "{}").get("options")
    except (ValueError, AttributeError):
        return None
    return [str(o) for o in opts] if isinstance(opts, list) and opts else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _row(query_id: str, model: ModelEntry, run_id: str, **kw) -> dict:
    base = {
        "query_id": query_id,
        "model_id": model.model_id,
        "attempt": 1,
        "prediction": None,
        "quality": None,
        "correct": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "image_tokens": None,
        "cost_usd": None,
        "latency_ms": None,
        "status": "ok",
        "error": None,
        "collected_at": _now(),
        "model_digest": None,
        "run_id": run_id,
    }
    base.update(kw)
    return base


def skip_row(query_id: str, model: ModelEntry, run_id: str, reason: str) -> dict:
    """A ``skipped`` row recorded without calling the model (bad input, or outside a local model's subset)."""
    return _row(query_id, model, run_id, attempt=0, status="skipped", error=reason)


def rows_to_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=TRACES)
    return conform(pl.DataFrame(rows, schema=TRACES, strict=False), TRACES, "traces")


def protocol_for(model: ModelEntry, host: str, cfg: CollectConfig,
                 headers: dict[str, str] | None = None) -> ChatProtocol:
    """The protocol that reaches ``model`` at ``host``: OpenAI's for backend ``openai``, Ollama's otherwise.
    A bearer token in ``headers`` becomes the OpenAI client's API key."""
    if model.backend == "openai":
        from collectors.collection.openai_protocol import OpenAIProtocol

        auth = next((v for k, v in (headers or {}).items() if k.lower() == "authorization"), "")
        key = auth[7:] if auth[:7].lower() == "bearer " else ""
        return OpenAIProtocol(host, model.served_name, cfg.timeout_s, cfg.temperature, cfg.seed, cfg.max_tokens,
                              api_key=key, headers=headers)
    from collectors.collection.ollama_protocol import OllamaProtocol

    return OllamaProtocol(host, model.served_name, cfg.timeout_s, cfg.temperature, cfg.seed, headers=headers)


class ModelCollector:
    """Runs one model over queries; holds the protocol, rate limiter, breaker and statistics for that model."""

    def __init__(
        self,
        model: ModelEntry,
        host: str,
        cfg: CollectConfig,
        run_id: str,
        headers: dict[str, str] | None = None,
        protocol: ChatProtocol | None = None,
    ):
        self.model = model
        self.host = host
        self.cfg = cfg
        self.run_id = run_id
        self.protocol = protocol if protocol is not None else protocol_for(model, host, cfg, headers)
        self.stats = CallStats()
        self._breaker = CircuitBreaker(cfg.breaker_threshold)
        self._limiter = RateLimiter(model.requests_per_minute)
        self._digest: str | None = None
        self._rng = random.Random(f"{cfg.seed}:{model.model_id}")

    async def run_one(self, q: dict, image: bytes | None) -> dict:
        """One query's row: retried while transient and the breaker is closed, never raised."""
        question = q["question"] or ""
        prompt = self.cfg.prompt_template.format(question=question[:MAX_QUESTION_CHARS])
        attempt = 0
        while True:
            if self._breaker.is_open:
                self.stats.by_status["error"] = self.stats.by_status.get("error", 0) + 1
                return _row(
                    q["query_id"],
                    self.model,
                    self.run_id,
                    attempt=attempt,
                    status="error",
                    error=f"circuit open: {self._breaker.reason}",
                    model_digest=self._digest,
                )
            attempt += 1
            await self._limiter.acquire()
            self.stats.calls += 1
            t0 = time.perf_counter()
            try:
                reply = await self.protocol.chat(prompt, image)
            except Exception as exc:  # classified below; nothing escapes as an unrecorded failure
                failure = self.protocol.describe(exc)
                if not failure.transient:
                    self.stats.permanent_failures += 1
                    self._breaker.reset()
                    return self._failed(q, attempt, failure.status, failure.message)
                self.stats.transient_failures += 1
                if failure.rate_limited:
                    self.stats.rate_limited += 1  # the server is alive: not a step toward the breaker
                elif self._breaker.record_transient(failure.message):
                    self.stats.breaker_opened = True
                if attempt > self.cfg.max_retries or self._breaker.is_open:
                    return self._failed(q, attempt, failure.status, failure.message)
                self.stats.retries += 1
                delay = backoff_delay(attempt, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
                if failure.retry_after_s is not None:
                    wait = min(failure.retry_after_s, self.cfg.retry_after_max_s)
                    self._limiter.pause(wait)  # the model's other calls wait too
                    delay = max(delay, wait)
                await asyncio.sleep(delay)
                continue
            wall_ms = (time.perf_counter() - t0) * 1000.0
            self._breaker.reset()
            return self._ok(q, attempt, reply, wall_ms, 1 if image is not None else 0, prompt)

    def _failed(self, q: dict, attempt: int, status: str, message: str) -> dict:
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        return _row(
            q["query_id"],
            self.model,
            self.run_id,
            attempt=attempt,
            status=status,
            error=message,
            model_digest=self._digest,
        )

    def _ok(self, q: dict, attempt: int, reply: ChatReply, wall_ms: float, n_images: int, prompt: str) -> dict:
        content = reply.text
        digest = reply.digest or self._digest
        try:
            quality = float(score_answer(content, q["answer"], q["answer_kind"], options=_options(q)))
        except ValueError as exc:  # bad ground truth (e.g. unknown answer_kind): record, don't abort the run
            self.stats.by_status["error"] = self.stats.by_status.get("error", 0) + 1
            return _row(
                q["query_id"],
                self.model,
                self.run_id,
                attempt=attempt,
                status="error",
                prediction=content,
                error=f"query {q['query_id']}: cannot score reply: {exc}",
                model_digest=digest,
            )
        prompt_tokens = reply.prompt_tokens
        completion_tokens = reply.completion_tokens
        if reply.image_tokens is not None:
            image_tokens = reply.image_tokens
        else:  # estimated: the prompt count less the text's
            image_tokens = max(0, prompt_tokens - estimate_text_tokens(prompt)) if n_images else 0
        cost = (
            prompt_tokens * self.model.price_in_per_mtok + completion_tokens * self.model.price_out_per_mtok
        ) / 1e6
        if self.model.price_per_image_usd:
            cost += n_images * self.model.price_per_image_usd
        if self.model.price_per_compute_s:  # local models: priced by measured compute time (seconds)
            compute_s = reply.compute_s if reply.compute_s else wall_ms / 1e3
            cost += compute_s * self.model.price_per_compute_s
        latency_ms = reply.server_ms if reply.server_ms else wall_ms
        self.stats.by_status["ok"] = self.stats.by_status.get("ok", 0) + 1
        return _row(
            q["query_id"],
            self.model,
            self.run_id,
            attempt=attempt,
            prediction=content,
            quality=quality,
            correct=is_correct(quality, q["answer_kind"]),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            image_tokens=image_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
            status="ok",
            model_digest=digest,
        )

    async def run(
        self,
        queries: pl.DataFrame,
        images_dir: Path,
        on_batch: Callable[[list[dict]], None] | None = None,
    ) -> list[dict]:
        cfg = self.cfg
        self._digest = await self.protocol.start()
        sem = asyncio.Semaphore(self.model.max_concurrency or cfg.concurrency)
        rows: list[dict] = []
        pending: list[dict] = []
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=queries.height, desc=f"collect {self.model.model_id}", unit="call", leave=False,
                       disable=None)  # None: no bar when stderr is not a terminal (no \r walls in log files)

        async def one(q: dict) -> dict:
            image, reason = load_query_image(images_dir, q.get("image_path") or "")
            if reason is not None:
                self.stats.by_status["skipped"] = self.stats.by_status.get("skipped", 0) + 1
                return _row(q["query_id"], self.model, self.run_id, attempt=0, status="skipped", error=reason)
            if not (q.get("question") or "").strip():
                self.stats.by_status["skipped"] = self.stats.by_status.get("skipped", 0) + 1
                return _row(
                    q["query_id"],
                    self.model,
                    self.run_id,
                    attempt=0,
                    status="skipped",
                    error="empty question",
                )
            async with sem:
                return await self.run_one(q, image)

        tasks = [asyncio.create_task(one(q)) for q in queries.iter_rows(named=True)]
        stop = asyncio.Event()
        restore_signals = trap_stop_signals(asyncio.get_running_loop(), stop)

        async def cancel_on_stop() -> None:
            await stop.wait()
            for t in tasks:
                t.cancel()

        watcher = asyncio.create_task(cancel_on_stop())
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    row = await fut
                except asyncio.CancelledError:
                    if stop.is_set():
                        continue  # interrupted: the call was never recorded, the next run redoes it
                    raise
                rows.append(row)
                pending.append(row)
                if bar is not None:
                    bar.update(1)
                if on_batch is not None and len(pending) >= cfg.batch_size:
                    on_batch(pending)
                    pending = []
            if on_batch is not None and pending:
                on_batch(pending)
        finally:
            restore_signals()
            watcher.cancel()
            for t in tasks:
                t.cancel()
            if bar is not None:
                bar.close()
            self.stats.rate_wait_s = self._limiter.waited_s
            await self.protocol.close()
        if stop.is_set():
            raise CollectionInterrupted(f"{self.model.model_id}: stopped by a signal after {len(rows)} of "
                                        f"{queries.height} calls; they are staged and the next run resumes")
        return rows


class CollectionInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during a collection: in-flight calls were cancelled, finished rows were handed to
    ``on_batch`` (staged), and the run stops at once instead of finishing the model first."""


def trap_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``stop`` while the collection runs (main thread only) and return a function
    that puts the previous handlers back. Without this, a signal handler that raises (Dagster's does) hits
    whichever call coroutine happens to run, is recorded as one failed call, and the collection goes on."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, stop.set)

    def restore() -> None:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)

    return restore


def collect_model(
    model: ModelEntry,
    queries: pl.DataFrame,
    images_dir: Path,
    host: str,
    cfg: CollectConfig | None = None,
    run_id: str = "adhoc",
    on_batch: Callable[[list[dict]], None] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[pl.DataFrame, CallStats]:
    """Synchronous entry point: one row per query, in the order of ``queries``."""
    cfg = cfg or CollectConfig()
    collector = ModelCollector(model, host, cfg, run_id, headers=headers)
    rows = asyncio.run(collector.run(queries, images_dir, on_batch=on_batch))
    order = {qid: i for i, qid in enumerate(queries["query_id"].to_list())}
    rows.sort(key=lambda r: order[r["query_id"]])
    return rows_to_frame(rows), collector.stats
