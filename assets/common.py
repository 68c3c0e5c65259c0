"""Small helpers shared by the asset modules: the model partitions, the simulated-pool note, Markdown tables,
and the routing inputs built from loaded tables."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from router.data.warehouse_inputs import WarehouseInputs, inputs_from_tables
from router.features.feature_set import FeatureSet

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


def rounded(value: float, digits: int = 4) -> float:
    """A float with ``digits`` significant digits, so metadata reads 3291 rather than 3291.3328387059996."""
    if value != value or value in (float("inf"), float("-inf")) or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def _column_type(dtype: pl.DataType) -> str:
    if dtype.is_float():
        return "float"
    if dtype.is_integer():
        return "int"
    return "bool" if dtype == pl.Boolean else "string"


def table_value(df: pl.DataFrame, digits: int = 4, max_rows: int = 200) -> dg.TableMetadataValue:
    """A polars frame as a Dagster table (sortable, typed columns in the UI) with rounded floats."""
    def cell(v: object) -> object:
        if isinstance(v, float):
            return rounded(v, digits)
        return v if v is None or isinstance(v, (int, bool, str)) else str(v)

    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type(t)) for c, t in df.schema.items()])
    records = [dg.TableRecord({c: cell(v) for c, v in row.items()}) for row in df.head(max_rows).iter_rows(named=True)]
    return dg.MetadataValue.table(records=records, schema=schema)


def png_markdown(images: dict[str, Path | bytes], width: int = 700) -> dg.MarkdownMetadataValue:
    """PNG plots as Markdown metadata the UI shows on the asset page without a click: files next to the
    running step's compute logs, linked (``assets.figures``); data URIs behind "[Show Markdown]" where the
    instance keeps no local compute logs. Wider images are scaled down to ``width`` pixels."""
    from assets.figures import figures_markdown

    return figures_markdown(images, width)


def routing_inputs(features: FeatureSet, queries: pl.DataFrame, traces: pl.DataFrame, splits: pl.DataFrame,
                   profiles: pl.DataFrame, models: pl.DataFrame) -> WarehouseInputs:
    """What every router asset trains or scores on: the loaded tables and ``query_features``'s feature set."""
    return inputs_from_tables(queries, traces, splits, profiles, models, features)
