"""The report's tables: Table 1 (mean ± standard error over splits x seeds, best non-oracle bold, second
italic), the computed verdict per setting, and look-ups into the experiments' summary frames."""

from __future__ import annotations

import math

import polars as pl

from router.evaluation.config import AVG, MIN_SPLITS_FOR_SIGNIFICANCE, ORACLE, ROUTERS, STRONGEST
from router.evaluation.reports.render import fmt, fmt_p, fmt_pm, md_table
from router.evaluation.results import EvalOutput

METRIC_LABELS = {
    "rank_score": "Rank Score",
    "nauc_budget": "nAUC (budget sweep)",
    "nauc_interp": "nAUC (λ sweep, interp)",
    "nauc_step": "nAUC (λ sweep, step)",
    "quality": "Accuracy",
    "cost_usd": "USD / query",
    "ps": "Ps",
    "qnc": "QNC",
    "regret": "Oracle regret",
}
LOWER_IS_BETTER = frozenset({"cost_usd", "rank_cost_usd", "cost", "qnc", "regret", "mse", "latency_ms", "params"})
# the main table's columns (header, setting, metric): what fits a laptop screen; the primary metric's column
# goes first. The others are in the report's collapsed "All metrics" table.
TABLE1_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Accuracy (λ=0)", "oriented", "quality"),
    ("USD/query (λ=0)", "oriented", "cost_usd"),
    ("Rank Score (λ=0)", "oriented", "rank_score"),
    ("Rank Score (sweep)", "cost", "rank_score"),
    ("nAUC (budget)", "cost", "nauc_budget"),
)
MORE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Cost: USD/query at best Rank Score", "cost", "rank_cost_usd"),
    ("Cost: Ps (budget sweep)", "cost", "ps"),
    ("Cost: QNC (budget sweep)", "cost", "qnc"),
    ("Cost: nAUC (λ sweep, interp)", "cost", "nauc_interp"),
    ("Oracle regret (λ=0)", "oriented", "regret"),
)


def lookup(summary: pl.DataFrame, **where: str) -> tuple[float, float] | None:
    """(mean, std) of the first summary row matching every ``column=value``; None when there is none."""
    f = summary
    for k, v in where.items():
        f = f.filter(pl.col(k) == v)
    if f.height == 0:
        return None
    return float(f["mean"][0]), float(f["std"][0])


def lookup_se(summary: pl.DataFrame, **where: str) -> tuple[float, float] | None:
    """(mean, standard error) of a summary cell (NaN for a single value: shown as the mean alone)."""
    got = lookup(summary, **where)
    if got is None or "se" not in summary.columns:
        return got
    f = summary
    for k, v in where.items():
        f = f.filter(pl.col(k) == v)
    return got[0], float(f["se"][0]) if f["se"][0] is not None else float("nan")


def rank_marks(values: dict[str, float], lower_better: bool) -> dict[str, str]:
    """Bold for the best and italic for the second-best non-oracle value (ties share the mark)."""
    finite = {k: v for k, v in values.items() if k != ORACLE and v is not None and not math.isnan(v)}
    if not finite:
        return {}
    distinct = sorted(set(finite.values()), reverse=not lower_better)
    marks = {}
    for k, v in finite.items():
        if v == distinct[0]:
            marks[k] = "**"
        elif len(distinct) > 1 and v == distinct[1]:
            marks[k] = "_"
    return marks


def table1_markdown(output: EvalOutput) -> str:
    """Paper Table 1 shape: routers x settings, mean ± SE over splits x seeds, best non-oracle bold, second italic."""
    header, rows = table1_rows(output)
    return md_table(header, rows)


def table1_rows(output: EvalOutput, columns: tuple[tuple[str, str, str], ...] | None = None,
                ) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of Table 1 (``columns``: default the main ones, the primary metric first),
    mean ± standard error over splits x seeds; routers that ran only."""
    summary = output.tables["main_summary"]
    pm = output.meta.get("primary_metric", "rank_score")
    cols = list(TABLE1_COLUMNS if columns is None else columns)
    if columns is None:
        cols.insert(0, (f"{METRIC_LABELS.get(pm, pm)} (primary, avg)", AVG, pm))
    routers = list(output.meta.get("routers", ROUTERS))
    cells: dict[tuple[str, int], str] = {}
    for ci, (_, st, metric) in enumerate(cols):
        vals = {}
        for r in routers:
            got = lookup_se(summary, router=r, setting=st, metric=metric)
            vals[r] = got[0] if got else float("nan")
            # no spread to show (one value, or a deterministic router): the mean alone, never "± 0.000"
            cells[(r, ci)] = fmt_pm(got[0], got[1] if got[1] > 0 else float("nan")) if got else "–"
        for r, mark in rank_marks(vals, metric in LOWER_IS_BETTER).items():
            cells[(r, ci)] = f"{mark}{cells[(r, ci)]}{mark}"
    rows = [[r] + [cells[(r, ci)] for ci in range(len(cols))] for r in routers
            if lookup(summary, router=r, setting="oriented", metric="quality") is not None]
    return ["Router"] + [c[0] for c in cols], rows


def verdict_sentences(output: EvalOutput) -> list[str]:
    """One computed sentence per setting: is LatentRouter the best non-oracle router; a significance word only
    from the paired test over >= 3 splits."""
    welch = output.tables.get("welch")
    if welch is None or welch.height == 0:
        return ["The main table was not run, so no router comparison is available."]
    pm = output.meta.get("primary_metric", "rank_score")
    label = METRIC_LABELS.get(pm, pm)
    names = {"oriented": "Performance-oriented", "cost": "Cost-aware", AVG: "Average of both settings (primary)"}
    out = []
    for st in ("oriented", "cost", AVG):
        f = welch.filter((pl.col("setting") == st) & (pl.col("metric") == pm))
        if f.height == 0:
            continue
        r = f.row(0, named=True)
        spread = "se" if "latent_se" in r else "std"  # the same ± as Table 1 (standard error)
        lat = fmt_pm(r["latent_mean"], r[f"latent_{spread}"])
        base = fmt_pm(r["baseline_mean"], r[f"baseline_{spread}"])
        n_splits = int(r.get("n_splits", 1))
        diff = f" (difference {r['latent_mean'] - r['baseline_mean']:+.3f})"
        if r["latent_mean"] > r["baseline_mean"]:
            verdict = (f"LatentRouter **is** the best non-oracle router: {lat} vs the best baseline "
                       f"{r['best_baseline']} {base}")
        elif r["latent_mean"] == r["baseline_mean"]:
            verdict = f"LatentRouter **ties** with the best baseline {r['best_baseline']}: {lat} vs {base}"
        else:
            verdict = (f"LatentRouter is **not** the best non-oracle router: {r['best_baseline']} scores {base} "
                       f"vs LatentRouter {lat}")
        if r["latent_mean"] != r["baseline_mean"]:
            verdict += diff
        if n_splits >= MIN_SPLITS_FOR_SIGNIFICANCE and not math.isnan(r["paired_p"]):
            word = "significant" if r["paired_p"] < 0.05 else "not significant"
            test = f"paired t over {n_splits} splits, two-sided p = {fmt_p(r['paired_p'])} ({word} at 0.05)"
        else:
            test = (f"no significance test ({n_splits} split(s); a paired test needs at least "
                    f"{MIN_SPLITS_FOR_SIGNIFICANCE})")
        out.append(f"**{names[st]}** ({label}): {verdict}; {test}; {n_splits} split(s) x {r['n_seeds']} seed(s).")
    return out


def _cell(summary: pl.DataFrame, router: str, setting: str, metric: str) -> float:
    got = lookup(summary, router=router, setting=setting, metric=metric)
    return got[0] if got else float("nan")


def decision_line(output: EvalOutput) -> str:
    """The test split's leader: the non-oracle router with the best primary metric, at its best-Rank-Score
    lambda, against the strongest single model (quality and USD cost per query on the test split). What
    serves is decided on validation rows (the deployed_router asset), never here."""
    summary = output.tables.get("main_summary")
    if summary is None or summary.height == 0:
        return "The main table was not run."
    pm = output.meta.get("primary_metric", "rank_score")
    routers = [r for r in output.meta.get("routers", ROUTERS) if r != ORACLE]
    scores = {r: _cell(summary, r, AVG, pm) for r in routers}
    scores = {r: v for r, v in scores.items() if math.isfinite(v)}
    if not scores:
        return "The primary metric is undefined for every router."
    best = max(scores, key=lambda r: (scores[r], -routers.index(r)))
    lam = _cell(summary, best, "cost", "rank_lambda")
    q, c = _cell(summary, best, "cost", "rank_quality"), _cell(summary, best, "cost", "rank_cost_usd")
    if not math.isfinite(q):  # no Rank Score (free pool): the lambda = 0 pick
        lam, q, c = 0.0, _cell(summary, best, "oriented", "quality"), _cell(summary, best, "oriented", "cost_usd")
    sq, sc = _cell(summary, STRONGEST, "oriented", "quality"), _cell(summary, STRONGEST, "oriented", "cost_usd")
    at = f" at λ = {lam:.3g}" if math.isfinite(lam) else ""
    return (f"Best on the test split: **{best}{at}** ({METRIC_LABELS.get(pm, pm)} {fmt(scores[best])}): "
            f"quality {fmt(q)} vs Strongest {fmt(sq)}, cost {fmt(c)} USD/query vs Strongest's {fmt(sc)}.")


def ablation_rows(ab: pl.DataFrame, family: str, pm: str) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(variant label, {setting: (mean, std)}) of one ablation family, for its table and its plot."""
    out = []
    labels = ab.filter(pl.col("family") == family).select("label").unique(maintain_order=True)["label"].to_list()
    for lab in labels:
        vals = {}
        for st in ("oriented", "cost", AVG):
            got = lookup(ab, label=lab, setting=st, metric=pm)
            if got:
                vals[st] = got
        out.append((lab, vals))
    return out
