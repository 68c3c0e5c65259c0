"""In-process Dagster materialization of the foundation graph against the simulated pool."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from assets import collection
from assets.io_manager import WarehouseIOManager
from assets.resources import OllamaResource, WarehouseResource
from warehouse.catalog import run_query
from warehouse.store import Warehouse


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LROUTER_HOME", str(tmp_path))
    monkeypatch.delenv("LROUTER_REGISTRY", raising=False)
    return tmp_path


def _resources(home):
    warehouse = WarehouseResource(home=str(home))
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseIOManager(warehouse=warehouse),
        "ollama": OllamaResource(sim_time_scale=0.0, concurrency=8),
    }


def _materialize(selected: list, **kwargs) -> dg.ExecuteInProcessResult:
    """The collection assets, with unselected upstream ones loaded from the warehouse by the IO manager."""
    every = dg.load_assets_from_modules([collection]) + list(dg.load_asset_checks_from_modules([collection]))
    checks = [a for a in selected if isinstance(a, dg.AssetChecksDefinition)]
    keys = [k for a in selected if a not in checks for k in a.keys]
    selection = dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks(*checks)
    return dg.materialize(every, selection=selection, **kwargs)


def test_definitions_load():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"benchmark_queries", "candidate_models", "outcome_traces", "warehouse_views"} <= keys


def test_foundation_graph_materializes(home):
    instance = dg.DagsterInstance.ephemeral()
    res = _resources(home)
    cfg = {"ops": {"benchmark_queries": {"config": {"n_queries": 40, "seed": 1}}}}
    r = _materialize([collection.benchmark_queries, collection.candidate_models], instance=instance,
                     resources=res, run_config=cfg)
    assert r.success
    models = instance.get_dynamic_partitions("models")
    assert len(models) == 8
    for m in models[:3]:
        r = _materialize([collection.outcome_traces], instance=instance, resources=res, partition_key=m)
        assert r.success
        checks = r.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.passed) for c in checks]
        meta = r.asset_materializations_for_node("outcome_traces")[0].metadata
        assert meta["dagster/row_count"].value == 40
        assert meta["simulated"].value is True
    r = _materialize([collection.warehouse_views, collection.all_pairs_collected], instance=instance,
                     resources=res)
    assert r.success
    wh = Warehouse(home / "warehouse")
    assert wh.db_path.exists()
    df = run_query(wh, "select model_id, avg(quality) q, sum(cost_usd) c, avg(latency_ms) l, count(*) n "
                       "from traces group by 1 order by 1")
    assert df.height == 3 and df["n"].to_list() == [40, 40, 40]
    assert df["l"].min() > 0 and df["c"].min() > 0
    assert run_query(wh, "select bool_and(simulated) s from traces")["s"][0] is True  # labelled in the view
    # the check flags that 5 active models have no traces yet (warn severity, run still succeeds)
    ev = r.get_asset_check_evaluations()[0]
    assert ev.passed is False and ev.metadata["ok_pairs"].value < ev.metadata["expected_pairs"].value
    # re-materializing an unchanged partition makes no model calls
    r = _materialize([collection.outcome_traces], instance=instance, resources=res, partition_key=models[0])
    assert r.asset_materializations_for_node("outcome_traces")[0].metadata["attempted_this_run"].value == 0
    q = pl.read_parquet(wh.table_path("queries"))
    assert q.height == 40 and set(q["task_group"]) == {"ocr", "chart", "math", "general"}
