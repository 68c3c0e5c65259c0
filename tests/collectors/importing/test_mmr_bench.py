"""MMR-Bench CSV importer: conforms to the warehouse schemas, validation names file/row/column, policies."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import polars as pl
import pytest

from collectors.importing import import_custom_queries, import_mmr_bench, query_id_for
from collectors.importing.validation import ImportValidationError
from tests.collectors.importing.support import AT, assert_conforms, image_bytes, sha256_hex, skips
from warehouse.schemas import MODELS, QUERIES, TRACES

MMR_HEADER = ("dataset_idx,question,answer,difficulty,source,A_correct,A_cost,A_token,A_prediction,"
              "B_correct,B_cost\n")
MMR_ROWS = [
    "OCRBench_1,What text is shown?,STOP,easy,web,1,0.001,12,STOP,0,0.0001",
    "ChartQA_2,Highest bar?,42,hard,web,0.25,0.002,30,41,1,0.0002",
    "MathVista_3,Solve for x,B,hard,book,0,0.003,50,C,0.75,0.0003",
    "MMStar_4,What animal is this?,a small brown dog sitting on grass near a red fence,easy,web,1,0.004,9,dog,1,0.0004",
    "SEEDBench2_Plus_5,Read the sign,EXIT,easy,web,1,0.005,7,EXIT,0,0.0005",
]


def _mmr(tmp_path: Path, rows=MMR_ROWS, header=MMR_HEADER, images=True) -> tuple[Path, Path, dict]:
    csv = tmp_path / "MMR_Bench.csv"
    csv.write_bytes((header + "\n".join(rows) + "\n").encode() if isinstance(rows[0], str)
                    else header.encode() + b"\n".join(rows) + b"\n")
    root = tmp_path / "data"
    blobs = {}
    if images:
        for ds, n, folder in [("OCRBench", 1, "OCRBench"), ("ChartQA", 2, "ChartQA"), ("MathVista", 3, "MathVista"),
                              ("MMStar", 4, "MMStar"), ("SEEDBench2_Plus", 5, "SEEDBenchv2Plus")]:
            (root / folder).mkdir(parents=True, exist_ok=True)
            data = image_bytes("JPEG", n)
            (root / folder / f"{n}.jpg").write_bytes(data)
            blobs[f"{ds}_{n}"] = data
    return csv, root, blobs


def test_mmr_bench_imports_and_conforms(tmp_path):
    csv, root, blobs = _mmr(tmp_path)
    res = import_mmr_bench(csv, images=root, side_features=["difficulty"], run_id="r1", collected_at=AT)
    assert_conforms(res.queries, QUERIES)
    assert_conforms(res.traces, TRACES)
    assert_conforms(res.models, MODELS)
    assert res.skipped.height == 0 and not res.text_only
    q = res.queries.sort("dataset")
    assert res.queries["query_id"].to_list() == [query_id_for("mmr-bench", f"{r.split(',')[0]}") for r in MMR_ROWS]
    assert query_id_for("mmr-bench", "OCRBench_1") == hashlib.sha1(b"mmr-bench:OCRBench_1").hexdigest()[:16]
    groups = dict(zip(q["dataset"], q["task_group"], strict=True))
    assert groups == {"OCRBench": "ocr", "ChartQA": "chart", "MathVista": "math", "MMStar": "general",
                      "SEEDBench2_Plus": "ocr"}
    kinds = dict(zip(res.queries["answer"], res.queries["answer_kind"], strict=True))
    assert kinds["42"] == "numeric" and kinds["B"] == "choice" and kinds["STOP"] == "exact"
    assert kinds["a small brown dog sitting on grass near a red fence"] == "text"
    for idx, path, sha in res.queries.select(
            pl.col("source_meta").str.json_path_match("$.source_id"), "image_path", "image_sha256").iter_rows():
        assert sha == sha256_hex(blobs[idx]) and path == f"{sha}.jpg"
        assert res.image_files[path].read_bytes() == blobs[idx]
    meta = json.loads(res.queries["source_meta"][0])
    assert meta == {"source_id": "OCRBench_1", "columns": {"difficulty": "easy", "source": "web"},
                    "side_features": ["difficulty"]}
    assert (res.queries["official_split"] == "").all()
    # traces: one per query x model, values as in the CSV
    assert res.traces.height == 10
    t = res.traces.join(res.queries.select("query_id", "dataset"), on="query_id")
    a_chart = t.filter((pl.col("model_id") == "A") & (pl.col("dataset") == "ChartQA")).row(0, named=True)
    assert a_chart["quality"] == 0.25 and a_chart["correct"] is False and a_chart["cost_usd"] == 0.002
    assert a_chart["completion_tokens"] == 30 and a_chart["prediction"] == "41"
    b_math = t.filter((pl.col("model_id") == "B") & (pl.col("dataset") == "MathVista")).row(0, named=True)
    assert b_math["quality"] == 0.75 and b_math["correct"] is True and b_math["completion_tokens"] is None
    assert set(res.traces["status"]) == {"ok"} and set(res.traces["attempt"]) == {1}
    assert set(res.traces["run_id"]) == {"r1"} and set(res.traces["collected_at"]) == {AT}
    m = res.models.sort("model_id")
    assert m["model_id"].to_list() == ["A", "B"] and set(m["backend"]) == {"import"}
    assert not m["simulated"].any() and all(math.isnan(v) for v in m["price_in_per_mtok"])
    # images land in the warehouse dir under their content hash
    dest = tmp_path / "wh_images"
    assert res.copy_images(dest) == 5
    assert sorted(p.name for p in dest.iterdir()) == sorted(res.image_files)
    md = res.report_markdown()
    assert "| 5 | 2 | 10 | 0 | no |" in md and "task groups:" in md


def test_mmr_text_only_and_missing_image_skipped(tmp_path):
    csv, root, _ = _mmr(tmp_path)
    res = import_mmr_bench(csv, collected_at=AT)  # no image root at all -> text-only
    assert res.text_only and (res.queries["image_path"] == "").all() and (res.queries["image_sha256"] == "").all()
    assert res.queries.height == 5 and res.skipped.height == 0
    (root / "MathVista" / "3.jpg").unlink()
    res = import_mmr_bench(csv, images=root, collected_at=AT)
    assert res.queries.height == 4 and res.traces.height == 8 and not res.text_only
    assert skips(res) == {("MMR_Bench.csv", 3, "dataset_idx")}
    assert "image file not found" in res.skipped["reason"][0] and "MathVista" in res.skipped["reason"][0]
    with pytest.raises(ImportValidationError, match=r"MMR_Bench.csv: row 3, column 'dataset_idx'"):
        import_mmr_bench(csv, images=root, on_error="fail", collected_at=AT)


def test_mmr_model_without_cost_column_is_named(tmp_path):
    header = "dataset_idx,question,answer,A_correct,A_cost,B_correct\n"
    csv, _, _ = _mmr(tmp_path, rows=["OCRBench_1,q,a,1,0.1,0"], header=header, images=False)
    with pytest.raises(ImportValidationError, match=r"column 'B_correct'.*no 'B_cost'"):
        import_mmr_bench(csv)
    header = "dataset_idx,answer,A_correct,A_cost\n"
    csv, _, _ = _mmr(tmp_path, rows=["OCRBench_1,a,1,0.1"], header=header, images=False)
    with pytest.raises(ImportValidationError, match=r"column 'question': required column missing"):
        import_mmr_bench(csv)


def test_mmr_row_and_cell_errors_name_file_row_column(tmp_path):
    rows = [
        b"OCRBench_1,q1,a,e,w,1,-0.5,1,x,1,0.1",  # negative cost of A
        b"ChartQA_2,q2,a,e,w,1,abc,1,x,1,0.1",  # non-numeric cost of A
        b"MathVista_3,q3,a,e,w,1.5,0.1,1,x,1,0.1",  # quality outside [0, 1]
        b"MMStar_4,   ,a,e,w,1,0.1,1,x,1,0.1",  # empty question -> whole row
        b"MMStar_5,caf\xe9?,a,e,w,1,0.1,1,x,1,0.1",  # latin-1 byte -> not UTF-8
        b"MMStar_6,fine,a,e,w,1,0.1,1,x,0,0.2",
    ]
    csv, _, _ = _mmr(tmp_path, rows=rows, images=False)
    res = import_mmr_bench(csv, collected_at=AT)
    assert skips(res) == {("MMR_Bench.csv", 1, "A_cost"), ("MMR_Bench.csv", 2, "A_cost"),
                           ("MMR_Bench.csv", 3, "A_correct"), ("MMR_Bench.csv", 4, "question"),
                           ("MMR_Bench.csv", 5, "question")}
    reasons = dict(((r, c), why) for _, r, c, why in res.skipped.iter_rows())
    assert "negative cost" in reasons[(1, "A_cost")] and "non-numeric cost 'abc'" in reasons[(2, "A_cost")]
    assert "outside [0, 1]" in reasons[(3, "A_correct")] and "empty question" in reasons[(4, "question")]
    assert "not valid UTF-8" in reasons[(5, "question")] and "0xe9" in reasons[(5, "question")]
    # bad cells drop one trace, bad rows drop the query: 4 queries kept, 4*2 - 3 traces
    assert res.queries.height == 4 and res.traces.height == 5
    assert res.traces.filter(pl.col("model_id") == "B").height == 4
    with pytest.raises(ImportValidationError) as exc:
        import_mmr_bench(csv, on_error="fail", collected_at=AT)
    msg = str(exc.value)
    assert "5 problem(s)" in msg and "MMR_Bench.csv: row 2, column 'A_cost': non-numeric cost 'abc'" in msg
    assert len(exc.value.issues) == 5
    md = res.report_markdown()
    assert "## Skipped (5)" in md and "| MMR_Bench.csv | 2 | A_cost | non-numeric cost 'abc' |" in md


def test_duplicate_ids_are_always_an_error_naming_both_rows(tmp_path):
    rows = ["OCRBench_1,q,a,e,w,1,0.1,1,x,1,0.1", "OCRBench_2,q,a,e,w,1,0.1,1,x,1,0.1",
            "OCRBench_1,q,a,e,w,1,0.1,1,x,1,0.1"]
    csv, _, _ = _mmr(tmp_path, rows=rows, images=False)
    with pytest.raises(ImportValidationError, match=r"row 3, column 'dataset_idx': duplicate id 'OCRBench_1': "
                                                    r"also at row 1"):
        import_mmr_bench(csv, on_error="skip")
    lines = [json.dumps({"id": "x", "question": "q", "answer": "a"}), json.dumps({"id": "y", "question": "q",
                                                                                   "answer": "a"}),
             json.dumps({"id": "x", "question": "q2", "answer": "b"})]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportValidationError, match=r"q.jsonl: row 3, column 'id': duplicate id 'x': also at row 1"):
        import_custom_queries(tmp_path / "q.jsonl")


def test_policy_value_is_checked(tmp_path):
    csv, _, _ = _mmr(tmp_path, images=False)
    with pytest.raises(ValueError, match="on_error"):
        import_mmr_bench(csv, on_error="ignore")
    with pytest.raises(ValueError, match="task_groups"):
        import_mmr_bench(csv, task_groups={"MMStar": "vision"})
    res = import_mmr_bench(csv, task_groups={"MMStar": "chart"}, collected_at=AT)
    assert res.queries.filter(pl.col("dataset") == "MMStar")["task_group"].to_list() == ["chart"]
