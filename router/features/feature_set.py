"""The dense per-query feature arrays routers read, saved as one safetensors file plus JSON metadata.

Why: extraction, imported embeddings, routing-data building and the routing service all exchange this one
container; ``to_table`` gives the warehouse ``features`` table (token arrays stay in the safetensors file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
from safetensors.numpy import load_file, save_file

from router.features.config import FEATURE_CODE_VERSION


@dataclass
class FeatureSet:
    """Dense per-query arrays in the order of ``query_ids`` (queries whose image failed are in ``skipped``)."""

    query_ids: list[str]
    img_tokens: np.ndarray | None  # [N,Ti,Di] float16; None when no query has an image
    img_mask: np.ndarray | None  # [N,Ti] bool; all False for a text-only query
    txt_tokens: np.ndarray  # [N,Tq,Dq] float16
    txt_mask: np.ndarray  # [N,Tq] bool
    img_pooled: np.ndarray | None  # [N,Di'] float16 (zeros where img_mask is all False)
    txt_pooled: np.ndarray  # [N,Dq'] float16
    side: np.ndarray  # [N,S] float32
    side_names: list[str]
    image_encoder_id: str | None
    text_encoder_id: str
    image_encoder_version: str | None = None
    text_encoder_version: str = ""
    skipped: list[dict] = field(default_factory=list)  # {"query_id", "image_path", "reason"}

    ARRAYS = ("img_tokens", "img_mask", "txt_tokens", "txt_mask", "img_pooled", "txt_pooled", "side")

    @property
    def n(self) -> int:
        return len(self.query_ids)

    @property
    def has_image(self) -> np.ndarray:
        if self.img_mask is None:
            return np.zeros(self.n, dtype=bool)
        return self.img_mask.any(axis=1)

    @property
    def bytes_per_query(self) -> float:
        """Bytes the dense arrays hold per query (what a router keeps in memory for one query)."""
        total = sum(getattr(self, a).nbytes for a in self.ARRAYS if getattr(self, a) is not None)
        return total / max(1, self.n)

    def row_bytes(self) -> np.ndarray:
        """Per-query bytes of the valid (unpadded) tokens, pooled vectors and side features."""
        b = self.txt_mask.sum(1) * self.txt_tokens.shape[2] * 2 + self.txt_pooled.shape[1] * 2
        b = b + self.side.shape[1] * 4
        if self.img_tokens is not None:
            b = b + self.img_mask.sum(1) * self.img_tokens.shape[2] * 2 + self.has_image * self.img_pooled.shape[1] * 2
        return b.astype(np.int64)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {a: np.ascontiguousarray(getattr(self, a)) for a in self.ARRAYS if getattr(self, a) is not None}
        tmp = directory / f".features.safetensors.tmp{os.getpid()}"
        save_file(arrays, str(tmp))
        os.replace(tmp, directory / "features.safetensors")
        meta = {
            "query_ids": self.query_ids, "side_names": self.side_names,
            "image_encoder_id": self.image_encoder_id, "text_encoder_id": self.text_encoder_id,
            "image_encoder_version": self.image_encoder_version, "text_encoder_version": self.text_encoder_version,
            "skipped": self.skipped, "code_version": FEATURE_CODE_VERSION,
        }
        (directory / "features.json").write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: Path) -> FeatureSet:
        directory = Path(directory)
        meta_path, arr_path = directory / "features.json", directory / "features.safetensors"
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise FileNotFoundError(f"feature set incomplete: {p} missing")
        meta = json.loads(meta_path.read_text())
        arrays = _read_arrays(arr_path)
        return cls(
            query_ids=list(meta["query_ids"]), side_names=list(meta["side_names"]),
            image_encoder_id=meta["image_encoder_id"], text_encoder_id=meta["text_encoder_id"],
            image_encoder_version=meta.get("image_encoder_version"),
            text_encoder_version=meta.get("text_encoder_version", ""), skipped=list(meta.get("skipped", [])),
            **{a: arrays.get(a) for a in cls.ARRAYS},
        )

    def to_table(self) -> pl.DataFrame:
        """The ``features`` table: one row per query; token arrays stay in ``features.safetensors`` (row index)."""
        n = self.n
        has = self.has_image
        img_pooled = (
            _list_column(self.img_pooled).to_frame().select(
                pl.when(pl.Series(has)).then(pl.col("v")).otherwise(None)).to_series()
            if self.img_pooled is not None else pl.Series([None] * n, dtype=pl.List(pl.Float32))
        )
        return pl.DataFrame({
            "query_id": self.query_ids,
            "image_encoder": [self.image_encoder_id if h else None for h in has],
            "text_encoder": [self.text_encoder_id] * n,
            "img_token_dim": [int(self.img_tokens.shape[2]) if self.img_tokens is not None else 0] * n,
            "img_pooled_dim": [int(self.img_pooled.shape[1]) if self.img_pooled is not None else 0] * n,
            "txt_token_dim": [int(self.txt_tokens.shape[2])] * n,
            "txt_pooled_dim": [int(self.txt_pooled.shape[1])] * n,
            "n_img_tokens": (self.img_mask.sum(1) if self.img_mask is not None else np.zeros(n)).astype(np.int64),
            "n_txt_tokens": self.txt_mask.sum(1).astype(np.int64),
            "bytes": self.row_bytes(),
            "has_image": has,
            "img_pooled": img_pooled,
            "txt_pooled": _list_column(self.txt_pooled),
            "tokens_file": ["features.safetensors"] * n,
            "tokens_row": np.arange(n, dtype=np.int64),
        }, schema_overrides={"img_pooled": pl.List(pl.Float32), "txt_pooled": pl.List(pl.Float32),
                             "image_encoder": pl.String})

    def subset(self, query_ids: Sequence[str]) -> FeatureSet:
        """Rows for ``query_ids`` in that order (raises naming the first unknown id). Asked for every row in
        the stored order (the usual case), the arrays are shared, not copied: at 20k queries a copy is 1.2 GB
        more in every process that loads the features."""
        if list(query_ids) == self.query_ids:
            return replace(self, query_ids=list(query_ids), side_names=list(self.side_names),
                           skipped=list(self.skipped))
        pos = {q: i for i, q in enumerate(self.query_ids)}
        missing = [q for q in query_ids if q not in pos]
        if missing:
            raise KeyError(f"feature set has no row for query_id {missing[0]!r} ({len(missing)} missing)")
        idx = np.array([pos[q] for q in query_ids], dtype=np.int64)
        taken = {a: (None if getattr(self, a) is None else getattr(self, a)[idx]) for a in self.ARRAYS}
        return FeatureSet(query_ids=list(query_ids), side_names=list(self.side_names),
                          image_encoder_id=self.image_encoder_id, text_encoder_id=self.text_encoder_id,
                          image_encoder_version=self.image_encoder_version,
                          text_encoder_version=self.text_encoder_version, skipped=list(self.skipped), **taken)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file read with pread: the default mmap keeps every page of the file mapped
    (and counted in RSS) until all arrays are copied out, twice the features' size at peak."""
    try:
        return load_file(str(path), backend="pread")
    except TypeError:  # an older safetensors without the backend choice
        return load_file(str(path))


def _list_column(x: np.ndarray) -> pl.Series:
    """[N, D] vectors as a List(Float32) column, converted in Arrow: a Python float per value (what
    ``.tolist()`` builds) costs ~30x the memory and grows the table build faster than N."""
    flat = np.ascontiguousarray(x, dtype=np.float32)
    return pl.Series("v", flat).cast(pl.List(pl.Float32))
