"""The report's PNG figures, one function per experiment; each returns None when its experiment did not run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from router.evaluation.config import AVG, LATENT, LEARNED_BASELINES, ORACLE, ROUTERS  # noqa: E402
from router.evaluation.reports.tables import METRIC_LABELS, ablation_rows, lookup  # noqa: E402
from router.evaluation.results import EvalOutput  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write and close the figure (pyplot keeps every open figure in memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a legend beside the axes stays in the image
    plt.close(fig)
    return path


def _colors(names: Sequence[str]) -> dict[str, Any]:
    """LatentRouter red, Oracle dark grey, everyone else its own tab20 colour that is neither red nor grey
    (16 of them: no two routers of Table 1 share one)."""
    cmap = plt.get_cmap("tab20")
    palette = [cmap(i) for i in (0, 2, 4, 8, 10, 16, 18, 1, 3, 5, 9, 11, 17, 19, 12, 13)]
    others = [n for n in names if n not in (LATENT, ORACLE)]
    out: dict[str, Any] = {n: palette[i % len(palette)] for i, n in enumerate(others)}
    return {**out, LATENT: "#d62728", ORACLE: "#444444"}


def plot_frontier(output: EvalOutput, path: Path) -> Path | None:
    """Mean operating points of every router over the lambda sweep, with the single models as crosses."""
    fr = output.tables.get("frontier")
    if fr is None or fr.height == 0:
        return None
    mean = fr.group_by(["router", "lambda"]).agg(pl.col("cost").mean(), pl.col("quality").mean()).sort("lambda")
    fig, ax = plt.subplots(figsize=(9.5, 5))
    colors = _colors(ROUTERS)
    markers = "os^Dv<>PX*"
    for i, r in enumerate(ROUTERS):
        pts = mean.filter(pl.col("router") == r)
        if pts.height == 0:
            continue
        x, y = pts["cost"].to_numpy(), pts["quality"].to_numpy()
        style = dict(lw=2.5 if r == LATENT else 1.2, ls="--" if r == ORACLE else "-")
        ax.plot(x, y, marker=markers[i % len(markers)], ms=4, color=colors[r], label=r, **style)
    fm = output.tables.get("frontier_models")
    if fm is not None and fm.height:
        ax.scatter(fm["cost"], fm["quality"], marker="x", color="grey", zorder=5, label="single models")
        for j, row in enumerate(fm.sort("cost").iter_rows(named=True)):  # alternate offsets: no two labels collide
            ax.annotate(row["model"], (row["cost"], row["quality"]), fontsize=7, color="dimgrey",
                        xytext=(4, 6 if j % 2 == 0 else -10), textcoords="offset points")
    ax.set_xlabel("mean cost per query (normalised: 1 = priciest model's train mean)")
    ax.set_ylabel("mean quality")
    ax.set_title("Cost-quality operating points over the λ sweep (test, mean over seeds)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the plot, not over it
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _usd(x: float) -> str:
    """A dollar amount in plain decimals with one significant digit shown ($0.00003, $0.2, $4)."""
    if not x > 0:
        return "$0"
    text = f"{x:.{max(0, -math.floor(math.log10(x)))}f}"
    return "$" + (text.rstrip("0").rstrip(".") if "." in text else text)


def plot_model_comparison(output: EvalOutput, path: Path) -> Path | None:
    """Accuracy against USD per query at a glance: every candidate model (test split, always picking it) as a
    labelled grey diamond (hollow when simulated), every router at lambda = 0 (mean over splits x seeds, with
    its standard error) in its own colour and marker; cost on a log axis."""
    fm = output.tables.get("frontier_models")
    summary = output.tables.get("main_summary")
    routers: list[tuple[str, float, float, float]] = []  # (router, usd, accuracy, accuracy se)
    if summary is not None and summary.height:
        for r in output.meta.get("routers", ROUTERS):
            acc = lookup(summary, router=r, setting="oriented", metric="quality")
            usd = lookup(summary, router=r, setting="oriented", metric="cost_usd")
            if acc is not None and usd is not None and usd[0] > 0:
                se = summary.filter((pl.col("router") == r) & (pl.col("setting") == "oriented")
                                    & (pl.col("metric") == "quality"))
                err = float(se["se"][0]) if "se" in se.columns and se["se"][0] is not None else 0.0
                routers.append((r, usd[0], acc[0], err if err == err else 0.0))
    models = ([] if fm is None or fm.height == 0 or "cost_usd" not in fm.columns else
              [row for row in fm.sort("cost_usd").iter_rows(named=True) if row["cost_usd"] > 0])
    if not routers and not models:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    logs = [math.log10(row["cost_usd"]) for row in models]
    lo, hi = (min(logs), max(logs)) if logs else (0.0, 1.0)
    for j, row in enumerate(models):
        sim = bool(row.get("simulated"))
        ax.scatter(row["cost_usd"], row["quality"], marker="D", s=46, zorder=3, edgecolors="#555555",
                   facecolors="none" if sim else "#999999", linewidths=1.3)
        right = hi > lo and (logs[j] - lo) / (hi - lo) > 0.8  # label the priciest on their left, inside the axes
        ax.annotate(row["model"], (row["cost_usd"], row["quality"]), fontsize=8, color="#333333",
                    xytext=(-6 if right else 6, 7 if j % 2 == 0 else -12), textcoords="offset points",
                    ha="right" if right else "left")
    colors = _colors(ROUTERS)
    markers = "os^v<>PX*hp8"
    for i, (r, usd, acc, err) in enumerate(routers):
        ax.errorbar(usd, acc, yerr=err or None, fmt=markers[i % len(markers)], ms=11 if r == LATENT else 8,
                    color=colors.get(r, "grey"), mec="black", mew=0.6, capsize=3, zorder=4, label=r)
    kinds = {bool(row.get("simulated")) for row in models}  # legend entries for the models' markers
    if False in kinds:
        ax.scatter([], [], marker="D", s=46, edgecolors="#555555", facecolors="#999999", label="model (real)")
    if True in kinds:
        ax.scatter([], [], marker="D", s=46, edgecolors="#555555", facecolors="none", label="model (SIMULATED)")
    ax.set_xscale("log")
    usd = matplotlib.ticker.FuncFormatter(lambda x, _: _usd(x))
    ax.xaxis.set_major_formatter(usd)
    lo, hi = ax.get_xlim()
    if hi / lo < 100:  # two decades or less: label the 2s and 5s too, else the decades alone
        ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(usd)
    else:
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.set_xlabel("mean USD per query (log scale)", fontsize=10)
    ax.set_ylabel("accuracy (mean quality, λ=0)", fontsize=10)
    ax.set_title("Models and routers: accuracy vs cost (test split)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def plot_task_groups(output: EvalOutput, path: Path) -> Path | None:
    """Quality gain over Strongest per task group at lambda 0: where routing pays."""
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
        vals = [(lookup(gains, router=r, task_group=g) or (np.nan, 0))[0] for g in groups]
        ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, vals, width, label=r, color=colors[r],
               hatch="//" if r == ORACLE else None, alpha=0.5 if r == ORACLE else 1.0)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("quality gain over Strongest (λ=0)")
    ax.set_title("Per task group gain over the Strongest single model")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)



def plot_ablations(output: EvalOutput, path: Path) -> Path | None:
    """Primary metric of each component ablation, oriented and cost side by side."""
    ab = output.tables.get("ablations")
    if ab is None or ab.height == 0:
        return None
    pm = output.meta.get("primary_metric", "rank_score")
    rows = ablation_rows(ab, "component", pm)
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
    """Primary metric against communication depth H and capsule count C."""
    ab = output.tables.get("ablations")
    if ab is None or ab.height == 0:
        return None
    pm = output.meta.get("primary_metric", "rank_score")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, family, title in ((axes[0], "H", "communication layers H"), (axes[1], "C", "routing capsules C")):
        rows = ablation_rows(ab, family, pm)
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
    """Primary metric and oracle regret per changed pool, the same trained routers."""
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
    """The inserted model's effect against its calibration examples, with the excluded / seen references."""
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
    """Router latency against the primary metric (marker size ~ log parameters)."""
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


# in the order the UI shows them: the two a reader looks at first lead
PLOTS: dict[str, Callable[[EvalOutput, Path], Path | None]] = {
    "model_comparison": plot_model_comparison,
    "frontier": plot_frontier,
    "task_groups": plot_task_groups,
    "ablations": plot_ablations,
    "sensitivity": plot_sensitivity,
    "pool_changes": plot_pool_changes,
    "cold_start": plot_cold_start,
    "efficiency": plot_efficiency,
}
