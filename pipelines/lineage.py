"""``lrouter lineage TABLE``: which Dagster run and which input versions produced a warehouse table.

Dagster's asset graph is the lineage: every materialization records its run, code version, data version
and the data versions of its inputs. This reads them from the instance (DAGSTER_HOME) and joins them with
the ``run_id`` column the tables carry.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from warehouse.store import Warehouse

TABLE_ASSETS = {
    "queries": "benchmark_queries",
    "models": "candidate_models",
    "traces": "outcome_traces",
    "features": "query_features",
    "splits": "data_splits",
    "profiles": "capability_profiles",
    "router": "latent_router",
    "eval_results": "eval_results",
    "routing_decisions": "routing_decisions",
    "pool_decisions": "current_pool_routing",
}


def lineage_records(table: str, limit: int = 20, instance=None) -> list[dict]:
    import dagster as dg

    if table not in TABLE_ASSETS:
        raise KeyError(f"unknown table {table!r}; known: {sorted(TABLE_ASSETS)}")
    instance = instance or dg.DagsterInstance.get()
    key = dg.AssetKey(TABLE_ASSETS[table])
    records = instance.fetch_materializations(key, limit=limit).records
    out = []
    for rec in records:
        mat = rec.asset_materialization
        tags = mat.tags or {}
        inputs = {k.split("/")[-1]: v for k, v in tags.items() if k.startswith("dagster/input_data_version/")}
        out.append({
            "asset": key.to_user_string(),
            "partition": mat.partition or "",
            "run_id": rec.run_id,
            "materialized_at": dt.datetime.fromtimestamp(rec.timestamp, dt.UTC).isoformat(timespec="seconds"),
            "code_version": tags.get("dagster/code_version", ""),
            "data_version": tags.get("dagster/data_version", ""),
            "inputs": ", ".join(f"{k}@{v[:12]}" for k, v in sorted(inputs.items())),
        })
    return out


def print_lineage(table: str, wh: Warehouse, home: Path, instance=None) -> int:
    try:
        rows = lineage_records(table, instance=instance)
    except KeyError as exc:
        print(f"error: {exc.args[0]}")
        return 2
    if not rows:
        print(f"no materialization of {TABLE_ASSETS[table]} recorded in this Dagster instance")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=70, tbl_width_chars=220):
            print(pl.DataFrame(rows))
    if table in ("traces", "eval_results", "routing_decisions") or wh.has_table(table):
        try:
            df = wh.read_traces() if table == "traces" else wh.read_table(table)
        except FileNotFoundError:
            return 0
        if "run_id" in df.columns:
            by_run = df.group_by("run_id").len().sort("len", descending=True)
            print(f"\nrows of {table} by run_id:")
            print(by_run)
    return 0
