"""Result rows of the experiments: the long ``eval_results`` shape, and the mean +- std summaries over seeds
that tables and plots read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from router.evaluation.config import ALL_GROUPS, AVG, FULL_POOL
from router.evaluation.metrics.statistics import ci95, mean_std
from warehouse.schemas import EVAL_RESULTS, conform
from warehouse.vocabulary import SETTINGS


@dataclass
class ExperimentResult:
    """Rows in the eval_results shape plus named summary frames for tables and plots."""

    results: pl.DataFrame
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass
class EvalOutput:
    """Everything an evaluation run produced; ``meta`` carries the facts a report must state."""

    run_id: str
    eval_results: pl.DataFrame  # EVAL_RESULTS
    routing_decisions: pl.DataFrame  # ROUTING_DECISIONS
    tables: dict[str, pl.DataFrame]
    timings: dict[str, float]  # seconds per experiment (and "total")
    meta: dict[str, Any] = field(default_factory=dict)


def result_rows(
    run_id: str, experiment: str, router: str, seed: int, values: Mapping[str, float],
    pool: str = FULL_POOL, task_group: str = ALL_GROUPS, setting: str | None = None, split: int = 0,
) -> list[dict[str, Any]]:
    """Long rows from a metrics dict. Keys "setting/metric" give their own setting; bare keys need ``setting``."""
    out = []
    for key, val in values.items():
        if "/" in key:
            st, metric = key.split("/", 1)
        elif setting is not None:
            st, metric = setting, key
        else:
            continue
        if st not in (*SETTINGS, AVG):
            continue
        out.append({"run_id": run_id, "experiment": experiment, "router": router, "setting": st,
                    "seed": int(seed), "metric": metric, "value": float(val), "pool": pool,
                    "task_group": task_group, "split": int(split)})
    return out


def results_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """The rows as a conformed ``eval_results`` frame (an empty one with the schema when there are none)."""
    if not rows:
        return pl.DataFrame(schema=EVAL_RESULTS)
    rows = [r if "split" in r else {**r, "split": 0} for r in rows]
    return conform(pl.DataFrame(rows, schema=EVAL_RESULTS), EVAL_RESULTS, "eval_results")


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """``metrics.mean_std`` that also accepts infinite values (QNC is inf when never reached): equal values
    have std 0, otherwise NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and not np.all(np.isfinite(v)):
        with np.errstate(invalid="ignore"):
            mean = float(np.mean(v))
        return mean, (0.0 if np.all(v == v[0]) else float("nan"))
    mean, std = mean_std(v)
    # floating noise of identical per-seed values (e.g. a mean USD cost) is reported as 0
    return mean, (0.0 if std <= 1e-12 * abs(mean) else std)


def summarise(results: pl.DataFrame, by: Sequence[str] = ("experiment", "router", "setting", "metric", "pool",
                                                           "task_group")) -> pl.DataFrame:
    """Mean, sample std, standard error and 95% t-interval half-width over splits x seeds (aggregate rows with
    seed < 0 are left out) per ``by`` group; ``n_seeds`` counts the values (splits x seeds). A single value has
    no spread: its se and ci95 are NaN, never 0."""
    per = results.filter(pl.col("seed") >= 0)
    if per.height == 0:
        return pl.DataFrame(schema={**{c: pl.String for c in by}, "mean": pl.Float64, "std": pl.Float64,
                                    "n_seeds": pl.Int64, "ci95": pl.Float64, "se": pl.Float64})
    recs = []
    for key, grp in per.group_by(list(by), maintain_order=True):
        v = grp["value"].to_numpy()
        m, s = _mean_std(v)
        n = grp.height
        half = ci95(v)[1] if np.all(np.isfinite(v)) else float("nan")
        half = 0.0 if s == 0 and n > 1 else half
        se = s / math.sqrt(n) if n > 1 and np.all(np.isfinite(v)) else float("nan")
        recs.append({**dict(zip(by, key, strict=True)), "mean": m, "std": s, "n_seeds": n, "ci95": half,
                     "se": se})
    return pl.DataFrame(recs, schema_overrides={"mean": pl.Float64, "std": pl.Float64, "n_seeds": pl.Int64,
                                                "ci95": pl.Float64, "se": pl.Float64})


def wide_summary(summary: pl.DataFrame, keys: Sequence[str], wanted: Mapping[str, tuple[str, str]]) -> pl.DataFrame:
    """One row per ``keys`` with ``<label>_mean`` / ``<label>_std`` columns for each (setting, metric)."""
    base = summary.select(list(keys)).unique(maintain_order=True)
    for label, (st, metric) in wanted.items():
        part = summary.filter((pl.col("setting") == st) & (pl.col("metric") == metric)).select(
            [*keys, pl.col("mean").alias(f"{label}_mean"), pl.col("std").alias(f"{label}_std")])
        base = base.join(part, on=list(keys), how="left", maintain_order="left")
    return base
