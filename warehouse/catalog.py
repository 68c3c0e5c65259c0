"""The DuckDB catalog: one view per warehouse table, and a read-only query path for users.

The catalog file holds only views over the Parquet files, so rebuilding it is cheap and never copies
data. DuckDB allows one writer per database file: rebuilds take an exclusive ``flock`` on a side lock
file, and readers open the catalog read-only (falling back to an in-memory catalog over the same Parquet
files when a rebuild holds the file), so a reader never blocks a collection and always sees whole files.

The views name their Parquet files relative to the catalog file, never by absolute path, so a copied home
(``cp -a data X``) reads its own files. A table function's arguments cannot hold a subquery, so the view
cannot ask ``duckdb_databases()`` where the catalog lives; it reads the one setting DuckDB derives from
the database file instead: ``temp_directory`` defaults to ``<catalog file>.tmp``, next to the Parquet
files. Any DuckDB client that opens ``warehouse.duckdb`` directly therefore reads the right files.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl

from warehouse.query import QueryResult, execute, to_polars
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
    "routing_decisions": ("tables/routing_decisions.parquet", "per-query decisions of every evaluated router "
                          "vs the oracle (test split)"),
    "pool_decisions": ("tables/pool_decisions.parquet", "the deployed router's decisions over the current pool "
                       "(test split; new models scored through their capability tokens)"),
    "import_skipped": ("tables/import_skipped.parquet", "rows skipped by the last import, with reasons"),
    "served_requests": ("served_requests/part-*.parquet", "one row per request the gateway answered"),
    "served_feedback": ("served_feedback/part-*.parquet", "quality labels posted to the gateway's /v1/feedback"),
}

READ_ONLY_STATEMENTS = {"SELECT", "EXPLAIN"}

# The directory of the open database file, as a SQL expression a table function accepts (see above).
CATALOG_DIR_SQL = "parse_dirpath(current_setting('temp_directory'))"


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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _source_sql(base_sql: str, pattern: str) -> str:
    return f"read_parquet({base_sql} || {_sql_str('/' + pattern)}, union_by_name = true)"


def _files_sql(urls: list[str]) -> str:
    return f"read_parquet([{', '.join(_sql_str(u) for u in urls)}], union_by_name = true)"


def _define_views(
    con: duckdb.DuckDBPyConnection, wh: Warehouse, base_sql: str = CATALOG_DIR_SQL
) -> list[str]:
    """Create a view per table whose files exist; ``base_sql`` is the SQL for the warehouse directory.

    On S3 there is no directory to glob safely (a glob would also match objects being replaced), so each
    view names the objects the current pointers publish, resolved when the connection is made."""
    created = []
    sources: dict[str, str] = {}
    for name, (pattern, _desc) in VIEW_SOURCES.items():
        if wh.remote:
            urls = wh.fs.resolve(pattern)
            source = _files_sql(urls) if urls else ""
        else:
            source = _source_sql(base_sql, pattern) if any(wh.root.glob(pattern)) else ""
        if not source:
            con.execute(f"DROP VIEW IF EXISTS {name}")
            continue
        sources[name] = source
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")
        created.append(name)
    if "traces" in created and "models" in created:
        # every trace row says whether it came from a simulated model
        traces = sources["traces"]
        con.execute(
            "CREATE OR REPLACE VIEW traces AS SELECT t.*, coalesce(m.simulated, false) AS simulated "
            f"FROM {traces} t "
            "LEFT JOIN (SELECT model_id, simulated FROM models) m USING (model_id)"
        )
    return created


def _catalog_is_relative(con: duckdb.DuckDBPyConnection) -> bool:
    """False for a catalog built before views were relative (absolute paths, maybe another home's)."""
    rows = con.execute(
        "SELECT sql FROM duckdb_views() WHERE NOT internal AND database_name = current_database()"
    ).fetchall()
    return all(CATALOG_DIR_SQL in sql for (sql,) in rows if "read_parquet" in sql)


def _pin_temp_directory(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    """The views find their files through temp_directory: pin it to DuckDB's default for the catalog."""
    con.execute(f"SET temp_directory = {_sql_str(str(wh.db_path) + '.tmp')}")


def refresh_catalog(wh: Warehouse) -> list[str]:
    """(Re)create every view in ``warehouse.duckdb``; returns the names of the views that exist.

    An S3 warehouse has no catalog file (DuckDB cannot write a database into a bucket): readers build the
    same views in memory from the published pointers, so this only reports which views exist."""
    if wh.remote:
        con = duckdb.connect(":memory:")
        try:
            con.register_filesystem(wh.fs.fs)
            return _define_views(con, wh)
        finally:
            con.close()
    with catalog_lock(wh):
        con = duckdb.connect(str(wh.db_path))
        try:
            _pin_temp_directory(con, wh)
            return _define_views(con, wh)
        finally:
            con.close()


class QueryRefused(ValueError):
    """Raised when ``lrouter query`` is given anything but a read-only SELECT."""


def _tokens(sql: str) -> list[tuple[int, str]]:
    """(offset, text) of each token but comments, from DuckDB's own tokenizer (it knows strings)."""
    raw = duckdb.tokenize(sql)
    out = []
    for i, (start, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
        if kind != duckdb.token_type.comment:
            out.append((start, sql[start:end].strip()))
    return out


def _explained(sql: str) -> list[str]:
    """What an EXPLAIN [ANALYZE] [(options)] statement explains: candidate texts after the prefix.

    ``EXPLAIN (FORMAT json) SELECT ...`` and ``EXPLAIN (SELECT ...)`` both start with a parenthesis, so
    both readings are returned; the caller requires each one that parses to be read-only.
    """
    tokens = _tokens(sql)
    i = 1  # tokens[0] is EXPLAIN
    if i < len(tokens) and tokens[i][1].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i >= len(tokens):
        return []
    candidates = [sql[tokens[i][0] :]]
    if tokens[i][1] == "(":
        depth = 0
        for j in range(i, len(tokens)):
            depth += tokens[j][1] == "("
            depth -= tokens[j][1] == ")"
            if depth == 0:
                if j + 1 < len(tokens):
                    candidates.append(sql[tokens[j + 1][0] :])
                break
    return candidates


def _check_statement(sql: str, kind: str, depth: int = 0) -> None:
    if kind not in READ_ONLY_STATEMENTS:
        raise QueryRefused(
            f"lrouter query is read-only: {kind} statements are refused (only SELECT / EXPLAIN)"
        )
    if kind != "EXPLAIN":
        return
    if depth > 8:
        raise QueryRefused("too many nested EXPLAINs")
    parsed = []
    for text in _explained(sql):
        if not text.strip(" \t\n\r;"):
            continue
        try:
            parsed.append(duckdb.extract_statements(text))
        except duckdb.Error:
            continue
    if not parsed:
        raise QueryRefused("could not tell what the EXPLAIN statement explains; refused")
    for statements in parsed:
        for st in statements:
            inner = str(st.type).rsplit(".", 1)[-1]
            if inner not in READ_ONLY_STATEMENTS:
                raise QueryRefused(
                    f"lrouter query is read-only: EXPLAIN of a {inner} statement is refused "
                    "(EXPLAIN [ANALYZE] runs only on SELECT)"
                )
            _check_statement(st.query, inner, depth + 1)


def check_read_only(sql: str) -> None:
    """Refuse anything but SELECT and EXPLAIN [ANALYZE] SELECT (ANALYZE runs the explained statement)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"could not parse SQL: {exc}") from exc
    if not statements:
        raise QueryRefused("empty SQL")
    for st in statements:
        _check_statement(st.query, str(st.type).rsplit(".", 1)[-1])


QUERY_MEMORY_LIMIT = "1GB"  # a read-only query spills past this (a sorted cross join cannot take the box)
QUERY_TEMP_LIMIT = "4GB"  # ... and fails, naming the limit, once its spill files reach this


def _lock_down(con: duckdb.DuckDBPyConnection, wh: Warehouse) -> None:
    root = wh.location if wh.remote else str(wh.root)
    con.execute(f"SET memory_limit = {_sql_str(QUERY_MEMORY_LIMIT)}")
    con.execute(f"SET max_temp_directory_size = {_sql_str(QUERY_TEMP_LIMIT)}")
    con.execute(f"SET allowed_directories = [{_sql_str(root + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def read_only_connection(wh: Warehouse) -> duckdb.DuckDBPyConnection:
    """A connection that can read the warehouse views and nothing else (no writes, files, ATTACH)."""
    con: duckdb.DuckDBPyConnection | None = None
    if wh.remote:
        # views over the published objects, read through a filesystem that refuses every write
        from warehouse.filesystem import s3_filesystem

        con = duckdb.connect(":memory:")
        con.register_filesystem(s3_filesystem(read_only=True))
        _define_views(con, wh)
        _lock_down(con, wh)
        return con
    if wh.db_path.exists():
        try:
            con = duckdb.connect(str(wh.db_path), read_only=True)
        except duckdb.Error:
            con = None  # a rebuild holds the file: serve the same views from memory
    if con is not None:
        _pin_temp_directory(con, wh)
        if not _catalog_is_relative(con):
            con.close()  # an old catalog with absolute paths (maybe another home's): don't trust it
            con = None
    if con is None:
        con = duckdb.connect(":memory:")
        _define_views(con, wh, _sql_str(str(wh.root)))
    _lock_down(con, wh)
    return con


def run_query(
    wh: Warehouse, sql: str, *, max_rows: int | None = None, timeout_s: float | None = None
) -> pl.DataFrame:
    """Read-only SQL over the views as a DataFrame; no row cap or timeout unless asked (see query_rows)."""
    return to_polars(query_rows(wh, sql, max_rows=max_rows, timeout_s=timeout_s).table)


def query_rows(
    wh: Warehouse, sql: str, *, max_rows: int | None = None, timeout_s: float | None = None
) -> QueryResult:
    """Read-only SQL over the views, streamed up to ``max_rows`` rows, interruptible by timeout and SIGINT."""
    check_read_only(sql)
    return execute(lambda: read_only_connection(wh), sql, max_rows=max_rows, timeout_s=timeout_s)
