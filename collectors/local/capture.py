"""The hidden-state store: one ``.npz`` per answered request, written by the local server while it answers.

Files are keyed by what the request asked (sha256 of the first image's bytes and the user message), so the
pipeline can join them to ``queries`` (image_sha256 + the collector's prompt) without the server knowing
any query id. Each file holds ``last`` ([L+1, D] float16), ``seq`` ([T, D] float16) and a JSON ``meta``
(OCR text, notes, token counts, layer). Writes are atomic (temp file + rename), so a killed run leaves
whole files only; a re-answered request overwrites its file with identical content (greedy decoding).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def capture_key(image_sha256: str, user_text: str) -> str:
    """The store key of a request: its first image's sha256 ('' without one) and its user message."""
    return hashlib.sha256(f"{image_sha256}\x00{user_text}".encode()).hexdigest()


@dataclass
class Captured:
    last: np.ndarray
    seq: np.ndarray
    meta: dict[str, Any]


class HiddenStateStore:
    """A folder of ``<key>.npz`` captures for one model."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def write(self, key: str, last: np.ndarray, seq: np.ndarray, meta: dict[str, Any]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, last=last.astype(np.float16), seq=seq.astype(np.float16),
                         meta=np.array(json.dumps(meta)))
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path(key)

    def read(self, key: str) -> Captured | None:
        p = self.path(key)
        if not p.is_file():
            return None
        with np.load(p, allow_pickle=False) as z:
            return Captured(last=z["last"], seq=z["seq"], meta=json.loads(str(z["meta"])))

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.npz")) if self.root.exists() else []
