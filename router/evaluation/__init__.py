"""Evaluation: the benchmarks' metrics (Rank Score, nAUC, ...), the experiments of the paper (main table,
ablations, sensitivity, pool changes, cold start, efficiency), routing decisions, and the Markdown/HTML report.

``config`` (names, EvalConfig), ``context`` (fitted routers and sweeps of a run), ``experiments`` (protocol,
main table, frontier, task groups, outcome prediction, ``run_all``), ``ablations``, ``pool_changes`` (with
the cold start), ``profile_sources`` (cold-start profiles), ``efficiency``, ``decisions`` (routing_decisions
rows), ``results`` (result rows and summaries), ``metrics/`` and ``reports/``.

May import: `router.data`, `router.models`, `router.training`, `warehouse`.
"""
