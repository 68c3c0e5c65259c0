"""The production trace of the gateway: ``served_requests`` (one row per answered chat request) and
``served_feedback`` (quality labels from ``POST /v1/feedback``), Parquet part files under the warehouse.

Why part files written by a background task: a response never waits for disk, rows are batched (one file
per flush, not per request), every file is written to a temporary name and renamed (readers see whole
files), and the lifespan shutdown flushes what is left, so a clean stop loses nothing. Feedback is its own
table, merged on read (the latest label per request wins), so labelling never rewrites a served row.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from warehouse.schemas import SERVED_FEEDBACK, SERVED_REQUESTS, SERVED_REQUESTS_ADDED, conform
from warehouse.store import atomic_write_parquet

SERVED_DIR = "served_requests"
FEEDBACK_DIR = "served_feedback"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.exists() else []


def _read(folder: Path, schema: dict[str, pl.DataType], table: str, added: tuple[str, ...] = ()) -> pl.DataFrame:
    """All part files of one table; ``added`` columns (declared after older files were written) read as null."""
    frames = [pl.read_parquet(p) for p in _parts(folder)]
    if not frames:
        return pl.DataFrame(schema=schema)
    df = pl.concat(frames, how="diagonal_relaxed")
    df = df.with_columns([pl.lit(None, schema[c]).alias(c) for c in added if c not in df.columns])
    return conform(df, schema, table)


def read_served(root: Path) -> pl.DataFrame:
    """served_requests with the latest feedback label per request (``label`` null when none)."""
    served = _read(Path(root) / SERVED_DIR, SERVED_REQUESTS, "served_requests", SERVED_REQUESTS_ADDED)
    fb = read_feedback(root)
    latest = (fb.sort("labelled_at").group_by("request_id").last() if fb.height
              else pl.DataFrame(schema=SERVED_FEEDBACK))
    return served.join(latest, on="request_id", how="left")


def spend_by_key(root: Path, day: str) -> dict[str, float]:
    """USD recorded per access key id on one UTC day (``received_at`` starting with ``day``): the realised
    cost where the upstream reported usage, else the expected cost (an unknown usage is not free)."""
    out: dict[str, float] = {}
    for p in _parts(Path(root) / SERVED_DIR):
        try:
            df = pl.read_parquet(p, columns=["key_id", "received_at", "realised_cost_usd", "expected_cost_usd"])
        except Exception:  # a part written before key ids were recorded: no key spent anything in it
            continue
        df = df.filter(pl.col("key_id").is_not_null() & pl.col("received_at").str.starts_with(day))
        if df.height:
            cost = pl.coalesce("realised_cost_usd", "expected_cost_usd").fill_null(0.0).fill_nan(0.0)
            for key, usd in df.group_by("key_id").agg(cost.sum()).iter_rows():
                out[key] = out.get(key, 0.0) + float(usd)
    return out


def read_feedback(root: Path) -> pl.DataFrame:
    return _read(Path(root) / FEEDBACK_DIR, SERVED_FEEDBACK, "served_feedback")


class _Buffer:
    """Rows waiting for the next part file of one table."""

    def __init__(self, folder: Path, schema: dict[str, pl.DataType], table: str):
        self.folder, self.schema, self.table = folder, schema, table
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # one writer at a time: the loop's task or the final flush

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            rows, self.rows = self.rows, []
        return rows

    def write(self) -> int:
        with self.write_lock:
            rows = self.take()
            if not rows:
                return 0
            df = conform(pl.from_dicts(rows, schema=self.schema), self.schema, self.table)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
            try:
                atomic_write_parquet(df, self.folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet")
            except BaseException:
                with self.lock:  # keep them for the next flush
                    self.rows[:0] = rows
                raise
            return len(rows)


class ServedLog:
    """Buffered, batched writer of served_requests / served_feedback for one warehouse root."""

    def __init__(self, root: Path, flush_interval_s: float = 1.0, flush_rows: int = 2000,
                 on_written: Callable[[int], None] | None = None):
        self.root = Path(root)
        self.on_written = on_written  # e.g. the gateway's served_rows_written counter
        self.flush_interval_s, self.flush_rows = flush_interval_s, flush_rows
        self.served = _Buffer(self.root / SERVED_DIR, SERVED_REQUESTS, "served_requests")
        self.feedback = _Buffer(self.root / FEEDBACK_DIR, SERVED_FEEDBACK, "served_feedback")
        self._ids: set[str] = set()  # request ids served by this process
        self._disk_ids: dict[str, set[str]] = {}  # part file -> its request ids (files never change)
        self._wake: anyio.Event | None = None
        self.written = 0
        self.last_error: str | None = None

    def record(self, row: dict[str, Any]) -> None:
        """Queue one served row (called on the event loop; never blocks on disk)."""
        with self.served.lock:
            self.served.rows.append(row)
            n = len(self.served.rows)
        self._ids.add(row["request_id"])
        if n >= self.flush_rows and self._wake is not None:
            self._wake.set()

    def add_feedback(self, request_id: str, label: float, source: str = "api") -> dict[str, Any]:
        row = {"request_id": request_id, "label": float(label), "labelled_at": now_iso(), "label_source": source}
        with self.feedback.lock:
            self.feedback.rows.append(row)
        return row

    def known(self, request_id: str) -> bool:
        """Whether ``request_id`` was served (by this process, or is in a part file on disk)."""
        if request_id in self._ids:
            return True
        for p in _parts(self.root / SERVED_DIR):
            if p.name not in self._disk_ids:
                self._disk_ids[p.name] = set(pl.read_parquet(p, columns=["request_id"])["request_id"].to_list())
            if request_id in self._disk_ids[p.name]:
                return True
        return False

    def flush(self) -> int:
        """Write what is queued (blocking; call from a worker thread or at shutdown)."""
        n = self.served.write()
        self.feedback.write()
        self.written += n
        if n and self.on_written is not None:
            self.on_written(n)
        return n

    async def run(self) -> None:
        """Flush every ``flush_interval_s`` (or sooner when ``flush_rows`` wait) until cancelled."""
        while True:
            self._wake = anyio.Event()
            with anyio.move_on_after(self.flush_interval_s):
                await self._wake.wait()
            try:
                await anyio.to_thread.run_sync(self.flush)
                self.last_error = None
            except Exception as exc:  # a full disk must not take the gateway down; rows are kept
                self.last_error = f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------- production traces

PRODUCTION_DIR = "production_traces"
PRODUCTION_RUN_ID = "production"


def production_traces(labelled: pl.DataFrame) -> pl.DataFrame:
    """Labelled served rows in the ``outcome_traces`` contract (TRACES columns first), marked as production:
    ``run_id`` = ``source`` = "production", ``query_id`` = "production:<request id>", quality = the label.
    The request's ``task_group`` / ``dataset`` (null when it named none) ride along, so recalibration can
    count the row toward that group's profile parts."""
    from warehouse.schemas import TRACES

    df = labelled.filter(pl.col("label").is_not_null() & pl.col("chosen_model").is_not_null())
    df = df.with_columns([pl.lit(None, pl.String).alias(c) for c in SERVED_REQUESTS_ADDED if c not in df.columns])
    out = df.select(
        ("production:" + pl.col("request_id")).alias("query_id"), pl.col("chosen_model").alias("model_id"),
        (pl.col("fallbacks") + 1).cast(pl.Int32).alias("attempt"), pl.lit("").alias("prediction"),
        pl.col("label").alias("quality"), (pl.col("label") >= 0.5).alias("correct"), "prompt_tokens",
        "completion_tokens", pl.lit(None, pl.Int64).alias("image_tokens"),
        pl.col("realised_cost_usd").alias("cost_usd"), pl.col("upstream_ms").alias("latency_ms"),
        pl.lit("ok").alias("status"), pl.lit("").alias("error"), pl.col("labelled_at").alias("collected_at"),
        pl.lit("").alias("model_digest"), pl.lit(PRODUCTION_RUN_ID).alias("run_id"),
        pl.lit(PRODUCTION_RUN_ID).alias("source"), "request_id", "policy", "lambda", "predicted_quality",
        "expected_cost_usd", "has_image", "label_source", "task_group", "dataset")
    return conform(out, TRACES, "traces")


def write_production_traces(root: Path, traces: pl.DataFrame, key: str) -> Path:
    """One part file per sensor batch, named by ``key`` (the batch's first label time), so a retried tick
    rewrites its own file instead of adding a duplicate."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in key)
    return atomic_write_parquet(traces, Path(root) / PRODUCTION_DIR / f"part-{safe}.parquet")


def read_production_traces(root: Path) -> pl.DataFrame:
    from warehouse.schemas import TRACES

    frames = [pl.read_parquet(p) for p in _parts(Path(root) / PRODUCTION_DIR)]
    if not frames:
        return pl.DataFrame(schema=TRACES)
    return conform(pl.concat(frames, how="diagonal_relaxed"), TRACES, "traces").unique(
        ["query_id", "collected_at"], keep="last", maintain_order=True)
