"""Which queries a local model is run on: a stated, deterministic subset, so that real CPU inference fits the
demo's time budget. Every other query gets a ``skipped`` row with the reason `OUTSIDE_REASON`.

The subset takes the first ``n_calibration`` calibration rows (so the model has a capability profile and the
probes have training rows), the first ``n_val`` val rows (probe early stopping / model choice) and the first
``n_test`` test rows (the hybrid evaluation), in ``queries`` order. Without splits it is the first
``n_calibration + n_val + n_test`` queries.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

OUTSIDE_REASON = "outside the local-model subset"


@dataclass(frozen=True)
class LocalSubsetConfig:
    """Default 50 + 15 + 35 = 100 queries: ~0.7-1 s each on 2 idle cores (2.6 s measured under a load
    average of 8), so the demo grows by roughly 90 s including the ~20 s model load."""

    n_calibration: int = 50
    n_val: int = 15
    n_test: int = 35

    @classmethod
    def from_env(cls) -> LocalSubsetConfig:
        """``LROUTER_LOCAL_SUBSET=calib,val,test`` overrides the default sizes (e.g. ``200,50,150``)."""
        raw = os.environ.get("LROUTER_LOCAL_SUBSET", "").strip()
        if not raw:
            return cls()
        parts = [int(x) for x in raw.split(",")]
        if len(parts) != 3 or min(parts) < 0:
            raise ValueError(f"LROUTER_LOCAL_SUBSET must be 'calib,val,test' (3 counts >= 0), got {raw!r}")
        return cls(*parts)

    @property
    def total(self) -> int:
        return self.n_calibration + self.n_val + self.n_test


def local_subset(queries: pl.DataFrame, splits: pl.DataFrame | None, cfg: LocalSubsetConfig) -> list[str]:
    """The query ids the local model answers (calibration first, then val, then test)."""
    ids = queries["query_id"].to_list()
    if splits is None or splits.height == 0:
        return ids[: cfg.total]
    pos = {q: i for i, q in enumerate(ids)}
    sp = splits.filter(pl.col("query_id").is_in(ids))

    def first(frame: pl.DataFrame, n: int) -> list[str]:
        return sorted(frame["query_id"].to_list(), key=pos.__getitem__)[:n]

    return (first(sp.filter(pl.col("in_calibration")), cfg.n_calibration)
            + first(sp.filter(pl.col("split") == "val"), cfg.n_val)
            + first(sp.filter(pl.col("split") == "test"), cfg.n_test))


def outside_subset(queries: pl.DataFrame, splits: pl.DataFrame | None, cfg: LocalSubsetConfig) -> dict[str, str]:
    """query_id -> skip reason for every query outside the subset."""
    keep = set(local_subset(queries, splits, cfg))
    return {q: OUTSIDE_REASON for q in queries["query_id"].to_list() if q not in keep}
