"""The probe feature table: a small model's hidden states per query, as one ``.npz`` next to the warehouse.

Per query: the last prompt token's state at every layer (``last`` [N, L+1, D]) and every prompt token's
state at layer l-1 (``seq`` [N, T, D], right-padded, ``lengths`` [N]), both float16. For SmolLM2-135M
(D = 576, 31 hidden-state layers) that is 36 KB + T x 1.15 KB, about 130 KB for a 90-token prompt;
`bytes_per_query` states the measured figure. ``layer_dir`` holds the snapshot of the decoder layer
between the two (see `router.models.probes.layer`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ProbeFeatures:
    query_ids: list[str]
    last: np.ndarray  # [N, L+1, D] float16
    seq: np.ndarray  # [N, T, D] float16, right-padded
    lengths: np.ndarray  # [N] int: valid tokens of seq
    layer: int  # hidden_states index l of the probes (seq holds index l - 1)
    layer_dir: Path | None = None  # snapshot of the decoder layer l-1 -> l (ReLope)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.query_ids)
        if self.last.shape[0] != n or self.seq.shape[0] != n or len(self.lengths) != n:
            raise ValueError(f"ProbeFeatures: {n} query ids but last {self.last.shape}, seq {self.seq.shape}, "
                             f"lengths {len(self.lengths)}")
        if not 1 <= self.layer < self.last.shape[1]:
            raise ValueError(f"ProbeFeatures.layer {self.layer} outside [1, {self.last.shape[1] - 1}]")
        if n and (self.lengths.min() < 1 or self.lengths.max() > self.seq.shape[1]):
            raise ValueError("ProbeFeatures.lengths must be in [1, T]")

    @property
    def n(self) -> int:
        return len(self.query_ids)

    @property
    def dim(self) -> int:
        return int(self.last.shape[2])

    def row_of(self) -> dict[str, int]:
        return {q: i for i, q in enumerate(self.query_ids)}

    @property
    def bytes_per_query(self) -> float:
        """Stored bytes per query, padding excluded (what the float16 arrays actually need)."""
        if not self.n:
            return 0.0
        per_tok = self.seq.shape[2] * self.seq.itemsize
        return float(self.last[0].nbytes + per_tok * self.lengths.mean())

    @classmethod
    def from_lists(cls, query_ids: list[str], last: list[np.ndarray], seq: list[np.ndarray], layer: int,
                   layer_dir: Path | None = None, meta: dict[str, Any] | None = None) -> ProbeFeatures:
        """Pad per-query [T_i, D] token states into one right-padded array."""
        d = last[0].shape[-1] if last else 1
        t = max((s.shape[0] for s in seq), default=1)
        pad = np.zeros((len(seq), t, d), dtype=np.float16)
        for i, s in enumerate(seq):
            pad[i, : s.shape[0]] = s
        lasts = np.stack(last).astype(np.float16) if last else np.zeros((0, layer + 1, d), np.float16)
        return cls(list(query_ids), lasts, pad, np.array([s.shape[0] for s in seq], dtype=np.int64), layer,
                   layer_dir, meta or {})

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "layer": self.layer,
                "layer_dir": os.path.relpath(self.layer_dir, path.parent) if self.layer_dir else ""}
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, query_ids=np.array(self.query_ids, dtype=str), last=self.last, seq=self.seq,
                     lengths=self.lengths, meta=np.array(json.dumps(meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> ProbeFeatures:
        path = Path(path)
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            layer_dir = path.parent / meta["layer_dir"] if meta.get("layer_dir") else None
            return cls([str(q) for q in z["query_ids"]], z["last"], z["seq"], z["lengths"], int(meta["layer"]),
                       layer_dir, meta)
