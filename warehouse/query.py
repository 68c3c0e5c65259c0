"""Run one user query on a DuckDB connection with a row cap, a timeout and Ctrl-C, and write its rows.

DuckDB releases the GIL while it works but never checks Python's signal flags, so a query run on the main
thread ignores Ctrl-C until it ends. The query therefore runs on a worker thread while the main thread
waits, and a timeout or SIGINT calls ``con.interrupt()``. Rows are streamed as Arrow record batches and
the stream stops one row past the cap, so memory stays bounded whatever the result size.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

BATCH_ROWS = 2048  # rows per Arrow batch pulled from DuckDB
INTERRUPT_GRACE_S = 5.0  # how long an interrupted query may take to stop before we stop waiting for it


class QueryTimeout(RuntimeError):
    """The query ran past its time limit and was interrupted."""


class QueryInterrupted(RuntimeError):
    """The query was interrupted by SIGINT (Ctrl-C)."""


@dataclass(frozen=True)
class QueryResult:
    """The rows fetched (at most ``max_rows``) and whether the result had more."""

    table: pa.Table
    truncated: bool
    max_rows: int | None


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int | None) -> QueryResult:
    rel = con.sql(sql)
    if rel is None:  # defensive: the read-only check only lets row-returning statements through
        return QueryResult(pa.table({}), False, max_rows)
    reader = rel.to_arrow_reader(BATCH_ROWS)
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        batches.append(batch)
        rows += batch.num_rows
        if max_rows is not None and rows > max_rows:  # one row past the cap proves there is more
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    truncated = max_rows is not None and table.num_rows > max_rows
    if truncated:
        table = table.slice(0, max_rows)
    return QueryResult(table, truncated, max_rows)


class _Run:
    """State shared by the waiting thread and the worker: the connection, once open, and why we stop."""

    def __init__(self) -> None:
        self.con: duckdb.DuckDBPyConnection | None = None
        self.reason: str | None = None  # "timeout" or "interrupt"

    def interrupt(self) -> None:
        con = self.con
        if con is not None:
            try:
                con.interrupt()
            except duckdb.Error:  # the worker closed it meanwhile: nothing left to stop
                pass


def _sigint_handler(run: _Run) -> Callable[[int, Any], None]:
    def handler(signum: int, frame: Any) -> None:
        if run.reason == "interrupt":  # a second Ctrl-C: stop waiting for DuckDB
            raise KeyboardInterrupt
        run.reason = "interrupt"
        run.interrupt()

    return handler


def execute(
    connect: Callable[[], duckdb.DuckDBPyConnection],
    sql: str,
    *,
    max_rows: int | None = None,
    timeout_s: float | None = None,
) -> QueryResult:
    """Open a connection with ``connect``, run ``sql``; QueryTimeout past ``timeout_s``, QueryInterrupted on SIGINT.

    The worker thread owns the connection (opens and closes it), so a query that ignores the interrupt can
    be abandoned after a grace period without closing a connection under it. SIGINT is only taken over on
    the main thread and when it is not ignored (a background job keeps ignoring it).
    """
    if max_rows is not None and max_rows < 0:
        raise ValueError("max_rows must be >= 0 (or None for no cap)")
    run = _Run()
    out: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            con = connect()
            try:
                run.con = con
                if run.reason is None:
                    out["result"] = _fetch(con, sql, max_rows)
            finally:
                run.con = None
                con.close()
        except BaseException as exc:  # handed to the waiting thread
            out["error"] = exc
        finally:
            done.set()

    previous = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGINT, _sigint_handler(run))
    try:
        worker = threading.Thread(target=work, name="lrouter-query", daemon=True)
        worker.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        stopped_at: float | None = None
        while not done.wait(0.05):
            now = time.monotonic()
            if run.reason is None and deadline is not None and now >= deadline:
                run.reason = "timeout"
            if run.reason is not None:
                # interrupt() only stops the statement running now: repeat until the worker gives up
                run.interrupt()
                stopped_at = stopped_at or now
                if now - stopped_at > INTERRUPT_GRACE_S:
                    break
        if done.is_set():
            # let the worker exit fully: a daemon thread still unwinding at interpreter exit aborts DuckDB
            worker.join()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if run.reason == "timeout":
        raise QueryTimeout(f"query timed out after {timeout_s:g}s")
    if run.reason == "interrupt":
        raise QueryInterrupted("query interrupted")
    if "error" in out:
        raise out["error"]
    return out["result"]


# --- output --------------------------------------------------------------------------------------------


def _unique_names(names: list[str]) -> list[str]:
    """DuckDB allows ``select 1 a, 2 a``; JSON objects and CSV readers need distinct names."""
    seen: set[str] = set()
    result = []
    for name in names:
        new, i = name, 0
        while new in seen:
            i += 1
            new = f"{name}_{i}"
        seen.add(new)
        result.append(new)
    return result


def _blob(value: bytes) -> str:
    """Bytes as DuckDB prints a BLOB: printable ASCII kept, everything else as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 and b != 92 else f"\\x{b:02X}" for b in value)


def _interval(value: Any) -> str:
    """An INTERVAL (months, days, nanoseconds) as an ISO 8601 duration, e.g. ``P1M2DT3.5S``."""
    date = (f"{value.months}M" if value.months else "") + (f"{value.days}D" if value.days else "")
    time_part = f"T{value.nanoseconds / 1e9:g}S" if value.nanoseconds else ""
    return f"P{date}{time_part}" if date or time_part else "PT0S"


def _jsonable(value: Any) -> Any:
    """A value made of JSON types only (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pa.MonthDayNano):  # a named tuple: check before tuple
        return _interval(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _blob(bytes(value))
    return str(value)


def _columns(table: pa.Table) -> list[list[Any]]:
    cols = []
    for column in table.columns:
        try:
            cols.append(column.to_pylist(maps_as_pydicts="lossy"))
        except (TypeError, ValueError):  # map keys that cannot be dict keys: keep (key, value) pairs
            cols.append(column.to_pylist())
    return cols


def _rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    return zip(*_columns(table), strict=True) if table.num_columns else iter(())


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)) and not isinstance(value, pa.MonthDayNano):
        return json.dumps(_jsonable(value), ensure_ascii=False)  # nested cell: one JSON document
    if isinstance(value, (str, int, float, Decimal)):
        return value
    return _jsonable(value)


def _text_column(name: str, column: pa.ChunkedArray) -> pl.Series:
    values = _columns(pa.table({"c": column}))[0]
    plain = [_jsonable(v) for v in values]
    text = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in plain]
    return pl.Series(name, text, dtype=pl.String)


def _polars_imports(t: pa.DataType) -> bool:
    """Whether polars can import this Arrow type (it panics on INTERVAL, refuses UNION)."""
    if pa.types.is_interval(t) or pa.types.is_union(t):
        return False
    if pa.types.is_map(t):
        return _polars_imports(t.key_type) and _polars_imports(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _polars_imports(t.value_type)
    if pa.types.is_struct(t):
        return all(_polars_imports(t.field(i).type) for i in range(t.num_fields))
    return True


def to_polars(table: pa.Table) -> pl.DataFrame:
    """The rows as a DataFrame; duplicate names made unique and types polars cannot import (INTERVAL) as text."""
    table = table.rename_columns(_unique_names(table.column_names))
    if all(_polars_imports(f.type) for f in table.schema):
        return pl.from_arrow(table)
    series = [
        pl.from_arrow(column).alias(name) if _polars_imports(column.type) else _text_column(name, column)
        for name, column in zip(table.column_names, table.columns, strict=True)
    ]
    return pl.DataFrame(series)


def to_csv(table: pa.Table) -> str:
    """CSV with a header; list/struct/map cells are JSON-encoded (CSV has no nested values)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_unique_names(table.column_names))
    for row in _rows(table):
        writer.writerow([_csv_cell(v) for v in row])
    return buf.getvalue()


def to_json(table: pa.Table) -> str:
    """A JSON array of row objects; nested values stay nested, NaN/inf become null."""
    names = _unique_names(table.column_names)
    records = [{n: _jsonable(v) for n, v in zip(names, row, strict=True)} for row in _rows(table)]
    return json.dumps(records, ensure_ascii=False)
