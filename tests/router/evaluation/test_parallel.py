"""Fits in parallel: every fit of an evaluation is planned as a keyed unit, run on several processes, and the
tables are bitwise the ones of the serial run; planned units cover every fit the experiments make, and a
stored unit is loaded, not refitted."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from router.data.routing_data import synthetic_routing_data
from router.evaluation.config import LATENT, EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.experiments import run_experiments
from router.evaluation.fits import FitStore
from router.evaluation.parallel import FitUnit, UnitStore, fit_units, plan_extra, plan_main, split_state

ROUTERS = ("Oracle", "Strongest", "KNNRouter", "MLPMFRouter", "RouterDC", "LatentRouter")
EXPERIMENTS = ("main_table", "frontier", "outcome_prediction", "ablations", "cold_start")


@pytest.fixture(scope="module")
def data():
    return synthetic_routing_data(n=200, k=4, seed=2)


def _cfg(**kw) -> EvalConfig:
    return EvalConfig.quick(experiments=EXPERIMENTS, n_splits=2, h_values=(0, 1), c_values=(2,), **kw)


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    """eval_results without wall-clock figures (latency, seconds) and the run id."""
    return frame.filter(~pl.col("metric").str.contains("latency|seconds")).drop("run_id")


@pytest.fixture(scope="module")
def serial(data):
    ctx = EvalContext(data, _cfg(), "eval", routers=ROUTERS)
    return ctx, run_experiments(ctx, workers=1)


def test_parallel_fits_give_the_serial_tables_bitwise(data, serial):
    ctx, out = serial
    par_ctx = EvalContext(data, _cfg(), "eval", routers=ROUTERS)
    par = run_experiments(par_ctx, workers=2)
    assert_frame_equal(_stable(par.eval_results), _stable(out.eval_results))
    assert_frame_equal(par.routing_decisions, out.routing_decisions)
    for r in (0, 1):  # the same hyperparameters chosen on each split's validation rows
        assert par_ctx.split_ctx(r).tuning_log == ctx.split_ctx(r).tuning_log
    assert out.timings["prefit"] > 0 and par.timings["prefit"] > 0


def test_the_plan_covers_every_fit_the_experiments_make(data):
    ctx = EvalContext(data, _cfg(), "eval", routers=ROUTERS)
    main = plan_main(ctx)
    # trained routers only (Oracle and Strongest fit nothing), LatentRouter first, on both splits
    assert [(u.split, u.router) for u in main[:2]] == [(0, LATENT), (1, LATENT)]
    assert {u.router for u in main} == {"KNNRouter", "MLPMFRouter", "RouterDC", LATENT}
    fit_units(ctx, main)
    extra = plan_extra(ctx)
    tags = {u.tag for u in extra}
    assert any(t.startswith("cold:") for t in tags) and "main" in tags
    fit_units(ctx, extra)
    before = {r: (dict(ctx.split_ctx(r)._latent), dict(ctx.split_ctx(r)._baselines)) for r in (0, 1)}
    run_experiments(ctx)  # judges only: nothing trained is left to fit
    for r in (0, 1):
        latent, baselines = before[r]
        assert set(ctx.split_ctx(r)._latent) == set(latent)
        added = set(ctx.split_ctx(r)._baselines) - set(baselines)
        assert {name for name, _seed in added} <= {"Oracle", "Strongest"}, added


def test_a_stored_unit_is_loaded_and_a_changed_config_is_a_miss(data, tmp_path):
    store = FitStore(tmp_path / "fits")
    ctx = EvalContext(data, _cfg(), "eval", routers=ROUTERS, fit_store=store)
    unit = FitUnit(0, "MLPMFRouter", (0, 1))
    (made,) = fit_units(ctx, [unit])
    again = EvalContext(data, _cfg(), "eval", routers=ROUTERS, fit_store=FitStore(tmp_path / "fits"))
    (loaded,) = fit_units(again, [unit])
    assert loaded.worker == made.worker and again.fit_store.hits == 1  # read back, not refitted
    rows = data.idx("test")
    assert (again.baseline("MLPMFRouter", 1).select(data, rows, 0.3)
            == ctx.baseline("MLPMFRouter", 1).select(data, rows, 0.3)).all()
    other = EvalContext(data, _cfg(seeds=(0, 1), decision_lambda=0.5), "eval", routers=ROUTERS,
                        fit_store=FitStore(tmp_path / "fits"))
    assert UnitStore(other.fit_store).get(split_state(other, 0), unit) is None
