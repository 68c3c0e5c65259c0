"""Long-format importer and exporter: round trips are identical, defaults, validation."""

from __future__ import annotations

import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collectors.importing import export_long, import_benchmark, import_long, import_long_dir
from collectors.importing.validation import ImportValidationError
from tests.collectors.importing.support import AT, assert_conforms, skips
from warehouse.schemas import MODELS, QUERIES, TRACES


def _long_tables() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    queries = pl.DataFrame({
        "query_id": ["q1", "q2", "q3"], "benchmark": ["builtin"] * 3, "dataset": ["ocr-synth", "charts", "math"],
        "task_group": ["ocr", "chart", "math"], "task": ["read", "bar", "sum"],
        "question": ["Read it", "Which bar?", "2+2?"], "answer": ["HELLO", "B", "4"],
        "answer_kind": ["exact", "choice", "numeric"], "image_path": ["ab.png", "cd.png", ""],
        "image_sha256": ["ab", "cd", ""], "source_meta": ['{"visual": {"noise": 0.1}}', "{}", "{}"],
        "official_split": ["train", "val", ""], "n_chars": [7, 10, 4],
    })
    traces = pl.DataFrame({
        "query_id": ["q1", "q1", "q2", "q2", "q3", "q3"], "model_id": ["m:a", "m:b", "m:a", "m:a", "m:b", "m:a"],
        "attempt": [1, 1, 1, 2, 1, 1], "prediction": ["HELLO", None, "A", "B", "4", "5"],
        "quality": [1.0, None, 0.0, 1.0, 0.9999999999999999, 1e-5], "correct": [True, None, False, True, True, False],
        "prompt_tokens": [100, None, 80, 80, 12, 12], "completion_tokens": [3, None, 1, 1, 1, 1],
        "image_tokens": [64, None, 64, 64, 0, 0], "cost_usd": [1.2345678901234e-5, None, 3e-6, 3e-6, 0.0, 1e-7],
        "latency_ms": [120.5, 30000.0, 80.25, 81.0, 10.0, 11.0],
        "status": ["ok", "timeout", "ok", "ok", "ok", "ok"], "error": [None, "timed out", None, None, None, None],
        "collected_at": ["2026-01-01T00:00:00.000+00:00"] * 6, "model_digest": ["d1", "d2", "d1", "d1", "d2", "d1"],
        "run_id": ["run-1"] * 6,
    })
    models = pl.DataFrame({
        "model_id": ["m:a", "m:b"], "backend": ["sim", "ollama"], "endpoint": ["http://127.0.0.1:1", ""],
        "price_in_per_mtok": [0.1, float("nan")], "price_out_per_mtok": [0.4, float("nan")], "params_b": [1.0, None],
        "added_at": [AT, AT], "active": [True, False], "simulated": [True, False], "description": ["a", "b"],
    })
    from warehouse.schemas import conform
    return conform(queries, QUERIES, "queries"), conform(traces, TRACES, "traces"), conform(models, MODELS, "models")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_long_round_trip_is_identical(tmp_path, fmt):
    queries, traces, models = _long_tables()
    paths = export_long(queries, traces, tmp_path / "exp", models=models, fmt=fmt)
    assert {p.name for p in paths.values()} == {f"queries.{fmt}", f"traces.{fmt}", f"models.{fmt}"}
    res = import_long_dir(tmp_path / "exp", run_id="other", collected_at="2030-01-01")
    assert res.skipped.height == 0 and not res.text_only
    assert_frame_equal(res.queries.sort("query_id"), queries.sort("query_id"))
    assert_frame_equal(res.traces.sort("query_id", "model_id", "attempt"),
                       traces.sort("query_id", "model_id", "attempt"))
    assert_frame_equal(res.models.sort("model_id"), models.sort("model_id"))
    # an import of the import exports to the same thing again
    export_long(res.queries, res.traces, tmp_path / "exp2", models=res.models, fmt=fmt)
    again = import_benchmark(tmp_path / "exp2")
    assert_frame_equal(again.traces.sort("query_id", "model_id", "attempt"),
                       traces.sort("query_id", "model_id", "attempt"))


def test_long_minimal_csv_defaults(tmp_path):
    (tmp_path / "traces.csv").write_text("query_id,model_id,quality,cost_usd\nq1,m1,1,0.01\nq1,m2,0.4,0.002\n"
                                         "q2,m1,0.5,0.01\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"query_id": "q1", "question": "a?", "dataset": "ChartQA"})
                                            + "\n" + json.dumps({"query_id": "q2", "question": "b?",
                                                                 "answer": "12"}) + "\n")
    res = import_long(tmp_path / "traces.csv", tmp_path / "queries.jsonl", run_id="r9", collected_at=AT)
    assert_conforms(res.queries, QUERIES)
    assert_conforms(res.traces, TRACES)
    assert res.text_only and res.skipped.height == 0
    t = res.traces.sort("query_id", "model_id")
    assert t["correct"].to_list() == [True, False, True] and t["quality"].to_list() == [1.0, 0.4, 0.5]
    assert set(t["status"]) == {"ok"} and set(t["attempt"]) == {1} and set(t["run_id"]) == {"r9"}
    assert set(t["collected_at"]) == {AT}
    q = res.queries.sort("query_id")
    assert q["task_group"].to_list() == ["chart", "general"] and q["answer_kind"].to_list()[1] == "numeric"
    assert q["benchmark"].to_list() == ["import", "import"] and q["official_split"].to_list() == ["", ""]
    assert res.models["model_id"].to_list() == ["m1", "m2"] and set(res.models["backend"]) == {"import"}


def test_long_validation_skip_and_fail(tmp_path):
    (tmp_path / "traces.csv").write_text(
        "query_id,model_id,quality,cost_usd,status\n"
        "q1,m1,1,0.01,ok\n"
        "q1,m2,1.7,0.01,ok\n"  # row 2: quality outside [0, 1]
        "q2,m1,0,cheap,ok\n"  # row 3: non-numeric cost
        "q9,m1,0,0.1,ok\n"  # row 4: unknown query
        "q3,m1,0,0.1,ok\n"  # row 5: query skipped (empty question)
        "q2,m2,,,timeout\n"  # a timeout may have no quality / cost
    )
    (tmp_path / "queries.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"query_id": "q1", "question": "a"}, {"query_id": "q2", "question": "b"},
                                         {"query_id": "q3", "question": ""}]) + "\n")
    res = import_long(tmp_path / "traces.csv", tmp_path / "queries.jsonl", collected_at=AT)
    assert skips(res) == {("traces.csv", 2, "quality"), ("traces.csv", 3, "cost_usd"),
                           ("traces.csv", 4, "query_id"), ("traces.csv", 5, "query_id"),
                           ("queries.jsonl", 3, "question")}
    assert res.traces.height == 2 and res.queries.height == 2
    timeout = res.traces.filter(pl.col("status") == "timeout").row(0, named=True)
    assert timeout["quality"] is None and timeout["correct"] is None
    with pytest.raises(ImportValidationError, match=r"traces.csv: row 4, column 'query_id': query_id 'q9' is not"):
        import_long(tmp_path / "traces.csv", tmp_path / "queries.jsonl", on_error="fail")
