"""Repeated random splits: the data of split ``r`` (train / val / test re-drawn with seed ``r``), with every
normaliser and profile that depends on the split rebuilt from that split's train / calibration rows only.

Split 0 is the data's own split. A *split source* maps r >= 1 to a RoutingData over the same queries and
models; :func:`warehouse_split_source` (the pipeline) rebuilds splits, capability profiles, cost normaliser,
expected costs and feature standardisers from the warehouse tables, as the profile sources of the cold-start
experiment do; :func:`resplit` is the stand-in for a bare RoutingData (synthetic data), whose profiles are
not computed from rows: it re-draws the split and rebuilds the cost normaliser and expected costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData, normalise_cost
from router.data.splits import make_splits, query_groups

SplitSource = Callable[[int], RoutingData]


def resplit(data: RoutingData, seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
            groups: Sequence[str] | None = None) -> RoutingData:
    """``data`` with a seeded, stratified, group-aware split (``router.data.splits.make_splits``) and the
    cost normaliser and expected costs recomputed from the new train rows only."""
    queries = pl.DataFrame({"query_id": list(data.query_ids),
                            "dataset": np.asarray(data.dataset).astype(str).tolist(),
                            "task_group": np.asarray(data.task_group).astype(str).tolist()})
    sp = make_splits(queries, seed=int(seed), fractions=fractions, groups=groups)
    split = np.array(sp["split"].to_list(), dtype=object)
    tr = np.flatnonzero(split == "train")
    if len(tr) == 0 or not np.any(split == "test"):
        raise ValueError(f"resplit: split seed {seed} left no train or no test rows (n = {data.n})")
    cost, _ = normalise_cost(data.cost_usd, data.avail, tr)
    # expected cost (known before answering): each model's mean normalised cost on the new train rows
    m = data.avail[tr]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(m.sum(0) > 0, np.where(m, cost[tr], 0).sum(0) / np.maximum(m.sum(0), 1), 0.0)
    exp_cost = np.broadcast_to(mean, (data.n, data.k)).astype(np.float32).copy()
    return replace(data, split=split, cost=cost, exp_cost=exp_cost)


def data_split_source(data: RoutingData, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                      groups: Sequence[str] | None = None) -> SplitSource:
    """Split r -> :func:`resplit` of ``data`` with seed r (bare RoutingData)."""
    return lambda r: resplit(data, r, fractions, groups)


def warehouse_split_source(inputs: Any, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> SplitSource:
    """Split r -> RoutingData rebuilt from the warehouse tables with ``make_splits(seed=r)`` (group-aware via
    the queries' ``group_id``): profiles from that split's calibration rows, normalisers from its train rows.

    ``inputs`` is a ``router.data.warehouse_inputs.WarehouseInputs``.
    """
    from router.data.build import build_routing_data
    from router.data.profiles import build_profiles

    queries = inputs.queries.filter(pl.col("query_id").is_in(inputs.splits["query_id"].implode()))

    # split r >= 1 is a seeded re-draw: an imported benchmark's own split (official_split, which make_splits
    # honours) would otherwise come back unchanged for every r
    redraw = queries.drop("official_split", strict=False)

    def source(r: int) -> RoutingData:
        qs = queries if r == 0 else redraw
        splits = make_splits(qs, seed=int(r), fractions=fractions, groups=query_groups(qs))
        profiles = build_profiles(inputs.traces, splits, inputs.queries, inputs.models)
        return build_routing_data(inputs.queries, inputs.traces, splits, profiles, inputs.features, inputs.models)

    return source
