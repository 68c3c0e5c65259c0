"""Deterministic, stratified train/val/test split and the calibration subset of train.

Why: profiles must come from rows the router is never evaluated on, and results must not depend on input row
order. Each query gets a pseudo-random rank from sha256(seed, query_id), so the same queries always land in the
same split whatever order they arrive in, and adding queries moves no existing one. Strata are
dataset x task_group; benchmark-provided splits (``official_split``) are honoured ("dev" counts as val).

Group-aware: queries that share a group (a ``group_id`` column, or ``group_id`` in the ``source_meta`` JSON,
e.g. paraphrases or crops of one question in an import) are ranked and assigned as one unit, so variants of a
question never straddle train and test. Without groups every query is its own group (the same split as before).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import polars as pl

from warehouse.schemas import SPLITS, conform

OFFICIAL_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def _rank(seed: int, salt: str, query_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{salt}:{query_id}".encode()).digest()[:8], "big")


def _allocate(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Counts per part summing to n: cumulative rounding keeps every part within one row of n * fraction."""
    bounds = [0] + [int(round(n * c)) for c in np.cumsum(fractions)]
    bounds[-1] = n
    return [bounds[i + 1] - bounds[i] for i in range(len(fractions))]


def query_groups(queries: pl.DataFrame) -> list[str]:
    """Each query's group: its ``group_id`` column, else ``source_meta["group_id"]``, else its own query_id."""
    qids = queries["query_id"].to_list()
    if "group_id" in queries.columns:
        vals = queries["group_id"].cast(pl.String).to_list()
        return [f"g:{g}" if g not in (None, "") else f"q:{q}" for q, g in zip(qids, vals, strict=True)]
    if "source_meta" not in queries.columns:
        return [f"q:{q}" for q in qids]
    out = []
    for q, meta in zip(qids, queries["source_meta"].to_list(), strict=True):
        try:
            g = json.loads(meta).get("group_id") if meta else None
        except (ValueError, AttributeError):
            g = None
        out.append(f"g:{g}" if g not in (None, "") else f"q:{q}")
    return out


def make_splits(
    queries: pl.DataFrame,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    calib_fraction: float = 0.35,
    calib_cap: int | None = None,
    groups: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One row per query: split (train|val|test), in_calibration (train rows only), stratum.

    ``groups`` (one label per query; default :func:`query_groups`) keeps each group inside one split.
    """
    for col in ("query_id", "dataset", "task_group"):
        if col not in queries.columns:
            raise ValueError(f"make_splits: queries table lacks column {col!r}; have {queries.columns}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"make_splits: fractions must be three non-negative numbers summing to 1, got {fractions}")
    if not 0.0 <= calib_fraction <= 1.0:
        raise ValueError(f"make_splits: calib_fraction must be in [0, 1], got {calib_fraction}")
    if calib_cap is not None and calib_cap < 0:
        raise ValueError(f"make_splits: calib_cap must be >= 0 or None, got {calib_cap}")
    dup = queries["query_id"].is_duplicated()
    if dup.any():
        raise ValueError(f"make_splits: query_id {queries.filter(dup)['query_id'][0]!r} appears more than once")

    official = (queries["official_split"] if "official_split" in queries.columns
                else pl.Series([""] * queries.height)).fill_null("").to_list()
    qids = queries["query_id"].to_list()
    strata = [f"{d}|{g}" for d, g in zip(queries["dataset"].fill_null("").to_list(),
                                          queries["task_group"].fill_null("").to_list(), strict=True)]
    split: dict[str, str] = {}
    for i, (q, off) in enumerate(zip(qids, official, strict=True)):
        off = off.strip().lower()
        if off:
            if off not in OFFICIAL_ALIASES:
                raise ValueError(f"make_splits: row {i} (query_id {q!r}) has official_split {off!r}; "
                                 f"expected one of {sorted(OFFICIAL_ALIASES)} or ''")
            split[q] = OFFICIAL_ALIASES[off]

    labels = query_groups(queries) if groups is None else [str(g) for g in groups]
    if len(labels) != len(qids):
        raise ValueError(f"make_splits: groups has {len(labels)} labels for {len(qids)} queries")
    by_stratum: dict[str, list[str]] = {}
    for q, s in zip(qids, strata, strict=True):
        by_stratum.setdefault(s, []).append(q)
    # a group is allocated in the stratum of its first query; its rank key is the query id for singletons
    home: dict[str, str] = {}
    members_of: dict[str, list[str]] = {}
    for q, s, g in zip(qids, strata, labels, strict=True):
        if q in split:
            continue
        home.setdefault(g, s)
        members_of.setdefault(g, []).append(q)
    for stratum in by_stratum:
        glist = sorted((g for g, s in home.items() if s == stratum),
                       key=lambda g: _rank(seed, "split", g[2:] if g.startswith("q:") else g))
        n_tr, n_va, _ = _allocate(len(glist), fractions)
        for j, g in enumerate(glist):
            for q in members_of[g]:
                split[q] = "train" if j < n_tr else ("val" if j < n_tr + n_va else "test")

    # calibration: calib_fraction of each stratum's train rows; a cap keeps the stratified shares
    calib_pos: dict[str, float] = {}
    for members in by_stratum.values():
        train = sorted((q for q in members if split[q] == "train"), key=lambda q: _rank(seed, "calib", q))
        k = int(round(calib_fraction * len(train)))
        for j, q in enumerate(train[:k]):
            calib_pos[q] = (j + 0.5) / k  # position inside its stratum's calibration share
    calib = set(calib_pos)
    if calib_cap is not None and len(calib) > calib_cap:
        order = sorted(calib, key=lambda q: (calib_pos[q], _rank(seed, "cap", q)))
        calib = set(order[:calib_cap])

    df = pl.DataFrame({
        "query_id": qids,
        "split": [split[q] for q in qids],
        "in_calibration": [q in calib for q in qids],
        "stratum": strata,
    })
    return conform(df, SPLITS, "splits")
