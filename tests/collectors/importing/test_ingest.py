"""Ingest: imports merge into the warehouse by default, ``replace`` drops what is not imported (and says so),
and an empty import is refused without writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collectors.importing import import_custom_queries, import_long, import_mmr_bench
from collectors.importing.ingest import apply_import
from collectors.importing.validation import ImportValidationError
from collectors.registry import load_registry
from tests.collectors.importing.support import AT, small_warehouse

MMR = ("dataset_idx,question,answer,A_correct,A_cost,B_correct,B_cost\n"
       "OCRBench_1,What text?,STOP,1,0.001,0,0.0001\n"
       "ChartQA_2,Highest bar?,42,0,0.002,1,0.0002\n")


def _queries_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "my.jsonl"
    p.write_text("".join(json.dumps({"id": f"u{i}", "question": f"Q{i}?", "answer": "x"}) + "\n" for i in range(2)))
    return p


def _mmr_csv(tmp_path: Path, text: str = MMR) -> Path:
    p = tmp_path / "mmr.csv"
    p.write_text(text)
    return p


def _active(registry: Path) -> dict[str, bool]:
    return {e.model_id: e.active for e in load_registry(registry)}


def _sorted(t: pl.DataFrame) -> pl.DataFrame:
    return t.sort("model_id", "query_id")


def test_merge_keeps_existing_queries_traces_and_models(tmp_path):
    wh, reg, before = small_warehouse(tmp_path / "home")
    s1 = apply_import(wh, import_custom_queries(_queries_jsonl(tmp_path)), reg)
    s2 = apply_import(wh, import_mmr_bench(_mmr_csv(tmp_path), collected_at=AT), reg)
    # every earlier trace is still there, byte for byte, next to the imported partitions
    assert_frame_equal(_sorted(wh.read_traces(["sim-a", "llava:7b"])), _sorted(before))
    assert sorted(wh.trace_partitions()) == ["A", "B", "llava:7b", "sim-a"]
    assert wh.read_traces(["A", "B"]).height == 4
    # earlier models stay active; the import's models are added and active
    assert _active(reg) == {"sim-a": True, "llava:7b": True, "A": True, "B": True}
    assert {e.model_id: e.backend for e in load_registry(reg)}["llava:7b"] == "ollama"
    q = wh.read_table("queries")
    assert q.height == 3 + 2 + 2 and {"c1", "c2", "c3"} <= set(q["query_id"])
    assert s1["mode"] == s2["mode"] == "merge" and s1["dropped"] is None


def test_merge_replaces_the_row_of_the_same_query_model_pair(tmp_path):
    wh, reg, before = small_warehouse(tmp_path / "home")
    # long-format traces of llava:7b for one stored query (c1) and one new query (n1)
    (tmp_path / "traces.csv").write_text("query_id,model_id,quality,cost_usd\nc1,llava:7b,0.25,0.5\n"
                                         "n1,llava:7b,1,0.1\n")
    (tmp_path / "queries.csv").write_text("query_id,question\nc1,q1?\nn1,new?\n")
    apply_import(wh, import_long(tmp_path / "traces.csv", tmp_path / "queries.csv", collected_at=AT), reg)
    t = wh.read_trace_partition("llava:7b").sort("query_id")
    assert t["query_id"].to_list() == ["c1", "c2", "c3", "n1"]  # one row per (query_id, model_id)
    assert t.filter(pl.col("query_id") == "c1")["quality"].item() == 0.25  # the imported row won
    old = before.filter(pl.col("model_id") == "llava:7b", pl.col("query_id") != "c1")
    assert_frame_equal(t.filter(pl.col("query_id").is_in(["c2", "c3"])), old.sort("query_id"))
    assert_frame_equal(wh.read_trace_partition("sim-a"), before.filter(pl.col("model_id") == "sim-a"))
    # a re-import of the same CSV does not duplicate traces
    apply_import(wh, import_mmr_bench(_mmr_csv(tmp_path), collected_at=AT), reg)
    apply_import(wh, import_mmr_bench(_mmr_csv(tmp_path), collected_at=AT), reg)
    assert wh.read_trace_partition("A").height == 2 and wh.read_table("queries").height == 3 + 1 + 2


def test_replace_drops_what_is_not_imported_and_says_so(tmp_path):
    wh, reg, _ = small_warehouse(tmp_path / "home")
    lines: list[str] = []
    s = apply_import(wh, import_mmr_bench(_mmr_csv(tmp_path), collected_at=AT), reg, replace=True,
                     announce=lines.append)
    assert len(lines) == 1 and lines[0] == s["dropped"]
    assert lines[0].startswith("import --replace: dropping 3 queries, 2 trace partitions (6 traces: ")
    assert "llava:7b" in lines[0] and "sim-a" in lines[0] and "2 active models deactivated" in lines[0]
    assert wh.trace_partitions() == ["A", "B"] and wh.read_table("queries").height == 2
    assert _active(reg) == {"sim-a": False, "llava:7b": False, "A": True, "B": True}


@pytest.mark.parametrize("kind", ["header_only_csv", "empty_jsonl", "every_row_skipped"])
def test_empty_import_is_refused_and_nothing_changes(tmp_path, kind):
    wh, reg, _ = small_warehouse(tmp_path / "home")
    files = {p: p.read_bytes() for p in [*wh.root.rglob("*.parquet"), reg]}
    if kind == "header_only_csv":
        with pytest.raises(ImportValidationError, match=r"mmr.csv: no data rows \(empty file or header only\)"):
            import_mmr_bench(_mmr_csv(tmp_path, MMR.split("\n")[0] + "\n"))
        return
    if kind == "empty_jsonl":
        (tmp_path / "e.jsonl").write_text("")
        with pytest.raises(ImportValidationError, match=r"e.jsonl: no data rows"):
            import_custom_queries(tmp_path / "e.jsonl")
        return
    (tmp_path / "s.jsonl").write_text(json.dumps({"id": "a", "question": " ", "answer": "x"}) + "\n")
    res = import_custom_queries(tmp_path / "s.jsonl")  # skip policy: the only row is skipped
    with pytest.raises(ImportValidationError, match=r"s.jsonl: the import holds no queries"):
        apply_import(wh, res, reg)
    with pytest.raises(ImportValidationError, match=r"s.jsonl: the import holds no queries"):
        apply_import(wh, res, reg, replace=True)
    assert {p: p.read_bytes() for p in files} == files
    assert not (wh.reports_dir / "imports").exists() and not wh.has_table("import_skipped")


def test_imported_traces_of_a_served_model_keep_its_registry_entry(tmp_path):
    wh, reg, _ = small_warehouse(tmp_path / "home")
    (tmp_path / "traces.csv").write_text("query_id,model_id,quality,cost_usd\nn1,llava:7b,1,0.1\n")
    (tmp_path / "queries.csv").write_text("query_id,question\nn1,new?\n")
    apply_import(wh, import_long(tmp_path / "traces.csv", tmp_path / "queries.csv", collected_at=AT), reg)
    entry = {e.model_id: e for e in load_registry(reg)}["llava:7b"]
    assert entry.backend == "ollama" and entry.active
