"""Own query set importer (JSONL + image folder): images by sha, path escapes refused, UTF-8 errors named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from collectors.importing import import_custom_queries, infer_answer_kind, query_id_for, task_group_for
from collectors.importing.validation import ImportValidationError
from tests.collectors.importing.support import JPEG_B, PNG_A, assert_conforms, sha256_hex, skips
from warehouse.schemas import QUERIES


def test_jsonl_non_utf8_line_is_named(tmp_path):
    good = json.dumps({"id": "a", "question": "ok?", "answer": "x"}).encode()
    bad = b'{"id": "b", "question": "caf\xe9?", "answer": "y"}'
    (tmp_path / "q.jsonl").write_bytes(good + b"\n" + bad + b"\n" + b"{not json}\n")
    res = import_custom_queries(tmp_path / "q.jsonl")
    assert skips(res) == {("q.jsonl", 2, "question"), ("q.jsonl", 3, None)}
    assert res.queries.height == 1 and res.text_only
    with pytest.raises(ImportValidationError, match=r"q.jsonl: row 2, column 'question': text is not valid UTF-8"):
        import_custom_queries(tmp_path / "q.jsonl", on_error="fail")


def _own(tmp_path: Path, rows: list[dict]) -> tuple[Path, Path]:
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True, exist_ok=True)
    (imgs / "a.png").write_bytes(PNG_A)
    (imgs / "sub" / "b.JPG").write_bytes(JPEG_B)
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, imgs


def test_custom_queries_copy_images_by_sha(tmp_path):
    rows = [{"id": "1", "image": "a.png", "question": "Read?", "answer": "HI", "answer_kind": "exact",
             "dataset": "signs", "task_group": "ocr", "lighting": "dim"},
            {"id": 2, "image": "sub/b.JPG", "question": "Bar?", "answer": "3", "dataset": "ChartQA"}]
    path, imgs = _own(tmp_path, rows)
    wh = tmp_path / "warehouse" / "images"
    res = import_custom_queries(path, imgs, copy_to=wh)
    assert_conforms(res.queries, QUERIES)
    assert res.traces.height == 0 and res.models.height == 0 and not res.text_only
    q = res.queries
    assert q["query_id"].to_list() == [query_id_for("custom", "1"), query_id_for("custom", "2")]
    assert q["image_sha256"].to_list() == [sha256_hex(PNG_A), sha256_hex(JPEG_B)]
    sha_a, sha_b = sha256_hex(PNG_A), sha256_hex(JPEG_B)
    assert q["image_path"].to_list() == [f"{sha_a}.png", f"{sha_b}.jpg"]
    assert sorted(p.name for p in wh.iterdir()) == sorted(q["image_path"])
    assert (wh / q["image_path"][1]).read_bytes() == JPEG_B
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
    assert res.queries.height == 2 and skips(res) == {("own.jsonl", 2, "image")}
    why = res.skipped["reason"][0]
    assert ("not found" in why) if kind == "missing" else ("refused" in why)
    assert all(p != outside for p in res.image_files.values())
    with pytest.raises(ImportValidationError, match=r"own.jsonl: row 2, column 'image'"):
        import_custom_queries(path, imgs, copy_to=tmp_path / "wh", on_error="fail")
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
