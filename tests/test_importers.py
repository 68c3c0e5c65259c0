"""Importers: each format conforms to the warehouse schemas, validation names file/row/column, policies."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from collectors.importing.formats import (
    export_long,
    import_benchmark,
    import_custom_queries,
    import_long,
    import_long_dir,
    import_mmr_bench,
    import_vl_routerbench,
    infer_answer_kind,
    query_id_for,
    task_group_for,
)
from collectors.importing.validation import ImportValidationError
from warehouse.schemas import MODELS, QUERIES, TRACES

AT = "2026-01-01T00:00:00+00:00"


def _assert_conforms(df: pl.DataFrame, schema: dict) -> None:
    assert df.columns[: len(schema)] == list(schema)
    for col, dtype in schema.items():
        assert df.schema[col] == dtype, col


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _skips(res) -> set[tuple[str, int | None, str | None]]:
    return {(Path(f).name, r, c) for f, r, c, _ in res.skipped.iter_rows()}


# ------------------------------------------------------------------------------------- MMR-Bench CSV

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
            data = f"image-bytes-{ds}-{n}".encode()
            (root / folder / f"{n}.jpg").write_bytes(data)
            blobs[f"{ds}_{n}"] = data
    return csv, root, blobs


def test_mmr_bench_imports_and_conforms(tmp_path):
    csv, root, blobs = _mmr(tmp_path)
    res = import_mmr_bench(csv, image_root=root, side_features=["difficulty"], run_id="r1", collected_at=AT)
    _assert_conforms(res.queries, QUERIES)
    _assert_conforms(res.traces, TRACES)
    _assert_conforms(res.models, MODELS)
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
        assert sha == _sha(blobs[idx]) and path == f"{sha}.jpg"
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
    res = import_mmr_bench(csv, image_root=root, collected_at=AT)
    assert res.queries.height == 4 and res.traces.height == 8 and not res.text_only
    assert _skips(res) == {("MMR_Bench.csv", 3, "dataset_idx")}
    assert "image file not found" in res.skipped["reason"][0] and "MathVista" in res.skipped["reason"][0]
    with pytest.raises(ImportValidationError, match=r"MMR_Bench.csv: row 3, column 'dataset_idx'"):
        import_mmr_bench(csv, image_root=root, on_error="fail", collected_at=AT)


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
    assert _skips(res) == {("MMR_Bench.csv", 1, "A_cost"), ("MMR_Bench.csv", 2, "A_cost"),
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


# -------------------------------------------------------------------------------- VL-RouterBench


def _emb(i: int, d: int) -> list[float]:
    return [float(i) + j / 10 for j in range(d)]


def _vlrb(tmp_path: Path, n: int = 12, k: int = 3, *, index: str = "models.json", bounds=None,
          y=None, c=None, emb_skip: tuple[int, ...] = ()) -> Path:
    d = tmp_path / "vlrb"
    (d / "SPLITS").mkdir(parents=True)
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, (n, k)).astype(np.int8) if y is None else y
    c = rng.uniform(1e-4, 1e-2, (n, k)).astype(np.float32) if c is None else c
    np.savez(d / "Y.npz", Y=y)
    np.save(d / "C.npy", c)
    ids = [f"s{i:03d}" for i in range(n)]
    pl.DataFrame({
        "sample_id": ids,
        "dataset": ["ChartQA", "MMStar", "DocVQA"] * (n // 3),
        "split": ["train"] * n,  # SPLITS/ disagrees for dev/test rows and must win
        "task": ["t"] * n,
        "question": [f"question {i}" for i in range(n)],
        "answer": ["A"] * n,
        "width": list(range(n)),
    }).write_parquet(d / "meta.parquet")
    names = [f"vlm-{j}" for j in range(k)]
    if index == "models.json":
        (d / "models.json").write_text(json.dumps(names))
    else:
        (d / "model_index.json").write_text(json.dumps({m: j for j, m in reversed(list(enumerate(names)))}))
    for split, part in (("train", range(0, n // 2)), ("dev", range(n // 2, 3 * n // 4)), ("test", range(3 * n // 4, n))):
        (d / "SPLITS" / f"{split}.jsonl").write_text("".join(json.dumps({"sample_id": ids[i]}) + "\n" for i in part))
    if bounds is not None:
        (d / "cost_bounds.json").write_text(json.dumps(bounds))
    order = [i for i in np.random.default_rng(1).permutation(n).tolist() if i not in emb_skip]  # shuffled
    (d / "EMBEDDINGS" / "text").mkdir(parents=True)
    (d / "EMBEDDINGS" / "vision").mkdir(parents=True)
    pl.DataFrame({"sample_id": [ids[i] for i in order], "embedding": [_emb(i, 4) for i in order]}).write_parquet(
        d / "EMBEDDINGS" / "text" / "minilm.parquet")
    pl.DataFrame({"sample_id": [ids[i] for i in order], **{f"d{j}": [_emb(i, 3)[j] for i in order]
                                                         for j in range(3)}}).write_parquet(
        d / "EMBEDDINGS" / "vision" / "effnet.parquet")
    return d


def test_vl_routerbench_imports_splits_and_aligned_embeddings(tmp_path):
    bounds = {"ChartQA": {"cmin": 1e-4, "cmax": 1e-2}, "MMStar": {"cmin": 2e-4, "cmax": 2e-2}}
    d = _vlrb(tmp_path, index="model_index.json", bounds=bounds)
    res = import_vl_routerbench(d, run_id="vl", collected_at=AT)
    _assert_conforms(res.queries, QUERIES)
    _assert_conforms(res.traces, TRACES)
    _assert_conforms(res.models, MODELS)
    assert res.text_only and res.skipped.height == 0 and res.traces.height == 36
    assert res.models["model_id"].to_list() == ["vlm-0", "vlm-1", "vlm-2"]
    y = np.load(d / "Y.npz")["Y"]
    c = np.load(d / "C.npy")
    sid = res.queries.select("query_id", pl.col("source_meta").str.json_path_match("$.source_id").alias("sid"))
    t = res.traces.join(sid, on="query_id")
    for qid_sid, model, qual, cost, corr in t.select("sid", "model_id", "quality", "cost_usd", "correct").iter_rows():
        i, j = int(qid_sid[1:]), int(model[-1])
        assert qual == y[i, j] and cost == pytest.approx(float(c[i, j])) and corr == bool(y[i, j])
    # official split from SPLITS/, dev -> val
    splits = dict(zip(sid["sid"], res.queries["official_split"], strict=True))
    assert [splits[f"s{i:03d}"] for i in (0, 5, 6, 8, 9, 11)] == ["train", "train", "val", "val", "test", "test"]
    assert res.official_splits.height == 12 and set(res.official_splits["split"]) == {"train", "val", "test"}
    assert any("disagrees with SPLITS" in n for n in res.notes)
    # embeddings stored shuffled come back aligned with the queries rows
    assert set(res.embeddings) == {"text:minilm", "vision:effnet"}
    for row, s in enumerate(sid["sid"]):
        i = int(s[1:])
        np.testing.assert_allclose(res.embeddings["text:minilm"][row], _emb(i, 4), rtol=1e-6)
        np.testing.assert_allclose(res.embeddings["vision:effnet"][row], _emb(i, 3), rtol=1e-6)
    assert res.cost_bounds == {k: {"cmin": v["cmin"], "cmax": v["cmax"]} for k, v in bounds.items()}
    assert json.loads(res.queries["source_meta"][0]) == {"source_id": "s000", "columns": {"width": 0}}
    tg = dict(zip(res.queries["dataset"], res.queries["task_group"], strict=False))
    assert tg == {"ChartQA": "chart", "MMStar": "general", "DocVQA": "ocr"}


def test_vl_routerbench_bad_cells_and_missing_embedding(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (12, 3)).astype(np.int8)
    y[2, 1] = 2  # not a quality
    c = rng.uniform(1e-4, 1e-2, (12, 3)).astype(np.float32)
    c[4, 0] = -1.0
    c[7, 2] = np.nan
    d = _vlrb(tmp_path, y=y, c=c, emb_skip=(5,), bounds={"cmin": 1e-4, "cmax": 1e-2})
    res = import_vl_routerbench(d, collected_at=AT)
    assert _skips(res) == {("Y.npz", 3, "vlm-1"), ("C.npy", 5, "vlm-0"), ("C.npy", 8, "vlm-2"),
                           ("meta.parquet", 6, "sample_id")}
    reasons = " | ".join(res.skipped["reason"])
    assert "quality outside [0, 1]: 2.0 (sample_id='s002')" in reasons and "negative cost" in reasons
    assert "non-numeric cost" in reasons and "no usable embedding in EMBEDDINGS/text/minilm.parquet" in reasons
    assert res.queries.height == 11 and res.traces.height == 11 * 3 - 3
    assert res.cost_bounds == {"*": {"cmin": 1e-4, "cmax": 1e-2}}
    sids = res.queries["source_meta"].str.json_path_match("$.source_id").to_list()
    assert "s005" not in sids
    for row, s in enumerate(sids):
        np.testing.assert_allclose(res.embeddings["text:minilm"][row], _emb(int(s[1:]), 4), rtol=1e-6)
    with pytest.raises(ImportValidationError) as exc:
        import_vl_routerbench(d, on_error="fail", collected_at=AT)
    assert len(exc.value.issues) == 5  # the embedding file gap is reported for both embedding files
    assert "Y.npz: row 3, column 'vlm-1'" in str(exc.value)


def test_vl_routerbench_structural_errors(tmp_path):
    d = _vlrb(tmp_path, bounds={"cmin": 0.5, "cmax": 0.1})
    with pytest.raises(ImportValidationError, match=r"cost_bounds.json: column '\*': need 0 < cmin < cmax"):
        import_vl_routerbench(d)
    (d / "cost_bounds.json").write_text(json.dumps({"NoSuchSet": {"cmin": 1e-4, "cmax": 1e-2}}))
    with pytest.raises(ImportValidationError, match=r"column 'NoSuchSet': dataset 'NoSuchSet' does not occur"):
        import_vl_routerbench(d)
    (d / "cost_bounds.json").unlink()
    (d / "models.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ImportValidationError, match=r"Y.npz: Y has 3 columns but the model index names 2"):
        import_vl_routerbench(d)
    (d / "models.json").write_text(json.dumps(["a", "b", "c"]))
    (d / "SPLITS" / "test.jsonl").write_text(json.dumps({"sample_id": "s000"}) + "\n")
    with pytest.raises(ImportValidationError, match=r"sample_id 's000' listed more than once: test.jsonl row 1, "
                                                    r"train.jsonl row 1"):
        import_vl_routerbench(d)


# ---------------------------------------------------------------------------------- long format


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
    _assert_conforms(res.queries, QUERIES)
    _assert_conforms(res.traces, TRACES)
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
    assert _skips(res) == {("traces.csv", 2, "quality"), ("traces.csv", 3, "cost_usd"),
                           ("traces.csv", 4, "query_id"), ("traces.csv", 5, "query_id"),
                           ("queries.jsonl", 3, "question")}
    assert res.traces.height == 2 and res.queries.height == 2
    timeout = res.traces.filter(pl.col("status") == "timeout").row(0, named=True)
    assert timeout["quality"] is None and timeout["correct"] is None
    with pytest.raises(ImportValidationError, match=r"traces.csv: row 4, column 'query_id': query_id 'q9' is not"):
        import_long(tmp_path / "traces.csv", tmp_path / "queries.jsonl", on_error="fail")


def test_jsonl_non_utf8_line_is_named(tmp_path):
    good = json.dumps({"id": "a", "question": "ok?", "answer": "x"}).encode()
    bad = b'{"id": "b", "question": "caf\xe9?", "answer": "y"}'
    (tmp_path / "q.jsonl").write_bytes(good + b"\n" + bad + b"\n" + b"{not json}\n")
    res = import_custom_queries(tmp_path / "q.jsonl")
    assert _skips(res) == {("q.jsonl", 2, "question"), ("q.jsonl", 3, None)}
    assert res.queries.height == 1 and res.text_only
    with pytest.raises(ImportValidationError, match=r"q.jsonl: row 2, column 'question': text is not valid UTF-8"):
        import_custom_queries(tmp_path / "q.jsonl", on_error="fail")


# ----------------------------------------------------------------------------------- own queries


def _own(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True, exist_ok=True)
    (imgs / "a.png").write_bytes(b"\x89PNG-a")
    (imgs / "sub" / "b.JPG").write_bytes(b"jpeg-b")
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, imgs


def test_custom_queries_copy_images_by_sha(tmp_path):
    rows = [{"id": "1", "image": "a.png", "question": "Read?", "answer": "HI", "answer_kind": "exact",
             "dataset": "signs", "task_group": "ocr", "lighting": "dim"},
            {"id": 2, "image": "sub/b.JPG", "question": "Bar?", "answer": "3", "dataset": "ChartQA"}]
    path, imgs = _own(tmp_path, rows)
    wh = tmp_path / "warehouse" / "images"
    res = import_custom_queries(path, imgs, images_dir=wh)
    _assert_conforms(res.queries, QUERIES)
    assert res.traces.height == 0 and res.models.height == 0 and not res.text_only
    q = res.queries
    assert q["query_id"].to_list() == [query_id_for("custom", "1"), query_id_for("custom", "2")]
    assert q["image_sha256"].to_list() == [_sha(b"\x89PNG-a"), _sha(b"jpeg-b")]
    sha_a, sha_b = _sha(b"\x89PNG-a"), _sha(b"jpeg-b")
    assert q["image_path"].to_list() == [f"{sha_a}.png", f"{sha_b}.jpg"]
    assert sorted(p.name for p in wh.iterdir()) == sorted(q["image_path"])
    assert (wh / q["image_path"][1]).read_bytes() == b"jpeg-b"
    assert q["task_group"].to_list() == ["ocr", "chart"] and q["answer_kind"].to_list() == ["exact", "numeric"]
    assert json.loads(q["source_meta"][0]) == {"source_id": "1", "columns": {"lighting": "dim"}}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink_out", "missing"])
def test_image_path_escape_is_refused(tmp_path, kind):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    path, imgs = _own(tmp_path, [{"id": "ok", "image": "a.png", "question": "q", "answer": "a"}])
    rel = {"absolute": str(outside), "dotdot": "../secret.png", "symlink_out": "link.png",
           "missing": "nope.png"}[kind]
    if kind == "symlink_out":
        os.symlink(outside, imgs / "link.png")
    (imgs / "inside_link.png").symlink_to(imgs / "a.png")  # a link that stays inside is fine
    with path.open("a") as fh:
        fh.write(json.dumps({"id": "bad", "image": rel, "question": "q", "answer": "a"}) + "\n")
        fh.write(json.dumps({"id": "ok2", "image": "inside_link.png", "question": "q", "answer": "a"}) + "\n")
    res = import_custom_queries(path, imgs)
    assert res.queries.height == 2 and _skips(res) == {("own.jsonl", 2, "image")}
    why = res.skipped["reason"][0]
    assert ("not found" in why) if kind == "missing" else ("refused" in why)
    assert all(p != outside for p in res.image_files.values())
    with pytest.raises(ImportValidationError, match=r"own.jsonl: row 2, column 'image'"):
        import_custom_queries(path, imgs, images_dir=tmp_path / "wh", on_error="fail")
    assert not (tmp_path / "wh").exists()  # refused before anything was written


def test_custom_text_only_and_helpers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "1", "question": "Capital of France?", "answer": "Paris"}) + "\n")
    res = import_custom_queries(path)
    assert res.text_only and res.queries["image_path"].to_list() == [""]
    assert res.queries["task_group"].to_list() == ["general"]
    assert task_group_for("SEED-Bench v2 Plus") == "ocr" and task_group_for("MathVista_MINI") == "math"
    assert task_group_for("AI2D") == "chart" and task_group_for("MMMU") == "general"
    assert infer_answer_kind("(C)") == "choice" and infer_answer_kind("-3.5%") == "numeric"
