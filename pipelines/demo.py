"""``make demo``: materialize the whole asset graph on the built-in benchmark and the simulated pool.

Runs in-process against the persistent Dagster instance (DAGSTER_HOME), so the runs, materializations and
checks then show up in ``dagster dev``. Stage order: queries + models -> one trace partition per model ->
everything downstream (features, splits, profiles, router, evaluation) in one run.
"""

from __future__ import annotations

import os
import sys
import time

import dagster as dg

from pipelines.definitions import all_assets, assets_with_checks, resources


def _materialize(selection: list, instance: dg.DagsterInstance, **kw) -> dg.ExecuteInJobResult:
    result = dg.materialize(assets_with_checks(selection), instance=instance, resources=resources(), **kw)
    if not result.success:
        raise SystemExit(f"materialization of {selection} failed")
    return result


def main(argv: list[str] | None = None) -> int:
    n = int(os.environ.get("LROUTER_DEMO_QUERIES", "2000"))
    t0 = time.perf_counter()
    instance = dg.DagsterInstance.get()
    names = {a.key.to_user_string() for a in all_assets}
    run_config = {"ops": {"benchmark_queries": {"config": {"n_queries": n, "seed": 0}}}}
    _materialize(["benchmark_queries", "candidate_models"], instance, run_config=run_config)
    print(f"[demo] benchmark ({n} queries) and registry ready in {time.perf_counter() - t0:.0f}s", flush=True)
    downstream = sorted(names - {"benchmark_queries", "candidate_models", "outcome_traces"})
    if "data_splits" in names:  # splits first so collection does calibration rows first
        _materialize(["data_splits"], instance)
        downstream.remove("data_splits")
    for model_id in instance.get_dynamic_partitions("models"):
        t1 = time.perf_counter()
        _materialize(["outcome_traces"], instance, partition_key=model_id)
        print(f"[demo] traces of {model_id} in {time.perf_counter() - t1:.0f}s", flush=True)
    _materialize(downstream, instance)
    from warehouse.store import lrouter_home

    home = lrouter_home()
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s; assets: {', '.join(['benchmark_queries', 'candidate_models', 'outcome_traces'] + downstream)}")
    print(f"[demo] warehouse: {home / 'warehouse'} (DuckDB catalog: {home / 'warehouse' / 'warehouse.duckdb'})")
    reports = sorted((home / "warehouse" / "reports").glob("*/report.md"))
    if reports:
        print(f"[demo] report: {reports[-1]}")
    print("[demo] NOTE: the candidate pool is SIMULATED (built-in Ollama-API simulator).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
