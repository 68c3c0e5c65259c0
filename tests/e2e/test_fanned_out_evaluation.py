"""The evaluation's fits as a Dagster graph: ``evaluation_fits`` spreads the units over several ops (the
cluster's Celery workers take them; here the in-process executor runs them in turn), evaluation_report then
loads every fit from the fit store, and its tables are the ones of an evaluation that fitted everything itself
on two processes."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from warehouse.store import Warehouse

pytestmark = pytest.mark.slow

EVAL = {"preset": "quick", "seeds": [0], "n_splits": 2, "experiments": ["main_table", "outcome_prediction"]}


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(~pl.col("metric").str.contains("latency|seconds")).drop("run_id").sort(
        "experiment", "router", "setting", "metric", "split", "seed", "pool", "task_group")


def test_fanned_out_fits_feed_the_report_with_the_tables_of_a_parallel_run(tiny_pipeline):
    from pipelines.definitions import materialize

    home, instance, defs = tiny_pipeline
    fanned = materialize(["evaluation_fits", "evaluation_report"], instance=instance, resources=defs.resources,
                         run_config={"ops": {"evaluation_fits": {"config": {**EVAL, "chunks": 2, "workers": 1}},
                                             "evaluation_report": {"config": {**EVAL, "workers": 1}}}})
    assert fanned.success
    # two ops for the main units, and the extra (outcome-prediction) units in their own ops
    chunks = [e.step_key for e in fanned.all_events if e.is_step_success and "eval_fit_chunk" in (e.step_key or "")]
    assert len(chunks) == 2, chunks
    (fits,) = [m.metadata for m in fanned.asset_materializations_for_node("evaluation_fits")]
    assert fits["units"].value >= 2 * 4  # every trained router on both splits, and the extras
    (report,) = [m.metadata for m in fanned.asset_materializations_for_node("evaluation_report")
                 if m.asset_key.to_user_string() == "evaluation_report"]
    wh = Warehouse(home / "warehouse")
    res = wh.read_table("eval_results")
    fanned_rows = res.filter(pl.col("run_id") == fanned.run_id)
    assert report["fit_units_run"].value == 0, "evaluation_report refitted what evaluation_fits had stored"
    assert report["fit_units_loaded"].value == fits["units"].value

    # the same evaluation fitted by the report itself on two processes, with an empty fit store
    import shutil

    shutil.rmtree(wh.artifacts_dir / "fits")
    alone = materialize(["evaluation_report"], instance=instance, resources=defs.resources,
                        run_config={"ops": {"evaluation_report": {"config": {**EVAL, "workers": 2}}}})
    assert alone.success
    alone_rows = wh.read_table("eval_results").filter(pl.col("run_id") == alone.run_id)
    assert fanned_rows.height == alone_rows.height > 0
    assert_frame_equal(_stable(fanned_rows), _stable(alone_rows))
