"""Evaluation report: files, SIMULATED / text-only labels, Table 1 and computed verdicts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
import torch

from router.data.routing_data import synthetic_routing_data
from router.evaluation.config import LATENT, ROUTERS, EvalConfig
from router.evaluation.experiments import run_all
from router.evaluation.reports.plots import PLOTS
from router.evaluation.reports.render import fmt_pm, md_table
from router.evaluation.reports.report import write_report
from router.evaluation.reports.tables import table1_markdown, verdict_sentences
from router.evaluation.results import EvalOutput

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def output() -> EvalOutput:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = synthetic_routing_data(n=240, k=3, seed=1, text_only=True)
        cfg = EvalConfig.quick(h_values=(0, 1), c_values=(1, 2), cold_start_sizes=(0,), pool_random_draws=1)
        return run_all(data, cfg, run_id="report-test")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(output: EvalOutput, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out_dir = tmp_path_factory.mktemp("report")
    return write_report(output, out_dir, title="Test report", notes=["unit-test run"])


def test_report_writes_markdown_html_and_every_plot(report: dict) -> None:
    md, html = Path(report["md"]), Path(report["html"])
    assert md.name == "report.md" and html.name == "report.html"
    assert set(report["plots"]) == set(PLOTS)
    for path in report["plots"].values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000
        assert path.parent == md.parent
    text, page = md.read_text(), html.read_text()
    for path in report["plots"].values():  # images are linked relative to the report
        assert f"]({path.name})" in text and f'src="{path.name}"' in page
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "<style>" in page
    assert "unit-test run" in text and "unit-test run" in page


def test_report_labels_simulated_models_and_text_only(report: dict, output: EvalOutput) -> None:
    text, page = Path(report["md"]).read_text(), Path(report["html"]).read_text()
    assert text.splitlines()[2].startswith("> SIMULATED: 3 of 3 candidate models are simulated")
    assert 'class="banner">SIMULATED' in page
    assert "text-only" in text and "text-only" in page
    # every results section carries the SIMULATED note in its (one) caption
    sections = [sec for sec in text.split("\n## ")[1:] if "|---" in sec and not sec.startswith("Timings")]
    assert sections and all("SIMULATED models in this table: m0, m1, m2" in sec for sec in sections)
    assert "SIMULATED" in report["headline"] and "text-only" in report["headline"]


def test_report_without_simulated_models_has_no_banner(output: EvalOutput, tmp_path: Path) -> None:
    real = replace(output, meta={**output.meta, "simulated_models": [], "text_only": False})
    paths = write_report(real, tmp_path)
    text = Path(paths["md"]).read_text()
    assert "SIMULATED" not in text and "text-only" not in text
    assert "SIMULATED" not in paths["headline"]


def test_report_contains_table1_and_computed_verdicts(report: dict, output: EvalOutput) -> None:
    text = Path(report["md"]).read_text()
    t1 = table1_markdown(output)
    assert t1 in text
    header = t1.splitlines()[0]
    assert header.startswith("| Router | Rank Score (primary, avg) | Accuracy (λ=0) | USD/query (λ=0) |")
    assert len(header.split("|")) - 2 <= 7  # fits a laptop screen; the other metrics are collapsed
    assert "<details><summary>All metrics" in text
    oracle_row = next(line for line in t1.splitlines() if line.startswith("| Oracle |"))
    assert "±" not in oracle_row  # a deterministic router has no spread to show
    assert "{'train'" not in text and "queries train / val / test: " in text
    assert [line.split("|")[1].strip() for line in t1.splitlines()[2:]] == list(ROUTERS)
    # the verdict follows the numbers: flip the comparison and the sentence flips
    welch = output.tables["welch"]
    sentences = verdict_sentences(output)
    assert len(sentences) == 3 and all(s in text for s in sentences)
    for st, sentence in zip(("oriented", "cost", "avg"), sentences, strict=True):
        row = welch.filter((pl.col("setting") == st) & (pl.col("metric") == "rank_score")).row(0, named=True)
        assert ("**is** the best non-oracle" in sentence) == (row["latent_mean"] > row["baseline_mean"])
        # fewer than 3 splits: the sentence says why there is no test and claims nothing
        assert row["n_splits"] < 3 and "no significance test" in sentence and "significant at" not in sentence
        assert not row["significant"]
        assert row["best_baseline"] in sentence
    better = welch.with_columns(pl.lit(1.0).alias("latent_mean"), pl.lit(0.5).alias("baseline_mean"))
    worse = welch.with_columns(pl.lit(0.1).alias("latent_mean"), pl.lit(0.5).alias("baseline_mean"))
    flip_up = verdict_sentences(replace(output, tables={**output.tables, "welch": better}))
    flip_down = verdict_sentences(replace(output, tables={**output.tables, "welch": worse}))
    assert all("**is** the best" in s for s in flip_up) and all("is **not** the best" in s for s in flip_down)
    assert "No significance claims" in text and LATENT in report["headline"]
    assert "± 0.000" not in t1 or output.meta.get("n_splits", 1) * len(output.meta.get("seeds", [])) > 1
    assert "Best on the test split: " in text and "Rank Score bounds: cmin = " in text


def test_formatting_helpers() -> None:
    assert fmt_pm(0.81234, 0.0012) == "0.812 ± 0.001"
    assert fmt_pm(float("inf"), float("nan")) == "∞"
    assert fmt_pm(0.5, float("nan")) == "0.500"  # a single value: no "± 0", no "± –"
    # one fixed-point format for mean and spread, never "4.64e-03 ± 0.0e+00" mixes
    assert fmt_pm(3.2e-5, 1e-6) == "0.0000320 ± 0.0000010"
    assert fmt_pm(4.64e-3, 0.0) == "0.00464 ± 0.00000"
    assert md_table(["a", "b"], [["1", "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"
