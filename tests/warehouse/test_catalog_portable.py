"""A copied home reads its own Parquet files: the catalog's views hold no absolute paths (issue item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.warehouse.test_warehouse import _traces
from warehouse.catalog import CATALOG_DIR_SQL, refresh_catalog, run_query
from warehouse.schemas import MODELS
from warehouse.store import Warehouse


def _models(*ids: str) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "model_id": list(ids),
            "backend": ["sim"] * n,
            "endpoint": [""] * n,
            "price_in_per_mtok": [0.1] * n,
            "price_out_per_mtok": [0.2] * n,
            "params_b": [1.0] * n,
            "added_at": ["2026-01-01T00:00:00"] * n,
            "active": [True] * n,
            "simulated": [True] * n,
            "description": [""] * n,
        },
        schema=MODELS,
    )


def _home(root: Path) -> Warehouse:
    wh = Warehouse(root / "warehouse").ensure()
    wh.write_table("models", _models("m1"))
    wh.write_trace_partition("m1", _traces("m1", 3, 1.0))
    refresh_catalog(wh)
    return wh


def _plain_count(db: Path) -> tuple[int, float, int]:
    """What a plain DuckDB user sees: no lrouter code, no settings."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select count(*), avg(quality), sum(simulated::int) from traces").fetchone()
    finally:
        con.close()


def test_views_hold_no_absolute_paths(tmp_path):
    wh = _home(tmp_path / "home")
    con = duckdb.connect(str(wh.db_path), read_only=True)
    sqls = [s for (s,) in con.execute("select sql from duckdb_views() where not internal").fetchall()]
    con.close()
    assert sqls and all(CATALOG_DIR_SQL in s for s in sqls)
    assert not any(str(tmp_path) in s for s in sqls)


def test_copied_home_reads_its_own_files(tmp_path, monkeypatch):
    orig = _home(tmp_path / "orig")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    copy = Warehouse(tmp_path / "copy" / "warehouse")
    # the original changes after the copy: the copy must not see it
    orig.write_trace_partition("m1", _traces("m1", 7, 0.0))
    orig.write_trace_partition("m2", _traces("m2", 5, 0.0))
    refresh_catalog(orig)

    assert run_query(copy, "select count(*) n, avg(quality) q from traces").rows() == [(3, 1.0)]
    assert run_query(orig, "select count(*) n from traces")["n"][0] == 12
    monkeypatch.chdir(tmp_path)  # a plain client from an unrelated working directory
    assert _plain_count(copy.db_path) == (3, 1.0, 3)
    assert _plain_count(orig.db_path) == (12, 0.0, 7)

    shutil.rmtree(tmp_path / "orig")  # the copy stands on its own
    assert run_query(copy, "select count(*) n from traces")["n"][0] == 3
    assert _plain_count(copy.db_path) == (3, 1.0, 3)


def test_moved_home_and_relative_path(tmp_path, monkeypatch):
    _home(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    monkeypatch.chdir(tmp_path / "b")
    assert _plain_count(Path("warehouse/warehouse.duckdb")) == (3, 1.0, 3)
    assert run_query(Warehouse("warehouse"), "select count(*) n from traces")["n"][0] == 3


def test_old_absolute_catalog_is_not_trusted(tmp_path):
    """A catalog built before the fix points at another home: the query path serves its own views."""
    orig = _home(tmp_path / "orig")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    copy = Warehouse(tmp_path / "copy" / "warehouse")
    con = duckdb.connect(str(copy.db_path))
    con.execute("drop view traces")
    con.execute(f"create view traces as select * from read_parquet('{orig.traces_dir}/*.parquet')")
    con.close()
    orig.write_trace_partition("m1", _traces("m1", 9, 0.0))
    assert run_query(copy, "select count(*) n from traces")["n"][0] == 3


def test_query_path_ignores_client_temp_directory(tmp_path):
    """lrouter pins temp_directory itself, so the views resolve however DuckDB is configured."""
    wh = _home(tmp_path / "home")
    assert run_query(wh, "select current_setting('temp_directory') t")["t"][0] == f"{wh.db_path}.tmp"


@pytest.mark.parametrize("readonly", [True, False])
def test_plain_duckdb_on_copy_read_write_modes(tmp_path, readonly):
    _home(tmp_path / "orig")
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    shutil.rmtree(tmp_path / "orig")
    con = duckdb.connect(str(tmp_path / "copy" / "warehouse" / "warehouse.duckdb"), read_only=readonly)
    assert con.execute("select count(*) from traces").fetchone()[0] == 3
    con.close()
