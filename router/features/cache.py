"""Content-addressed on-disk cache of per-item encoder outputs, and the content keys it is addressed by.

Why: encoders never train, so an item (an image by sha256, a question by its text hash) is encoded once per
encoder id x encoder version; re-running extraction computes nothing already stored, and an interrupted run
keeps every flushed shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so encoder versions cost one read per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def text_key(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)



class FeatureCache:
    """Content-addressed store of per-item arrays for one encoder id + version.

    Items live in safetensors shards under ``root/<encoder id>/<version hash>/``; a tensor is named
    ``<key>/<field>``. Shards are written atomically, so a crash loses at most the unflushed items.
    """

    def __init__(self, root: Path, encoder_id: str, version: str):
        self.dir = Path(root) / _slug(encoder_id) / hashlib.sha256(version.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.exists():
            info.write_text(json.dumps({"encoder_id": encoder_id, "version": version}, indent=1))
        self._index: dict[str, Path] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="numpy") as fh:
                for name in fh.keys():
                    self._index.setdefault(name.split("/", 1)[0], shard)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def _by_shard(self, keys: Iterable[str]) -> dict[Path, set[str]]:
        by_shard: dict[Path, set[str]] = {}
        for k in keys:
            if k in self._index:
                by_shard.setdefault(self._index[k], set()).add(k)
        return by_shard

    def iter_many(self, keys: Iterable[str]) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """(key, fields) of the stored ``keys``, one shard at a time, so a caller can copy them into its own
        arrays without every item of a large extraction being in memory twice."""
        for shard, wanted in self._by_shard(keys).items():
            items: dict[str, dict[str, np.ndarray]] = {}
            with safe_open(str(shard), framework="numpy") as fh:
                for name in fh.keys():
                    k, fld = name.split("/", 1)
                    if k in wanted:
                        items.setdefault(k, {})[fld] = fh.get_tensor(name)
            yield from items.items()

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        return dict(self.iter_many(keys))

    def shapes(self, keys: Iterable[str], fld: str) -> dict[str, tuple[int, ...]]:
        """Shape of one field of each stored key, read from the shard headers (no tensor data is loaded)."""
        out: dict[str, tuple[int, ...]] = {}
        for shard, wanted in self._by_shard(keys).items():
            with safe_open(str(shard), framework="numpy") as fh:
                for k in wanted:
                    out[k] = tuple(fh.get_slice(f"{k}/{fld}").get_shape())
        return out

    def put_many(self, items: dict[str, dict[str, np.ndarray]]) -> None:
        if not items:
            return
        tensors = {f"{k}/{f}": np.ascontiguousarray(a) for k, d in items.items() for f, a in d.items()}
        digest = hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]
        path = self.dir / f"shard-{digest}.safetensors"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        for k in items:
            self._index[k] = path
