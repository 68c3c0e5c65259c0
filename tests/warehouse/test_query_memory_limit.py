"""``lrouter query`` runs under a DuckDB memory limit and a cap on its spill files, and cannot lift them: one
query (a sorted cross join, say) cannot take the box."""

from __future__ import annotations

import pytest

from tests.warehouse.test_warehouse import _traces
from warehouse.catalog import QUERY_MEMORY_LIMIT, QueryRefused, refresh_catalog, run_query
from warehouse.store import Warehouse


def test_query_runs_under_a_memory_limit_it_cannot_lift(tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    wh.write_trace_partition("m1", _traces("m1", 3))
    refresh_catalog(wh)
    got = run_query(wh, "select current_setting('memory_limit') m, current_setting('max_temp_directory_size') t")
    mem, temp = got["m"][0], got["t"][0]
    assert mem.endswith("MiB") or mem.endswith("GiB") or mem.endswith("MB") or mem.endswith("GB"), mem
    assert float(mem.split()[0]) <= (1000 if "M" in mem else 1.0), (mem, QUERY_MEMORY_LIMIT)
    assert "GiB" in temp or "GB" in temp, temp
    with pytest.raises(QueryRefused):
        run_query(wh, "set memory_limit = '64GB'")
