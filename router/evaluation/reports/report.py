"""The evaluation report: report.md, report.html and the PNG plots of one run, section by section, plus the
short headline that Dagster shows as metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from router.evaluation.config import AVG, MIN_SPLITS_FOR_SIGNIFICANCE, ROUTERS
from router.evaluation.reports.hybrid import render_hybrid
from router.evaluation.reports.plots import PLOTS
from router.evaluation.reports.render import Doc, fmt, fmt_p, fmt_pm
from router.evaluation.reports.tables import (
    LOWER_IS_BETTER,
    METRIC_LABELS,
    MORE_COLUMNS,
    ablation_rows,
    decision_line,
    lookup,
    rank_marks,
    table1_rows,
    verdict_sentences,
)
from router.evaluation.results import EvalOutput


def headline(output: EvalOutput, simulated_models: Sequence[str] = (), text_only: bool = False,
             deployment: Mapping[str, Any] | None = None) -> str:
    """A few Markdown lines for Dagster metadata: the deployed router, the verdict per setting and the data
    caveats."""
    lines = []
    if simulated_models:
        lines.append(f"**SIMULATED** models: {', '.join(simulated_models)}.")
    if text_only:
        lines.append("Mode: **text-only** (no image features).")
    lines += [x for x in (deployment_line(deployment), decision_line(output)) if x]
    lines += verdict_sentences(output)
    return "\n\n".join(lines)


def deployment_line(deployment: Mapping[str, Any] | None) -> str | None:
    """The one deployment decision (``deployed.json``, made by the deployed_router asset), or None."""
    if not deployment or not deployment.get("deployed"):
        return None
    lam = deployment.get("lambda")
    at = f" at λ = {lam:g}" if isinstance(lam, (int, float)) else ""
    reason = deployment.get("reason") or "chosen on validation utility"
    return f"**Deployed: {deployment['deployed']}{at}** (the deployed_router asset). {reason}"


@dataclass
class _Section:
    """What every section reads: the run, its plot files, the primary metric and the simulated-pool note."""

    output: EvalOutput
    plots: dict[str, Path]
    pm: str
    pm_label: str
    sim_note: str
    deployment: Mapping[str, Any] | None = None


def write_report(
    output: EvalOutput,
    out_dir: Path | str,
    title: str = "LatentRouter evaluation",
    simulated_models: Sequence[str] | None = None,
    text_only: bool | None = None,
    notes: Sequence[str] = (),
    deployment: Mapping[str, Any] | None = None,
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
    sim_note = (f"SIMULATED models in this table: {', '.join(sim)} (deterministic simulator, not real MLLMs)."
                if sim else "")

    plots = {name: fn(output, out / f"{name}.png") for name, fn in PLOTS.items()}
    plots = {k: v for k, v in plots.items() if v is not None}
    sec = _Section(output, plots, pm, METRIC_LABELS.get(pm, pm), sim_note, deployment)

    doc = Doc()
    _preamble(doc, sec, title, sim, txt, notes)
    for section in (_main_table, _model_comparison, _frontier, _task_groups, _outcome, _ablations, _pool_changes,
                    _cold_start, _efficiency):
        section(doc, sec)
    render_hybrid(doc, output.tables, out, sim_note)  # only when the run holds a hybrid result
    doc.h(2, "Timings")
    doc.table(["Step", "Seconds"], [[k, f"{v:.1f}"] for k, v in output.timings.items()])

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(doc.to_md(), encoding="utf-8")
    html_path.write_text(doc.to_html(title), encoding="utf-8")
    return {"md": md_path, "html": html_path, "plots": plots, "headline": headline(output, sim, txt, deployment)}


def _preamble(doc: Doc, sec: _Section, title: str, sim: list[str], txt: bool, notes: Sequence[str]) -> None:
    """Title, the SIMULATED / text-only banners and the facts of the run."""
    output, meta = sec.output, sec.output.meta
    doc.h(1, title)
    if sim:
        real = [m for m in meta.get("model_ids", []) if m not in sim]
        doc.banner(f"SIMULATED: {len(sim)} of {len(meta.get('model_ids', sim))} candidate models are simulated "
                   f"({', '.join(sim)}). Numbers describe the simulator's behaviour, not real model quality."
                   + (f" REAL models: {', '.join(real)}." if real else ""))
    if txt:
        doc.banner("text-only: routers saw question features only (no image features).")
    facts = [
        f"run `{output.run_id}`; models: {', '.join(meta.get('model_ids', []))}",
        "queries train / val / test: " + " / ".join(f"{int((meta.get('n_queries') or {}).get(s, 0)):,}"
                                                    for s in ("train", "val", "test"))
        + f"; task groups: {', '.join(meta.get('task_groups', []))}",
        f"seeds: {meta.get('seeds')}; λ sweep: {[round(x, 4) for x in meta.get('lambdas', [])]}; "
        f"λ of the routing_decisions rows and the task-group cost view: {meta.get('decision_lambda')}",
        f"primary metric: {sec.pm_label}" + (", averaged over the oriented and cost settings"
                                              if sec.pm == "rank_score" else " of the cost setting"),
        _bounds_fact(meta),
        f"splits: {meta.get('n_splits', 1)} seeded group-aware split(s) for the main table (profiles and "
        f"normalisers rebuilt from each split's train / calibration rows); other sections: split 0",
        f"hyperparameters: {meta.get('tuning_trials', 1)} validation-only trial(s) per trainable router "
        f"(same budget each), fixed before test (see 'Hyperparameters')",
    ]
    doc.bullets([*facts, *meta.get("notes", []), *notes])


def _bounds_fact(meta: dict[str, Any]) -> str:
    lo, hi = (meta.get("rank_bounds_usd") or [float("nan"), float("nan")])[:2]
    return (f"Rank Score bounds: cmin = {lo:.6g}, cmax = {hi:.6g} USD/query, β = {meta.get('rank_beta', 0.1):g} "
            f"(from the {meta.get('rank_bounds_source', 'per-sample cost matrix')}, all rows)")


def _main_table(doc: Doc, sec: _Section) -> None:
    """The deployment question: computed verdicts, Table 1 and the Welch tests."""
    output = sec.output
    doc.h(2, "Which router should I deploy?")
    if "main_summary" not in output.tables:
        doc.p("The main table was not part of this run.")
        return
    for line in (deployment_line(sec.deployment), decision_line(output)):
        if line:
            doc.p(line)
    for s in verdict_sentences(output):
        doc.p(s)
    header, rows = table1_rows(output)
    doc.table(header, rows)
    n_splits = int(output.meta.get("n_splits", 1))
    doc.p("_" + " ".join(x for x in (
        "Test split; mean ± standard error over splits × seeds (a single value is shown alone). Best "
        "non-oracle value in bold, second-best in italics. λ=0 columns: the performance-oriented fit (trained "
        "at λ=0) judged at its λ=0 pick. Rank Score (sweep) is the best over the cost-aware fit's λ sweep "
        "(VL-RouterBench, bounds above); nAUC (budget) follows MMR-Bench (budgets over the router's predicted "
        "costs, Pareto frontier, area over its cost range, NaN below two frontier points).",
        sec.sim_note) if x) + "_")
    doc.p(_significance_summary(output, n_splits))
    doc.details("All metrics (Ps, QNC, cost at the best Rank Score, nAUC over the λ sweep, regret)")
    doc.table(*table1_rows(output, MORE_COLUMNS),
              "Ps and QNC from the budget sweep; QNC = cheapest frontier cost reaching the strongest single "
              "model's quality over that model's cost (∞ = never); nAUC (λ sweep, interp) is the frontier area "
              "over the λ-sweep points, a second view.")
    doc.end_details()
    comps = output.tables.get("comparisons")
    if comps is not None and comps.height:
        doc.details(f"LatentRouter vs every baseline ({sec.pm_label}, paired t over splits)")
        doc.table(["Setting", "LatentRouter vs", "Difference", f"Paired p ({n_splits} split(s))"],
                  [[r["setting"], r["baseline"], fmt(r["diff"]),
                    fmt_p(r["paired_p"]) if n_splits >= MIN_SPLITS_FOR_SIGNIFICANCE else "n/a (< 3 splits)"]
                   for r in comps.iter_rows(named=True)])
        doc.end_details()
    _tuning(doc, sec)


def _significance_summary(output: EvalOutput, n_splits: int) -> str:
    """One paragraph instead of a p-value per pair: which baselines LatentRouter beats or trails on the
    primary metric (average setting) by the paired test, or why there is no test."""
    comps = output.tables.get("comparisons")
    if comps is None or comps.height == 0:
        return ""
    if n_splits < MIN_SPLITS_FOR_SIGNIFICANCE:
        return (f"_No significance claims: {n_splits} split(s); a paired test over splits needs at least "
                f"{MIN_SPLITS_FOR_SIGNIFICANCE} (the evaluation's n_splits)._")
    avg = comps.filter(pl.col("setting") == AVG)
    better = [r["baseline"] for r in avg.iter_rows(named=True) if r["diff"] > 0 and r["paired_p"] < 0.05]
    worse = [r["baseline"] for r in avg.iter_rows(named=True) if r["diff"] < 0 and r["paired_p"] < 0.05]
    rest = [r["baseline"] for r in avg.iter_rows(named=True) if r["baseline"] not in better + worse]
    parts = [f"significantly better than {', '.join(better)}" if better else "",
             f"significantly worse than {', '.join(worse)}" if worse else "",
             f"not distinguishable from {', '.join(rest)}" if rest else ""]
    return (f"Paired t over {n_splits} splits (p < 0.05), primary metric averaged over the settings: "
            f"LatentRouter is {'; '.join(x for x in parts if x)}.")


def _tuning(doc: Doc, sec: _Section) -> None:
    tun = sec.output.tables.get("tuning")
    if tun is None or not tun.height:
        return
    doc.h(3, "Hyperparameters (validation only)")
    rows = [[str(r["split"]), r["router"], r["chosen"] if r["chosen"] != "{}" else "defaults", str(r["trials"]),
             r["scores"]] for r in tun.iter_rows(named=True) if r["trials"] > 1 or r["chosen"] != "{}"]
    doc.table(["Split", "Router", "Chosen", "Trials", "Validation primary per trial"], rows,
              "Each trainable router tried the same number of candidates (defaults first), fitted at seed 0 "
              "and scored on its split's validation rows only; the winner was fixed before the test split "
              "was read. Training-free routers have nothing to tune.")


def _model_comparison(doc: Doc, sec: _Section) -> None:
    if "model_comparison" in sec.plots:
        doc.h(2, "Models and routers at a glance")
        doc.img(sec.plots["model_comparison"].name,
                "Accuracy vs mean USD per query: each candidate model always picked (diamonds, hollow when "
                "simulated) and each router at λ=0 (mean ± standard error over splits x seeds)."
                + (" SIMULATED pool." if sec.sim_note else ""))


def _frontier(doc: Doc, sec: _Section) -> None:
    if "frontier" in sec.plots:
        doc.h(2, "Cost-quality frontier")
        doc.img(sec.plots["frontier"].name, "Operating points of every router over the λ sweep (cost-aware fits)."
                + (" SIMULATED pool." if sec.sim_note else ""))


def _task_groups(doc: Doc, sec: _Section) -> None:
    tg = sec.output.tables.get("task_groups")
    if tg is None or not tg.height:
        return
    doc.h(2, "Where the gains are: task groups")
    gains = tg.filter((pl.col("setting") == "oriented") & (pl.col("metric") == "quality"))
    groups = sorted(set(gains["task_group"].to_list()) - {"all"}) + ["all"]
    rows = []
    for r in sec.output.meta.get("routers", ROUTERS):
        vals = [lookup(gains, router=r, task_group=g) for g in groups]
        if any(v is not None for v in vals):
            rows.append([r] + [fmt_pm(*v) if v else "–" for v in vals])
    doc.table(["Router (accuracy at λ=0)"] + groups, rows, sec.sim_note)
    if "task_groups" in sec.plots:
        doc.img(sec.plots["task_groups"].name, "Quality gain over the Strongest single model per task group.")


def _outcome(doc: Doc, sec: _Section) -> None:
    oc = sec.output.tables.get("outcome")
    if oc is None or not oc.height:
        return
    doc.h(2, "Counterfactual outcome prediction (Table 2)")
    metrics = ["mse", "ndcg", "ndcg@3", "spearman", "top3_recall"]
    methods = oc.select("router").unique(maintain_order=True)["router"].to_list()
    vals = {m: {r: (lookup(oc, router=r, metric=m) or (np.nan, 0)) for r in methods} for m in metrics}
    marks = {m: rank_marks({r: v[0] for r, v in vals[m].items()}, m in LOWER_IS_BETTER) for m in metrics}
    rows = [[r] + [f"{marks[m].get(r, '')}{fmt_pm(*vals[m][r])}{marks[m].get(r, '')}" for m in metrics]
            for r in methods]
    doc.table(["Method", "MSE ↓", "NDCG ↑", "NDCG@3 ↑", "Spearman ↑", "Top-3 recall ↑"], rows,
              "Predicted quality vs realised quality on test rows, available models only (λ=0 fits). The "
              "direct classifier's scores are class probabilities, so its MSE is not a calibrated outcome "
              "estimate. " + sec.sim_note)


def _ablations(doc: Doc, sec: _Section) -> None:
    ab = sec.output.tables.get("ablations")
    if ab is None or not ab.height:
        return
    doc.h(2, "Ablations and sensitivity")
    pm_label = sec.pm_label
    for family, head in (("component", "Variant"), ("H", "Layers"), ("C", "Capsules")):
        rows = [[lab] + [fmt_pm(*v[st]) if st in v else "–" for st in ("oriented", "cost", AVG)]
                for lab, v in ablation_rows(ab, family, sec.pm)]
        if rows:
            doc.table([head, f"Oriented {pm_label}", f"Cost {pm_label}", f"Avg {pm_label}"], rows)
    doc.p("_" + " ".join(x for x in (
        "Split 0, mean ± std over the ablation seeds. 'w/o latent communication' reads the capsules once "
        "(no model-model exchange, no feedback); 'query-blind (H=0)' has no communication layer at all.",
        _full_row_note(sec), sec.sim_note) if x) + "_")
    if "ablations" in sec.plots:
        doc.img(sec.plots["ablations"].name, "Removing one component at a time.")
    if "sensitivity" in sec.plots:
        doc.img(sec.plots["sensitivity"].name, "Communication depth H and number of capsules C.")


def _full_row_note(sec: _Section) -> str:
    """Whether the ablation's full row is the main table's LatentRouter, and why not when it is not."""
    cfg = sec.output.meta.get("config", {})
    if cfg.get("ablation_shared_fit"):
        return ("The full row is one λ=0 fit judged in both settings (ablation_shared_fit), so its cost column "
                "is not the main table's cost-aware LatentRouter; its oriented column is the same fit as the "
                "main table's on split 0" + (" for the ablation seeds." if cfg.get("ablation_seeds") else "."))
    if sec.output.meta.get("n_splits", 1) > 1:
        return "The full row is the main table's LatentRouter on split 0 only (the main table averages splits)."
    return "The full row is the main table's LatentRouter (same fits)."


def _pool_changes(doc: Doc, sec: _Section) -> None:
    pc = sec.output.tables.get("pool_changes")
    if pc is None or not pc.height:
        return
    doc.h(2, "Changed candidate pools (no retraining)")
    rows = [[r["pool"], r["router"], fmt_pm(r["primary_mean"], r["primary_std"]),
             fmt_pm(r["regret_mean"], r["regret_std"]), fmt_pm(r["cost_regret_mean"], r["cost_regret_std"]),
             fmt_pm(r["latency_ms_mean"], r["latency_ms_std"], 4)] for r in pc.iter_rows(named=True)]
    doc.table(["Pool", "Router", f"Primary ({sec.pm_label}) ↑", "Regret λ=0 ↓", "Regret (sweep mean) ↓",
               "Latency ms/query ↓"], rows,
              "The same trained routers with availability masks; the oracle is recomputed over the available "
              "models (so one-model pools have zero regret). Multi-mask settings average their masks per "
              "seed. " + sec.sim_note)
    if "pool_changes" in sec.plots:
        doc.img(sec.plots["pool_changes"].name, "Primary metric and oracle regret per pool setting.")


def _cold_start(doc: Doc, sec: _Section) -> None:
    cs = sec.output.tables.get("cold_start")
    if cs is None or not cs.height:
        return
    doc.h(2, f"Cold-start insertion of {cs['model'][0]}")
    rows = [[r["calib"], "" if r["n_used"] is None else str(r["n_used"]),
             fmt_pm(r["primary_mean"], r["primary_std"]), fmt_pm(r["regret_mean"], r["regret_std"])]
            for r in cs.iter_rows(named=True)]
    src = sec.output.meta.get("profile_source", "")
    doc.table(["Calibration examples", "used", f"Primary ({sec.pm_label}) ↑", "Regret λ=0 ↓"], rows,
              f"The model was masked out of training and scored through its capability token; profiles from "
              f"{src}. 'excluded' = the pool without it; 'seen in training' = the main router. " + sec.sim_note)
    if "cold_start" in sec.plots:
        doc.img(sec.plots["cold_start"].name, "Primary metric and regret vs calibration examples.")


def _efficiency(doc: Doc, sec: _Section) -> None:
    ef = sec.output.tables.get("efficiency")
    if ef is None or not ef.height:
        return
    doc.h(2, "Router-side efficiency")
    rows = [[r["router"], fmt(r["primary"]), f"{r['params'] / 1e6:.4g}", fmt(r["latency_ms_batch"], 4),
             fmt(r["latency_ms_single_p50"], 3)] for r in ef.iter_rows(named=True)]
    doc.table(["Router", f"Avg primary ({sec.pm_label}) ↑", "Size (M numbers) ↓",
               f"ms/query, batch {ef['batch'][0]} ↓", "ms, single query p50 ↓"], rows,
              "Latency of `select` at λ=0 (batch building + forward pass + argmax, no MLLM call) on one CPU thread "
              "of this machine, as the routing API serves a request; KNN / KMeans "
              "size counts stored numbers. " + sec.sim_note)
    if "efficiency" in sec.plots:
        doc.img(sec.plots["efficiency"].name, "Latency vs primary metric (marker size ~ log parameters).")
