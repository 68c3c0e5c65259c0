"""Small helpers shared by the asset modules: the model partitions, the simulated-pool note, Markdown tables,
and the routing inputs built from loaded tables."""

from __future__ import annotations

import dagster as dg
import polars as pl

from router.data.warehouse_inputs import FEATURES_DIR, WarehouseInputs, inputs_from_tables
from router.features.feature_set import FeatureSet
from warehouse.store import Warehouse

MODELS_PARTITIONS = dg.DynamicPartitionsDefinition(name="models")
SIMULATED_NOTE = "**Note: the default candidate pool is SIMULATED** (deterministic models served by the built-in Ollama-API simulator)."


def md_table(df: pl.DataFrame, float_fmt: str = "{:.4g}", max_rows: int = 60) -> str:
    """Render a polars frame as a Markdown table (no extra dependency)."""
    if df.height == 0:
        return "_(empty)_"
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.head(max_rows).iter_rows():
        cells = [float_fmt.format(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows_")
    return "\n".join(lines)



def routing_inputs(wh: Warehouse, queries: pl.DataFrame, traces: pl.DataFrame, splits: pl.DataFrame,
                   profiles: pl.DataFrame, models: pl.DataFrame) -> WarehouseInputs:
    """What every router asset trains or scores on: the loaded tables plus the stored feature set (the
    token arrays are files next to the ``features`` table, written by ``query_features``)."""
    return inputs_from_tables(queries, traces, splits, profiles, models, FeatureSet.load(wh.features_dir / FEATURES_DIR))
