"""routing_decisions rows: one builder for the evaluation and the deployed router, and the merge of writers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from router.data.routing_data import RoutingData, synthetic_routing_data
from router.evaluation.config import FULL_POOL, LATENT, ROUTERS, EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.decisions import decision_rows, routing_decisions
from router.models.latent_router.model import LatentRouterConfig
from router.training.trainer import TrainConfig, predict, train_latent_router
from warehouse.schemas import ROUTING_DECISIONS

DEPLOYED = "LatentRouter (deployed)"  # the asset's router name (assets/ is not imported by router tests)


@pytest.fixture(scope="module")
def data() -> RoutingData:
    return synthetic_routing_data(n=160, k=3, seed=2)


@pytest.fixture(scope="module")
def evaluated(data: RoutingData) -> pl.DataFrame:
    """The evaluation's rows (every router of Table 1, seed 0)."""
    cfg = EvalConfig.quick(experiments=("main_table",))
    return routing_decisions(EvalContext(data, cfg, run_id="eval-run"))


@pytest.fixture(scope="module")
def deployed(data: RoutingData) -> pl.DataFrame:
    """The deployed router's rows, built as assets/routing.py::current_pool_routing builds them."""
    tc = TrainConfig(epochs=1, batch_size=64, lam_choices=(0.0, 0.3))
    model = train_latent_router(data, LatentRouterConfig(hidden=16, n_heads=2, n_side_tokens=2), tc).model
    test = data.idx("test")
    frames = []
    for lam in (0.0, 0.3):
        _, _, score = predict(model, data, test, lam)
        frames.append(decision_rows(data, test, score, router=DEPLOYED, lam=lam, pool="current",
                                    run_id="pool-run", seed=tc.seed))
    return pl.concat(frames, how="vertical")


def _check_scores(frame: pl.DataFrame, data: RoutingData) -> None:
    qi = {q: i for i, q in enumerate(data.query_ids)}
    for r in frame.iter_rows(named=True):
        sc = json.loads(r["scores"])
        assert list(sc) == sorted(sc)  # keys sorted
        avail = {m for j, m in enumerate(data.model_ids) if data.avail[qi[r["query_id"]], j]}
        assert set(sc) <= avail and r["chosen_model"] in avail and r["oracle_model"] in avail
        assert all(v == float(f"{v:.6g}") for v in sc.values())  # 6 significant digits


def test_both_writers_build_rows_with_the_same_columns_and_rounding(evaluated: pl.DataFrame, deployed: pl.DataFrame,
                                                                    data: RoutingData) -> None:
    assert evaluated.schema == deployed.schema
    assert evaluated.columns[: len(ROUTING_DECISIONS)] == list(ROUTING_DECISIONS)
    assert evaluated.columns == list(ROUTING_DECISIONS) and "seed" in ROUTING_DECISIONS
    n_test = len(data.idx("test"))
    assert evaluated.height == n_test * len(ROUTERS) * 2 and deployed.height == n_test * 2
    assert set(evaluated["pool"].to_list()) == {FULL_POOL} and set(deployed["pool"].to_list()) == {"current"}
    assert (deployed["seed"] == 0).all() and (evaluated["seed"] == 0).all()
    _check_scores(evaluated, data)
    _check_scores(deployed, data)
    # the deployed router picks the argmax of its scores; the evaluation's LatentRouter too (its select)
    for frame in (deployed, evaluated.filter(pl.col("router") == LATENT)):
        for r in frame.iter_rows(named=True):
            sc = json.loads(r["scores"])
            assert sc[r["chosen_model"]] == max(sc.values())


def test_decision_rows_oracle_ties_go_to_the_cheaper_model_and_empty_rows_are_dropped() -> None:
    d = synthetic_routing_data(n=40, k=3, seed=0)
    quality = np.zeros_like(d.quality)
    quality[:, 1] = quality[:, 2] = 1.0  # models 1 and 2 tie on every row
    cost = np.tile(np.array([0.1, 0.5, 0.2], dtype=d.cost.dtype), (d.n, 1))
    avail = d.avail.copy()
    avail[:] = True
    avail[0] = False  # nothing can be routed on row 0
    d = replace(d, quality=quality, cost=cost, avail=avail)
    rows = np.arange(5)
    score = np.tile(np.array([3.0, 2.0, 1.0]), (5, 1)) + 1e-9 * np.arange(5)[:, None]
    f = decision_rows(d, rows, score, router="r", lam=0.0, pool=FULL_POOL, run_id="x")
    assert f["query_id"].to_list() == [d.query_ids[i] for i in range(1, 5)]
    assert set(f["chosen_model"].to_list()) == {d.model_ids[0]} and set(f["oracle_model"].to_list()) == {d.model_ids[2]}
    assert f["seed"].is_null().all() and f["lambda"].dtype == pl.Float64


