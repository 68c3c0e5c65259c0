"""``make demo``: run the whole pipeline on the built-in benchmark and the simulated pool.

It is ``lrouter run all --queries N`` with the demo's evaluation preset: the project's named jobs run
in-process against the persistent Dagster instance (DAGSTER_HOME), so the runs, materializations and checks
then show up in ``dagster dev`` with their names and tags. ``LROUTER_DEMO_QUERIES`` sets N (default 1000: the whole graph, every baseline tuned on validation over
2 splits x 1 seed, its fits spread over every core; docs/figures.md has the measured time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipelines.cli.common import project_instance
from pipelines.runner import RunOptions, StageFailed, run_stage
from pipelines.settings import Settings


def newest_report(reports_dir: Path) -> Path | None:
    """The report this demo just wrote: newest by modification time (run ids do not sort by time)."""
    reports = [p for p in reports_dir.glob("*/report.md") if p.is_file()]
    return max(reports, key=lambda p: p.stat().st_mtime_ns) if reports else None


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    raw = settings.demo_queries
    if not raw.strip().isdigit() or int(raw) < 1:
        print(f"[demo] LROUTER_DEMO_QUERIES={raw!r} is not a positive number of queries; unset it or use e.g. 400",
              file=sys.stderr)
        return 2
    n = int(raw)
    t0 = time.perf_counter()
    print(f"[demo] built-in benchmark of {n} queries, simulated pool; stages: setup, collect, features, train, "
          "evaluate", flush=True)
    with project_instance(settings.home) as instance:
        try:
            runs = run_stage("all", instance, RunOptions(n_queries=n, trigger="demo", preset="demo"),
                             log=lambda line: print(line, flush=True), home=settings.home)
        except StageFailed as exc:
            print(f"[demo] FAILED: {exc}", file=sys.stderr)
            return 1
    wh = settings.home / "warehouse"
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s: {len(runs)} runs")
    print(f"[demo] warehouse: {wh} (DuckDB catalog: {wh / 'warehouse.duckdb'})")
    report = newest_report(wh / "reports")
    if report is not None:
        print(f"[demo] report: {report}")
        print(f"[demo] report (HTML, with plots): {report.with_suffix('.html')}")
    print("[demo] NOTE: the candidate pool is SIMULATED (built-in Ollama-API simulator).")
    print("[demo] next: `make dev` opens the UI (runs, assets, the report's tables and plots) on http://127.0.0.1:3000")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
