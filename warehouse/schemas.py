"""Declared schemas of every warehouse table (the data contract of DESIGN.md).

Each table is written as Parquet with exactly these columns first (extra columns are allowed after them)
and exposed as a DuckDB view of the same name. Keeping the schemas in one module lets writers cast and
readers validate without guessing.
"""

from __future__ import annotations

import polars as pl

from warehouse.vocabulary import TABLE_NAMES

QUERIES = {
    "query_id": pl.String,  # stable hash of benchmark + source id
    "benchmark": pl.String,  # e.g. "builtin", "mmr-bench", "vl-routerbench", "custom"
    "dataset": pl.String,  # finer source dataset inside the benchmark
    "task_group": pl.String,  # ocr | chart | math | general
    "task": pl.String,  # finer task name
    "question": pl.String,
    "answer": pl.String,
    "answer_kind": pl.String,  # exact | numeric | choice | text
    "image_path": pl.String,  # relative to the warehouse images dir ("" when text-only)
    "image_sha256": pl.String,  # "" when text-only
    "source_meta": pl.String,  # JSON; hidden difficulty properties live under "visual"
    "official_split": pl.String,  # train | val | test | "" when the benchmark has none
}

MODELS = {
    "model_id": pl.String,
    "backend": pl.String,  # ollama | sim | import
    "endpoint": pl.String,
    "price_in_per_mtok": pl.Float64,
    "price_out_per_mtok": pl.Float64,
    "params_b": pl.Float64,  # nullable
    "added_at": pl.String,  # ISO-8601 UTC
    "active": pl.Boolean,
    "simulated": pl.Boolean,
    "description": pl.String,
}

TRACES = {
    "query_id": pl.String,
    "model_id": pl.String,
    "attempt": pl.Int32,
    "prediction": pl.String,
    "quality": pl.Float64,  # 0..1, benchmark-compatible; null unless status == ok
    "correct": pl.Boolean,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "image_tokens": pl.Int64,
    "cost_usd": pl.Float64,
    "latency_ms": pl.Float64,
    "status": pl.String,  # ok | error | timeout | skipped
    "error": pl.String,
    "collected_at": pl.String,
    "model_digest": pl.String,
    "run_id": pl.String,
}

SPLITS = {
    "query_id": pl.String,
    "split": pl.String,  # train | val | test
    "in_calibration": pl.Boolean,  # only ever true for train rows
    "stratum": pl.String,
}

EVAL_RESULTS = {
    "run_id": pl.String,
    "experiment": pl.String,
    "router": pl.String,
    "setting": pl.String,  # oriented | cost
    "seed": pl.Int64,
    "metric": pl.String,
    "value": pl.Float64,
    "pool": pl.String,
    "task_group": pl.String,  # "all" for the whole test split
    "split": pl.Int64,  # repeated-split index of the evaluation (0 = the warehouse's own split)
}

ROUTING_DECISIONS = {
    "run_id": pl.String,
    "query_id": pl.String,
    "router": pl.String,
    "lambda": pl.Float64,
    "pool": pl.String,
    "chosen_model": pl.String,
    "oracle_model": pl.String,
    "quality": pl.Float64,
    "cost_usd": pl.Float64,
    "scores": pl.String,  # JSON {model_id: score}
    "seed": pl.Int64,  # training seed of the router that decided (null when unknown)
}

SERVED_REQUESTS = {  # one row per chat request the gateway answered (part files under served_requests/)
    "request_id": pl.String,
    "received_at": pl.String,  # ISO-8601 UTC
    "policy": pl.String,  # lrouter | lrouter:<lambda> | a named policy | "model" (plain proxy)
    "requested_model": pl.String,  # the request's model field
    "lambda": pl.Float64,  # null for a plain proxy
    "chosen_model": pl.String,  # the model that answered (null when none did)
    "predicted_quality": pl.Float64,
    "expected_cost_usd": pl.Float64,
    "realised_cost_usd": pl.Float64,  # from the upstream's usage and the model's prices
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "latency_ms": pl.Float64,  # gateway receipt -> last byte sent
    "routing_ms": pl.Float64,
    "upstream_ms": pl.Float64,  # the answering call: whole answer, or first event when streaming
    "status": pl.String,  # ok | invalid | upstream_error | error
    "http_status": pl.Int32,
    "fallbacks": pl.Int32,  # lower-ranked models that answered after a failure (0 = the first pick)
    "attempts": pl.String,  # JSON list of {model, ok, error, kind, latency_ms}
    "stream": pl.Boolean,
    "has_image": pl.Boolean,
    "error": pl.String,
    "prompt": pl.String,  # the question, only when the operator opted in (--log-prompts)
    "task_group": pl.String,  # the request's extra_body task_group (null when not named)
    "dataset": pl.String,  # the request's extra_body dataset (null when not named)
    "key_id": pl.String,  # the access key's id (never the key); null when access control is off
}
SERVED_REQUESTS_ADDED = ("task_group", "dataset", "key_id")  # added later: null when reading older part files

SERVED_FEEDBACK = {  # quality labels attached to served requests (POST /v1/feedback), merged on read
    "request_id": pl.String,
    "label": pl.Float64,  # 0..1
    "labelled_at": pl.String,
    "label_source": pl.String,
}

TABLES: dict[str, dict[str, pl.DataType]] = dict(
    zip(TABLE_NAMES, (QUERIES, MODELS, TRACES, SPLITS, EVAL_RESULTS, ROUTING_DECISIONS, ROUTING_DECISIONS),
        strict=True)
)


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], table: str) -> pl.DataFrame:
    """Cast ``df`` to ``schema`` (declared columns first, extras kept) or raise naming the missing column."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"table {table!r}: missing column(s) {missing}; have {df.columns}")
    extras = [c for c in df.columns if c not in schema]
    return df.select([pl.col(c).cast(t, strict=False) for c, t in schema.items()] + extras)


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
