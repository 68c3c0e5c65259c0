"""Fitted routers kept on disk by key, so the deployment choice and the evaluation fit each router once.

A key names everything a fit depends on: the data it saw (a fingerprint of the routing arrays and the split),
the router's name, its full config after tuning overrides, and the seed. Fits are deterministic given those,
so a stored fit is the fit the caller would have made; the evaluation's tables are the same whether a fit was
made now or loaded. Fits live under ``<root>/<data fingerprint>/<key>.joblib`` (pickles the pipeline wrote
itself); only the newest ``keep`` fingerprints are kept.

May import: `router.data`, `router.models`, joblib, the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router

# data versions whose fits are kept (older ones are removed on the next write); each repeated split is one,
# so this holds a few evaluations of the paper preset's splits plus the deployment's
KEEP_FINGERPRINTS = 16


def data_fingerprint(data: RoutingData) -> str:
    """A digest of every field of ``data`` (arrays by dtype, shape and bytes): what any fit can read."""
    h = hashlib.sha256()
    for f in fields(data):
        value = getattr(data, f.name)
        h.update(f.name.encode())
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes() if a.dtype != object else json.dumps(a.tolist(), default=str).encode())
        else:
            h.update(json.dumps(value, default=str).encode())
    return h.hexdigest()[:24]


def fit_key(name: str, config: Any, seed: int) -> str:
    """The key of one fit of router ``name`` with ``config`` (a dataclass) at ``seed``."""
    cfg = asdict(config) if is_dataclass(config) else config
    doc = json.dumps({"router": name, "config": cfg, "seed": int(seed)}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


class FitStore:
    """Fitted routers under ``root`` by (data fingerprint, key); see the module docstring."""

    def __init__(self, root: Path | str, keep: int = KEEP_FINGERPRINTS) -> None:
        self.root = Path(root)
        self.keep = int(keep)
        self.hits = 0
        self.writes = 0

    def _path(self, fingerprint: str, key: str) -> Path:
        return self.root / fingerprint / f"{key}.joblib"

    def get(self, fingerprint: str, key: str) -> Router | None:
        """The stored fit, or None (a missing or unreadable file is a miss, never an error)."""
        import joblib

        path = self._path(fingerprint, key)
        if not path.is_file():
            return None
        try:
            router = joblib.load(path)
        except Exception:  # a torn or stale pickle: refit rather than fail the run
            return None
        self.hits += 1
        return router

    def put(self, fingerprint: str, key: str, router: Router) -> None:
        """Store a fit atomically (written to a temporary file, then renamed); prunes old fingerprints."""
        import joblib

        path = self._path(fingerprint, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        joblib.dump(router, tmp)
        os.replace(tmp, path)
        os.utime(path.parent)
        self.writes += 1
        self._prune(fingerprint)

    def _prune(self, current: str) -> None:
        dirs = sorted((d for d in self.root.iterdir() if d.is_dir() and d.name != current),
                      key=lambda d: d.stat().st_mtime_ns, reverse=True)
        for old in dirs[max(self.keep - 1, 0):]:
            shutil.rmtree(old, ignore_errors=True)
