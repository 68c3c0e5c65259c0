"""Choosing the deployed router on validation utility: the selection itself, and the pipeline both ways (a
baseline wins validation -> it is persisted, named in deployed.json and the deployed_router asset's metadata,
and served by RouterService and current_pool_routing; LatentRouter wins -> it stays deployed), with the reason
and the change of decision said."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router.data.routing_data import RoutingData
from router.evaluation.deploy import (
    DEPLOY_FILE,
    LATENT,
    DeployConfig,
    choose,
    load_deployed_baseline,
    read_deployment,
    save_deployment,
    validation_table,
    validation_utility,
)
from router.models.base import Router
from router.models.baselines.common import FittedOnModels
from router.models.registry import ROUTERS, RouterSpec


class _Fixed(Router):
    """Always model ``j``."""

    def __init__(self, j: int) -> None:
        self.j = j

    def fit(self, data, seed=0):
        return self

    def predict(self, data, rows):
        q = np.zeros((len(rows), data.k))
        q[:, self.j] = 1.0
        return q, np.zeros_like(q)


class AntiOracle(FittedOnModels, Router):
    """Test stand-in that is certain to LOSE validation: picks the available model with the worst outcome."""

    name = "anti_oracle"
    learned = False

    def fit(self, data, seed=0):
        self._remember(data)
        return self

    def predict(self, data, rows):
        self._check(data)
        return 1.0 - data.quality[rows].astype(np.float64), -data.cost[rows].astype(np.float64)


class ValOracle(FittedOnModels, Router):
    """Test stand-in that is certain to WIN validation: the realised outcomes (a baseline that wins)."""

    name = "val_oracle"
    learned = False

    def fit(self, data, seed=0):
        self._remember(data)
        return self

    def predict(self, data, rows):
        self._check(data)
        return data.quality[rows].astype(np.float64), data.cost[rows].astype(np.float64)


def _tiny(n: int = 30, k: int = 3) -> RoutingData:
    rng = np.random.default_rng(0)
    quality = np.zeros((n, k), np.float32)
    quality[:, 1] = 1.0  # model 1 is always right
    cost = rng.uniform(0.1, 1.0, (n, k)).astype(np.float32)
    split = np.array(["train"] * 20 + ["val"] * 5 + ["test"] * 5, dtype=object)

    class D:  # the few fields validation_utility / validation_table read
        pass

    d = D()
    d.quality, d.cost, d.avail, d.k = quality, cost, np.ones((n, k), bool), k
    d.idx = lambda s: np.flatnonzero(split == s)
    return d  # type: ignore[return-value]


def test_validation_utility_and_choice_on_val_rows_only():
    d = _tiny()
    good, bad = _Fixed(1), _Fixed(0)
    assert validation_utility(good, d, 0.0) == pytest.approx(1.0)
    assert validation_utility(bad, d, 0.0) == pytest.approx(0.0)
    table = validation_table({LATENT: bad, "KMeansRouter": good}, d, 0.0)
    assert [r["router"] for r in table] == ["KMeansRouter", LATENT]
    assert choose(table) == "KMeansRouter"
    assert all(r["n_val"] == 5 for r in table)
    # ties go to LatentRouter
    assert choose(validation_table({"KNNRouter": good, LATENT: _Fixed(1)}, d, 0.0)) == LATENT
    # cost enters at lambda > 0
    u = validation_utility(good, d, 0.5)
    assert u == pytest.approx(1.0 - 0.5 * d.cost[d.idx("val"), 1].mean())


def test_deployment_files_round_trip(tmp_path):
    assert read_deployment(tmp_path) == {"deployed": LATENT}
    save_deployment(tmp_path, LATENT, 0.1, [{"router": LATENT, "val_utility": float("nan")}])
    assert load_deployed_baseline(tmp_path)[:2] == (LATENT, None)
    d = _tiny()
    r = ValOracle().fit(type("X", (), {"model_ids": ["a", "b", "c"]})())  # remembers the pool
    save_deployment(tmp_path, "val_oracle", 0.0, [{"router": "val_oracle", "val_utility": 1.0}], r)
    name, loaded, doc = load_deployed_baseline(tmp_path)
    assert name == "val_oracle" and isinstance(loaded, ValOracle) and doc["model_ids"] == ["a", "b", "c"]
    assert json.loads((tmp_path / DEPLOY_FILE).read_text())["validation"][0]["val_utility"] == 1.0
    with pytest.raises(ValueError, match="needs|needed"):
        save_deployment(tmp_path, "KNNRouter", 0.0, [], None)
    assert d.k == 3
    with pytest.raises(ValueError, match="deploy_lambda"):
        DeployConfig(deploy_lambda=float("nan"))
    with pytest.raises(ValueError, match="unknown router 'NoSuchRouter'; known: Oracle"):
        DeployConfig(deploy_candidates=("NoSuchRouter",))


# ------------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


def _materialize(pipeline, mp, candidates, lam=0.3):
    from pipelines.definitions import materialize
    from tests.conftest import TINY_ROUTER

    home, instance, defs = pipeline
    mp.setitem(ROUTERS, "anti_oracle", RouterSpec("anti_oracle", lambda c: AntiOracle(), training_free=True))
    mp.setitem(ROUTERS, "val_oracle", RouterSpec("val_oracle", lambda c: ValOracle(), training_free=True))
    deploy = {"deploy_select": True, "deploy_candidates": list(candidates), "deploy_lambda": lam, "preset": "quick"}
    r = materialize(["latent_router", "deployed_router", "current_pool_routing"], instance=instance,
                    resources=defs.resources,
                    run_config={"ops": {"latent_router": {"config": TINY_ROUTER},
                                        "deployed_router": {"config": deploy}}})
    assert r.success
    mats = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in r.get_asset_materialization_events()}
    mats["checks"] = {c.check_name: c for c in r.get_asset_check_evaluations()}
    logs = [e.message for e in instance.all_logs(r.run_id) if e.message]
    return home, mats, logs


def _service(home):
    from router.serving.service import RouterService
    from warehouse.store import Warehouse

    return RouterService(Warehouse(home / "warehouse"), auto_refresh=False)


def test_baseline_that_wins_validation_is_deployed_and_served(pipeline, monkeypatch):
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse

    home, mats, logs = _materialize(pipeline, monkeypatch, ["val_oracle", "anti_oracle"])
    meta = mats["deployed_router"]
    assert meta["deployed_router"].value == "val_oracle", meta["validation"]
    assert meta["validation"] is not None
    assert "val_oracle has the best validation utility" in meta["reason"].value
    assert any("deployed router: val_oracle has the best validation utility" in m for m in logs)
    ckpt = latest_checkpoint_dir(Warehouse(home / "warehouse"))
    doc = json.loads((ckpt / DEPLOY_FILE).read_text())
    assert doc["deployed"] == "val_oracle" and (ckpt / "baseline.joblib").is_file()
    assert doc["reason"] == meta["reason"].value and doc["lambda"] == 0.3
    checks = mats["checks"]
    assert checks["latent_router_scores_validation"].passed
    # Strongest was no candidate here: the check says so instead of failing
    assert checks["deployed_router_beats_strongest"].passed
    assert {r["router"] for r in doc["validation"]} == {LATENT, "val_oracle", "anti_oracle"}
    assert mats["current_pool_routing"]["deployed_router"].value == "val_oracle"
    svc = _service(home)
    assert svc.deployment["serving"] == "val_oracle" and svc.baseline is not None
    rows = svc.data.idx("val")
    mu, sigma, score = svc.predict_rows(svc.data, rows, 0.3)
    np.testing.assert_allclose(mu, svc.data.quality[rows])  # the baseline's predictions, not LatentRouter's
    assert np.all(sigma == 0)
    # one prediction scores every row's lambda (default q - lambda * c): the same utilities as the baseline's
    # own scores at each lambda, and unavailable models at -inf
    lams = np.where(np.arange(len(rows)) % 2 == 0, 0.0, 2.0)
    _, _, per_row = svc.predict_rows(svc.data, rows, lams)
    for value in (0.0, 2.0):
        sel = lams == value
        want = svc.baseline.scores(svc.data, rows[sel], value)
        np.testing.assert_allclose(per_row[sel], np.where(svc.data.avail[rows][sel], want, -np.inf))
    assert not np.allclose(per_row[lams == 2.0], score[lams == 2.0])  # lambda 2 is not lambda 0.3
    from PIL import Image

    ranked = svc.route(Image.new("RGB", (32, 32), (200, 10, 10)), "What colour is this?", lam=0.1)
    assert len(ranked) == svc.data.k and {"model_id", "quality", "utility"} <= set(ranked[0])


def test_checkpoint_without_a_decision_serves_its_latent_router(pipeline):
    from router.training.artifacts import router_root
    from warehouse.store import Warehouse

    home = pipeline[0]  # the fixture's own checkpoint is the oldest (the other tests retrain and decide)
    first = min((d for d in router_root(Warehouse(home / "warehouse")).iterdir() if d.is_dir()),
                key=lambda d: d.stat().st_mtime_ns)
    assert not (first / DEPLOY_FILE).exists() and read_deployment(first) == {"deployed": LATENT}


def test_latent_router_stays_deployed_when_it_wins(pipeline, monkeypatch):
    _materialize(pipeline, monkeypatch, ["val_oracle"])
    home, mats, logs = _materialize(pipeline, monkeypatch, ["anti_oracle"])
    assert mats["deployed_router"]["deployed_router"].value == LATENT
    assert mats["deployed_router"]["previous"].value == "val_oracle"
    assert mats["current_pool_routing"]["deployed_router"].value == LATENT
    # the change is said (a warning) with the reason
    assert any("deployed router: LatentRouter has the best validation utility" in m and "replaces val_oracle" in m
               for m in logs)
    meta = mats["latent_router"]  # the diagnosis rows: learning curve with val loss, calibration, picks
    assert any(c.name == "val_loss" for c in meta["training_curve"].schema.columns)
    assert {c.name for c in meta["val_calibration"].schema.columns} >= {
        "model_id", "predicted_quality", "realised_quality", "share_of_picks", "share_of_oracle_best"}
    assert 0.0 <= meta["val_pick_is_oracle_optimal"].value <= 1.0
    svc = _service(home)
    assert svc.deployment["serving"] == LATENT and svc.baseline is None


def test_baseline_fitted_on_another_pool_falls_back_to_latent_router(pipeline, monkeypatch):
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse

    home, _, _ = _materialize(pipeline, monkeypatch, ["val_oracle"])
    ckpt = latest_checkpoint_dir(Warehouse(home / "warehouse"))
    r = ValOracle()
    r._model_ids = ["some-other-model"]
    save_deployment(ckpt, "val_oracle", 0.0, [{"router": "val_oracle", "val_utility": 1.0}], r)
    svc = _service(home)
    assert svc.deployment["deployed"] == "val_oracle" and svc.deployment["serving"] == LATENT
    assert "another model pool" in svc.deployment["note"]


def test_out_of_fold_selection_cross_fits_every_candidate_and_the_ensemble(pipeline, monkeypatch):
    """select_by=oof: the decision rests on K-fold out-of-fold utility over train + val (each fit early-stopped
    on another fold), and the OOF-weighted ensemble of the candidates is one more candidate."""
    from pipelines.definitions import materialize
    from tests.conftest import TINY_ROUTER

    home, instance, defs = pipeline
    deploy = {"deploy_candidates": ["Strongest", "GroupBest"], "deploy_lambda": 0.0, "preset": "quick",
              "select_by": "oof", "oof_folds": 3}
    r = materialize(["latent_router", "deployed_router"], instance=instance, resources=defs.resources,
                    run_config={"ops": {"latent_router": {"config": TINY_ROUTER},
                                        "deployed_router": {"config": deploy}}})
    assert r.success
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse

    doc = read_deployment(latest_checkpoint_dir(Warehouse(home / "warehouse")))
    assert doc["selected_on"].startswith("out-of-fold utility")
    names = {row["router"] for row in doc["validation"]}
    assert names == {LATENT, "Strongest", "GroupBest", "Ensemble"}
    assert all("oof_utility" in row for row in doc["validation"])
    assert "out-of-fold utility" in doc["reason"] and doc["deployed"] in names
    best = max(doc["validation"], key=lambda row: row["oof_utility"] if row["oof_utility"] is not None else -1e9)
    assert doc["deployed"] == best["router"] or best["oof_utility"] == next(
        row["oof_utility"] for row in doc["validation"] if row["router"] == doc["deployed"])


def test_a_deployed_ensemble_is_served(pipeline, monkeypatch):
    from router.models.baselines import GroupBestRouter, StrongestRouter
    from router.models.ensemble import EnsembleRouter
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse

    home = pipeline[0]
    svc = _service(home)
    members = {"Strongest": StrongestRouter().fit(svc.data), "GroupBest": GroupBestRouter().fit(svc.data)}
    ens = EnsembleRouter.from_fitted(members, {"Strongest": 0.25, "GroupBest": 0.75}, name="Ensemble")
    ckpt = latest_checkpoint_dir(Warehouse(home / "warehouse"))
    save_deployment(ckpt, "Ensemble", 0.1, [{"router": "Ensemble", "oof_utility": 0.5}], ens,
                    config={"weights": ens.weights})
    svc = _service(home)
    assert svc.deployment["serving"] == "Ensemble" and svc.baseline is not None
    from PIL import Image

    ranked = svc.route(Image.new("RGB", (32, 32), (10, 200, 10)), "What colour is this?")
    assert len(ranked) == svc.data.k
    rows = svc.data.idx("val")
    np.testing.assert_allclose(svc.predict_rows(svc.data, rows, 0.0)[0], ens.predict(svc.data, rows)[0])
