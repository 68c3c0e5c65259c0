"""The DuckDB catalog: one view per warehouse table, and a read-only query path for users.

The catalog file holds only views over the Parquet files, so rebuilding it is cheap and never copies
data. DuckDB allows one writer per database file: rebuilds take an exclusive ``flock`` on a side lock
file, and readers open the catalog read-only (falling back to an in-memory catalog over the same Parquet
files when a rebuild holds the file), so a reader never blocks a collection and always sees whole files.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl

from warehouse.store import Warehouse

# Views the catalog always defines (Parquet glob relative to the warehouse root) and what they hold.
VIEW_SOURCES: dict[str, tuple[str, str]] = {
    "queries": ("tables/queries.parquet", "benchmark queries: question, answer, task group, image sha256"),
    "models": ("tables/models.parquet", "candidate model registry with prices (simulated flag)"),
    "traces": ("traces/*.parquet", "outcome traces: one row per query x model x attempt kept"),
    "features": ("tables/features.parquet", "per-query encoder ids, dims and bytes"),
    "splits": ("tables/splits.parquet", "train/val/test split and calibration flag"),
    "profiles": ("tables/profiles.parquet", "capability profiles built from calibration rows only"),
    "eval_results": ("tables/eval_results.parquet", "evaluation metrics per router/setting/seed"),
    "routing_decisions": ("tables/routing_decisions.parquet", "per-query routing decisions vs the oracle"),
    "import_skipped": ("tables/import_skipped.parquet", "rows skipped by the last import, with reasons"),
}

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}


@contextmanager
def catalog_lock(wh: Warehouse, timeout_s: float = 60.0) -> Iterator[None]:
    wh.root.mkdir(parents=True, exist_ok=True)
    lock_path = wh.root / ".catalog.lock"
    with open(lock_path, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"catalog lock {lock_path} held for more than {timeout_s}s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _view_sql(wh: Warehouse, name: str, pattern: str) -> str | None:
    files = sorted(wh.root.glob(pattern))
    if not files:
        return None
    path = str(wh.root / pattern).replace("'", "''")
    return f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{path}', union_by_name = true)"


def _define_views(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> list[str]:
    created = []
    for name, (pattern, _desc) in VIEW_SOURCES.items():
        sql = _view_sql(wh, name, pattern)
        if sql is None:
            con.execute(f"DROP VIEW IF EXISTS {name}")
            continue
        con.execute(sql)
        created.append(name)
    if "traces" in created and "models" in created:
        # every trace row says whether it came from a simulated model
        traces = str(wh.root / VIEW_SOURCES["traces"][0]).replace("'", "''")
        con.execute(
            "CREATE OR REPLACE VIEW traces AS SELECT t.*, coalesce(m.simulated, false) AS simulated "
            f"FROM read_parquet('{traces}', union_by_name = true) t "
            "LEFT JOIN (SELECT model_id, simulated FROM models) m USING (model_id)"
        )
    return created


def refresh_catalog(wh: Warehouse) -> list[str]:
    """(Re)create every view in ``warehouse.duckdb``; returns the names of the views that exist."""
    with catalog_lock(wh):
        con = duckdb.connect(str(wh.db_path))
        try:
            return _define_views(con, wh)
        finally:
            con.close()


class QueryRefused(ValueError):
    """Raised when ``lrouter query`` is given anything but a read-only SELECT."""


def check_read_only(sql: str) -> None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"could not parse SQL: {exc}") from exc
    if not statements:
        raise QueryRefused("empty SQL")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY_STATEMENTS:
            raise QueryRefused(
                f"lrouter query is read-only: {kind} statements are refused (only SELECT / EXPLAIN)"
            )


def _lock_down(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    root = str(wh.root).replace("'", "''")
    con.execute(f"SET allowed_directories = ['{root}/']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def read_only_connection(wh: Warehouse) -> duckdb.DuckDBPyConnection:
    """A connection that can read the warehouse views and nothing else (no writes, files, ATTACH)."""
    con: duckdb.DuckDBPyConnection | None = None
    if wh.db_path.exists():
        try:
            con = duckdb.connect(str(wh.db_path), read_only=True)
        except duckdb.Error:
            con = None  # a rebuild holds the file: serve the same views from memory
    if con is None:
        con = duckdb.connect(":memory:")
        _define_views(con, wh)
    _lock_down(con, wh)
    return con


def run_query(wh: Warehouse, sql: str) -> pl.DataFrame:
    check_read_only(sql)
    con = read_only_connection(wh)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()
