"""Load the warehouse tables a router needs and assemble RoutingData from them (no Dagster here).

Used by the training asset, the re-scoring of the current pool, the evaluation and the routing API, so
they all see the same arrays built by the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.data.build import build_routing_data
from router.features.encoders import FeatureSet
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
    models = wh.read_table("models")
    if active_only:
        models = models.filter(pl.col("active"))
    profiles = wh.read_table("profiles")
    models = models.filter(pl.col("model_id").is_in(profiles["model_id"].implode()))
    features = FeatureSet.load(wh.features_dir / FEATURES_DIR)
    splits = wh.read_table("splits")
    keep = set(splits["query_id"].to_list())
    features = features.subset([q for q in features.query_ids if q in keep])
    return WarehouseInputs(
        queries=wh.read_table("queries"),
        traces=wh.read_traces(models["model_id"].to_list()),
        splits=splits,
        profiles=profiles,
        models=models,
        features=features,
    )


def routing_data(inputs: WarehouseInputs) -> RoutingData:
    return build_routing_data(inputs.queries, inputs.traces, inputs.splits, inputs.profiles, inputs.features,
                              inputs.models)


def strongest_on(data: RoutingData, rows: np.ndarray) -> tuple[str, float]:
    q = np.where(data.avail[rows], data.quality[rows], 0.0).mean(axis=0)
    j = int(np.argmax(q))
    return data.model_ids[j], float(q[j])
