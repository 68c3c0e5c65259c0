"""Warehouse storage, partition replacement and the read-only DuckDB query path."""

from __future__ import annotations

import threading

import duckdb
import polars as pl
import pytest

from warehouse.catalog import QueryRefused, refresh_catalog, run_query
from warehouse.schemas import TRACES
from warehouse.store import Warehouse, partition_file_name, partition_key


def _traces(model: str, n: int, quality: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query_id": [f"q{i}" for i in range(n)],
            "model_id": [model] * n,
            "attempt": [1] * n,
            "prediction": ["x"] * n,
            "quality": [quality] * n,
            "correct": [quality >= 0.5] * n,
            "prompt_tokens": [10] * n,
            "completion_tokens": [2] * n,
            "image_tokens": [5] * n,
            "cost_usd": [1e-5] * n,
            "latency_ms": [100.0] * n,
            "status": ["ok"] * n,
            "error": [None] * n,
            "collected_at": ["2026-01-01T00:00:00"] * n,
            "model_digest": ["d"] * n,
            "run_id": ["r"] * n,
        },
        schema=TRACES,
    )


def test_partition_names_round_trip():
    for m in ["simvl-nano:1b", "org/model:7b-q4", "a b%c"]:
        name = partition_file_name(m)
        assert "/" not in name and ":" not in name
        assert partition_key(__import__("pathlib").Path(name)) == m


def test_partition_replacement_is_whole_and_isolated(tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m:a", _traces("m:a", 5, 1.0))
    wh.write_trace_partition("m:b", _traces("m:b", 3, 0.0))
    wh.write_trace_partition("m:a", _traces("m:a", 4, 0.0))  # re-collect replaces, never appends
    t = wh.read_traces()
    assert t.filter(pl.col("model_id") == "m:a").height == 4
    assert t.filter(pl.col("model_id") == "m:a")["quality"].sum() == 0
    assert t.filter(pl.col("model_id") == "m:b").height == 3
    assert not list(wh.traces_dir.glob(".*tmp")), "no temporary files left behind"
    with pytest.raises(ValueError, match="belong to other models"):
        wh.write_trace_partition("m:a", _traces("m:b", 2))


def test_readers_never_see_half_written_partitions(tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m", _traces("m", 2000))
    refresh_catalog(wh)
    seen: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.add(run_query(wh, "select count(*) as n from traces")["n"][0])

    th = threading.Thread(target=reader)
    th.start()
    for i in range(15):
        wh.write_trace_partition("m", _traces("m", 1000 if i % 2 else 2000))
    stop.set()
    th.join()
    assert seen <= {1000, 2000}, f"reader saw a partial table: {seen}"


def test_catalog_views_and_query(tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m1", _traces("m1", 3, 1.0))
    wh.write_trace_partition("m2", _traces("m2", 2, 0.0))
    views = refresh_catalog(wh)
    assert "traces" in views and "queries" not in views
    df = run_query(wh, "select model_id, avg(quality) q, count(*) n from traces group by 1 order by 1")
    assert df.rows() == [("m1", 1.0, 3), ("m2", 0.0, 2)]
    con = duckdb.connect(str(wh.db_path), read_only=True)
    assert con.execute("select count(*) from traces").fetchall()[0][0] == 5
    con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "create table t as select 1",
        "insert into traces select * from traces",
        "copy (select * from traces) to 'x.parquet'",
        "attach 'other.db'",
        "set enable_external_access = true",
        "select 1; drop view traces",
        "install httpfs",
        "pragma enable_profiling",
    ],
)
def test_query_refuses_writes(tmp_path, sql):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m1", _traces("m1", 3))
    refresh_catalog(wh)
    with pytest.raises(QueryRefused):
        run_query(wh, sql)
    assert run_query(wh, "select count(*) n from traces")["n"][0] == 3


def test_query_cannot_read_outside_warehouse(tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m1", _traces("m1", 1))
    refresh_catalog(wh)
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(Exception, match="(?i)permission|access"):
        run_query(wh, f"select * from read_csv('{secret}')")
