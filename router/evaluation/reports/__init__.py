"""Evaluation report: Markdown + self-contained HTML with PNG plots, from an :class:`router.evaluation.results.EvalOutput`.

The report answers "which router should I deploy, and what does it buy me?" with the paper's tables (Table 1
shape headline with Welch p-values, outcome prediction, ablations, pool changes, cold start, efficiency) and
figures. Every statement about who wins is computed from the results, never written in advance. A report on a
pool with simulated models says so in a banner and under every table.

Modules: ``render`` (number formats, one document rendered to Markdown and HTML), ``tables`` (Table 1, the
computed verdicts, summary look-ups), ``plots`` (the PNG figures), ``report`` (:func:`write_report`).
"""
