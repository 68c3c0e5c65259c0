"""Behaviour of the baseline routers on the planted-preference synthetic dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import router.models.baselines as B
from router.data.routing_data import RoutingData, synthetic_routing_data
from router.evaluation.metrics.sweep import evaluate_router, lambda_sweep, route_outcomes
from router.models.base import Router
from router.models.baselines.classifiers import cheapest_labels
from router.models.registry import ROUTERS, spec

SEEDS = (0, 1, 2)
N = 400
FAST = B.TorchTrainConfig(epochs=6, patience=3)
LEARNED = ("knn", "kmeans", "mlpmf", "routellm_mf", "vl_feature")


def make(name: str) -> Router:
    """Each baseline with test-sized settings (few epochs)."""
    if name == "mlpmf":
        return B.MLPMFRouter(B.MLPMFConfig(train=FAST))
    if name == "routellm_mf":
        return B.RouteLLMMFRouter(B.RouteLLMConfig(dim=32, train=FAST))
    if name == "vl_feature":
        return B.VLFeatureRouter(B.VLFeatureConfig(lambdas=(0.0, 3.0, 30.0), train=FAST))
    if name == "kmeans":
        return B.KMeansRouter(n_init=3)
    return BY_SHORT[name].make()


# every registered baseline by its class's short name (Router.name), Table 1 order
BY_SHORT = {spec(n).make().name: spec(n) for n in ROUTERS if n != "LatentRouter"}
ALL = tuple(BY_SHORT)


@pytest.fixture(scope="module")
def fitted():
    """Every baseline fitted on three synthetic datasets (one torch thread: tiny nets, 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict[int, tuple[RoutingData, dict[str, Router]]] = {}
    for seed in SEEDS:
        data = synthetic_routing_data(n=N, seed=seed)
        out[seed] = (data, {name: make(name).fit(data, seed=seed) for name in ALL})
    yield out
    torch.set_num_threads(threads)


def _quality(router: Router, data: RoutingData, lam: float = 0.0) -> tuple[float, float]:
    rows = data.idx("test")
    return route_outcomes(data, rows, router.select(data, rows, lam))[:2]


def test_oracle_bounds_every_router_and_learned_beat_random(fitted):
    means = {name: np.mean([_quality(r[name], d)[0] for d, r in fitted.values()]) for name in ALL}
    for seed, (data, routers) in fitted.items():
        q_oracle = _quality(routers["oracle"], data)[0]
        for name in ALL:
            assert _quality(routers[name], data)[0] <= q_oracle + 1e-9, (seed, name)
    # the type of a query is visible in its features, so feature routers clearly beat a coin flip
    for name in (*LEARNED, "strongest"):
        assert means[name] > means["random"] + 0.05, (name, means)
    for name in LEARNED:
        assert means[name] > means["strongest"], (name, means)


def test_same_seed_same_predictions_and_seed_matters(fitted):
    data, routers = fitted[0]
    rows = data.idx("test")
    for name in (*LEARNED, "random", "strongest", "cheapest"):
        again = make(name).fit(data, seed=0)
        q1, c1 = routers[name].predict(data, rows)
        q2, c2 = again.predict(data, rows)
        np.testing.assert_array_equal(q1, q2, err_msg=name)
        np.testing.assert_array_equal(c1, c2, err_msg=name)
        for lam in (0.0, 1.0):
            np.testing.assert_array_equal(routers[name].select(data, rows, lam), again.select(data, rows, lam))
    other = make("random").fit(data, seed=1)
    assert not np.array_equal(other.select(data, rows, 0.0), routers["random"].select(data, rows, 0.0))
    other = make("mlpmf").fit(data, seed=1)
    assert not np.allclose(other.predict(data, rows)[0], routers["mlpmf"].predict(data, rows)[0])


def test_unavailable_models_are_never_selected(fitted):
    data, routers = fitted[0]
    rows = data.idx("test")
    rng = np.random.default_rng(0)
    avail = rng.uniform(size=(len(rows), data.k)) < 0.4
    avail[np.arange(len(rows)), rng.integers(0, data.k, len(rows))] = True  # at least one per row
    for name in ALL:
        for lam in (0.0, 0.5, 30.0):
            pick = routers[name].select(data, rows, lam, avail=avail)
            assert avail[np.arange(len(rows)), pick].all(), (name, lam)
    # the same through the data's own availability matrix
    masked = replace(data, avail=data.avail.copy())
    masked.avail[rows] = avail
    for name in ALL:
        pick = routers[name].select(masked, rows, 0.0)
        assert avail[np.arange(len(rows)), pick].all(), name


def test_large_lambda_routes_to_cheaper_models(fitted):
    for name in ("oracle", *LEARNED):
        cheap = np.mean([_quality(r[name], d, 30.0)[1] for d, r in fitted.values()])
        rich = np.mean([_quality(r[name], d, 0.0)[1] for d, r in fitted.values()])
        assert cheap < 0.8 * rich, (name, cheap, rich)
    # fixed-model routers ignore lambda
    data, routers = fitted[0]
    rows = data.idx("test")
    for name in ("strongest", "cheapest", "random"):
        np.testing.assert_array_equal(routers[name].select(data, rows, 0.0), routers[name].select(data, rows, 30.0))


def test_fit_never_reads_test_rows(fitted):
    data, routers = fitted[0]
    test = data.idx("test")
    bad = replace(data, quality=data.quality.copy(), cost=data.cost.copy(), cost_usd=data.cost_usd.copy(),
                  exp_cost=data.exp_cost.copy())
    for arr in (bad.quality, bad.cost, bad.cost_usd, bad.exp_cost):
        arr[test] = np.nan
    every = np.arange(data.n)
    for name in ALL:
        if name == "oracle":  # reads true outcomes by design (not learned)
            continue
        clean_q, clean_c = routers[name].predict(data, every)
        q, c = make(name).fit(bad, seed=0).predict(bad, every)
        assert np.isfinite(q).all() and np.isfinite(c).all(), name
        np.testing.assert_array_equal(q, clean_q, err_msg=name)
        np.testing.assert_array_equal(c, clean_c, err_msg=name)
    with pytest.raises(ValueError, match="train or val"):
        B.fit_rows(data, "test")


def test_strongest_and_cheapest_pick_the_right_fixed_model(fitted):
    data, routers = fitted[0]
    rows = data.idx("test")
    va = data.idx("val")
    best = int(np.argmax(data.quality[va].mean(0)))
    assert (routers["strongest"].select(data, rows, 0.0) == best).all()
    avail = np.ones((len(rows), data.k), bool)
    avail[:, best] = False
    second = int(np.argsort(-data.quality[va].mean(0))[1])
    assert (routers["strongest"].select(data, rows, 0.0, avail=avail) == second).all()
    tr = data.idx("train")
    assert (routers["cheapest"].select(data, rows, 0.0) == int(np.argmin(data.cost[tr].mean(0)))).all()


def test_evaluate_router_on_baselines(fitted):
    data, routers = fitted[0]
    rows = data.idx("test")
    knn = evaluate_router(routers["knn"], data, rows, [0.1, 1.0, 30.0])
    assert 0.0 <= knn["oriented/rank_score"] <= 1.0 and 0.0 <= knn["cost/nauc_interp"] <= 1.0
    assert knn["cost/rank_score"] >= knn["oriented/rank_score"]
    assert knn["outcome/ndcg"] > 0.5
    oracle = evaluate_router(routers["oracle"], data, rows, [0.1, 1.0, 30.0])
    assert oracle["oriented/regret"] == 0.0 and oracle["cost/regret"] == pytest.approx(0.0, abs=1e-6)
    assert oracle["outcome/spearman"] == pytest.approx(1.0)
    vl = evaluate_router(routers["vl_feature"], data, rows, [0.1, 1.0, 30.0])
    assert not any(k.startswith("outcome/") for k in vl)


def test_vl_feature_router_reaches_the_cheapest_model_at_the_top_of_the_sweep(fitted):
    data, routers = fitted[0]
    vl = routers["vl_feature"]
    rows = data.idx("test")
    sw = lambda_sweep(vl, data, rows, [0.0, 0.3, 1.0, 3.0])
    cheapest = np.argmin(np.where(data.avail[sw.rows], data.cost[sw.rows], np.inf), axis=1)
    top = sw.choices[sw.at(3.0)]
    assert np.mean(top == cheapest) >= 0.95
    assert sw.cost[sw.at(3.0)] < sw.cost[sw.at(0.0)]
    np.testing.assert_allclose(cheapest_labels(np.array([[0.5, 0.2, 0.9], [0.1, 0.3, 0.2]]),
                                                 np.array([[True, False, True], [False, False, False]])),
                               [[1, 0, 0], [0, 0, 0]])


def test_soft_labels_hand_computed():
    q = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    c = np.array([[0.2, 1.0, 0.1], [0.5, 0.3, 0.9]])
    av = np.ones((2, 3), bool)
    np.testing.assert_allclose(B.soft_labels(q, c, av, 0.0), [[0.5, 0.5, 0], [0, 1, 0]])
    w = np.exp(-0.8)
    np.testing.assert_allclose(B.soft_labels(q, c, av, 1.0), [[1 / (1 + w), w / (1 + w), 0], [0, 1, 0]])
    np.testing.assert_allclose(B.soft_labels(q, c, av, float("inf")), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(B.soft_labels(q, c, av, 1e6).sum(1), [1, 1])  # no underflow to 0/0
    av[0, 0] = False
    np.testing.assert_allclose(B.soft_labels(q, c, av, 0.0)[0], [0, 1, 0])


def test_vl_feature_nearest_lambda_and_pair_loss():
    # classifiers [0, 1, 10, inf (cost-only)]; index = round(3 * log1p(lam) / log1p(3)):
    # 0 -> 0, 0.2 -> round(0.39) = 0, 2 -> round(2.38) = 2, 3 -> 3 (top of the sweep), beyond clips to 3
    r = B.VLFeatureRouter(B.VLFeatureConfig(lambdas=(10.0, 0.0, 1.0), sweep_max=3.0))
    assert [r.nearest_lambda(x) for x in (0.0, 0.2, 2.0, 3.0, 1000.0)] == [0.0, 0.0, 10.0, np.inf, np.inf]
    old = B.VLFeatureRouter(B.VLFeatureConfig(lambdas=(10.0, 0.0, 1.0), cost_only=False, sweep_max=3.0))
    assert [old.nearest_lambda(x) for x in (0.0, 1.0, 3.0)] == [0.0, 1.0, 10.0]
    s = torch.tensor([[2.0, 0.0, 5.0]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    m = torch.tensor([[True, True, False]])
    # only (0 beats 1) counts: the masked model 2 and ties are ignored
    assert float(B.RouteLLMMFRouter._pair_loss(s, y, m)) == pytest.approx(np.log1p(np.exp(-2.0)))


def test_parameter_counts(fitted):
    data, routers = fitted[0]
    d, k = data.pooled.shape[1], data.k
    per_net = d * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + k * 64 + k
    assert routers["mlpmf"].n_parameters() == 2 * per_net
    assert routers["routellm_mf"].n_parameters() == d * 32 + k * 32 + 32 + 2
    # 3 soft-label classifiers + the cost-only one
    assert routers["vl_feature"].n_parameters() == 4 * (d * 256 + 256 + 256 * k + k)
    assert routers["knn"].n_parameters() > 0 and routers["kmeans"].n_parameters() > 0
    assert routers["oracle"].n_parameters() == 0


def test_clear_errors(fitted):
    data, routers = fitted[0]
    no_train = replace(data, split=np.where(data.split == "train", "val", data.split).astype(object))
    with pytest.raises(ValueError, match="no 'train' rows"):
        B.KNNRouter().fit(no_train)
    fewer = data.subset_models(data.model_ids[:3])
    with pytest.raises(ValueError, match="fitted on models"):
        routers["knn"].predict(fewer, fewer.idx("test"))
    with pytest.raises(RuntimeError, match="not fitted"):
        B.KMeansRouter().predict(data, data.idx("test"))


def test_knn_neighbours_are_sklearns_exact_cosine_neighbours(fitted, monkeypatch):
    """KNN's own search (no per-call thread-pool setup) finds the same k nearest training rows as sklearn's
    brute-force cosine search, also across chunk borders, and a router pickled before ``_unit`` existed still
    predicts the same."""
    import router.models.baselines.neighbours as nb

    data, routers = fitted[0]
    knn = routers["knn"]
    rows = data.idx("test")
    want = knn._nn.kneighbors(data.pooled[rows], return_distance=False)
    monkeypatch.setattr(nb, "CHUNK", 7)  # several chunks, the last one partial
    got = knn.neighbours(data.pooled[rows])
    assert got.shape == want.shape == (len(rows), 50)
    assert [set(g) for g in got] == [set(w) for w in want]
    q, c = knn.predict(data, rows)
    old = B.KNNRouter().fit(data)
    old._unit = None
    q_old, c_old = old.predict(data, rows)
    np.testing.assert_allclose(q_old, q)
    np.testing.assert_allclose(c_old, c)
