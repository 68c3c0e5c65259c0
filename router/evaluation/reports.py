"""Evaluation report: Markdown + self-contained HTML with PNG plots, from an :class:`router.evaluation.experiments.EvalOutput`.

The report answers "which router should I deploy, and what does it buy me?" with the paper's tables (Table 1
shape headline with Welch p-values, outcome prediction, ablations, pool changes, cold start, efficiency) and
figures. Every statement about who wins is computed from the results, never written in advance. A report on a
pool with simulated models says so in a banner and under every table.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from router.evaluation.experiments import (  # noqa: E402
    AVG,
    LATENT,
    LEARNED_BASELINES,
    ORACLE,
    ROUTERS,
    EvalOutput,
)

METRIC_LABELS = {
    "rank_score": "Rank Score",
    "nauc_interp": "nAUC (interp)",
    "nauc_step": "nAUC (step)",
    "quality": "Accuracy",
    "cost_usd": "USD / query",
    "ps": "Ps",
    "qnc": "QNC",
    "regret": "Oracle regret",
}
LOWER_IS_BETTER = frozenset({"cost_usd", "rank_cost_usd", "cost", "qnc", "regret", "mse", "latency_ms", "params"})
# the Table-1 columns: (header, setting, metric)
TABLE1_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Oriented: Rank Score", "oriented", "rank_score"),
    ("Cost: Rank Score", "cost", "rank_score"),
    ("Oriented: Accuracy", "oriented", "quality"),
    ("Oriented: USD/query", "oriented", "cost_usd"),
    ("Cost: USD/query at best Rank Score", "cost", "rank_cost_usd"),
    ("Cost: nAUC (interp)", "cost", "nauc_interp"),
    ("Cost: nAUC (step)", "cost", "nauc_step"),
    ("Cost: Ps", "cost", "ps"),
    ("Cost: QNC", "cost", "qnc"),
    ("Oracle regret (λ=0)", "oriented", "regret"),
)


# --------------------------------------------------------------------------------------------- formatting


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table: fixed digits, scientific for tiny magnitudes, ∞ and – for inf / missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x != 0 and abs(x) < 10 ** (-digits + 1):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """mean ± std with one format for both: fixed ``digits`` decimals, or 3 significant digits for tiny means."""
    if mean is None or (isinstance(mean, float) and (math.isnan(mean) or math.isinf(mean))):
        return fmt(mean, digits)
    if std is None or math.isnan(std):
        return f"{fmt(mean, digits)} ± –"
    if mean != 0 and abs(mean) < 10 ** (-digits + 1):
        return f"{mean:.{digits - 1}e} ± {std:.1e}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a (needs ≥ 2 seeds)"
    if p == 0:
        return "0 (both samples constant, means differ)"
    return f"{p:.3g}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (cells are already strings; pipes escaped)."""
    def cell(v: str) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _inline_html(text: str) -> str:
    """Escape, then the inline Markdown this report uses: **bold**, _italic_, `code`."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w\\])_(.+?)_(?!\w)", r"<em>\1</em>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


# --------------------------------------------------------------------------------------------- document


@dataclass
class _Doc:
    """Report blocks rendered to both Markdown and HTML, so the two never disagree."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def banner(self, text: str) -> None:
        self.blocks.append(("banner", text))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], note: str = "") -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows], note)))

    def img(self, file: str, caption: str) -> None:
        self.blocks.append(("img", (file, caption)))

    def to_md(self) -> str:
        out = []
        for kind, val in self.blocks:
            if kind == "h":
                out.append("#" * val[0] + " " + val[1])
            elif kind == "p":
                out.append(val)
            elif kind == "banner":
                out.append("> " + val.replace("\n", "\n> "))
            elif kind == "ul":
                out.append("\n".join(f"- {x}" for x in val))
            elif kind == "table":
                header, rows, note = val
                out.append(md_table(header, rows) + (f"\n\n_{note}_" if note else ""))
            elif kind == "img":
                out.append(f"![{val[1]}]({val[0]})\n\n_{val[1]}_")
        return "\n\n".join(out) + "\n"

    def to_html(self, title: str) -> str:
        body = []
        for kind, val in self.blocks:
            if kind == "h":
                body.append(f"<h{val[0]}>{_inline_html(val[1])}</h{val[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(val)}</p>")
            elif kind == "banner":
                body.append(f'<div class="banner">{_inline_html(val)}</div>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in val) + "</ul>")
            elif kind == "table":
                header, rows, note = val
                t = ["<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in header) + "</tr></thead><tbody>"]
                t += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows]
                t.append("</tbody></table>")
                if note:
                    t.append(f'<p class="note">{_inline_html(note)}</p>')
                body.append("".join(t))
            elif kind == "img":
                body.append(f'<figure><img src="{html.escape(val[0])}" alt="{html.escape(val[1])}">'
                            f"<figcaption>{_inline_html(val[1])}</figcaption></figure>")
        css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;"
               "padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
               "th{background:#f3f3f3}.banner{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;"
               "font-weight:600;margin:1em 0}.note{font-size:.85em;color:#8a6d00}img{max-width:100%}"
               "figcaption{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 .2em}")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title><style>{css}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------------------------- tables


def _lookup(summary: pl.DataFrame, **where: str) -> tuple[float, float] | None:
    f = summary
    for k, v in where.items():
        f = f.filter(pl.col(k) == v)
    if f.height == 0:
        return None
    return float(f["mean"][0]), float(f["std"][0])


def _rank_marks(values: dict[str, float], lower_better: bool) -> dict[str, str]:
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
    """Paper Table 1 shape: routers x settings, mean ± std over seeds, best non-oracle bold, second italic."""
    header, rows = _table1(output)
    return md_table(header, rows)


def _table1(output: EvalOutput) -> tuple[list[str], list[list[str]]]:
    summary = output.tables["main_summary"]
    pm = output.meta.get("primary_metric", "rank_score")
    cols = list(TABLE1_COLUMNS)
    if pm != "rank_score":
        cols.insert(0, (f"Avg primary ({METRIC_LABELS.get(pm, pm)})", AVG, pm))
    else:
        cols.insert(2, ("Avg Rank Score (primary)", AVG, pm))
    cells: dict[tuple[str, int], str] = {}
    for ci, (_, st, metric) in enumerate(cols):
        vals = {}
        for r in ROUTERS:
            got = _lookup(summary, router=r, setting=st, metric=metric)
            vals[r] = got[0] if got else float("nan")
            cells[(r, ci)] = fmt_pm(*got) if got else "–"
        for r, mark in _rank_marks(vals, metric in LOWER_IS_BETTER).items():
            cells[(r, ci)] = f"{mark}{cells[(r, ci)]}{mark}"
    rows = [[r] + [cells[(r, ci)] for ci in range(len(cols))] for r in ROUTERS
            if _lookup(summary, router=r, setting="oriented", metric="quality") is not None]
    return ["Router"] + [c[0] for c in cols], rows


def verdict_sentences(output: EvalOutput) -> list[str]:
    """One computed sentence per setting: is LatentRouter the best non-oracle router, with the Welch p-value."""
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
        lat, base = fmt_pm(r["latent_mean"], r["latent_std"]), fmt_pm(r["baseline_mean"], r["baseline_std"])
        p = fmt_p(r["p"])
        sig = ""
        if not math.isnan(r["p"]):
            sig = " (significant at 0.05)" if r["p"] < 0.05 else " (not significant at 0.05)"
        diff = f" (difference {r['latent_mean'] - r['baseline_mean']:+.2g})"
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
        out.append(f"**{names[st]}** ({label}): {verdict}; Welch two-sided p = {p}{sig}, "
                   f"{r['n_seeds']} seeds.")
    return out


# --------------------------------------------------------------------------------------------- plots


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """LatentRouter red, Oracle dark grey, everyone else a tab10 colour that is neither red nor grey."""
    cmap = plt.get_cmap("tab10")
    palette = [cmap(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    others = [n for n in names if n not in (LATENT, ORACLE)]
    out: dict[str, Any] = {n: palette[i % len(palette)] for i, n in enumerate(others)}
    return {**out, LATENT: "#d62728", ORACLE: "#444444"}


def plot_frontier(output: EvalOutput, path: Path) -> Path | None:
    fr = output.tables.get("frontier")
    if fr is None or fr.height == 0:
        return None
    mean = fr.group_by(["router", "lambda"]).agg(pl.col("cost").mean(), pl.col("quality").mean()).sort("lambda")
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = _colors(ROUTERS)
    for r in ROUTERS:
        pts = mean.filter(pl.col("router") == r)
        if pts.height == 0:
            continue
        x, y = pts["cost"].to_numpy(), pts["quality"].to_numpy()
        style = dict(lw=2.5 if r == LATENT else 1.2, ls="--" if r == ORACLE else "-")
        ax.plot(x, y, marker="o", ms=3.5, color=colors[r], label=r, **style)
    fm = output.tables.get("frontier_models")
    if fm is not None and fm.height:
        ax.scatter(fm["cost"], fm["quality"], marker="x", color="grey", zorder=5, label="single models")
        for row in fm.iter_rows(named=True):
            ax.annotate(row["model"], (row["cost"], row["quality"]), fontsize=7, color="grey",
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("mean cost per query (normalised: 1 = priciest model's train mean)")
    ax.set_ylabel("mean quality")
    ax.set_title("Cost-quality operating points over the λ sweep (test, mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_task_groups(output: EvalOutput, path: Path) -> Path | None:
    tg = output.tables.get("task_groups")
    if tg is None or tg.height == 0:
        return None
    gains = tg.filter((pl.col("setting") == "oriented") & (pl.col("metric") == "gain_vs_strongest")
                      & (pl.col("task_group") != "all"))
    groups = sorted(set(gains["task_group"].to_list()))
    routers = [r for r in (*LEARNED_BASELINES, LATENT, ORACLE) if r in set(gains["router"].to_list())]
    if not groups or not routers:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(routers)
    colors = _colors(ROUTERS)
    for i, r in enumerate(routers):
        vals = [(_lookup(gains, router=r, task_group=g) or (np.nan, 0))[0] for g in groups]
        ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, vals, width, label=r, color=colors[r],
               hatch="//" if r == ORACLE else None, alpha=0.5 if r == ORACLE else 1.0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("quality gain over Strongest (λ=0)")
    ax.set_title("Per task group gain over the Strongest single model")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _ablation_rows(ab: pl.DataFrame, family: str, pm: str) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    out = []
    labels = ab.filter(pl.col("family") == family).select("label").unique(maintain_order=True)["label"].to_list()
    for lab in labels:
        vals = {}
        for st in ("oriented", "cost", AVG):
            got = _lookup(ab, label=lab, setting=st, metric=pm)
            if got:
                vals[st] = got
        out.append((lab, vals))
    return out


def plot_ablations(output: EvalOutput, path: Path) -> Path | None:
    ab = output.tables.get("ablations")
    if ab is None or ab.height == 0:
        return None
    pm = output.meta.get("primary_metric", "rank_score")
    rows = _ablation_rows(ab, "component", pm)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    y = np.arange(len(rows))
    for i, (st, color) in enumerate((("oriented", "#1f77b4"), ("cost", "#ff7f0e"))):
        m = [r[1].get(st, (np.nan, 0))[0] for r in rows]
        s = [r[1].get(st, (np.nan, 0))[1] for r in rows]
        ax.barh(y + (i - 0.5) * 0.38, m, 0.38, xerr=s, label=st, color=color)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(METRIC_LABELS.get(pm, pm))
    ax.set_title("Component ablations (test)")
    ax.legend()
    lo = np.nanmin([r[1].get(st, (np.nan, 0))[0] for r in rows for st in ("oriented", "cost")] + [1.0])
    ax.set_xlim(max(0.0, lo - 0.1), None)
    return _save(fig, path)


def plot_sensitivity(output: EvalOutput, path: Path) -> Path | None:
    ab = output.tables.get("ablations")
    if ab is None or ab.height == 0:
        return None
    pm = output.meta.get("primary_metric", "rank_score")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, family, title in ((axes[0], "H", "communication layers H"), (axes[1], "C", "routing capsules C")):
        rows = _ablation_rows(ab, family, pm)
        xs = [int(r[0].split("=")[1]) for r in rows]
        for st, color in (("oriented", "#1f77b4"), ("cost", "#ff7f0e"), (AVG, "#d62728")):
            m = [r[1].get(st, (np.nan, 0))[0] for r in rows]
            s = [r[1].get(st, (np.nan, 0))[1] for r in rows]
            ax.errorbar(xs, m, yerr=s, marker="o", capsize=3, label=st, color=color)
        ax.set_xticks(xs)
        ax.set_xlabel(title)
        ax.set_ylabel(METRIC_LABELS.get(pm, pm))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Sensitivity to depth H and capsule count C")
    return _save(fig, path)


def plot_pool_changes(output: EvalOutput, path: Path) -> Path | None:
    pc = output.tables.get("pool_changes")
    if pc is None or pc.height == 0:
        return None
    pools = pc.select("pool").unique(maintain_order=True)["pool"].to_list()
    routers = pc.select("router").unique(maintain_order=True)["router"].to_list()
    colors = _colors(ROUTERS)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(routers)
    for ax, col, title in ((axes[0], "primary", "primary metric ↑"), (axes[1], "regret", "oracle regret (λ=0) ↓")):
        for i, r in enumerate(routers):
            f = pc.filter(pl.col("router") == r)
            vals = [f.filter(pl.col("pool") == p)[f"{col}_mean"].to_list() for p in pools]
            errs = [f.filter(pl.col("pool") == p)[f"{col}_std"].to_list() for p in pools]
            ax.bar(np.arange(len(pools)) + i * width - 0.4 + width / 2, [v[0] if v else np.nan for v in vals],
                   width, yerr=[e[0] if e and e[0] is not None else 0 for e in errs], label=r,
                   color=colors.get(r, "grey"), capsize=2)
        ax.set_xticks(np.arange(len(pools)), [p.replace("_", " ") for p in pools], rotation=25, ha="right",
                      fontsize=8)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Changed candidate pools (same trained routers, availability masks)")
    return _save(fig, path)


def plot_cold_start(output: EvalOutput, path: Path) -> Path | None:
    cs = output.tables.get("cold_start")
    if cs is None or cs.height == 0:
        return None
    ins = cs.filter(pl.col("pool").str.starts_with("insert:"))
    labels = ins["calib"].to_list()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, col, title in ((axes[0], "primary", "primary metric ↑"), (axes[1], "regret", "oracle regret (λ=0) ↓")):
        ax.errorbar(np.arange(len(labels)), ins[f"{col}_mean"], yerr=ins[f"{col}_std"].fill_null(0), marker="o",
                    capsize=3, color="#d62728", label="inserted (profile from n examples)")
        for ref, style in (("excluded", ":"), ("seen in training", "--")):
            f = cs.filter(pl.col("calib") == ref)
            if f.height:
                ax.axhline(f[f"{col}_mean"][0], ls=style, color="grey", label=ref)
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_xlabel("calibration examples of the held-out model")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Cold-start insertion of {cs['model'][0]}")
    return _save(fig, path)


def plot_efficiency(output: EvalOutput, path: Path) -> Path | None:
    ef = output.tables.get("efficiency")
    if ef is None or ef.height == 0:
        return None
    colors = _colors(ROUTERS)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in ef.iter_rows(named=True):
        size = 30 + 120 * math.log10(1 + row["params"]) / 7
        ax.scatter(row["latency_ms_batch"], row["primary"], s=size, color=colors.get(row["router"], "grey"))
        ax.annotate(f"{row['router']}\n{row['params'] / 1e6:.3g}M", (row["latency_ms_batch"], row["primary"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"router latency, ms per query (batch {ef['batch'][0]}, forward + argmax)")
    ax.set_ylabel("primary metric (mean over seeds)")
    ax.set_title("Router-side efficiency")
    ax.grid(alpha=0.3)
    return _save(fig, path)


PLOTS: dict[str, Callable[[EvalOutput, Path], Path | None]] = {
    "frontier": plot_frontier,
    "task_groups": plot_task_groups,
    "ablations": plot_ablations,
    "sensitivity": plot_sensitivity,
    "pool_changes": plot_pool_changes,
    "cold_start": plot_cold_start,
    "efficiency": plot_efficiency,
}


# --------------------------------------------------------------------------------------------- report


def headline(output: EvalOutput, simulated_models: Sequence[str] = (), text_only: bool = False) -> str:
    """A few Markdown lines for Dagster metadata: the verdict per setting and the data caveats."""
    lines = []
    if simulated_models:
        lines.append(f"**SIMULATED** models: {', '.join(simulated_models)}.")
    if text_only:
        lines.append("Mode: **text-only** (no image features).")
    lines += verdict_sentences(output)
    return "\n\n".join(lines)


def write_report(
    output: EvalOutput,
    out_dir: Path | str,
    title: str = "LatentRouter evaluation",
    simulated_models: Sequence[str] | None = None,
    text_only: bool | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write report.md, report.html and the PNG plots into ``out_dir``; return their paths and the headline.

    ``simulated_models`` / ``text_only`` default to what the evaluated data said (``output.meta``). Returns
    ``{"md": Path, "html": Path, "plots": {name: Path}, "headline": str}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = output.meta
    sim = list(meta.get("simulated_models", []) if simulated_models is None else simulated_models)
    txt = bool(meta.get("text_only", False) if text_only is None else text_only)
    pm = meta.get("primary_metric", "rank_score")
    pm_label = METRIC_LABELS.get(pm, pm)
    sim_note = (f"SIMULATED models in this table: {', '.join(sim)} (deterministic simulator, not real MLLMs)."
                if sim else "")

    plots = {name: fn(output, out / f"{name}.png") for name, fn in PLOTS.items()}
    plots = {k: v for k, v in plots.items() if v is not None}

    doc = _Doc()
    doc.h(1, title)
    if sim:
        doc.banner(f"SIMULATED: {len(sim)} of {len(meta.get('model_ids', sim))} candidate models are simulated "
                   f"({', '.join(sim)}). Numbers describe the simulator's behaviour, not real model quality.")
    if txt:
        doc.banner("text-only: routers saw question features only (no image features).")
    facts = [
        f"run `{output.run_id}`; models: {', '.join(meta.get('model_ids', []))}",
        f"queries train / val / test: {meta.get('n_queries', {})}; task groups: {', '.join(meta.get('task_groups', []))}",
        f"seeds: {meta.get('seeds')}; λ sweep: {[round(x, 4) for x in meta.get('lambdas', [])]}; "
        f"decision λ: {meta.get('decision_lambda')}",
        f"primary metric: {pm_label}, averaged over the oriented and cost settings",
    ]
    doc.bullets([*facts, *meta.get("notes", []), *notes])

    doc.h(2, "Which router should I deploy?")
    if "main_summary" in output.tables:
        for s in verdict_sentences(output):
            doc.p(s)
        header, rows = _table1(output)
        doc.table(header, rows, " ".join(x for x in (
            "Mean ± std over seeds (test split). Best non-oracle value in bold, second-best in italics. "
            "Oriented = LatentRouter trained at λ=0, judged at its λ=0 pick (Rank Score of that one point; its "
            "nAUC equals its accuracy). Cost = cost-aware training, judged over the λ sweep: Rank Score is the "
            "best over the sweep (VL-RouterBench); nAUC (interp) is MMR-Bench's interpolated Pareto frontier, "
            "nAUC (step) the LatentRouter evaluator's running-max curve; QNC = cheapest frontier cost reaching the "
            "strongest single model's quality over that model's cost (∞ = never reached).", sim_note) if x))
        welch = output.tables.get("welch")
        if welch is not None and welch.height:
            doc.table(["Setting", "Metric", "LatentRouter", "Best baseline", "Baseline", "t", "Welch p"],
                      [[r["setting"], METRIC_LABELS.get(r["metric"], r["metric"]),
                        fmt_pm(r["latent_mean"], r["latent_std"]), r["best_baseline"],
                        fmt_pm(r["baseline_mean"], r["baseline_std"]), fmt(r["t"], 2), fmt_p(r["p"])]
                       for r in welch.iter_rows(named=True)],
                      "Welch's two-sided t-test over per-seed values, LatentRouter vs the best non-oracle "
                      "baseline of that column. " + sim_note)
    else:
        doc.p("The main table was not part of this run.")

    if "frontier" in plots:
        doc.h(2, "Cost-quality frontier")
        doc.img(plots["frontier"].name, "Operating points of every router over the λ sweep (cost-aware fits)."
                + (" SIMULATED pool." if sim else ""))

    tg = output.tables.get("task_groups")
    if tg is not None and tg.height:
        doc.h(2, "Where the gains are: task groups")
        gains = tg.filter((pl.col("setting") == "oriented") & (pl.col("metric") == "quality"))
        groups = sorted(set(gains["task_group"].to_list()) - {"all"}) + ["all"]
        rows = []
        for r in ROUTERS:
            vals = [_lookup(gains, router=r, task_group=g) for g in groups]
            if any(v is not None for v in vals):
                rows.append([r] + [fmt_pm(*v) if v else "–" for v in vals])
        doc.table(["Router (accuracy at λ=0)"] + groups, rows, sim_note)
        if "task_groups" in plots:
            doc.img(plots["task_groups"].name, "Quality gain over the Strongest single model per task group.")

    oc = output.tables.get("outcome")
    if oc is not None and oc.height:
        doc.h(2, "Counterfactual outcome prediction (Table 2)")
        metrics = ["mse", "ndcg", "ndcg@3", "spearman", "top3_recall"]
        methods = oc.select("router").unique(maintain_order=True)["router"].to_list()
        vals = {m: {r: (_lookup(oc, router=r, metric=m) or (np.nan, 0)) for r in methods} for m in metrics}
        marks = {m: _rank_marks({r: v[0] for r, v in vals[m].items()}, m in LOWER_IS_BETTER) for m in metrics}
        rows = [[r] + [f"{marks[m].get(r, '')}{fmt_pm(*vals[m][r])}{marks[m].get(r, '')}" for m in metrics]
                for r in methods]
        doc.table(["Method", "MSE ↓", "NDCG ↑", "NDCG@3 ↑", "Spearman ↑", "Top-3 recall ↑"], rows,
                  "Predicted quality vs realised quality on test rows, available models only (λ=0 fits). The "
                  "direct classifier's scores are class probabilities, so its MSE is not a calibrated outcome "
                  "estimate. " + sim_note)

    ab = output.tables.get("ablations")
    if ab is not None and ab.height:
        doc.h(2, "Ablations and sensitivity")
        for family, head in (("component", "Variant"), ("H", "Layers"), ("C", "Capsules")):
            rows = [[lab] + [fmt_pm(*v[st]) if st in v else "–" for st in ("oriented", "cost", AVG)]
                    for lab, v in _ablation_rows(ab, family, pm)]
            if rows:
                doc.table([head, f"Oriented {pm_label}", f"Cost {pm_label}", f"Avg {pm_label}"], rows, sim_note)
        if "ablations" in plots:
            doc.img(plots["ablations"].name, "Removing one component at a time.")
        if "sensitivity" in plots:
            doc.img(plots["sensitivity"].name, "Communication depth H and number of capsules C.")

    pc = output.tables.get("pool_changes")
    if pc is not None and pc.height:
        doc.h(2, "Changed candidate pools (no retraining)")
        rows = [[r["pool"], r["router"], fmt_pm(r["primary_mean"], r["primary_std"]),
                 fmt_pm(r["regret_mean"], r["regret_std"]), fmt_pm(r["cost_regret_mean"], r["cost_regret_std"]),
                 fmt_pm(r["latency_ms_mean"], r["latency_ms_std"], 4)] for r in pc.iter_rows(named=True)]
        doc.table(["Pool", "Router", f"Primary ({pm_label}) ↑", "Regret λ=0 ↓", "Regret (sweep mean) ↓",
                   "Latency ms/query ↓"], rows,
                  "The same trained routers with availability masks; the oracle is recomputed over the available "
                  "models (so one-model pools have zero regret). Multi-mask settings average their masks per "
                  "seed. " + sim_note)
        if "pool_changes" in plots:
            doc.img(plots["pool_changes"].name, "Primary metric and oracle regret per pool setting.")

    cs = output.tables.get("cold_start")
    if cs is not None and cs.height:
        doc.h(2, f"Cold-start insertion of {cs['model'][0]}")
        rows = [[r["calib"], "" if r["n_used"] is None else str(r["n_used"]),
                 fmt_pm(r["primary_mean"], r["primary_std"]), fmt_pm(r["regret_mean"], r["regret_std"])]
                for r in cs.iter_rows(named=True)]
        src = meta.get("profile_source", "")
        doc.table(["Calibration examples", "used", f"Primary ({pm_label}) ↑", "Regret λ=0 ↓"], rows,
                  f"The model was masked out of training and scored through its capability token; profiles from "
                  f"{src}. 'excluded' = the pool without it; 'seen in training' = the main router. " + sim_note)
        if "cold_start" in plots:
            doc.img(plots["cold_start"].name, "Primary metric and regret vs calibration examples.")

    ef = output.tables.get("efficiency")
    if ef is not None and ef.height:
        doc.h(2, "Router-side efficiency")
        rows = [[r["router"], fmt(r["primary"]), f"{r['params'] / 1e6:.4g}", fmt(r["latency_ms_batch"], 4),
                 fmt(r["latency_ms_single_p50"], 3)] for r in ef.iter_rows(named=True)]
        doc.table(["Router", f"Avg primary ({pm_label}) ↑", "Size (M numbers) ↓",
                   f"ms/query, batch {ef['batch'][0]} ↓", "ms, single query p50 ↓"], rows,
                  "Latency of `select` at λ=0 (batch building + forward pass + argmax, no MLLM call) on one CPU thread "
                  "of this machine, as the routing API serves a request; KNN / KMeans "
                  "size counts stored numbers. " + sim_note)
        if "efficiency" in plots:
            doc.img(plots["efficiency"].name, "Latency vs primary metric (marker size ~ log parameters).")

    doc.h(2, "Timings")
    doc.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in output.timings.items()])

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(doc.to_md(), encoding="utf-8")
    html_path.write_text(doc.to_html(title), encoding="utf-8")
    return {"md": md_path, "html": html_path, "plots": plots, "headline": headline(output, sim, txt)}


__all__ = ["write_report", "table1_markdown", "verdict_sentences", "headline", "md_table", "fmt", "fmt_pm",
           "PLOTS"]
