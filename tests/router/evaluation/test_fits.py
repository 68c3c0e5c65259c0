"""Fit once: the fit store hands the evaluation the very fits the deployment choice made (same data, config and
seed), the tables are identical either way, and a change of data or config is a miss."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from router.data.routing_data import synthetic_routing_data
from router.evaluation.config import EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.deploy import candidate_fits
from router.evaluation.experiments import run_experiments
from router.evaluation.fits import FitStore, data_fingerprint, fit_key

ROUTERS = ("Oracle", "Strongest", "GroupBest", "KNNRouter", "MLPMFRouter", "LatentRouter")


@pytest.fixture(scope="module")
def data():
    return synthetic_routing_data(n=240, k=4, seed=1)


def _cfg() -> EvalConfig:
    return EvalConfig.quick(experiments=("main_table",), seeds=(0,))


def _latency_free(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(~pl.col("metric").str.contains("latency|seconds")).drop("run_id")


def test_evaluation_reuses_the_deployment_fits_and_gives_the_same_tables(data, tmp_path):
    store = FitStore(tmp_path / "fits")
    deploy_ctx = EvalContext(data, _cfg(), "deploy", routers=ROUTERS, fit_store=store)
    fitted = candidate_fits(deploy_ctx, ["KNNRouter", "MLPMFRouter"])
    written = store.writes
    # two tuning candidates each (quick: 2 trials; KNN's second, k=20, is quick's default: one fit, stored once),
    # the chosen one reused at seed 0; and each candidate's unit (its tuning and fits, router.evaluation.parallel)
    assert written == 3 + 2
    # the evaluation on the same data finds every baseline fit it needs for split 0 in the store: both units
    eval_ctx = EvalContext(data, _cfg(), "eval", routers=ROUTERS, fit_store=FitStore(tmp_path / "fits"))
    shared = run_experiments(eval_ctx)
    assert eval_ctx.units_loaded == 2 and eval_ctx.fit_store.hits >= 2
    assert eval_ctx.baseline("KNNRouter", 0) is not fitted["KNNRouter"]  # loaded from disk, not the object
    rows = data.idx("val")
    np.testing.assert_array_equal(eval_ctx.baseline("MLPMFRouter", 0).select(data, rows, 0.3),
                                  fitted["MLPMFRouter"].select(data, rows, 0.3))
    # ... and its tables are the ones of an evaluation that fitted everything itself
    alone = run_experiments(EvalContext(data, _cfg(), "eval", routers=ROUTERS))
    assert_frame_equal(_latency_free(shared.eval_results), _latency_free(alone.eval_results))


def test_a_different_config_seed_or_data_is_a_miss(data, tmp_path):
    cfg = _cfg()
    a = fit_key("KNNRouter", cfg.routers["KNNRouter"], 0)
    assert a == fit_key("KNNRouter", replace(cfg.routers["KNNRouter"]), 0)
    assert a != fit_key("KNNRouter", replace(cfg.routers["KNNRouter"], k=7), 0)
    assert a != fit_key("KNNRouter", cfg.routers["KNNRouter"], 1)
    other = replace(data, quality=np.roll(data.quality, 1, axis=0))
    assert data_fingerprint(data) == data_fingerprint(replace(data))
    assert data_fingerprint(data) != data_fingerprint(other)
    store = FitStore(tmp_path / "fits")
    EvalContext(data, cfg, "a", routers=ROUTERS, fit_store=store).baseline("KNNRouter", 0)
    ctx = EvalContext(other, cfg, "b", routers=ROUTERS, fit_store=FitStore(tmp_path / "fits"))
    ctx.baseline("KNNRouter", 0)
    # other data: fitted and written anew (its one hit is its own duplicate candidate: k=20 is quick's default)
    assert ctx.fit_store.writes == 1 and ctx.fit_store.hits == 1


def test_store_keeps_the_newest_data_versions_and_ignores_torn_files(data, tmp_path):
    store = FitStore(tmp_path / "fits", keep=2)
    router = EvalContext(data, _cfg(), "a", routers=ROUTERS).make_baseline("Strongest", {}).fit(data)
    for fp in ("v1", "v2", "v3"):
        store.put(fp, "k", router)
    assert sorted(p.name for p in (tmp_path / "fits").iterdir()) == ["v2", "v3"]
    (tmp_path / "fits" / "v3" / "k.joblib").write_bytes(b"not a pickle")
    assert store.get("v3", "k") is None and store.get("v2", "k") is not None
