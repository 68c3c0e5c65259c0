"""Group-aware K-fold cross-fitting (router.evaluation.crossfit) and the OOF-weighted ensemble router."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from router.data.routing_data import RoutingData, synthetic_routing_data
from router.evaluation.crossfit import (
    FoldAverage,
    OOFPredictions,
    assign_folds,
    choose_oof,
    crossfit,
    fit_pool_rows,
    fold_data,
    oof_table,
    oof_utility,
    select_by_oof,
)
from router.models.baselines import GroupBestRouter, KNNRouter, RandomRouter, StrongestRouter
from router.models.ensemble import EnsembleConfig, EnsembleRouter, choose_weights, nested_oof_utility


@pytest.fixture(scope="module")
def data() -> RoutingData:
    return synthetic_routing_data(n=500, k=4, seed=3)


def test_folds_keep_groups_whole_balanced_and_independent_of_row_order(data: RoutingData) -> None:
    rows = fit_pool_rows(data)
    assert not np.isin(rows, data.idx("test")).any()
    groups = [f"g{i // 3}" for i in range(data.n)]  # groups of three consecutive queries
    folds = assign_folds(data, rows, 5, seed=1, groups=groups)
    by_group: dict[str, set[int]] = {}
    for r, f in zip(rows, folds, strict=True):
        by_group.setdefault(groups[r], set()).add(int(f))
    assert all(len(s) == 1 for s in by_group.values())
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 3 * 2  # at most a group of three off per stratum round-robin
    shuffled = rows[::-1].copy()
    again = assign_folds(data, shuffled, 5, seed=1, groups=groups)
    assert np.array_equal(again[::-1], folds)
    assert not np.array_equal(assign_folds(data, rows, 5, seed=2, groups=groups), folds)
    with pytest.raises(ValueError, match="n_folds"):
        assign_folds(data, rows, 1)
    with pytest.raises(ValueError, match="groups has"):
        assign_folds(data, rows, 5, groups=groups[:-1])


def test_fold_data_relabels_only_the_fit_rows(data: RoutingData) -> None:
    rows = fit_pool_rows(data)
    folds = assign_folds(data, rows, 4)
    outside = set(np.setdiff1d(np.arange(data.n), rows))
    # default: the next fold validates, the held-out fold is unread like test
    d = fold_data(data, rows, folds, 3)
    assert set(d.idx("val")) == set(rows[folds == 0])
    assert set(d.idx("train")) == set(rows[(folds == 1) | (folds == 2)])
    assert set(d.idx("test")) == outside | set(rows[folds == 3])
    d = fold_data(data, rows, folds, 2, inner_val=False)
    assert set(d.idx("val")) == set(rows[folds == 2])
    assert set(d.idx("train")) == set(rows[folds != 2])
    assert set(d.idx("test")) == outside


def test_crossfit_predicts_each_row_from_a_fit_that_never_saw_it(data: RoutingData) -> None:
    oof = crossfit(lambda: KNNRouter(k=1), data, n_folds=4, lams=(0.0, 0.5), keep_fitted=True)
    assert oof.quality.shape == (len(oof.rows), data.k) and np.isfinite(oof.quality).all()
    # a 1-NN fitted on a row predicts that row's own outcomes exactly; out of fold it cannot
    in_sample = np.mean(oof.quality == data.quality[oof.rows])
    assert in_sample < 0.9
    # the OOF prediction of fold f is what the fold-f router (fitted on the other folds) predicts
    f = 1
    held = oof.folds == f
    q, _ = oof.fitted[f].predict(data, oof.rows[held])
    assert np.allclose(q, oof.quality[held])
    # test rows are never read: garbage in them changes nothing
    bad = dataclasses.replace(data, quality=data.quality.copy())
    bad.quality[data.idx("test")] = np.nan
    oof2 = crossfit(lambda: KNNRouter(k=1), bad, n_folds=4, lams=(0.0, 0.5))
    assert np.array_equal(oof2.quality, oof.quality) and np.array_equal(oof2.picks[0.5], oof.picks[0.5])


def test_oof_selection_prefers_the_router_that_generalises(data: RoutingData) -> None:
    oofs = {n: crossfit(f, data, n_folds=5, name=n) for n, f in
            {"KNN": lambda: KNNRouter(k=25), "Random": RandomRouter, "Strongest": StrongestRouter}.items()}
    table = oof_table(oofs, data, 0.0)
    assert [r["router"] for r in table][0] == "KNN"
    assert choose_oof(table) == "KNN"
    assert table[0]["oof_utility"] > table[-1]["oof_utility"]
    assert table[0]["oof_utility"] == pytest.approx(oof_utility(oofs["KNN"], data, 0.0))
    chosen, trials = select_by_oof(lambda p: KNNRouter(k=p["k"]), [{"k": 1}, {"k": 25}], data, n_folds=4)
    assert chosen == {"k": 25} and trials[1]["oof_utility"] > trials[0]["oof_utility"]


def test_fold_average_averages_the_fold_routers(data: RoutingData) -> None:
    oof = crossfit(lambda: KNNRouter(k=10), data, n_folds=3, keep_fitted=True)
    avg = FoldAverage.from_oof(oof)
    rows = data.idx("test")
    q, _ = avg.predict(data, rows)
    assert np.allclose(q, np.mean([m.predict(data, rows)[0] for m in oof.fitted], axis=0))
    assert avg.select(data, rows, 0.0).shape == (len(rows),)
    with pytest.raises(ValueError, match="keep_fitted"):
        FoldAverage.from_oof(crossfit(StrongestRouter, data, n_folds=3))


def _hand_oof(name: str, quality: np.ndarray, rows: np.ndarray, folds: np.ndarray, k: int) -> OOFPredictions:
    pick = np.argmax(quality, axis=1)
    return OOFPredictions(name, rows, folds, quality, np.zeros_like(quality), {0.0: pick})


def test_weights_combine_complementary_members_and_drop_noise(data: RoutingData) -> None:
    rows = fit_pool_rows(data)
    folds = assign_folds(data, rows, 5)
    y = data.quality[rows]
    rng = np.random.default_rng(0)
    half = rng.random(len(rows)) < 0.5
    # A knows the outcomes (confidently) on one half and is unsure elsewhere; B the other way round
    a = np.where(half[:, None], 0.5 + 0.4 * (2 * y - 1), 0.5 + 0.01 * rng.normal(size=y.shape))
    b = np.where(~half[:, None], 0.5 + 0.4 * (2 * y - 1), 0.5 + 0.01 * rng.normal(size=y.shape))
    noise = rng.random(y.shape)
    oofs = {n: _hand_oof(n, q, rows, folds, data.k) for n, q in (("A", a), ("B", b), ("noise", noise))}
    w = choose_weights(oofs, data, EnsembleConfig(size=10))
    assert set(w) == {"A", "B"} and sum(w.values()) == pytest.approx(1.0)
    assert 0.3 <= w["A"] <= 0.7
    ens = sum(w[n] * oofs[n].quality for n in w)
    u_ens = float(y[np.arange(len(rows)), np.argmax(ens, axis=1)].mean())
    assert u_ens > max(oof_utility(oofs[n], data, 0.0) for n in oofs) + 0.05
    nested, per_fold, weights = nested_oof_utility(oofs, data, 0.0, EnsembleConfig(size=10))
    assert len(per_fold) == 5 and len(weights) == 5
    assert nested == pytest.approx(u_ens, abs=0.03)
    # misaligned members are refused
    other = _hand_oof("C", a, rows, (folds + 1) % 5, data.k)
    with pytest.raises(ValueError, match="folds differ"):
        choose_weights({**oofs, "C": other}, data)


def test_weights_keep_a_single_best_member() -> None:
    d = synthetic_routing_data(n=400, k=3, seed=5)
    rows = fit_pool_rows(d)
    folds = assign_folds(d, rows, 4)
    perfect = d.quality[rows].astype(np.float64)
    oofs = {"good": _hand_oof("good", perfect, rows, folds, d.k),
            "bad": _hand_oof("bad", 1.0 - perfect, rows, folds, d.k)}
    assert choose_weights(oofs, d) == {"good": 1.0}


def test_ensemble_router_fits_selects_available_models_and_pickles(data: RoutingData) -> None:
    factories = {"GroupBest": GroupBestRouter, "KNN": lambda: KNNRouter(k=25), "Random": RandomRouter}
    ens = EnsembleRouter(factories, EnsembleConfig(size=6, n_folds=3, lams=(0.0, 0.5))).fit(data, seed=0)
    assert ens.weights and sum(ens.weights.values()) == pytest.approx(1.0)
    assert set(ens.members) == set(ens.weights) and ens.oof_table
    rows = data.idx("test")
    avail = data.avail[rows].copy()
    avail[:, 0] = False
    pick = ens.select(data, rows, 0.0, avail)
    assert (pick != 0).all()
    q, c = ens.predict(data, rows)
    assert q.shape == c.shape == (len(rows), data.k)
    again = pickle.loads(pickle.dumps(ens))
    assert np.array_equal(again.select(data, rows, 0.5), ens.select(data, rows, 0.5))
    # from_fitted: the lead's "fit once" path
    fitted = {"KNN": KNNRouter(k=25).fit(data), "GroupBest": GroupBestRouter().fit(data)}
    ff = EnsembleRouter.from_fitted(fitted, {"KNN": 3, "GroupBest": 1})
    assert ff.weights == {"KNN": 0.75, "GroupBest": 0.25}
    assert ff.fitted_model_ids() == list(data.model_ids)  # the fixed pool a deployment records
    exp = np.argmax(np.where(data.avail[rows], 0.75 * fitted["KNN"].predict(data, rows)[0]
                             + 0.25 * fitted["GroupBest"].predict(data, rows)[0], -np.inf), axis=1)
    assert np.array_equal(ff.select(data, rows, 0.0), exp)
    with pytest.raises(ValueError, match="no fitted router"):
        EnsembleRouter.from_fitted(fitted, {"MLPMF": 1.0})
    with pytest.raises(ValueError, match="weights must be"):
        EnsembleRouter.from_fitted(fitted, {"KNN": -1.0})
    with pytest.raises(RuntimeError, match="fit"):
        EnsembleRouter(factories).predict(data, rows)


def test_oof_deployment_choice_ranks_candidates_and_the_nested_ensemble(data: RoutingData) -> None:
    from router.evaluation.crossfit import ENSEMBLE, oof_deployment_choice

    cands = {"KNN": lambda: KNNRouter(k=25), "Strongest": StrongestRouter, "Random": RandomRouter}
    res = oof_deployment_choice(cands, data, 0.0, n_folds=4)
    names = [r["router"] for r in res.table]
    assert set(names) == {*cands, ENSEMBLE}
    assert res.chosen in (ENSEMBLE, "KNN") and res.table[0]["router"] == res.chosen
    assert res.ensemble_weights and set(res.ensemble_weights) <= set(cands)
    u = [r["oof_utility"] for r in res.table]
    assert u == sorted(u, reverse=True)
    assert oof_deployment_choice(cands, data, 0.0, n_folds=4, ensemble=False).chosen == "KNN"


def test_epoch_budget_chosen_out_of_fold(data: RoutingData) -> None:
    from router.evaluation.crossfit import choose_epochs, epoch_curves
    from router.models.latent_router.model import LatentRouterConfig
    from router.training.trainer import LatentRouterRouter, TrainConfig

    tiny = LatentRouterConfig(hidden=16, n_heads=2, n_capsules=3, n_side_tokens=2)
    tc = TrainConfig(epochs=4, restore_best=False, batch_size=64)
    oof = crossfit(lambda: LatentRouterRouter(tiny, tc), data, n_folds=3, keep_fitted=True, inner_val=False)
    curves = epoch_curves(oof)
    assert curves.shape == (3, 4)  # every fold ran the whole budget and kept its last epoch
    assert oof.best_epochs == [3, 3, 3]
    # the OOF picks are the last epoch's, so each fold's curve ends at its held-out utility
    for f in range(3):
        assert curves[f, -1] == pytest.approx(oof_utility(oof, data, 0.0, oof.folds == f))
    epochs, pooled, nested, per_fold = choose_epochs(oof)
    sizes = np.bincount(oof.folds)
    assert epochs == int(np.argmax((curves * sizes[:, None]).sum(0) / sizes.sum())) + 1
    assert np.isfinite(nested) and len(per_fold) == 3 and len(pooled) == 4
    with pytest.raises(ValueError, match="keep_fitted"):
        epoch_curves(crossfit(lambda: LatentRouterRouter(tiny, tc), data, n_folds=3))
