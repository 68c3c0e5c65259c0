"""Tables in and out of assets: an IO manager over the Parquet warehouse and its DuckDB views.

An asset that returns a polars DataFrame has it written as its warehouse table (declared schema, atomic
Parquet, a DuckDB view of the same name); an asset that names an upstream asset as a parameter gets that
table back. So an asset's inputs are its signature, which is what Dagster users read first, and the asset
graph is the lineage of every table. The table an asset holds is its ``lrouter/table`` definition
metadata. ``outcome_traces`` is partitioned by model: each partition is one Parquet file that the
collector writes itself (resumably); downstream assets read the union of the partitions they depend on.

:class:`FeatureSetIOManager` is the store of the frozen-encoder features: ``query_features`` returns a
``FeatureSet``; its arrays go to ``features/current/`` (safetensors + JSON) and its per-query rows to the
``features`` table, and every router asset gets the ``FeatureSet`` back as an input.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from assets.resources import WarehouseResource
from router.data.warehouse_inputs import FEATURES_DIR
from router.features.feature_set import FeatureSet
from warehouse.catalog import refresh_catalog
from warehouse.store import Warehouse

TABLE_KEY = "lrouter/table"


def table_metadata(name: str) -> dict[str, str]:
    """Definition metadata of an asset that holds the warehouse table ``name``."""
    return {TABLE_KEY: name}


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Reads and writes the warehouse tables named by each asset's ``lrouter/table`` metadata."""

    warehouse: WarehouseResource

    def _table(self, metadata: dict | None, asset: dg.AssetKey) -> str:
        name = (metadata or {}).get(TABLE_KEY)
        if not name:
            raise dg.Failure(f"asset {asset.to_user_string()!r} has no {TABLE_KEY!r} metadata, so the warehouse "
                             "IO manager does not know which table it holds")
        return str(name)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | None) -> None:
        if obj is None:  # the asset wrote its own files (features, checkpoints, trace partitions)
            return
        wh: Warehouse = self.warehouse.warehouse()
        name = self._table(context.definition_metadata, context.asset_key)
        if context.has_asset_partitions and name == "traces":
            for key in context.asset_partition_keys:
                wh.write_trace_partition(key, obj.filter(pl.col("model_id") == key))
        else:
            is_new = not wh.has_table(name)
            path = wh.write_table(name, obj)
            if is_new:  # a view reads its files at query time; only a new table needs one created
                refresh_catalog(wh)
            context.add_output_metadata({"table": name, "path": dg.MetadataValue.path(str(path))})
        context.add_output_metadata({"dagster/row_count": obj.height})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        wh: Warehouse = self.warehouse.warehouse()
        upstream = context.upstream_output
        name = self._table(upstream.definition_metadata if upstream else None, context.asset_key)
        if name == "traces":
            keys = context.asset_partition_keys if context.has_asset_partitions else None
            return wh.read_traces(sorted(set(keys) & set(wh.trace_partitions())) if keys else None)
        return wh.read_table(name)


class FeatureSetIOManager(dg.ConfigurableIOManager):
    """The feature store: a ``FeatureSet``'s arrays as files, its rows as the ``features`` table."""

    warehouse: WarehouseResource

    def handle_output(self, context: dg.OutputContext, obj: FeatureSet) -> None:
        wh: Warehouse = self.warehouse.warehouse()
        obj.save(wh.features_dir / FEATURES_DIR)
        is_new = not wh.has_table("features")
        table = obj.to_table()
        path = wh.write_table("features", table)
        if is_new:
            refresh_catalog(wh)
        context.add_output_metadata({"table": "features", "path": dg.MetadataValue.path(str(path)),
                                     "dagster/row_count": table.height})

    def load_input(self, context: dg.InputContext) -> FeatureSet:
        return FeatureSet.load(self.warehouse.warehouse().features_dir / FEATURES_DIR)


class OpsIOManager(dg.ConfigurableIOManager):
    """Small op outputs (plans, summaries) that are no asset: pickled under the warehouse's ``_ops/<run id>/``
    (in the bucket on the cluster profile), so the next op reads them on whichever worker runs it."""

    warehouse: WarehouseResource

    @staticmethod
    def _rel(context: dg.OutputContext | dg.InputContext) -> str:
        out = context if isinstance(context, dg.OutputContext) else context.upstream_output
        assert out is not None
        parts = [out.run_id, out.step_key, out.name, *([out.mapping_key] if out.mapping_key else [])]
        return "_ops/" + "/".join(p.replace("/", "_") for p in parts) + ".pickle"

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        import pickle

        from warehouse.filesystem import atomic_write_bytes

        wh: Warehouse = self.warehouse.warehouse()
        data = pickle.dumps(obj)
        if wh.remote:
            wh.fs.put_bytes(self._rel(context), data)  # type: ignore[attr-defined]
        else:
            atomic_write_bytes(data, wh.root / self._rel(context))

    def load_input(self, context: dg.InputContext) -> object:
        import pickle

        wh: Warehouse = self.warehouse.warehouse()
        rel = self._rel(context)
        data = wh.fs.get_bytes(rel) if wh.remote else (wh.root / rel).read_bytes()  # type: ignore[attr-defined]
        if data is None:
            raise dg.Failure(f"op output {rel} is missing from the warehouse")
        return pickle.loads(data)  # written by this pipeline's own ops (see handle_output)
