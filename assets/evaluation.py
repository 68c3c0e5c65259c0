"""The evaluation report: baselines vs LatentRouter with the paper's experiments, as tables and plots."""

import json
import time

import dagster as dg
import polars as pl

from assets.common import png_markdown, rounded, routing_inputs, table_value
from assets.io_manager import table_metadata
from assets.resources import WarehouseResource
from assets.routing import deployed_router, fit_store
from router.data.warehouse_inputs import routing_data
from router.evaluation.config import EXPERIMENTS, EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.deploy import read_deployment
from router.evaluation.experiments import run_experiments
from router.evaluation.hybrid import HYBRID_DIR, load_hybrid_tables
from router.evaluation.profile_sources import default_cold_start_model, warehouse_profile_source
from router.evaluation.reports.report import write_report
from router.evaluation.reports.tables import table1_rows
from router.evaluation.resampling import warehouse_split_source
from router.features.feature_set import FeatureSet
from router.models.registry import LATENT
from router.training.artifacts import latest_checkpoint_dir

GROUP = "evaluation"


class EvaluationConfig(dg.Config):
    preset: str = "demo"  # quick (CI) | demo (pipeline default) | paper (full protocol)
    seeds: list[int] = []  # empty = the preset's seeds (demo: 0, 1 on each of 2 splits)
    n_splits: int = 0  # 0 = the preset's number of repeated splits
    experiments: list[str] = []  # empty = all of router.evaluation.config.EXPERIMENTS
    cold_start_model: str = ""  # empty = the model best on some task group by the widest margin
    primary_metric: str = "rank_score"
    # processes that make the fits on this machine (0 = one per core); the tables are the same for any count
    workers: int = 0


class EvaluationFitsConfig(EvaluationConfig):
    # ops the fits are spread over: 1 on one machine (its processes share the work), the number of
    # Celery workers on the cluster profile (each op runs on whichever worker takes it)
    chunks: int = 1


def eval_config(config: EvaluationConfig) -> EvalConfig:
    unknown = [e for e in config.experiments if e not in EXPERIMENTS]
    if unknown:
        raise dg.Failure(f"unknown experiment(s) {unknown}; known: {list(EXPERIMENTS)}")
    kw: dict = {"primary_metric": config.primary_metric}
    if config.seeds:
        kw["seeds"] = tuple(config.seeds)
    if config.n_splits:
        kw["n_splits"] = int(config.n_splits)
    if config.experiments:
        kw["experiments"] = tuple(config.experiments)
    if config.cold_start_model:
        kw["cold_start_model"] = config.cold_start_model
    try:
        return EvalConfig.preset(config.preset, **kw)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc


def _eval_context(context, config: EvaluationConfig, tables: tuple, wh) -> EvalContext:
    """The evaluation's context on the warehouse's data: the same in every op of the evaluation, so a fit
    made in one (evaluation_fits' ops, deployed_router) has the key another looks up."""
    inputs = routing_inputs(*tables)
    data = routing_data(inputs)
    cfg = eval_config(config)
    cold = cfg.cold_start_model or default_cold_start_model(data)
    bounds_path = wh.root / "cost_bounds.json"  # written by an import that ships one (collectors.importing)
    shipped = json.loads(bounds_path.read_text()) if bounds_path.exists() else None
    return EvalContext(data, cfg, context.run_id, context.log.info, warehouse_profile_source(inputs, cold),
                       shipped_bounds=shipped, split_source=warehouse_split_source(inputs, cfg.split_fractions),
                       fit_store=fit_store(wh))


# -- the fits, fanned out: plan -> one op per chunk of units -> plan the extras -> one op per chunk ----------

EVAL_TABLES = ("query_features", "benchmark_queries", "outcome_traces", "data_splits", "capability_profiles",
               "candidate_models")
OPS_IO = "ops_io_manager"  # the ops' small outputs, on storage every worker reads (assets.io_manager)


def _chunks(n_units: int, chunks: int) -> list[list[int]]:
    """Unit indices dealt round-robin into at most ``chunks`` non-empty lists (units come longest first)."""
    k = max(1, min(int(chunks), n_units))
    return [list(range(i, n_units, k)) for i in range(k)] if n_units else []


def _fit_plan(context, config: EvaluationFitsConfig, tables: tuple, wh, extra: bool):
    from router.evaluation.parallel import fit_units, plan_extra, plan_main

    ctx = _eval_context(context, config, tables, wh)
    if extra:  # LatentRouter's split-0 unit is in the fit store: loading it gives its hyperparameters
        fit_units(ctx, plan_main(ctx, routers=[LATENT], splits=[0]), config.workers)
    units = plan_extra(ctx) if extra else plan_main(ctx)
    for i, idx in enumerate(_chunks(len(units), config.chunks)):
        yield dg.DynamicOutput({"config": config.model_dump(), "extra": extra, "units": idx},
                               mapping_key=f"{'extra' if extra else 'main'}_{i}")


def _fit_chunk(context, chunk: dict, tables: tuple, wh) -> list[dict]:
    """Fit one chunk's units (stored in the fit store for the evaluation) and say what ran where."""
    import socket

    from router.evaluation.parallel import fit_units, plan_extra, plan_main

    config = EvaluationFitsConfig(**chunk["config"])
    ctx = _eval_context(context, config, tables, wh)
    if chunk["extra"]:
        fit_units(ctx, plan_main(ctx, routers=[LATENT], splits=[0]), config.workers)
        units = plan_extra(ctx)
    else:
        units = plan_main(ctx)
    chosen = [units[i] for i in chunk["units"]]
    results = fit_units(ctx, chosen, config.workers)
    host = socket.gethostname()
    return [{"unit": r.unit.label, "seconds": round(r.fit_seconds, 3), "host": host, "process": r.worker}
            for r in results]


@dg.op(out=dg.DynamicOut(io_manager_key=OPS_IO), required_resource_keys={"warehouse"})
def eval_fit_plan(context: dg.OpExecutionContext, config: EvaluationFitsConfig, query_features: FeatureSet,
                  benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                  capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame):
    """The main table's units (every trained router on every split), dealt into ``chunks`` ops."""
    tables = (query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    yield from _fit_plan(context, config, tables, context.resources.warehouse.warehouse(), extra=False)


@dg.op(out=dg.Out(io_manager_key=OPS_IO), required_resource_keys={"warehouse"})
def eval_fit_chunk(context: dg.OpExecutionContext, chunk: dict, query_features: FeatureSet,
                   benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                   capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame) -> list[dict]:
    tables = (query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    return _fit_chunk(context, chunk, tables, context.resources.warehouse.warehouse())


@dg.op(out=dg.DynamicOut(io_manager_key=OPS_IO), required_resource_keys={"warehouse"})
def eval_fit_plan_extra(context: dg.OpExecutionContext, config: EvaluationFitsConfig, main: list,
                        query_features: FeatureSet, benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame,
                        data_splits: pl.DataFrame, capability_profiles: pl.DataFrame,
                        candidate_models: pl.DataFrame):
    """The split-0 LatentRouter fits of the other experiments (ablations, outcome prediction, cold start)."""
    tables = (query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    yield from _fit_plan(context, config, tables, context.resources.warehouse.warehouse(), extra=True)


@dg.op(out=dg.Out(io_manager_key=OPS_IO), required_resource_keys={"warehouse"})
def eval_fit_extra_chunk(context: dg.OpExecutionContext, chunk: dict, query_features: FeatureSet,
                         benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame, data_splits: pl.DataFrame,
                         capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame) -> list[dict]:
    tables = (query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    return _fit_chunk(context, chunk, tables, context.resources.warehouse.warehouse())


@dg.op
def eval_fits_done(context: dg.OpExecutionContext, main: list, extra: list) -> dg.Output:
    """Where every unit ran (the asset's metadata; the fits themselves are in the fit store)."""
    rows = [r for chunk in (*main, *extra) for r in chunk]
    frame = pl.DataFrame(rows, schema={"unit": pl.String, "seconds": pl.Float64, "host": pl.String,
                                       "process": pl.String}, orient="row")
    return dg.Output(None, metadata={
        "units": len(rows), "ops": len(main) + len(extra), "hosts": frame["host"].n_unique(),
        "fit_seconds": rounded(float(frame["seconds"].sum()), 3), "where": table_value(frame, digits=3)})


def _fits_config(config: dict) -> dict:
    """The graph's one config (EvaluationFitsConfig's fields) to both planning ops."""
    doc = EvaluationFitsConfig(**config).model_dump()
    return {"eval_fit_plan": {"config": doc}, "eval_fit_plan_extra": {"config": doc}}


@dg.graph_asset(group_name=GROUP, config=dg.ConfigMapping(
    config_fn=_fits_config, config_schema=EvaluationFitsConfig.to_config_schema()),
                description="Every fit the evaluation makes (each trained router's tuning and seeds on every "
                            "split, then LatentRouter's ablation, outcome and cold-start fits), spread over "
                            "`chunks` ops: the cluster's Celery workers share them. They land in the fit store, "
                            "where evaluation_report loads them.")
def evaluation_fits(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles,
                    candidate_models):
    tables = (query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    main = eval_fit_plan(*tables).map(lambda c: eval_fit_chunk(c, *tables)).collect()
    extra = eval_fit_plan_extra(main, *tables).map(lambda c: eval_fit_extra_chunk(c, *tables)).collect()
    return eval_fits_done(main, extra)


@dg.multi_asset(
    group_name=GROUP, deps=[deployed_router, evaluation_fits],
    outs={
        "evaluation_report": dg.AssetOut(
            kinds={"html"}, code_version="1",
            description="Main table (routers x oriented/cost, splits x seeds, paired tests), frontiers, task groups, "
                        "outcome prediction, ablations, pool changes, cold start, efficiency; Markdown + HTML + PNG."),
        "eval_results": dg.AssetOut(kinds={"parquet"}, code_version="1", metadata=table_metadata("eval_results"),
                                    description="Every metric of every evaluated router, setting, split and seed "
                                                "(earlier runs kept; run_id tells them apart)."),
        "routing_decisions": dg.AssetOut(kinds={"parquet"}, code_version="1",
                                         metadata=table_metadata("routing_decisions"),
                                         description="Per test query, router and lambda: the pick, the oracle's "
                                                     "and the router's per-model scores."),
    })
def evaluation_report(context: dg.AssetExecutionContext, config: EvaluationConfig,
                      query_features: FeatureSet, benchmark_queries: pl.DataFrame, outcome_traces: pl.DataFrame,
                      data_splits: pl.DataFrame, capability_profiles: pl.DataFrame, candidate_models: pl.DataFrame,
                      warehouse: WarehouseResource):
    wh = warehouse.warehouse()
    t0 = time.perf_counter()
    # the fits of evaluation_fits and deployed_router (same data, config and seed) are loaded, not redone
    ctx = _eval_context(context, config, (query_features, benchmark_queries, outcome_traces, data_splits,
                                          capability_profiles, candidate_models), wh)
    data, cfg, store = ctx.data, ctx.cfg, ctx.fit_store
    cold = cfg.cold_start_model or default_cold_start_model(data)
    out = run_experiments(ctx, workers=config.workers)
    seconds = time.perf_counter() - t0
    results = out.eval_results
    if wh.has_table("eval_results"):  # keep earlier runs for comparison (run_id tells them apart)
        old = wh.read_table("eval_results").filter(pl.col("run_id") != context.run_id)
        results = pl.concat([old, results], how="diagonal_relaxed")
    yield dg.Output(results, "eval_results", metadata={"run_rows": out.eval_results.height})
    yield dg.Output(out.routing_decisions, "routing_decisions")
    simulated = [m for m, s in zip(data.model_ids, data.simulated, strict=True) if s]
    notes = [f"evaluation preset {config.preset!r}, {cfg.n_splits} split(s) x seeds {list(cfg.seeds)}, "
             f"{cfg.tuning_trials} tuning trial(s) per router, run {context.run_id}",
             f"wall time {seconds:.0f} s on this machine",
             f"cold-start model: {cold}"]
    out.tables.update(load_hybrid_tables(wh.features_dir / HYBRID_DIR))  # hybrid_routing's section, if any
    ckpt = latest_checkpoint_dir(wh)
    deployment = read_deployment(ckpt) if ckpt is not None else None
    report = write_report(out, wh.reports_dir / context.run_id, simulated_models=simulated,
                          text_only=data.text_only, notes=notes, deployment=deployment)
    yield dg.Output(None, "evaluation_report", metadata={
        "report": dg.MetadataValue.path(str(report["md"])),
        "report_html": dg.MetadataValue.path(str(report["html"])),
        "headline": dg.MetadataValue.md(report["headline"]),
        "main_table": main_table_value(out),
        "plots": png_markdown(report.get("plots") or {}),
        "deployed_router": (deployment or {}).get("deployed", "none"),
        "fits_reused": store.hits,
        "fit_units_run": out.meta["fit_units"]["run"],  # 0 when evaluation_fits made them all
        "fit_units_loaded": out.meta["fit_units"]["loaded"],
        "eval_rows": out.eval_results.height,
        "decision_rows": out.routing_decisions.height,
        "seconds": rounded(seconds, 3),
        "timings": table_value(pl.DataFrame({"step": list(out.timings), "seconds": list(out.timings.values())},
                                            schema={"step": pl.String, "seconds": pl.Float64}), digits=3),
    })


@dg.asset_check(asset="evaluation_report", blocking=False,
                description="The latest run's main table has a finite primary metric for LatentRouter and "
                            "Strongest, and no spread (standard error) wider than the metric's range.")
def evaluation_report_is_sound(context: dg.AssetCheckExecutionContext,
                               warehouse: WarehouseResource) -> dg.AssetCheckResult:
    wh = warehouse.warehouse()
    if not wh.has_table("eval_results"):
        return dg.AssetCheckResult(passed=False, metadata={"problem": "no eval_results table"})
    res = wh.read_table("eval_results")
    event = context.instance.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
    latest = event.run_id if event is not None else context.run_id  # run ids are not ordered by time
    rows = res.filter((pl.col("run_id") == latest) & (pl.col("experiment") == "main_table")
                      & (pl.col("seed") >= 0) & (pl.col("setting") == "avg"))
    if rows.height == 0:
        return dg.AssetCheckResult(passed=False, metadata={"problem": "the main table was not run"})
    stats = rows.group_by("router").agg(pl.col("value").mean().alias("mean"), pl.col("value").std().alias("std"),
                                        pl.len().alias("n"))
    by = {r["router"]: r for r in stats.iter_rows(named=True)}
    missing = [n for n in ("LatentRouter", "Strongest") if n not in by or by[n]["mean"] != by[n]["mean"]]
    se = [(r["std"] or 0.0) / max(r["n"], 1) ** 0.5 for r in by.values()]
    widest = max(se) if se else 0.0
    return dg.AssetCheckResult(passed=not missing and widest <= 1.0, metadata={
        "routers": len(by), "missing_or_undefined": ", ".join(missing) or "none",
        "widest_standard_error": round(float(widest), 4)})


def main_table_value(out) -> dg.TableMetadataValue:
    """The report's Table 1 (mean ± std over seeds) as a Dagster table; the report's bold/italic ranking
    marks are dropped (a table cell shows them as literal asterisks)."""
    header, rows = table1_rows(out)
    frame = pl.DataFrame([[row[0], *(cell.strip("*_") for cell in row[1:])] for row in rows], schema=header,
                         orient="row")
    return table_value(frame)
