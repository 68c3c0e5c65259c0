"""Foundation assets: benchmark queries, candidate models, outcome traces (one partition per model),
and the DuckDB warehouse views. Each asset is a thin wrapper over collectors/ and warehouse/."""


import dagster as dg
import polars as pl

from assets.common import MODELS_PARTITIONS, SIMULATED_NOTE, rounded, table_value
from assets.io_manager import table_metadata
from assets.resources import OllamaResource, WarehouseResource
from collectors.benchmark.generator import generate_benchmark
from collectors.collection.resume import collect_partition
from collectors.local.subset import OUTSIDE_REASON
from collectors.registry import ensure_registry, models_table
from warehouse.catalog import refresh_catalog
from warehouse.schemas import QUERIES, TRACES
from warehouse.vocabulary import TRACE_STATUSES

GROUP = "collection"


class BenchmarkConfig(dg.Config):
    source: str = "builtin"  # builtin | mmr-bench | vl-routerbench | long | queries
    n_queries: int = 2000  # builtin only
    seed: int = 0  # builtin only
    path: str = ""  # file or folder to import (non-builtin sources)
    images: str = ""  # image folder of the import, if any
    queries: str = ""  # long format: the queries file
    on_error: str = "fail"  # skip bad rows (listed in import_skipped) or refuse the import
    side_features: list[str] = []  # MMR-Bench: extra columns used as categorical side features
    replace: bool = False  # drop queries/traces/models not in the import (default: merge, keep them)


@dg.asset(group_name=GROUP, kinds={"parquet"}, code_version="1", metadata=table_metadata("queries"),
          description="Built-in benchmark of rendered image+question queries with exact ground truth.")
def benchmark_queries(context: dg.AssetExecutionContext, config: BenchmarkConfig,
                      warehouse: WarehouseResource) -> dg.Output[pl.DataFrame | None]:
    """The built-in benchmark is this asset's table (the IO manager writes it). An import is one ingest that
    writes the queries, models and trace partitions it brings together (``apply_import``), so its output is
    None: the IO manager has nothing left to write."""
    wh = warehouse.warehouse()
    extra: dict = {}
    table: pl.DataFrame | None = None
    if config.source == "builtin":
        df = table = generate_benchmark(n=config.n_queries, seed=config.seed, images_dir=wh.images_dir)
        extra["seed"] = config.seed
    else:
        from collectors.importing import FORMATS, ImportOptions, import_benchmark
        from collectors.importing.ingest import apply_import

        if config.source not in FORMATS:
            raise dg.Failure(f"unknown benchmark source {config.source!r}; expected builtin or {list(FORMATS)}")
        options = ImportOptions(on_error=config.on_error, side_features=tuple(config.side_features),
                                queries=config.queries)
        result = import_benchmark(config.path, config.source, config.images or None, options)
        summary = apply_import(wh, result, warehouse.registry(), replace=config.replace,
                               announce=context.log.warning)
        df = result.queries
        extra = {"import": dg.MetadataValue.md(result.report_markdown()), "text_only": result.text_only,
                 "skipped_rows": summary["skipped"]}
    counts = df.group_by("task_group", "answer_kind").len().sort("task_group", "answer_kind")
    return dg.Output(table, metadata={
        "dagster/row_count": df.height,
        "source": config.source,
        "by_task_group": table_value(counts),
        "schema": dg.MetadataValue.md(", ".join(QUERIES)),
        **extra,
    })


@dg.asset(group_name=GROUP, kinds={"parquet"}, metadata=table_metadata("models"),
          description="Candidate models from the registry file (models.yaml); mirrors it into the models table.")
def candidate_models(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.Output[pl.DataFrame]:
    entries = ensure_registry(warehouse.registry())
    table = models_table(entries)
    active = [e.model_id for e in entries if e.active]
    context.instance.add_dynamic_partitions(MODELS_PARTITIONS.name, active)
    view = table.select("model_id", "backend", "price_in_per_mtok", "price_out_per_mtok", "params_b", "active",
                        "simulated")
    return dg.Output(table, metadata={
        "active": len(active),
        "models": table_value(view),
        **({"note": dg.MetadataValue.md(SIMULATED_NOTE)} if any(e.simulated for e in entries) else {}),
    })


TRACE_CHECKS = {
    "schema": "The partition has every declared traces column and only known statuses.",
    "quality_in_unit_interval": "Every ok row's quality is in [0, 1].",
    "one_row_per_query": "At most one row per query (the latest attempt is kept).",
    "every_query_covered": "Every benchmark query has a row (ok, error, timeout or skipped).",
}


def trace_checks(traces: pl.DataFrame, query_ids: list[str], partition: str) -> list[dg.AssetCheckResult]:
    """Checks on one model's partition: schema, quality range, one row per query, every query covered."""
    missing_cols = [c for c in TRACES if c not in traces.columns]
    ok = traces.filter(pl.col("status") == "ok")
    bad_q = ok.filter(pl.col("quality").is_null() | (pl.col("quality") < 0) | (pl.col("quality") > 1)).height
    dupes = traces.height - traces.select("query_id").n_unique() if traces.height else 0
    covered = set(traces["query_id"].to_list())
    uncovered = [q for q in query_ids if q not in covered]
    bad_status = traces.filter(~pl.col("status").is_in(list(TRACE_STATUSES))).height
    return [
        dg.AssetCheckResult(check_name="schema", passed=not missing_cols and bad_status == 0,
                            metadata={"partition": partition, "missing_columns": str(missing_cols), "bad_status_rows": bad_status}),
        dg.AssetCheckResult(check_name="quality_in_unit_interval", passed=bad_q == 0,
                            metadata={"partition": partition, "violations": bad_q}),
        dg.AssetCheckResult(check_name="one_row_per_query", passed=dupes == 0, metadata={"partition": partition, "duplicates": dupes}),
        dg.AssetCheckResult(check_name="every_query_covered", passed=not uncovered,
                            metadata={"partition": partition, "uncovered": len(uncovered), "example": str(uncovered[:3])}),
    ]


@dg.asset(
    group_name=GROUP,
    kinds={"parquet"},
    partitions_def=MODELS_PARTITIONS,
    deps=[candidate_models],  # the registry entry of the partition's model
    metadata=table_metadata("traces"),
    pool="model_calls",
    check_specs=[dg.AssetCheckSpec(name, asset="outcome_traces", description=text)
                 for name, text in TRACE_CHECKS.items()],
    description="Outcome traces of one candidate model on every benchmark query (resumable, idempotent).",
)
def outcome_traces(context: dg.AssetExecutionContext, benchmark_queries: pl.DataFrame, warehouse: WarehouseResource,
                   ollama: OllamaResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    model_id = context.partition_key
    entries = {e.model_id: e for e in ensure_registry(warehouse.registry())}
    if model_id not in entries:
        raise dg.Failure(f"model {model_id!r} is not in the registry {warehouse.registry()}")
    model = entries[model_id]
    queries = benchmark_queries
    first, splits, skip = None, None, None
    if wh.has_table("splits"):  # calibration rows first, so a new model's profile is usable early
        splits = wh.read_table("splits")
        first = splits.filter(pl.col("in_calibration"))["query_id"].to_list()
    if model.backend == "local":  # real CPU inference: a stated subset, the other rows are skipped
        from collectors.local.subset import LocalSubsetConfig, outside_subset

        skip = outside_subset(queries, splits, LocalSubsetConfig.from_env())
    if model.backend == "import":  # imported outcomes: nothing to call, just re-check the partition
        from collectors.collection.client import CallStats
        from collectors.collection.resume import PartitionResult

        result = PartitionResult(traces=wh.read_trace_partition(model_id), stats=CallStats(), attempted=0,
                                 resumed_rows=0)
        label = "imported traces"
    else:
        with ollama.endpoint(model, queries) as (url, label):
            result = collect_partition(wh, model, queries, url, ollama.collect_config(), run_id=context.run_id,
                                       first=first, headers=ollama.headers(model), skip=skip)
    t = result.traces
    ok = t.filter(pl.col("status") == "ok")
    summary = t.group_by("status").len().sort("status")
    context.log.info(f"{model_id}: {result.attempted} calls attempted via {label}; statuses {summary.rows()}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": t.height,
            "attempted_this_run": result.attempted,
            "resumed_rows": result.resumed_rows,
            "retries": result.stats.retries,
            "backend": label,
            "simulated": model.simulated,
            "accuracy": rounded(_mean(ok["correct"].cast(pl.Float64))),
            "mean_cost_usd": rounded(_mean(ok["cost_usd"])),
            "mean_latency_ms": rounded(_mean(ok["latency_ms"])),
            "statuses": table_value(summary),
        },
        check_results=trace_checks(t, queries["query_id"].to_list(), model_id),
    )


def _mean(col: pl.Series) -> float:
    """Mean for metadata; 0.0 when the column is empty or unknown (imported traces may lack latency)."""
    m = col.mean() if col.len() else None
    return float(m) if m is not None else 0.0


def per_model_summary(traces: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    return (
        traces.group_by("model_id")
        .agg(
            pl.len().alias("rows"),
            (pl.col("status") == "ok").mean().alias("availability"),
            pl.col("correct").filter(pl.col("status") == "ok").mean().alias("accuracy"),
            pl.col("quality").filter(pl.col("status") == "ok").mean().alias("quality"),
            pl.col("cost_usd").filter(pl.col("status") == "ok").mean().alias("mean_cost_usd"),
            pl.col("latency_ms").filter(pl.col("status") == "ok").mean().alias("mean_latency_ms"),
            pl.col("latency_ms").filter(pl.col("status") == "ok").quantile(0.9).alias("p90_latency_ms"),
        )
        .join(models.select("model_id", "simulated"), on="model_id", how="left")
        .sort("model_id")
    )


@dg.asset(group_name=GROUP, kinds={"duckdb"}, pool="duckdb_catalog",
          description="DuckDB catalog (warehouse.duckdb) with one view per table; per-model summary.")
def warehouse_views(context: dg.AssetExecutionContext, outcome_traces: pl.DataFrame, benchmark_queries: pl.DataFrame,
                    candidate_models: pl.DataFrame, warehouse: WarehouseResource) -> dg.MaterializeResult:
    views = refresh_catalog(warehouse.warehouse())
    traces = outcome_traces
    summary = per_model_summary(traces, candidate_models) if traces.height else pl.DataFrame()
    return dg.MaterializeResult(metadata={
        "views": ", ".join(views),
        "trace_rows": traces.height,
        "queries": benchmark_queries.height,
        "per_model": table_value(summary),
        **({"note": dg.MetadataValue.md(SIMULATED_NOTE)}
           if summary.height and summary["simulated"].fill_null(False).any() else {}),
    })


@dg.asset_check(asset=warehouse_views, description="Every active model has exactly one ok row per query.",
                additional_ins={"outcome_traces": dg.AssetIn("outcome_traces"),
                                "benchmark_queries": dg.AssetIn("benchmark_queries"),
                                "candidate_models": dg.AssetIn("candidate_models")})
def all_pairs_collected(outcome_traces: pl.DataFrame, benchmark_queries: pl.DataFrame,
                        candidate_models: pl.DataFrame) -> dg.AssetCheckResult:
    models = candidate_models.filter(pl.col("active"))
    traces = outcome_traces.filter(pl.col("model_id").is_in(models["model_id"].implode()))
    ok = traces.filter(pl.col("status") == "ok")
    # a model that answers only a stated subset (the local model) is not expected on the rest
    by_design = traces.filter((pl.col("status") == "skipped") & pl.col("error").str.starts_with(OUTSIDE_REASON)).height
    expected = benchmark_queries.height * models.height - by_design
    dupes = ok.height - ok.select("query_id", "model_id").n_unique() if ok.height else 0
    return dg.AssetCheckResult(
        passed=ok.height == expected and dupes == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"ok_pairs": ok.height, "expected_pairs": expected, "outside_subset": by_design, "duplicates": dupes,
                  "non_ok_rows": traces.height - ok.height},
    )
