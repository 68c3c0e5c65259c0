"""``lrouter query`` safety: row cap, timeout, Ctrl-C, EXPLAIN of writes, nested columns (issue item 5)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.warehouse.test_warehouse import _traces
from warehouse.catalog import QueryRefused, check_read_only, query_rows, refresh_catalog, run_query
from warehouse.query import QueryInterrupted, QueryTimeout, to_csv, to_json
from warehouse.store import Warehouse

REPO = Path(__file__).resolve().parents[2]
SLOW = "select count(*) from range(100000000) a, range(100000) b"  # minutes of work if not interrupted
NESTED = (
    "select [1, 2] l, {'a': 1, 'b': ['x', null]} s, map([1], ['one']) m, 'a\\x00'::blob b, "
    "interval 1 day iv, 1.50::decimal(10, 2) d, 'nan'::double f, null::int[] n, 'q,\"x' t"
)


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    wh = Warehouse(tmp_path / "home" / "warehouse").ensure()
    wh.write_trace_partition("m1", _traces("m1", 3))
    refresh_catalog(wh)
    return wh


def _cli(home: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "--home", str(home), "query", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _wait_connected(p: subprocess.Popen, db: Path, limit_s: float = 60.0) -> None:
    """Wait until the CLI has the catalog open: its SIGINT handler is installed by then."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert p.poll() is None, p.communicate()
        try:
            fds = os.listdir(f"/proc/{p.pid}/fd")
            if any(os.readlink(f"/proc/{p.pid}/fd/{fd}") == str(db) for fd in fds):
                return
        except OSError:
            pass
        time.sleep(0.02)
    p.kill()
    raise AssertionError("lrouter query never opened the catalog")


# --- row cap -------------------------------------------------------------------------------------------


def test_row_cap_streams_and_stops(wh):
    t0 = time.monotonic()
    res = query_rows(wh, "select i, i::varchar s from range(100000000) t(i)", max_rows=1000)
    assert time.monotonic() - t0 < 5, "the stream stopped at the cap, not after 100M rows"
    assert res.truncated and res.table.num_rows == 1000 and res.max_rows == 1000
    exact = query_rows(wh, "select * from range(1000)", max_rows=1000)
    assert not exact.truncated and exact.table.num_rows == 1000
    assert query_rows(wh, "select * from range(5)", max_rows=0).table.num_rows == 0


def test_cli_row_cap_message_and_bounded_memory(wh):
    p = _cli(
        wh.root.parent,
        "select i, i::varchar s from range(100000000) t(i)",
        "--format",
        "csv",
        "--max-rows",
        "5",
    )
    # VmHWM of the running child (ru_maxrss would include the RSS of the forking test process, which Linux
    # keeps across exec); polled until it exits, the mark only grows
    peak_kib = 0
    while p.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(p.pid))
        time.sleep(0.01)
    out, err = p.communicate()
    assert p.returncode == 0, err
    assert out.splitlines() == ["i,s", "0,0", "1,1", "2,2", "3,3", "4,4"]
    assert "(truncated at 5 rows; use --max-rows)" in err
    assert 0 < peak_kib < 1024 * 1024, f"peak RSS {peak_kib} KiB: the result was materialised"


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:  # exited between poll() and open()
        pass
    return 0


# --- timeout and Ctrl-C --------------------------------------------------------------------------------


def test_timeout_interrupts_duckdb(wh):
    t0 = time.monotonic()
    with pytest.raises(QueryTimeout, match="timed out after 0.5s"):
        query_rows(wh, SLOW, timeout_s=0.5)
    assert time.monotonic() - t0 < 3
    assert run_query(wh, "select count(*) n from traces")["n"][0] == 3  # nothing left behind


def _default_sigint() -> None:
    """A child that reacts to Ctrl-C as in a terminal, even when the suite itself runs in the background
    (nohup / `cmd &` start it with SIGINT ignored, which the CLI rightly respects)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_interrupts_duckdb_in_process(wh):
    assert threading.current_thread() is threading.main_thread()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # the suite was started in the background
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request_restore = True
    else:
        request_restore = False
    before = signal.getsignal(signal.SIGINT)
    sent: list[float] = []

    def ctrl_c() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.5, ctrl_c)
    timer.start()
    with pytest.raises(QueryInterrupted):
        query_rows(wh, SLOW, timeout_s=30)
    timer.join()
    assert time.monotonic() - sent[0] < 2
    assert signal.getsignal(signal.SIGINT) is before, "the previous SIGINT handler is restored"
    if request_restore:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_cli_sigint_exits_130_promptly(wh):
    p = _cli(wh.root.parent, SLOW, "--timeout", "60", preexec_fn=_default_sigint)
    _wait_connected(p, wh.db_path)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=20)
    assert time.monotonic() - t0 < 3, "Ctrl-C must stop the query promptly"
    assert p.returncode == 130, err
    assert err.strip() == "query interrupted"


def test_cli_timeout_exits_nonzero_with_one_line(wh):
    p = _cli(wh.root.parent, SLOW, "--timeout", "1")
    _wait_connected(p, wh.db_path)
    t0 = time.monotonic()
    _, err = p.communicate(timeout=30)
    assert time.monotonic() - t0 < 4
    assert p.returncode == 3
    assert err.strip().splitlines() == ["query timed out after 1s (raise it with --timeout)"]


# --- read-only check -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "explain analyze create table t as select 1",
        "EXPLAIN ANALYZE insert into traces select * from traces",
        "explain delete from traces",
        "explain /* hidden */ analyse copy (select 1) to 'x.csv'",
        "explain (format json) insert into traces select * from traces",
        "explain analyze (format json) update traces set quality = 0",
        "select 1; explain analyze drop view traces",
        "explain explain analyze create table t as select 1",
        "explain attach 'x.db'",
        "explain (format ') select 1; --') insert into traces select * from traces",
    ],
)
def test_explain_of_a_write_is_refused(wh, sql):
    with pytest.raises(QueryRefused):
        run_query(wh, sql)
    assert run_query(wh, "select count(*) n from traces")["n"][0] == 3


def test_explain_refusal_says_why(wh):
    with pytest.raises(QueryRefused, match="EXPLAIN of a CREATE statement is refused"):
        run_query(wh, "EXPLAIN ANALYZE create table t as select 1")


@pytest.mark.parametrize(
    "sql",
    [
        "explain select * from traces",
        "EXPLAIN ANALYZE select model_id, count(*) from traces group by 1",
        "explain (format json) select 1",
        "explain (select 1) union (select 2)",
        "explain -- comment\n select 1",
        "select 1; explain select 2",
    ],
)
def test_explain_of_a_select_runs(wh, sql):
    check_read_only(sql)
    df = run_query(wh, sql)
    assert df.height >= 1 and "explain_value" in df.columns


# --- nested columns ------------------------------------------------------------------------------------


def test_nested_columns_in_csv_and_json(wh):
    table = query_rows(wh, NESTED).table
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[0] == ["l", "s", "m", "b", "iv", "d", "f", "n", "t"]
    cells = dict(zip(rows[0], rows[1], strict=True))
    assert json.loads(cells["l"]) == [1, 2]
    assert json.loads(cells["s"]) == {"a": 1, "b": ["x", None]}
    assert json.loads(cells["m"]) == {"1": "one"}
    assert cells["b"] == "a\\x00" and cells["d"] == "1.50" and cells["n"] == "" and cells["t"] == 'q,"x'
    (record,) = json.loads(to_json(table))
    assert record["l"] == [1, 2] and record["s"] == {"a": 1, "b": ["x", None]} and record["m"] == {"1": "one"}
    assert record["f"] is None and record["n"] is None and record["d"] == 1.5  # strict JSON: no NaN


def test_cli_nested_columns_and_duplicate_names(wh):
    for fmt in ("csv", "json", "table"):
        p = _cli(wh.root.parent, NESTED + ", 1 x, 2 x", "--format", fmt)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert "Traceback" not in err
        if fmt == "json":
            (record,) = json.loads(out)
            assert record["x"] == 1 and record["x_1"] == 2
        if fmt == "csv":
            assert out.splitlines()[0].endswith(",x,x_1")
