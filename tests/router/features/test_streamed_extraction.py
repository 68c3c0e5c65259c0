"""Extraction fills its dense arrays from the cache shard by shard; the result equals the in-memory build it
replaced (every item read back at once, then copied row by row), on a fresh run, a cached run and a cache
whose items lie in many small shards, with shared images, repeated questions, text-only rows and an
unreadable image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from router.features.cache import FeatureCache, text_key
from router.features.config import FeatureConfig
from router.features.encoders import load_encoders
from router.features.extract import extract_features
from router.features.feature_set import FeatureSet


@pytest.fixture(scope="module")
def encoders():
    return load_encoders(FeatureConfig(progress=False))


def _queries(root: Path) -> pl.DataFrame:
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(9):
        img = Image.new("RGB", (40 + 8 * i, 30 + 4 * i), (255, 255 - 20 * i, 255))
        ImageDraw.Draw(img).rectangle([2, 2, 10 + 3 * i, 12], fill=(20 * i, 0, 0))
        img.save(root / "img" / f"{i}.png")
        rows.append((f"q{i}", f"How many bars are in chart {i % 5}?" + " really" * i, f"{i}.png"))
    rows += [("shared", "How many bars are in chart 1? really", "3.png"),  # same image and question as q3-ish
             ("text1", "What is 2 + 2?", ""), ("text2", "What is 2 + 2?", ""),
             ("broken", "Read the sign.", "missing.png")]
    return pl.DataFrame({
        "query_id": [r[0] for r in rows], "question": [r[1] for r in rows], "image_path": [r[2] for r in rows],
        "image_sha256": [""] * len(rows), "task_group": ["chart"] * len(rows),
        "dataset": ["a" if i % 2 else "b" for i in range(len(rows))]})


def _in_memory(fs: FeatureSet, queries: pl.DataFrame, cache_dir: Path, images: Path, enc) -> dict[str, np.ndarray]:
    """The dense arrays as extraction built them before: every cached item in a dict, then row by row."""
    from router.features.extract import _image_key

    rows = {r["query_id"]: r for r in queries.to_dicts()}
    tcache = FeatureCache(cache_dir, enc.text.encoder_id, enc.text.version)
    keys = [text_key(rows[q]["question"]) for q in fs.query_ids]
    feats = tcache.get_many(keys)
    tq = max(feats[k]["tokens"].shape[0] for k in keys)
    out = {"txt_tokens": np.zeros((fs.n, tq, 384), np.float16), "txt_mask": np.zeros((fs.n, tq), bool),
           "txt_pooled": np.zeros((fs.n, 384), np.float16), "img_tokens": np.zeros((fs.n, 49, 320), np.float16),
           "img_mask": np.zeros((fs.n, 49), bool), "img_pooled": np.zeros((fs.n, 1280), np.float16)}
    icache = FeatureCache(cache_dir, enc.image.encoder_id, enc.image.version)
    ikeys = {q: _image_key(rows[q], images) for q in fs.query_ids if rows[q]["image_path"]}
    ifeats = icache.get_many(ikeys.values())
    for i, (q, k) in enumerate(zip(fs.query_ids, keys, strict=True)):
        t = feats[k]["tokens"]
        out["txt_tokens"][i, : len(t)], out["txt_mask"][i, : len(t)] = t, True
        out["txt_pooled"][i] = feats[k]["pooled"]
        if q in ikeys:
            f = ifeats[ikeys[q]]
            out["img_tokens"][i], out["img_mask"][i], out["img_pooled"][i] = f["tokens"], True, f["pooled"]
    return out


def _assert_same(a: FeatureSet, b: FeatureSet) -> None:
    assert a.query_ids == b.query_ids and a.side_names == b.side_names and a.skipped == b.skipped
    for name in FeatureSet.ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.to_table().equals(b.to_table(), null_equal=True)


def test_streamed_arrays_equal_the_in_memory_build_for_any_shard_size(encoders, tmp_path):
    queries = _queries(tmp_path)
    images = tmp_path / "img"
    one_shard = extract_features(queries, images, tmp_path / "c1", FeatureConfig(progress=False), encoders)
    assert [s["query_id"] for s in one_shard.skipped] == ["broken"] and one_shard.n == queries.height - 1
    assert one_shard.has_image.tolist() == [True] * 10 + [False, False]
    want = _in_memory(one_shard, queries, tmp_path / "c1", images, encoders)
    for name, arr in want.items():
        np.testing.assert_array_equal(getattr(one_shard, name), arr, err_msg=name)
    assert one_shard.side[:, one_shard.side_names.index("image_width_log")][0] == pytest.approx(np.log1p(40))

    for enc in (encoders.image, encoders.text):  # the same items, re-stored two per shard
        whole = FeatureCache(tmp_path / "c1", enc.encoder_id, enc.version)
        items = whole.get_many(sorted(whole._index))
        resharded = FeatureCache(tmp_path / "c2", enc.encoder_id, enc.version)
        for i in range(0, len(items), 2):
            resharded.put_many({k: items[k] for k in sorted(items)[i: i + 2]})
    assert len(list((tmp_path / "c2").rglob("shard-*.safetensors"))) >= 10
    cfg = FeatureConfig(progress=False)
    _assert_same(one_shard, extract_features(queries, images, tmp_path / "c2", cfg, encoders))
    _assert_same(one_shard, extract_features(queries, images, tmp_path / "c1", cfg, encoders))  # cached re-run


def test_no_readable_rows_and_text_only(encoders, tmp_path):
    queries = _queries(tmp_path)
    broken = queries.filter(pl.col("query_id") == "broken")
    fs = extract_features(broken, tmp_path / "img", tmp_path / "c", FeatureConfig(progress=False), encoders)
    assert fs.n == 0 and fs.txt_tokens.shape == (0, 1, 1) and fs.img_tokens is None and len(fs.skipped) == 1
    text = queries.filter(pl.col("image_path") == "")
    fs = extract_features(text, tmp_path / "img", tmp_path / "c", FeatureConfig(progress=False), encoders)
    assert fs.n == 2 and fs.img_tokens is None and fs.image_encoder_id is None
    np.testing.assert_array_equal(fs.txt_tokens[0], fs.txt_tokens[1])  # one question, encoded once
