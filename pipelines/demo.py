"""``make demo``: run the whole pipeline on the built-in benchmark and the simulated pool.

It is ``lrouter run all --queries N`` with the demo's evaluation preset: the project's named jobs run
in-process against the persistent Dagster instance (DAGSTER_HOME), so the runs, materializations and checks
then show up in ``dagster dev`` with their names and tags. ``LROUTER_DEMO_QUERIES`` sets N (default 2000).
"""

from __future__ import annotations

import os
import sys
import time

import dagster as dg

from pipelines.runner import RunOptions, StageFailed, run_stage
from warehouse.store import lrouter_home


def main(argv: list[str] | None = None) -> int:
    n = int(os.environ.get("LROUTER_DEMO_QUERIES", "2000"))
    t0 = time.perf_counter()
    print(f"[demo] built-in benchmark of {n} queries, simulated pool; stages: setup, collect, features, train, "
          "evaluate", flush=True)
    with dg.DagsterInstance.get() as instance:
        try:
            runs = run_stage("all", instance, RunOptions(n_queries=n, trigger="demo", preset="demo"),
                             log=lambda line: print(line, flush=True))
        except StageFailed as exc:
            print(f"[demo] FAILED: {exc}", file=sys.stderr)
            return 1
    wh = lrouter_home() / "warehouse"
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s: {len(runs)} runs")
    print(f"[demo] warehouse: {wh} (DuckDB catalog: {wh / 'warehouse.duckdb'})")
    reports = sorted((wh / "reports").glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    if reports:
        print(f"[demo] report: {reports[-1]}")
        print(f"[demo] report (HTML, with plots): {reports[-1].with_suffix('.html')}")
    print("[demo] NOTE: the candidate pool is SIMULATED (built-in Ollama-API simulator).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
