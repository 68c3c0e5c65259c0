"""The report section of the hybrid small/large evaluation (`router.evaluation.hybrid`): probe and router
AUCs for the small model's correctness and the quality-vs-share-sent-to-large curve, rendered when the
run's tables hold a hybrid result."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from router.evaluation.reports.render import Doc, fmt, fmt_pm


def hybrid_plot(curve: pl.DataFrame, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    styles = {"probe": "-", "router": "--", "reference": ":"}
    for (method, kind), g in curve.group_by("method", "kind", maintain_order=True):
        g = g.sort("share")
        ax.plot(g["share"] * 100, g["quality_mean"], styles.get(kind, "-"), marker="o", markersize=3,
                label=f"{method} ({kind})")
    ax.set_xlabel("share of test queries sent to the large model (%)")
    ax.set_ylabel("system quality")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def render_hybrid(doc: Doc, tables: dict[str, pl.DataFrame], out_dir: Path, sim_note: str = "") -> bool:
    """Append the hybrid section to ``doc`` (and its plot to ``out_dir``); False when there is no result."""
    summary, curve, meta_df = (tables.get(k) for k in ("hybrid_summary", "hybrid_curve", "hybrid_meta"))
    if summary is None or curve is None or meta_df is None or not summary.height:
        return False
    meta = json.loads(meta_df["json"][0])
    small, large = meta["small_model"], meta["large_model"]
    doc.h(2, "Hybrid small/large routing with probes (ReLope setting)")
    n = meta.get("n_rows", {})
    doc.p(f"Small model: **{small}** (REAL, runs locally on this machine's CPU); large model: **{large}**. "
          f"A score of the small model's chance of being right decides per query whether its answer is kept "
          f"or the query is escalated. Probes read the small model's hidden states captured while it answered "
          f"(layer {meta.get('layer')}, {meta.get('bytes_per_query', 0) / 1024:.0f} KB per query); "
          f"LatentRouter and the baselines see only the query (their scores restricted to the two models). "
          f"Rows: train {n.get('train')}, val {n.get('val')}, test {n.get('test')} (the local-model subset); "
          f"small-model test accuracy {fmt(meta.get('small_accuracy_test'))}, small / large test quality "
          f"{fmt(meta.get('small_quality_test'))} / {fmt(meta.get('large_quality_test'))}.")
    rows = [[r["method"], r["kind"], fmt_pm(r["auc_mean"], r["auc_std"]), fmt(r.get("quality_at_20pct")),
             fmt(r.get("quality_at_50pct"))] for r in summary.iter_rows(named=True)]
    doc.table(["Method", "Kind", "AUC (small correct) ↑", "Quality @20% to large ↑", "Quality @50% to large ↑"],
              rows, f"Mean ± std over seeds {meta.get('seeds')} on the test rows; AUC is that of the routing "
                    "score (probe: p(correct); router: q̂(small) − q̂(large)) for the small model's correctness. "
                    f"With {n.get('test')} test rows the AUCs are noisy; they are reported as measured. "
                    + sim_note)
    path = hybrid_plot(curve, Path(out_dir) / "hybrid_curve.png", f"{small} -> {large}")
    doc.img(path.name, "System quality vs share of queries sent to the large model (least confident first).")
    return True
