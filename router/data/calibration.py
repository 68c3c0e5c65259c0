"""The calibration rows of the outcome traces: the only trace rows a capability profile may read.

Why: profiles must never see val/test outcomes (that would leak the answers the router is evaluated on), so
every reader of calibration outcomes (profiles, expected costs, the leakage check) selects them here, with the
same latest-attempt rule and the same content hash that proves later which rows were used.

Production rows (labelled gateway requests, ``run_id`` = "production") are the one other evidence a profile
may read: they are never benchmark queries, so never validation/test rows; :func:`production_rows` selects
them with the same latest-attempt rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence

import polars as pl

from warehouse.vocabulary import TRACE_STATUSES

CALIBRATION_SPLIT = "train/calibration"
REQUIRED_TRACE_COLUMNS = ("query_id", "model_id", "attempt", "quality", "correct", "prompt_tokens",
                          "completion_tokens", "image_tokens", "cost_usd", "latency_ms", "status")
_HASH_COLUMNS = ("query_id", "model_id", "attempt", "status", "quality", "correct", "prompt_tokens",
                 "completion_tokens", "image_tokens", "cost_usd", "latency_ms")



def check_traces(traces: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED_TRACE_COLUMNS if c not in traces.columns]
    if missing:
        raise ValueError(f"traces: missing column(s) {missing}; have {traces.columns}")
    bad = traces.filter(~pl.col("status").is_in(list(TRACE_STATUSES)) | pl.col("status").is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"traces: status {r['status']!r} for query_id {r['query_id']!r} model_id "
                         f"{r['model_id']!r}; expected one of {TRACE_STATUSES}")
    bad = traces.filter((pl.col("status") == "ok") & pl.col("quality").is_null())
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"traces: status ok but quality is null for query_id {r['query_id']!r} "
                         f"model_id {r['model_id']!r} attempt {r['attempt']}")


def calibration_query_ids(splits: pl.DataFrame) -> set[str]:
    for c in ("query_id", "split", "in_calibration"):
        if c not in splits.columns:
            raise ValueError(f"splits: missing column {c!r}; have {splits.columns}")
    return set(splits.filter(pl.col("in_calibration") & (pl.col("split") == "train"))["query_id"].to_list())


def latest_attempts(traces: pl.DataFrame) -> pl.DataFrame:
    """One row per (query, model): the latest ok attempt if any, else the latest attempt."""
    sort_cols = ["query_id", "model_id", "_ok", "attempt"]
    t = traces.with_columns((pl.col("status") == "ok").alias("_ok"))
    if "collected_at" in t.columns:
        sort_cols.append("collected_at")
    return (t.sort(sort_cols, nulls_last=False)
            .group_by(["query_id", "model_id"], maintain_order=True).last().drop("_ok"))


def _limit_rank(query_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"calib-limit:{query_id}".encode()).digest()[:8], "big")


def calibration_rows(traces: pl.DataFrame, splits: pl.DataFrame,
                     calib_limit: Mapping[str, int] | None = None) -> pl.DataFrame:
    """The trace rows a profile may use: calibration queries of train, latest attempt per (query, model).

    ``calib_limit`` caps one model's rows to its first n calibration queries in a fixed pseudo-random order
    (nested: the 16 rows are among the 64), for cold-start curves.
    """
    check_traces(traces)
    calib = calibration_query_ids(splits)
    rows = latest_attempts(traces.filter(pl.col("query_id").is_in(list(calib))))
    for model_id, n in (calib_limit or {}).items():
        if n < 0:
            raise ValueError(f"calib_limit[{model_id!r}] must be >= 0, got {n}")
        mine = rows.filter(pl.col("model_id") == model_id)
        keep = sorted(mine["query_id"].to_list(), key=_limit_rank)[:n]
        rows = rows.filter((pl.col("model_id") != model_id) | pl.col("query_id").is_in(keep))
    return rows.sort(["model_id", "query_id"])


PRODUCTION_META = ("task_group", "dataset")  # what the request named (null = not named)


def production_rows(production: pl.DataFrame, model_ids: Sequence[str] | None = None, until: str | None = None,
                    query_ids: Collection[str] | None = None) -> pl.DataFrame:
    """The production trace rows a profile may use: latest label per (request, model), models of
    ``model_ids`` only, labelled (``collected_at``) no later than ``until``, optionally only ``query_ids``.

    Why ``until`` and ``query_ids``: the leakage check re-reads the production table after the profiles were
    built; restricting it to what the profiles recorded keeps a label that arrived in between out of the
    recomputation. ``task_group`` / ``dataset`` columns (null where the request named none) are kept; a row
    without a label time is dropped (it could not be pinned by ``until``).
    """
    check_traces(production)
    rows = production.with_columns([pl.lit(None, pl.String).alias(c) for c in PRODUCTION_META
                                    if c not in production.columns]).filter(pl.col("collected_at").is_not_null())
    if model_ids is not None:
        rows = rows.filter(pl.col("model_id").is_in(list(model_ids)))
    if until is not None:
        rows = rows.filter(pl.col("collected_at") <= until)
    if query_ids is not None:
        rows = rows.filter(pl.col("query_id").is_in(list(query_ids)))
    return latest_attempts(rows).sort(["model_id", "query_id"])


def trace_hash(rows: pl.DataFrame) -> str:
    """Content hash of trace rows (order-free), recorded so a later check can prove which rows were used."""
    cols = [c for c in _HASH_COLUMNS if c in rows.columns]
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows.select(cols).iter_rows(named=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
