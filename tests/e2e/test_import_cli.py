"""`lrouter import` on a warehouse that already holds collected traces: merge by default, ``--replace``
names what it drops before dropping it, and an empty file is refused with nothing written."""

from __future__ import annotations

import json

import pytest

from collectors.registry import load_registry
from pipelines.cli import main
from tests.collectors.importing.support import small_warehouse
from warehouse.store import Warehouse


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("LROUTER_REGISTRY", raising=False)
    monkeypatch.setenv("LROUTER_HOME", str(tmp_path / "home"))
    _, _, traces = small_warehouse(tmp_path / "home")
    (tmp_path / "my.jsonl").write_text(json.dumps({"id": "u1", "question": "Total?", "answer": "4"}) + "\n")
    return tmp_path / "home", traces


def _import(home, *args: str) -> int:
    return main(["--home", str(home), "import", *args])


def test_import_queries_merges_by_default(home, capsys):
    home, traces = home
    assert _import(home, "queries", str(home.parent / "my.jsonl")) == 0
    out = capsys.readouterr().out
    assert "import --replace" not in out and "(merge): 1 queries" in out
    assert "{" not in out and "|" not in out  # a human summary, not a dict or a Markdown table
    assert "report: " in out and out.strip().endswith("(features, train, evaluate on this home)")
    wh = Warehouse(home / "warehouse")
    assert wh.trace_partitions() == ["llava:7b", "sim-a"] and wh.read_traces().height == traces.height
    assert all(e.active for e in load_registry(home / "models.yaml"))
    assert wh.read_table("queries").height == 4


def test_import_replace_prints_what_it_drops(home, capsys):
    home, _ = home
    assert _import(home, "queries", str(home.parent / "my.jsonl"), "--replace") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("import --replace: dropping 3 queries, 2 trace partitions (6 traces: ")
    assert "2 active models deactivated (sim-a, llava:7b)" in first
    assert Warehouse(home / "warehouse").trace_partitions() == []
    assert not any(e.active for e in load_registry(home / "models.yaml"))


def test_import_of_an_empty_file_is_refused(home, capsys):
    home, _ = home
    (home.parent / "empty.csv").write_text("dataset_idx,question,answer,A_correct,A_cost\n")
    table = home / "warehouse" / "tables" / "queries.parquet"
    before = table.read_bytes()
    assert _import(home, "mmr-bench", str(home.parent / "empty.csv"), "--replace") == 2
    err = capsys.readouterr().err
    assert "import refused, nothing written" in err and "empty.csv: no data rows" in err
    assert table.read_bytes() == before and Warehouse(home / "warehouse").trace_partitions() == ["llava:7b", "sim-a"]
