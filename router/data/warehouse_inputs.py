"""Load the warehouse tables a router needs and assemble RoutingData from them (no Dagster here).

Used by the training asset, the re-scoring of the current pool, the evaluation and the routing API, so
they all see the same arrays built by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from router.data.build import build_routing_data
from router.data.routing_data import RoutingData
from router.features.feature_set import FeatureSet
from warehouse.store import Warehouse

FEATURES_DIR = "current"


@dataclass
class WarehouseInputs:
    queries: pl.DataFrame
    traces: pl.DataFrame
    splits: pl.DataFrame
    profiles: pl.DataFrame
    models: pl.DataFrame  # active models, registry order
    features: FeatureSet


def load_inputs(wh: Warehouse, active_only: bool = True) -> WarehouseInputs:
    for name in ("queries", "splits", "profiles", "models"):
        if not wh.has_table(name):
            raise FileNotFoundError(f"warehouse table {name!r} is missing; materialize it first")
    return inputs_from_tables(wh.read_table("queries"), wh.read_traces(), wh.read_table("splits"),
                              wh.read_table("profiles"), wh.read_table("models"),
                              FeatureSet.load(wh.features_dir / FEATURES_DIR), active_only=active_only)


def inputs_from_tables(queries: pl.DataFrame, traces: pl.DataFrame, splits: pl.DataFrame, profiles: pl.DataFrame,
                       models: pl.DataFrame, features: FeatureSet, active_only: bool = True) -> WarehouseInputs:
    """The routing inputs from loaded tables: the pool is the (active) models that have a profile, and only
    their traces and the queries of the split are kept."""
    if active_only:
        models = models.filter(pl.col("active"))
    models = models.filter(pl.col("model_id").is_in(profiles["model_id"].implode()))
    keep = set(splits["query_id"].to_list())
    return WarehouseInputs(
        queries=queries,
        traces=pool_traces(traces, models["model_id"].to_list()),
        splits=splits,
        profiles=profiles,
        models=models,
        features=features.subset([q for q in features.query_ids if q in keep]),
    )


def pool_traces(traces: pl.DataFrame, model_ids: list[str]) -> pl.DataFrame:
    """The traces of ``model_ids``, partitions in that (registry) order and rows as stored, so every reader
    sums them in the same order whichever order the partitions were read in."""
    rank = {m: i for i, m in enumerate(model_ids)}
    return (traces.filter(pl.col("model_id").is_in(list(rank)))
            .sort(pl.col("model_id").replace_strict(rank, return_dtype=pl.Int64), maintain_order=True))


def routing_data(inputs: WarehouseInputs) -> RoutingData:
    return build_routing_data(inputs.queries, inputs.traces, inputs.splits, inputs.profiles, inputs.features,
                              inputs.models)


def strongest_on(data: RoutingData, rows: np.ndarray) -> tuple[str, float]:
    q = np.where(data.avail[rows], data.quality[rows], 0.0).mean(axis=0)
    j = int(np.argmax(q))
    return data.model_ids[j], float(q[j])
