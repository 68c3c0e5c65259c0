"""served_requests keeps the request's task_group / dataset (for recalibration's group parts) and still reads
part files written before those columns existed."""

from __future__ import annotations

import time

import polars as pl

from router.serving.gateway.chat import Served
from router.serving.gateway.served_log import SERVED_DIR, ServedLog, now_iso, production_traces, read_served
from warehouse.schemas import SERVED_REQUESTS, SERVED_REQUESTS_ADDED
from warehouse.store import atomic_write_parquet


def test_old_part_files_read_and_new_columns_reach_production_traces(tmp_path):
    log = ServedLog(tmp_path)
    new = Served(request_id="chatcmpl-lr-new", received_at=now_iso(), t0=time.perf_counter(), policy="lrouter",
                 chosen_model="simvl-nano:1b", task_group="ocr", dataset="docs")
    log.record(new.row())
    log.add_feedback("chatcmpl-lr-new", 0.9)
    log.flush()
    old_row = {**Served(request_id="chatcmpl-lr-old", received_at=now_iso(), t0=time.perf_counter(),
                        policy="lrouter", chosen_model="simvl-nano:1b").row()}
    for c in SERVED_REQUESTS_ADDED:
        old_row.pop(c)
    old_schema = {c: t for c, t in SERVED_REQUESTS.items() if c not in SERVED_REQUESTS_ADDED}
    atomic_write_parquet(pl.from_dicts([old_row], schema=old_schema), tmp_path / SERVED_DIR / "part-0-old.parquet")
    log.add_feedback("chatcmpl-lr-old", 0.2)
    log.flush()

    rows = read_served(tmp_path).sort("request_id")
    assert rows["request_id"].to_list() == ["chatcmpl-lr-new", "chatcmpl-lr-old"]
    assert rows["task_group"].to_list() == ["ocr", None] and rows["dataset"].to_list() == ["docs", None]
    traces = production_traces(rows).sort("query_id")
    assert traces["task_group"].to_list() == ["ocr", None] and traces["dataset"].to_list() == ["docs", None]
    assert traces["quality"].to_list() == [0.9, 0.2]

    # only old files on disk: the added columns still appear, all null
    only_old = tmp_path / "only_old"
    atomic_write_parquet(pl.from_dicts([old_row], schema=old_schema), only_old / SERVED_DIR / "part-0-old.parquet")
    rows = read_served(only_old)
    assert rows.height == 1 and rows["task_group"].to_list() == [None] and rows["dataset"].dtype == pl.String
