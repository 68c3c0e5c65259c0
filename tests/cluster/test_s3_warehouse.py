"""The warehouse on an S3-compatible server (moto): tables, partitions, staged rows, blobs and DuckDB."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from warehouse.catalog import QueryRefused, read_only_connection, refresh_catalog, run_query
from warehouse.filesystem import S3FS
from warehouse.schemas import TABLES, TRACES
from warehouse.store import Warehouse

pytestmark = pytest.mark.integration


def _full(schema: dict, n: int, **cols: list) -> pl.DataFrame:
    """A frame with every declared column (nulls where not given)."""
    return pl.DataFrame({c: cols.get(c, [None] * n) for c in schema}, schema=schema)


def _models(n: int = 3) -> pl.DataFrame:
    return _full(TABLES["models"], n, model_id=[f"m{i}:1b" for i in range(n)], simulated=[True] * n)


def _traces(model: str, n: int = 4) -> pl.DataFrame:
    return _full(TRACES, n, query_id=[f"q{i}" for i in range(n)], model_id=[model] * n,
                 quality=[i / n for i in range(n)], status=["ok"] * n, attempt=[1] * n)


@pytest.fixture()
def wh(s3_bucket: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    monkeypatch.setenv("LROUTER_HOME", str(tmp_path / "home"))
    return Warehouse(f"{s3_bucket}/team/wh").ensure()


def test_tables_and_partitions_round_trip_through_the_bucket(wh: Warehouse) -> None:
    assert wh.remote and wh.location.endswith("/team/wh")
    assert not wh.has_table("models")
    wh.write_table("models", _models())
    assert wh.has_table("models") and wh.read_table("models")["model_id"].to_list()[0] == "m0:1b"
    for m in ("a:1b", "b/c:2b"):  # ':' and '/' in a model id stay one partition
        wh.write_trace_partition(m, _traces(m))
    assert wh.trace_partitions() == ["a:1b", "b/c:2b"]
    assert wh.read_traces().height == 8
    wh.delete_trace_partition("a:1b")
    assert wh.trace_partitions() == ["b/c:2b"] and wh.read_trace_partition("a:1b").height == 0
    assert not any(str(p).endswith(".parquet") for p in wh.root.rglob("*")), "tables never touch local disk"


def test_a_replacement_that_dies_before_its_pointer_leaves_the_old_table(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh.write_table("models", _models(2))
    original = S3FS.put_bytes

    def die_on_pointer(self: S3FS, rel: str, data: bytes) -> str:
        if rel.endswith(".current"):
            raise ConnectionError("worker died after the object, before the pointer")
        return original(self, rel, data)

    monkeypatch.setattr(S3FS, "put_bytes", die_on_pointer)
    with pytest.raises(ConnectionError):
        wh.write_table("models", _models(5))
    monkeypatch.undo()
    assert wh.read_table("models").height == 2  # readers still see the whole previous version
    for n in (3, 4, 5):
        wh.write_table("models", _models(n))
    assert wh.read_table("models").height == 5
    objects = wh.fs.fs.ls(wh.fs.key("_objects"), detail=False, refresh=True)
    assert all(len(wh.fs.fs.ls(o, detail=False, refresh=True)) <= 3 for o in objects), "old versions collected"


def test_duckdb_reads_the_bucket_and_lrouter_query_stays_read_only(wh: Warehouse) -> None:
    wh.write_table("models", _models())
    for m in ("m0:1b", "m1:1b"):
        wh.write_trace_partition(m, _traces(m))
    assert set(refresh_catalog(wh)) == {"models", "traces"}
    df = run_query(wh, "select model_id, count(*) n, bool_and(simulated) s from traces group by 1 order by 1")
    assert df.rows() == [("m0:1b", 4, True), ("m1:1b", 4, True)]
    with pytest.raises(QueryRefused):
        run_query(wh, f"copy (select 1) to '{wh.location}/tables/evil.parquet'")
    con = read_only_connection(wh)
    try:
        for sql in (f"copy (select 1 as a) to '{wh.location}/tables/evil.parquet'",
                    f"select * from read_parquet('s3://{wh.fs.bucket}/elsewhere/x.parquet')",
                    "select * from read_csv('/etc/passwd')", f"attach '{wh.root}/other.db' as other"):
            with pytest.raises((duckdb.Error, PermissionError)):
                con.execute(sql).fetchall()
    finally:
        con.close()
    assert not wh.has_table("evil") and not wh.fs.fs.exists(wh.fs.key("tables/evil.parquet"))


def test_resume_state_and_blobs_move_between_machines(s3_bucket: str, tmp_path, monkeypatch) -> None:
    from collectors.collection.resume import TraceCheckpoint

    monkeypatch.setenv("LROUTER_HOME", str(tmp_path / "worker-a"))
    a = Warehouse(f"{s3_bucket}/wh").ensure()
    TraceCheckpoint(a, "m0:1b").append(_traces("m0:1b", 3).to_dicts())
    (a.images_dir / "abc.png").write_bytes(b"png")
    (a.artifacts_dir / "router").mkdir()
    (a.artifacts_dir / "router" / "LATEST").write_text("ckpt-1")
    assert a.push() == 2 and a.push() == 0  # nothing changed: nothing uploaded

    monkeypatch.setenv("LROUTER_HOME", str(tmp_path / "worker-b"))
    b = Warehouse(f"{s3_bucket}/wh").ensure()
    assert b.root != a.root
    assert TraceCheckpoint(b, "m0:1b").staged().height == 3  # the other worker's staged rows
    assert b.pull() == 2 and (b.images_dir / "abc.png").read_bytes() == b"png"
    assert (b.artifacts_dir / "router" / "LATEST").read_text() == "ckpt-1"
    TraceCheckpoint(b, "m0:1b").clear()
    assert TraceCheckpoint(a, "m0:1b").staged().height == 0
