"""The ``features`` table built in Arrow equals the one the per-row Python build gave (same values, dtypes,
nulls), with images on some rows, none, or no rows at all."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from router.features.feature_set import FeatureSet


def _feature_set(n: int, with_images: bool, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    has = rng.random(n) < 0.7
    img_mask = np.repeat(has[:, None], 5, axis=1) if with_images else None
    txt_mask = np.arange(7)[None, :] < rng.integers(1, 8, size=n)[:, None]
    return FeatureSet(
        query_ids=[f"q{i}" for i in range(n)],
        img_tokens=(rng.standard_normal((n, 5, 6)) * has[:, None, None]).astype(np.float16) if with_images else None,
        img_mask=img_mask,
        txt_tokens=rng.standard_normal((n, 7, 4)).astype(np.float16), txt_mask=txt_mask,
        img_pooled=(rng.standard_normal((n, 9)) * has[:, None]).astype(np.float16) if with_images else None,
        txt_pooled=rng.standard_normal((n, 3)).astype(np.float16),
        side=rng.standard_normal((n, 2)).astype(np.float32), side_names=["a", "b"],
        image_encoder_id="img-enc" if with_images else None, text_encoder_id="txt-enc")


def _per_row_table(fs: FeatureSet) -> pl.DataFrame:
    """The table as it was built before: one Python list per vector."""
    n, has = fs.n, fs.has_image
    img_pooled = ([fs.img_pooled[i].astype(np.float32).tolist() if has[i] else None for i in range(n)]
                  if fs.img_pooled is not None else [None] * n)
    return pl.DataFrame({
        "query_id": fs.query_ids,
        "image_encoder": [fs.image_encoder_id if h else None for h in has],
        "text_encoder": [fs.text_encoder_id] * n,
        "img_token_dim": [int(fs.img_tokens.shape[2]) if fs.img_tokens is not None else 0] * n,
        "img_pooled_dim": [int(fs.img_pooled.shape[1]) if fs.img_pooled is not None else 0] * n,
        "txt_token_dim": [int(fs.txt_tokens.shape[2])] * n,
        "txt_pooled_dim": [int(fs.txt_pooled.shape[1])] * n,
        "n_img_tokens": (fs.img_mask.sum(1) if fs.img_mask is not None else np.zeros(n)).astype(np.int64),
        "n_txt_tokens": fs.txt_mask.sum(1).astype(np.int64),
        "bytes": fs.row_bytes(),
        "has_image": has,
        "img_pooled": img_pooled,
        "txt_pooled": [v.astype(np.float32).tolist() for v in fs.txt_pooled],
        "tokens_file": ["features.safetensors"] * n,
        "tokens_row": np.arange(n, dtype=np.int64),
    }, schema_overrides={"img_pooled": pl.List(pl.Float32), "txt_pooled": pl.List(pl.Float32),
                         "image_encoder": pl.String})


@pytest.mark.parametrize(("n", "with_images"), [(40, True), (40, False), (1, True), (0, True), (0, False)])
def test_to_table_equals_the_per_row_build(n, with_images):
    fs = _feature_set(n, with_images)
    got, want = fs.to_table(), _per_row_table(fs)
    assert got.schema == want.schema
    assert got.equals(want, null_equal=True)
    if with_images and n > 1:
        assert got["img_pooled"].null_count() == int((~fs.has_image).sum()) > 0


def test_subset_of_every_row_shares_the_arrays_and_equals_the_copy():
    fs = _feature_set(30, True)
    same = fs.subset(list(fs.query_ids))
    order = np.arange(30)
    for name in FeatureSet.ARRAYS:
        assert getattr(same, name) is getattr(fs, name)  # no copy when nothing is selected away
        np.testing.assert_array_equal(getattr(same, name), getattr(fs, name)[order])
    assert same.query_ids == fs.query_ids and same.query_ids is not fs.query_ids
    picked = fs.subset(["q5", "q1", "q29"])
    for name in FeatureSet.ARRAYS:
        np.testing.assert_array_equal(getattr(picked, name), getattr(fs, name)[[5, 1, 29]])
    with pytest.raises(KeyError, match="q99"):
        fs.subset(["q1", "q99"])


def test_load_reads_back_the_saved_arrays(tmp_path):
    fs = _feature_set(25, True)
    back = FeatureSet.load(fs.save(tmp_path / "fs"))
    for name in FeatureSet.ARRAYS:
        got, want = getattr(back, name), getattr(fs, name)
        assert got.dtype == want.dtype and got.flags.writeable, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert back.to_table().equals(fs.to_table(), null_equal=True)
