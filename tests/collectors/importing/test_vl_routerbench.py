"""VL-RouterBench folder importer: matrices, official splits, aligned embeddings, cost bounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from collectors.importing import import_vl_routerbench
from collectors.importing.validation import ImportValidationError
from tests.collectors.importing.support import AT, assert_conforms, skips
from warehouse.schemas import MODELS, QUERIES, TRACES


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
    assert_conforms(res.queries, QUERIES)
    assert_conforms(res.traces, TRACES)
    assert_conforms(res.models, MODELS)
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
    assert skips(res) == {("Y.npz", 3, "vlm-1"), ("C.npy", 5, "vlm-0"), ("C.npy", 8, "vlm-2"),
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
