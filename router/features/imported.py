"""Use a benchmark's precomputed embeddings (e.g. VL-RouterBench ``EMBEDDINGS/``) as router features.

An imported embedding replaces our encoder's output for its modality: the pooled vector is the embedding
and the token sequence is that one vector (a length-1 sequence the capsules attend over). Side features
and any modality without an imported embedding keep the frozen-encoder features.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from router.features.feature_set import FeatureSet


def with_imported_embeddings(fs: FeatureSet, query_ids: list[str], embeddings: dict[str, np.ndarray]) -> FeatureSet:
    """``fs`` with its text / vision features replaced by ``embeddings`` ("text:<enc>" / "vision:<enc>")."""
    pos = {q: i for i, q in enumerate(query_ids)}
    missing = [q for q in fs.query_ids if q not in pos]
    if missing:
        raise ValueError(f"imported embeddings have no row for query {missing[0]!r} ({len(missing)} missing)")
    rows = np.array([pos[q] for q in fs.query_ids], dtype=np.int64)
    out = fs
    for key, mat in sorted(embeddings.items()):
        kind, _, name = key.partition(":")
        emb = np.asarray(mat, dtype=np.float32)[rows]
        if not np.all(np.isfinite(emb)):
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise ValueError(f"imported embedding {key!r}: non-finite values for query {fs.query_ids[bad]!r}")
        tokens = emb[:, None, :].astype(np.float16)
        if kind == "text":
            out = replace(out, txt_pooled=emb.astype(np.float16), txt_tokens=tokens,
                          txt_mask=np.ones((fs.n, 1), dtype=bool), text_encoder_id=f"imported:{name}",
                          text_encoder_version="imported")
        elif kind == "vision":
            has = np.ones(fs.n, dtype=bool) if fs.img_mask is None else fs.img_mask.any(axis=1)
            has = has | np.abs(emb).sum(axis=1).astype(bool)
            out = replace(out, img_pooled=emb.astype(np.float16), img_tokens=tokens,
                          img_mask=has[:, None].copy(), image_encoder_id=f"imported:{name}",
                          image_encoder_version="imported")
        else:
            raise ValueError(f"imported embedding key {key!r}: expected 'text:<encoder>' or 'vision:<encoder>'")
    return out


def declared_side_features(queries: pl.DataFrame) -> tuple[list[str], np.ndarray] | None:
    """One-hot columns for the categorical side features an import declared (``source_meta``).

    Importers list them in ``source_meta["side_features"]`` with values in ``source_meta["columns"]``. The
    vocabulary is every value seen (features carry no outcome, so this is not a leak); missing values are
    all-zero. Returns (column names "meta:<name>=<value>", [N, S'] float32) or None when none is declared.
    """
    import json

    metas = [json.loads(m) if m else {} for m in queries["source_meta"].fill_null("").to_list()]
    names = sorted({n for m in metas for n in (m.get("side_features") or [])})
    if not names:
        return None
    values = {n: sorted({str(m.get("columns", {}).get(n)) for m in metas
                         if m.get("columns", {}).get(n) is not None}) for n in names}
    cols = [(n, v) for n in names for v in values[n]]
    pos = {c: i for i, c in enumerate(cols)}
    out = np.zeros((len(metas), len(cols)), dtype=np.float32)
    for i, m in enumerate(metas):
        for n in names:
            v = m.get("columns", {}).get(n)
            if v is not None:
                out[i, pos[(n, str(v))]] = 1.0
    return [f"meta:{n}={v}" for n, v in cols], out


def with_side_features(fs: FeatureSet, query_ids: list[str], names: list[str], values: np.ndarray) -> FeatureSet:
    """``fs`` with extra side-feature columns appended (rows aligned by query id)."""
    pos = {q: i for i, q in enumerate(query_ids)}
    rows = np.array([pos[q] for q in fs.query_ids], dtype=np.int64)
    return replace(fs, side=np.concatenate([fs.side, values[rows]], axis=1).astype(np.float32),
                   side_names=[*fs.side_names, *names])
