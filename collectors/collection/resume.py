"""Checkpoint-and-resume for trace collection.

Completed rows are flushed in batches to ``traces/_staging/<model>/part-*.parquet`` (each file written
atomically, outside the glob the ``traces`` view reads). A run that is killed at any point leaves whole
part files only; the next run merges partition + staging, redoes only the (query, model) pairs that are
missing (and, by default, those that failed), then replaces the partition atomically and clears staging.

The staging folder is written through the warehouse's filesystem layer, so on an S3 warehouse the resume
state is in the bucket: a run restarted on another worker (or a Celery task redelivered after its worker
died) resumes from the rows the first one flushed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import polars as pl

from collectors.collection.client import CallStats, CollectConfig, collect_model, rows_to_frame, skip_row
from collectors.registry import ModelEntry
from warehouse.schemas import TRACES, conform
from warehouse.store import Warehouse, partition_file_name


class TraceCheckpoint:
    def __init__(self, wh: Warehouse, model_id: str):
        self.wh = wh
        self.model_id = model_id
        self.rel = "traces/_staging/" + partition_file_name(model_id).removesuffix(".parquet")
        self.dir = wh.traces_dir / "_staging" / partition_file_name(model_id).removesuffix(".parquet")
        self._seq = len(wh.fs.list_parts(self.rel))

    def append(self, rows: list[dict]) -> str:
        self._seq += 1
        # the random suffix keeps two writers (a redelivered task and a slow original) from colliding
        return self.wh.fs.put_part(f"{self.rel}/part-{self._seq:06d}-{uuid.uuid4().hex[:8]}.parquet",
                                   rows_to_frame(rows))

    def staged(self) -> pl.DataFrame:
        files = self.wh.fs.list_parts(self.rel)
        if not files:
            return pl.DataFrame(schema=TRACES)
        return pl.concat([conform(self.wh.fs.read_part(f), TRACES, "traces") for f in files],
                         how="vertical_relaxed")

    def clear(self) -> None:
        self.wh.fs.delete_dir(self.rel)


def latest_per_query(df: pl.DataFrame) -> pl.DataFrame:
    """One row per (query, model): the most recent one (ties broken by attempt)."""
    if df.height == 0:
        return df
    return (
        df.with_row_index("_order")
        .sort(["collected_at", "attempt", "_order"])
        .unique(subset=["query_id", "model_id"], keep="last", maintain_order=True)
        .drop("_order")
    )


@dataclass
class PartitionResult:
    traces: pl.DataFrame
    stats: CallStats
    attempted: int  # pairs sent to the collector in this run
    resumed_rows: int  # rows recovered from a previous, interrupted run


def collect_partition(
    wh: Warehouse,
    model: ModelEntry,
    queries: pl.DataFrame,
    host: str,
    cfg: CollectConfig | None = None,
    run_id: str = "adhoc",
    retry_failed: bool = True,
    first: list[str] | None = None,
    headers: dict[str, str] | None = None,
    skip: dict[str, str] | None = None,
) -> PartitionResult:
    """Bring one model's partition up to date with ``queries``; idempotent when nothing is missing.

    ``skip`` (query_id -> reason) records those queries as ``skipped`` without calling the model (a local
    model's subset); rows skipped for one of those reasons earlier are redone, so a grown subset is collected.
    """
    cfg = cfg or CollectConfig()
    ckpt = TraceCheckpoint(wh, model.model_id)
    staged = ckpt.staged()
    existing = latest_per_query(
        pl.concat([conform(wh.read_trace_partition(model.model_id), TRACES, "traces"), staged],
                  how="vertical_relaxed")
    )
    existing = existing.filter(pl.col("query_id").is_in(queries["query_id"].implode()))
    # transient failures are retried on the next run; skipped rows (bad input) stay until the input changes
    keep = existing if not retry_failed else existing.filter(~pl.col("status").is_in(["error", "timeout"]))
    skip = skip or {}
    if skip:
        stale = (pl.col("status") == "skipped") & pl.col("error").is_in(sorted(set(skip.values()))) \
            & ~pl.col("query_id").is_in(list(skip))
        keep = keep.filter(~stale)
    todo = queries.filter(~pl.col("query_id").is_in(keep["query_id"].implode()))
    skipped_rows = [skip_row(q, model, run_id, skip[q]) for q in todo["query_id"].to_list() if q in skip]
    todo = todo.filter(~pl.col("query_id").is_in(list(skip)))
    if first:
        rank = {qid: i for i, qid in enumerate(first)}
        todo = (
            todo.with_columns(pl.col("query_id").replace_strict(rank, default=len(rank), return_dtype=pl.Int64)
                              .alias("_rank"))
            .sort("_rank", maintain_order=True)
            .drop("_rank")
        )
    stats = CallStats()
    if todo.height:
        new, stats = collect_model(model, todo, wh.images_dir, host, cfg, run_id=run_id, on_batch=ckpt.append,
                                   headers=headers)
        prev_attempts = dict(zip(existing["query_id"].to_list(), existing["attempt"].to_list(), strict=True))
        new = new.with_columns(
            (pl.col("attempt") + pl.col("query_id").replace_strict(prev_attempts, default=0,
                                                                   return_dtype=pl.Int32)).alias("attempt")
        )
        merged = latest_per_query(pl.concat([existing, new], how="vertical_relaxed"))
    else:
        merged = existing
    if skipped_rows:
        merged = latest_per_query(pl.concat([merged, rows_to_frame(skipped_rows)], how="vertical_relaxed"))
    order = {qid: i for i, qid in enumerate(queries["query_id"].to_list())}
    merged = (
        merged.with_columns(pl.col("query_id").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o")
        .drop("_o")
    )
    current = wh.read_trace_partition(model.model_id)
    if todo.height or skipped_rows or staged.height or current.height != merged.height:
        wh.write_trace_partition(model.model_id, merged)
    ckpt.clear()
    return PartitionResult(traces=merged, stats=stats, attempted=todo.height, resumed_rows=staged.height)
