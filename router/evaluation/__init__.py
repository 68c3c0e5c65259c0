"""Evaluation: the benchmarks' metrics (Rank Score, nAUC, ...), the experiments of the paper (main table,
ablations, sensitivity, pool changes, cold start, efficiency), routing decisions, and the Markdown/HTML report.

May import: `router.data`, `router.models`, `router.training`, `warehouse`.
"""
