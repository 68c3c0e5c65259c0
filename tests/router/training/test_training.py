"""LatentRouter training: Prop. B.1 on planted reversals, losses, early stopping, determinism, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import router.training.trainer as training
from router.data.routing_data import RoutingData, synthetic_routing_data
from router.models.latent_router.model import LatentRouterConfig
from router.training.checkpoint import load_checkpoint, meta_from_data, save_checkpoint
from router.training.trainer import (
    LatentRouterRouter,
    TrainConfig,
    TrainResult,
    _drop_avail,
    predict,
    routing_losses,
    train_latent_router,
)

SMALL = LatentRouterConfig(hidden=32)
TINY = LatentRouterConfig(hidden=16, n_heads=2, n_capsules=3, n_side_tokens=2)


@pytest.fixture(scope="module")
def full_data() -> RoutingData:
    return synthetic_routing_data(n=1200, k=5, seed=0)


@pytest.fixture(scope="module")
def data4(full_data: RoutingData) -> RoutingData:
    """The same queries with model m4 held out (it comes back as a 'new' model)."""
    return full_data.subset_models(["m0", "m1", "m2", "m3"])


@pytest.fixture(scope="module")
def trained(data4: RoutingData) -> TrainResult:
    return train_latent_router(data4, SMALL, TrainConfig(epochs=10, patience=4, seed=0))


def _pick_quality(data: RoutingData, rows: np.ndarray, scores: np.ndarray) -> float:
    return float(data.quality[rows, np.argmax(scores, axis=1)].mean())


def _additive_fit(data: RoutingData) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares s(x, m) = w.x + b + h_m on train rows; returns (w, h)."""
    tr = data.idx("train")
    n, k = len(tr), data.k
    x = np.repeat(data.pooled[tr], k, axis=0)  # row (query, model)
    onehot = np.tile(np.eye(k), (n, 1))
    design = np.concatenate([x, onehot], axis=1)
    y = data.quality[tr].reshape(-1)
    keep = data.avail[tr].reshape(-1)
    coef, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
    return coef[: x.shape[1]], coef[x.shape[1] :]


def test_interaction_beats_additive_and_single_best_prop_b1(trained: TrainResult, data4: RoutingData) -> None:
    te, tr = data4.idx("test"), data4.idx("train")
    _, _, score = predict(trained.model, data4, te, lam=0.0)
    router_acc = _pick_quality(data4, te, score)
    w, h = _additive_fit(data4)
    additive = data4.pooled[te] @ w[:, None] + h[None, :]
    additive_acc = _pick_quality(data4, te, additive)
    single_best = float(data4.quality[te, np.argmax(data4.quality[tr].mean(0))].mean())
    # an additive score cannot change its pick with the query; the router does and wins clearly
    assert len(np.unique(np.argmax(additive, axis=1))) == 1
    assert len(np.unique(np.argmax(score, axis=1))) >= 2
    assert router_acc >= additive_acc + 0.1
    assert router_acc >= single_best + 0.1
    # the planted reversal (m0 good at ocr, m1 at chart) shows in the predicted means
    mu_t, _, _ = predict(trained.model, data4, te, lam=0.0)
    ocr, chart = data4.task_group[te] == "ocr", data4.task_group[te] == "chart"
    assert mu_t[ocr, 0].mean() > mu_t[ocr, 1].mean()
    assert mu_t[chart, 0].mean() < mu_t[chart, 1].mean()


def test_loss_decreases_and_early_stopping_bookkeeping(trained: TrainResult) -> None:
    hist = trained.history
    assert hist[-1].train_loss < hist[0].train_loss
    assert set(hist[0].parts) == {"nll", "pair", "list", "util", "mean", "res"}
    assert trained.best_val_utility == max(h.val_utility for h in hist)
    assert hist[trained.best_epoch].val_utility == trained.best_val_utility
    if len(hist) < 10:  # stopped early: exactly `patience` epochs without improvement
        assert len(hist) == trained.best_epoch + 1 + 4
    assert all(h.seconds > 0 for h in hist) and trained.n_params == trained.model.n_parameters()


def test_early_stopping_restores_best_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_routing_data(n=160, k=3, seed=2)
    scripted = iter([0.2, 0.6, 0.4, 0.5, 0.3, 0.9, 0.9])
    snapshots: list[dict[str, torch.Tensor]] = []

    def fake_val(model, *_args, **_kw) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(training, "pick_utility", fake_val)
    res = train_latent_router(data, TINY, TrainConfig(epochs=7, patience=3, batch_size=32))
    assert [h.val_utility for h in res.history] == [0.2, 0.6, 0.4, 0.5, 0.3]  # stopped 3 epochs after best
    assert res.best_epoch == 1
    final = res.model.state_dict()
    for k, v in snapshots[1].items():
        torch.testing.assert_close(final[k], v)
    assert any(not torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_training_is_deterministic_for_a_seed() -> None:
    data = synthetic_routing_data(n=160, k=3, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=32, avail_drop=0.3)
    a, b = train_latent_router(data, TINY, cfg), train_latent_router(data, TINY, cfg)
    c = train_latent_router(data, TINY, dataclasses.replace(cfg, seed=1))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_new_model_is_scored_without_retraining(trained: TrainResult, data4: RoutingData,
                                                full_data: RoutingData) -> None:
    te = full_data.idx("test")
    mu5, sig5, s5 = predict(trained.model, full_data, te, lam=0.0)
    assert s5.shape == (len(te), 5) and np.isfinite(s5).all() and np.isfinite(sig5).all()
    assert mu5[:, 4].std() > 0  # the newcomer's score depends on the query
    # with the newcomer masked, the other models' scores are exactly those of the 4-model pool
    avail = full_data.avail[te].copy()
    avail[:, 4] = False
    _, _, s_masked = predict(trained.model, full_data, te, lam=0.0, avail=avail)
    _, _, s4 = predict(trained.model, data4, te, lam=0.0)
    np.testing.assert_allclose(s_masked[:, :4], s4, atol=1e-5)
    assert np.isneginf(s_masked[:, 4]).all()


def test_losses_ignore_unavailable_models() -> None:
    torch.manual_seed(0)
    b, k = 6, 4
    out = {"mu": torch.rand(b, k), "sigma": torch.rand(b, k) + 0.1, "delta": 0.01 * torch.randn(b, k)}
    out["mu_tilde"] = out["mu"] + out["delta"]
    q, cost = torch.rand(b, k), torch.rand(b, k)
    avail = torch.rand(b, k) > 0.4
    avail[:, 0] = True
    tc = TrainConfig()
    base = routing_losses(out, q, q - 0.3 * cost, 0.3 * cost, avail, SMALL, tc)
    q2 = torch.where(avail, q, torch.full_like(q, 50.0))
    out2 = {key: torch.where(avail, v, torch.full_like(v, 7.0)) for key, v in out.items()}
    other = routing_losses(out2, q2, q2 - 0.3 * cost, 0.3 * cost, avail, SMALL, tc)
    for key in base:
        torch.testing.assert_close(base[key], other[key])
        assert torch.isfinite(base[key])
    # ranking terms prefer scores ordered like the utilities
    u = torch.tensor([[1.0, 0.0, 0.5]])
    all_av = torch.ones(1, 3, dtype=torch.bool)

    def rank_terms(s: torch.Tensor) -> tuple[float, float]:
        o = {"mu": s, "sigma": torch.ones_like(s), "delta": torch.zeros_like(s), "mu_tilde": s}
        parts = routing_losses(o, u, u, torch.zeros_like(u), all_av, SMALL, tc)
        return float(parts["pair"]), float(parts["list"])

    good, bad = rank_terms(torch.tensor([[0.9, 0.1, 0.5]])), rank_terms(torch.tensor([[0.1, 0.9, 0.5]]))
    assert good[0] < bad[0] and good[1] < bad[1]


def test_availability_dropout_keeps_one_model() -> None:
    rng = np.random.default_rng(0)
    avail = rng.random((500, 4)) > 0.3
    avail[0] = False
    dropped = _drop_avail(avail, 0.9, rng)
    assert not (dropped & ~avail).any()
    assert (dropped.any(1) == avail.any(1)).all()
    assert dropped.sum() < avail.sum()


def test_checkpoint_round_trip(trained: TrainResult, data4: RoutingData, tmp_path) -> None:
    meta = meta_from_data(data4, metrics={"val_utility": trained.best_val_utility},
                          normalisers={"cost_scale": np.float64(1e-4), "profile_mean": np.zeros(3)})
    path = save_checkpoint(trained.model, SMALL, meta, tmp_path / "ckpt")
    assert (path / "model.safetensors").is_file()
    cfg_json = json.loads((path / "config.json").read_text())
    assert cfg_json["meta"]["model_ids"] == ["m0", "m1", "m2", "m3"]
    assert cfg_json["meta"]["model_feat_names"] == data4.model_feat_names
    model, cfg, meta2 = load_checkpoint(path)
    assert cfg == SMALL and meta2["normalisers"]["cost_scale"] == 1e-4
    assert meta2["dims"]["txt_dim"] == data4.txt_tokens.shape[-1]
    rows = data4.idx("test")[:50]
    for a, b in zip(predict(trained.model, data4, rows, 0.2), predict(model, data4, rows, 0.2), strict=True):
        np.testing.assert_array_equal(a, b)
    # input normalisers travel with the weights
    torch.testing.assert_close(model.capsules.img_std, trained.model.capsules.img_std)
    assert not torch.allclose(model.capsules.img_std, torch.ones_like(model.capsules.img_std))
    # broken checkpoints are reported with the file at fault
    (path / "config.json").write_text(json.dumps({**cfg_json, "dims": {**cfg_json["dims"], "txt_dim": 7}}))
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(path)


def test_router_adapter_and_cost_aware_training() -> None:
    data = synthetic_routing_data(n=200, k=4, seed=3)
    r = LatentRouterRouter(TINY, TrainConfig(epochs=2, batch_size=64, lam_choices=(0.0, 0.5, 1.0)),
                           name="LatentRouter-tiny")
    assert r.name == "LatentRouter-tiny" and LatentRouterRouter().name == "LatentRouter"
    with pytest.raises(RuntimeError, match="fit"):
        r.predict(data, np.arange(3))
    r.fit(data, seed=5)
    assert r.result is not None and r.result.train_cfg.seed == 5 and r.n_parameters() > 0
    rows = data.idx("test")
    q, c = r.predict(data, rows)
    assert q.shape == c.shape == (len(rows), 4)
    np.testing.assert_array_equal(c, data.exp_cost[rows])
    avail = np.ones((len(rows), 4), dtype=bool)
    avail[:, 1:3] = False
    pick = r.select(data, rows, lam=0.5, avail=avail)
    assert avail[np.arange(len(rows)), pick].all()
    # one model serves the lambda sweep: a large lambda routes to the cheapest model, lambda 0 does not
    cheap = data.exp_cost[rows, r.select(data, rows, lam=5.0)].mean()
    rich = data.exp_cost[rows, r.select(data, rows, lam=0.0)].mean()
    assert cheap == pytest.approx(data.exp_cost[rows].min(axis=1).mean()) and cheap < rich


@pytest.mark.parametrize("switch", ["use_capsules", "use_model_tokens", "use_communication",
                                    "use_pairwise_bias", "use_feedback", "distributional",
                                    "bounded_correction"])
def test_ablation_variants_train(switch: str) -> None:
    data = synthetic_routing_data(n=120, k=3, seed=4)
    res = train_latent_router(data, dataclasses.replace(TINY, **{switch: False}),
                              TrainConfig(epochs=2, batch_size=32))
    assert all(np.isfinite(h.train_loss) for h in res.history)
    assert res.n_params > 0


def test_training_curve_has_pick_accuracy_next_to_group_best(trained: TrainResult, data4: RoutingData) -> None:
    from router.models.baselines import GroupBestRouter
    from router.training.curves import pick_accuracy

    hist = trained.history
    assert all(np.isfinite(h.train_acc) and np.isfinite(h.val_acc) for h in hist)
    # lambda-0 training: the validation pick accuracy is the early-stopping utility itself
    assert [h.val_acc for h in hist] == [h.val_utility for h in hist]
    # the planted reversal is learnt: train pick accuracy rises over the run
    assert max(h.train_acc for h in hist) > hist[0].train_acc
    gb = GroupBestRouter().fit(data4)
    assert trained.reference["group_best_val_acc"] == pytest.approx(pick_accuracy(gb, data4, data4.idx("val")))
    assert set(trained.reference) == {"group_best_train_acc", "group_best_val_acc"}
    off = train_latent_router(data4, TINY, TrainConfig(epochs=1, curve_rows=0))
    assert np.isnan(off.history[0].train_acc) and off.reference == {}
    # the curve only watches: without it the weights are the same (the evaluation's fits skip it)
    on = train_latent_router(data4, TINY, TrainConfig(epochs=1))
    for name, w in on.model.state_dict().items():
        assert torch.equal(w, off.model.state_dict()[name]), name
    with pytest.raises(ValueError, match="curve_rows"):
        TrainConfig(curve_rows=-1)


def test_init_head_mean_starts_mu_at_the_train_mean(data4: RoutingData) -> None:
    from router.models.latent_router.model import InputDims, LatentRouter

    torch.manual_seed(0)
    model = LatentRouter(TINY, InputDims.from_data(data4, TINY))
    model.set_input_stats(data4, data4.idx("train"))
    training._init_head(model, data4, data4.idx("train"))
    rows = data4.idx("val")
    mu, sigma, _ = predict(model, data4, rows)
    q = data4.quality[data4.idx("train")]
    assert abs(float(mu.mean()) - float(q.mean())) < 0.05
    assert abs(float(sigma.mean()) - float(q.std())) < 0.05
    res = train_latent_router(data4, TINY, TrainConfig(epochs=2, init_head_mean=True))
    assert np.isfinite(res.best_val_utility)


def test_token_drop_hides_tokens_only_in_training_batches(data4: RoutingData) -> None:
    from router.training.trainer import _drop_tokens, make_batch

    rows = data4.idx("train")[:64]
    batch = make_batch(data4, rows, TINY, torch.device("cpu"))
    before = {k: batch[k].clone() for k in ("img_mask", "txt_mask")}
    _drop_tokens(batch, 0.5, np.random.default_rng(0))
    for k, m in before.items():
        assert not (batch[k] & ~m).any()  # nothing padded becomes valid
        frac = float(batch[k].sum()) / float(m.sum())
        assert 0.35 < frac < 0.65
    res = train_latent_router(data4, TINY, TrainConfig(epochs=2, token_drop=0.3))
    assert np.isfinite(res.best_val_utility)
    with pytest.raises(ValueError, match="token_drop"):
        TrainConfig(token_drop=1.0)
