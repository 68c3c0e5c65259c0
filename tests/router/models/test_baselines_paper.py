"""The learned baselines of the LatentRouter paper's Table 1 (ECVL, RouterDC, GraphRouter, R2-Router) and the
GroupBest floor: each test checks the property that defines the method, on tiny synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import router.models.baselines as B
from router.data.routing_data import RoutingData, synthetic_routing_data
from router.models.base import Router
from router.models.baselines.routerdc import sample_llm_loss, sample_sample_loss
from router.models.registry import ROUTERS, spec
from warehouse.vocabulary import TASK_GROUPS

FAST = B.TorchTrainConfig(epochs=25, patience=25, batch_size=32)
PAPER = ("group_best", "ecvl", "routerdc", "graphrouter", "r2_router")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def types_of(d: RoutingData) -> np.ndarray:
    """The planted query type of the synthetic data (its task group)."""
    return np.array([TASK_GROUPS.index(g) for g in d.task_group])


def with_outcomes(d: RoutingData, quality: np.ndarray, cost: np.ndarray, **kw: object) -> RoutingData:
    return replace(d, quality=quality.astype(np.float32), cost=cost.astype(np.float32),
                   cost_usd=cost.astype(np.float64) * 1e-4, avail=np.ones(quality.shape, bool), **kw)


def best_by_type(n: int = 400, k: int = 5, seed: int = 0, noise_features: bool = False) -> tuple[RoutingData, np.ndarray]:
    """Model ``best[t]`` is the only one right on type t (equal costs); optionally the features carry no type."""
    d = synthetic_routing_data(n=n, k=k, seed=seed)
    t = types_of(d)
    best = np.array([0, 1, 2, 3]) % k
    q = (np.arange(k)[None, :] == best[t][:, None]).astype(np.float32)
    kw: dict[str, object] = {}
    if noise_features:
        x = np.random.default_rng(seed + 7).normal(size=d.pooled.shape).astype(np.float32)
        kw["pooled"] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return with_outcomes(d, q, np.full((n, k), 0.5), **kw), best


BY_SHORT = {spec(n).make().name: spec(n) for n in ROUTERS if n != "LatentRouter"}  # by Router.name


def pick_rate(r: Router, d: RoutingData, best: np.ndarray, lam: float = 0.0) -> float:
    te = d.idx("test")
    return float(np.mean(r.select(d, te, lam) == best[types_of(d)[te]]))


# -- every new baseline --------------------------------------------------------------------------------------

def test_registered_and_text_only_and_avail():
    d = synthetic_routing_data(n=200, seed=1, text_only=True)
    rows = d.idx("test")
    avail = np.random.default_rng(0).uniform(size=(len(rows), d.k)) < 0.5
    avail[:, 0] = True
    for name in PAPER:
        r = type(BY_SHORT[name].make())
        assert r.name == name
        small = {"ecvl": B.ECVLRouter(B.ECVLConfig(d_model=16, n_heads=2, train=B.TorchTrainConfig(epochs=2))),
                 "routerdc": B.RouterDCRouter(B.RouterDCConfig(lambdas=(0.0, 1.0), train=B.TorchTrainConfig(epochs=2))),
                 "graphrouter": B.GraphRouter(B.GraphRouterConfig(steps=20, hidden=16)),
                 "r2_router": B.R2Router(B.R2RouterConfig(train=B.TorchTrainConfig(epochs=2)))}.get(name, r())
        small.fit(d, seed=0)
        q, c = small.predict(d, rows)
        assert q.shape == c.shape == (len(rows), d.k) and np.isfinite(q).all() and np.isfinite(c).all(), name
        for lam in (0.0, 0.7, 30.0):
            pick = small.select(d, rows, lam, avail=avail)
            assert avail[np.arange(len(rows)), pick].all(), (name, lam)
        assert small.n_parameters() > 0, name


# -- GroupBest ------------------------------------------------------------------------------------------------

def test_group_best_is_the_label_best_by_utility_with_back_off():
    n = 12
    d = synthetic_routing_data(n=n, k=3, seed=0)
    split = np.array(["train"] * 8 + ["test"] * 4, dtype=object)
    groups = np.array(["ocr"] * 4 + ["chart"] * 4 + ["ocr", "chart", "math", "math"], dtype=object)
    q = np.zeros((n, 3))
    q[:4] = [0.9, 0.8, 0.0]  # ocr: model 0 best, model 1 nearly as good and much cheaper
    q[4:8] = [0.0, 0.0, 1.0]  # chart: model 2 (global means 0.45, 0.4, 0.5)
    cost = np.tile([1.0, 0.1, 0.5], (n, 1))
    d = with_outcomes(d, q, cost, split=split, task_group=groups, dataset=np.array(["x"] * n, dtype=object))
    r = B.GroupBestRouter(B.GroupBestConfig(by="dataset_task")).fit(d)
    te = d.idx("test")
    assert r.select(d, te, 0.0).tolist() == [0, 2, 2, 2]  # unseen "math" -> global best (model 2: mean 0.5)
    assert r.select(d, te, 1.0).tolist()[:2] == [1, 2]  # ocr at lambda 1: 0.8 - 0.1 beats 0.9 - 1.0
    # a label seen under another dataset backs off to its task group
    d2 = replace(d, dataset=np.array(["x"] * 8 + ["new"] * 4, dtype=object))
    assert r.select(d2, te, 0.0).tolist()[:2] == [0, 2]
    assert not r.learned and r.n_parameters() > 0


# -- RouterDC -------------------------------------------------------------------------------------------------

def test_routerdc_losses_hand_computed():
    s = torch.tensor([[2.0, 0.0, 1.0]])
    util = torch.tensor([[1.0, 0.0, 0.5]])
    ok = torch.tensor([[True, False, True]])
    av = torch.ones(1, 3, dtype=torch.bool)
    assert float(sample_llm_loss(s, util, ok, av, 1, 1)) == pytest.approx(np.log1p(np.exp(-2.0)))
    # the negative is as good as the positive -> ignored; a failed positive is skipped
    assert float(sample_llm_loss(s, torch.ones(1, 3), ok, av, 1, 1)) == pytest.approx(0.0)
    assert float(sample_llm_loss(s, util, torch.zeros(1, 3, dtype=torch.bool), av, 2, 1)) == 0.0
    h = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    cl = torch.tensor([0, 0, 1, 1])
    gen = torch.Generator().manual_seed(0)
    aligned = float(sample_sample_loss(h, cl, 2, gen))
    assert aligned < float(sample_sample_loss(h, torch.tensor([0, 1, 0, 1]), 2, gen))


def test_routerdc_both_contrastive_losses_fall_and_it_routes_right():
    d, best = best_by_type(seed=0)
    cfg = B.RouterDCConfig(lambdas=(0.0,), n_clusters=4, train=FAST)
    r = B.RouterDCRouter(cfg).fit(d, seed=0)
    h = r.history_[0.0]
    assert h["sample_llm"][-1] < 0.75 * h["sample_llm"][0], h["sample_llm"]
    assert h["sample_sample"][-1] < 0.9 * h["sample_sample"][0], h["sample_sample"]
    assert pick_rate(r, d, best) > 0.9
    assert not r.predicts_outcomes


def test_routerdc_cost_aware_fit_prefers_cheap_model_at_large_lambda():
    d = synthetic_routing_data(n=400, k=3, seed=2)
    q = np.tile([1.0, 0.8, 0.0], (d.n, 1))  # model 1 nearly as good, much cheaper
    d = with_outcomes(d, q, np.tile([1.0, 0.1, 0.05], (d.n, 1)))
    r = B.RouterDCRouter(B.RouterDCConfig(lambdas=(0.0, 3.0), train=FAST)).fit(d, seed=0)
    te = d.idx("test")
    assert np.mean(r.select(d, te, 0.0) == 0) > 0.9 and np.mean(r.select(d, te, 5.0) == 1) > 0.9
    assert r.nearest_lambda(0.2) == 0.0 and r.nearest_lambda(10.0) == 3.0


# -- GraphRouter ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph_fit():
    torch.set_num_threads(1)
    d, best = best_by_type(seed=3, noise_features=True)  # only the task link tells queries apart
    r = B.GraphRouter(B.GraphRouterConfig(hidden=32, steps=300, patience=30)).fit(d, seed=0)
    return d, best, r


def test_graphrouter_recovers_the_task_best_model_for_unseen_queries(graph_fit):
    d, best, r = graph_fit
    assert pick_rate(r, d, best) > 0.9
    # the same queries with an unseen task label lose the only signal (their features are noise)
    blind = replace(d, dataset=np.where(d.split == "test", "unseen", d.dataset).astype(object))
    assert pick_rate(r, blind, best) < 0.6


def test_graphrouter_message_passing_uses_edges_and_scores_new_models(graph_fit):
    d, _, r = graph_fit
    te = d.idx("test")
    q, c = r.predict(d, te)
    cut = d.avail.copy()
    cut[d.split != "test", 0] = False  # remove every training edge of model 0
    q2, _ = r.predict(replace(d, avail=cut), te)
    assert np.abs(q2 - q).max() > 1e-3
    assert np.abs(q2[:, 0] - q[:, 0]).mean() > np.abs(q2[:, 1:] - q[:, 1:]).mean()
    # a model added after training enters through its profile and edges: no retraining needed
    sub = d.subset_models(d.model_ids[:4])
    r4 = B.GraphRouter(B.GraphRouterConfig(hidden=16, steps=40)).fit(sub, seed=0)
    q5, c5 = r4.predict(d, te)
    assert q5.shape == (len(te), 5) and np.isfinite(q5).all() and np.isfinite(c5).all()
    # predictions of a row do not depend on the batch it is predicted in
    np.testing.assert_allclose(r.predict(d, te[:3])[0], q[:3], rtol=1e-5, atol=1e-6)


# -- R2-Router ------------------------------------------------------------------------------------------------

def test_r2router_heads_learn_quality_and_cost():
    d = synthetic_routing_data(n=600, seed=4)
    t = types_of(d)
    price = np.linspace(0.2, 1.0, d.k)
    cost = price[None, :] * (0.5 + t[:, None] / 2.0)  # the query's length factor depends on its type
    d = with_outcomes(d, d.quality, cost)
    r = B.R2Router(B.R2RouterConfig(train=FAST)).fit(d, seed=0)
    tr, te = d.idx("train"), d.idx("test")
    q, c = r.predict(d, te)
    mq, mc = d.quality[tr].mean(0), d.cost[tr].mean(0)
    assert np.mean((c - d.cost[te]) ** 2) < 0.1 * np.mean((mc - d.cost[te]) ** 2)
    assert np.mean((q - d.quality[te]) ** 2) < 0.85 * np.mean((mq - d.quality[te]) ** 2)
    # ranking: the predicted best model is the type's best model (per-type training means)
    type_mean = np.stack([d.quality[tr][t[tr] == g].mean(0) for g in range(4)])[t[te]]
    got = type_mean[np.arange(len(te)), q.argmax(1)]
    assert got.mean() > type_mean.max(1).mean() - 0.03 and got.mean() > type_mean.mean() + 0.2
    # routing is predicted quality - lambda * predicted cost (base select)
    np.testing.assert_allclose(r.scores(d, te, 0.5), q - 0.5 * c)


# -- ECVL -----------------------------------------------------------------------------------------------------

def test_ecvl_mes_rule_sends_easy_queries_to_the_cheap_model():
    d = synthetic_routing_data(n=400, k=2, seed=5)
    t = types_of(d)
    q = np.stack([(t < 2).astype(float), np.ones(d.n)], 1)  # edge model right on types 0/1 only; cloud always
    d = with_outcomes(d, q, np.tile([0.1, 1.0], (d.n, 1)))
    cfg = B.ECVLConfig(d_model=32, n_heads=2, train=FAST)
    r = B.ECVLRouter(cfg).fit(d, seed=0)
    te = d.idx("test")
    # high-quality scenario: MES = 1 is never cleared, so the best predicted model (edge ties on types 0/1)
    assert np.mean((r.select(d, te, 0.0) == 1) | (t[te] < 2)) > 0.95
    lam = float(np.log(2.0))  # MES = 0.5
    assert cfg.mes(lam) == pytest.approx(0.5)
    assert np.mean(r.select(d, te, lam) == np.where(t[te] < 2, 0, 1)) > 0.9
    assert np.mean(r.select(d, te, 20.0) == 0) > 0.95  # low-cost scenario: the cheap model clears MES ~ 0
    shares = [np.mean(r.select(d, te, lam) == 0) for lam in (0.0, 0.3, 0.7, 1.5, 5.0)]
    assert shares == sorted(shares)
