"""Import limits: images are checked from stat and their header before anything reads or copies them, and
table files are streamed and refused above a size limit, with messages naming the file, row and limit."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

import collectors.importing.common as common
from collectors.importing import import_custom_queries, import_mmr_bench
from collectors.importing.validation import ImportLimits, ImportValidationError
from tests.collectors.importing.support import PNG_A, image_bytes, skips

CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 12  # 23 bytes: a JPEG start, then nothing


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose IHDR claims width x height (the pixels are never there, nor allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00"))
            + _chunk(b"IEND", b""))


def _own(tmp_path: Path) -> tuple[Path, Path]:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "good.png").write_bytes(PNG_A)
    (imgs / "corrupt.jpg").write_bytes(CORRUPT_JPEG)
    (imgs / "bomb.png").write_bytes(_png_header(20000, 20000))
    with open(imgs / "huge.jpg", "wb") as f:
        f.truncate(2**30)  # sparse: 1 GiB on paper, no blocks on disk
    rows = [{"id": n, "image": f"{n}.{ext}", "question": "What is it?", "answer": "x"}
            for n, ext in (("good", "png"), ("corrupt", "jpg"), ("bomb", "png"), ("huge", "jpg"))]
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, imgs


def test_bad_images_are_skipped_with_file_row_column_and_reason(tmp_path, monkeypatch):
    assert len(CORRUPT_JPEG) == 23
    path, imgs = _own(tmp_path)
    opened: list[str] = []
    real_open = common.Image.open
    monkeypatch.setattr(common.Image, "open", lambda fp, *a, **k: opened.append(Path(fp).name) or real_open(fp))
    hashed: list[str] = []
    real_sha = common.sha256_file
    monkeypatch.setattr(common, "sha256_file", lambda p: hashed.append(Path(p).name) or real_sha(p))
    res = import_custom_queries(path, imgs, copy_to=tmp_path / "wh")
    assert res.queries.height == 1 and res.queries["query_id"].len() == 1
    assert skips(res) == {("own.jsonl", 2, "image"), ("own.jsonl", 3, "image"), ("own.jsonl", 4, "image")}
    why = {r: reason for _, r, _, reason in res.skipped.iter_rows()}
    assert "corrupt.jpg is corrupt or not an image" in why[2]
    assert "bomb.png" in why[3] and "pixels" in why[3] and "40,000,000" in why[3]
    assert "huge.jpg is 1.0 GiB, over the limit of 50.0 MiB" in why[4] and "not read" in why[4]
    # the 1 GiB file was never opened, hashed or copied; only the good image reached the warehouse
    assert "huge.jpg" not in opened and hashed == ["good.png"]
    assert [p.name.split(".")[1] for p in (tmp_path / "wh").iterdir()] == ["png"]
    with pytest.raises(ImportValidationError, match=r"own.jsonl: row 2, column 'image': image corrupt.jpg"):
        import_custom_queries(path, imgs, copy_to=tmp_path / "wh2", on_error="fail")
    assert not (tmp_path / "wh2").exists()


def test_limits_are_configurable(tmp_path):
    path, imgs = _own(tmp_path)
    res = import_custom_queries(path, imgs, limits=ImportLimits(max_image_pixels=10))  # the good one is 4x3
    assert res.queries.height == 0
    assert "4x3 = 12 pixels, over the limit of 10" in res.skipped.filter(res.skipped["row"] == 1)["reason"][0]


def test_mmr_bench_image_with_a_bomb_header_skips_the_row(tmp_path):
    (tmp_path / "data" / "OCRBench").mkdir(parents=True)
    (tmp_path / "data" / "OCRBench" / "1.jpg").write_bytes(image_bytes("JPEG", 1))
    (tmp_path / "data" / "OCRBench" / "2.png").write_bytes(_png_header(20000, 20000))
    csv = tmp_path / "mmr.csv"
    csv.write_text("dataset_idx,question,answer,A_correct,A_cost\nOCRBench_1,q?,a,1,0.1\nOCRBench_2,q?,a,1,0.1\n")
    res = import_mmr_bench(csv, images=tmp_path / "data")
    assert res.queries.height == 1 and skips(res) == {("mmr.csv", 2, "dataset_idx")}
    assert "2.png" in res.skipped["reason"][0] and "pixels" in res.skipped["reason"][0]


def test_oversized_csv_is_refused_naming_file_and_limit_and_csvs_are_streamed(tmp_path, monkeypatch):
    csv = tmp_path / "big.csv"
    csv.write_text("dataset_idx,question,answer,A_correct,A_cost\n"
                   + "".join(f"OCRBench_{i},question {i}?,a,1,0.1\n" for i in range(20)))
    with pytest.raises(ImportValidationError, match=r"big.csv: file is .* over the import limit of 100 B "
                                                    r"\(ImportLimits.max_table_bytes\); not read"):
        import_mmr_bench(csv, limits=ImportLimits(max_table_bytes=100))
    # under the limit the CSV is read record by record, never as one bytes object
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} read whole"))
    assert import_mmr_bench(csv).queries.height == 20
