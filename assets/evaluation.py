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
from router.training.artifacts import latest_checkpoint_dir

GROUP = "evaluation"


class EvaluationConfig(dg.Config):
    preset: str = "demo"  # quick (CI) | demo (pipeline default) | paper (full protocol)
    seeds: list[int] = []  # empty = the preset's seeds (demo: 0, 1 on each of 2 splits)
    n_splits: int = 0  # 0 = the preset's number of repeated splits
    experiments: list[str] = []  # empty = all of router.evaluation.config.EXPERIMENTS
    cold_start_model: str = ""  # empty = the model best on some task group by the widest margin
    primary_metric: str = "rank_score"


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


@dg.multi_asset(
    group_name=GROUP, deps=[deployed_router],
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
    inputs = routing_inputs(query_features, benchmark_queries, outcome_traces, data_splits, capability_profiles, candidate_models)
    data = routing_data(inputs)
    cfg = eval_config(config)
    cold = cfg.cold_start_model or default_cold_start_model(data)
    t0 = time.perf_counter()
    bounds_path = wh.root / "cost_bounds.json"  # written by an import that ships one (collectors.importing)
    shipped = json.loads(bounds_path.read_text()) if bounds_path.exists() else None
    store = fit_store(wh)  # the fits deployed_router made (same data, config and seed) are reused, not redone
    out = run_experiments(EvalContext(data, cfg, context.run_id, context.log.info,
                                      warehouse_profile_source(inputs, cold), shipped_bounds=shipped,
                                      split_source=warehouse_split_source(inputs, cfg.split_fractions),
                                      fit_store=store))
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
