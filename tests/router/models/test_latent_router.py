"""LatentRouter architecture: Prop. B.2 / B.3 of the paper, availability masking, ablation switches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from router.data.routing_data import synthetic_routing_data
from router.models.latent_router.layers import attend
from router.models.latent_router.model import InputDims, LatentRouter, LatentRouterConfig
from router.models.latent_router.pooling import adaptive_windows, first_valid_tokens, pool_image_tokens
from router.training.trainer import make_batch

DIMS = InputDims(img_dim=16, txt_dim=12, side_dim=10, model_feat_dim=5)


def _model(seed: int = 0, dims: InputDims = DIMS, **cfg_kw) -> LatentRouter:
    torch.manual_seed(seed)
    cfg = LatentRouterConfig(**{"hidden": 32, **cfg_kw})
    model = LatentRouter(cfg, dims).eval()
    with torch.no_grad():  # non-trivial input normalisers, so the folded projections are exercised
        caps = model.capsules
        for name in ("img", "txt", "side"):
            getattr(caps, f"{name}_mean").normal_()
            getattr(caps, f"{name}_std").uniform_(0.5, 2.0)
    return model


def _inputs(b: int = 4, k: int = 6, seed: int = 1, dims: InputDims = DIMS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img_mask = torch.rand(b, 8, generator=g) > 0.3
    img_mask[:, 0] = True
    txt_mask = torch.rand(b, 6, generator=g) > 0.3
    avail = torch.rand(b, k, generator=g) > 0.35
    avail[:, 0] = True
    return {
        "img_tokens": torch.randn(b, 8, dims.img_dim, generator=g),
        "img_mask": img_mask,
        "txt_tokens": torch.randn(b, 6, dims.txt_dim, generator=g),
        "txt_mask": txt_mask,
        "side": torch.randn(b, dims.side_dim, generator=g),
        "model_feats": torch.randn(k, dims.model_feat_dim, generator=g),
        "model_cost": torch.rand(b, k, generator=g),
        "avail": avail,
    }


def test_default_size_is_about_one_million_parameters_or_fewer() -> None:
    # shaped like the real features: 320-d image tokens, 384-d text tokens, pooled (1280+384) + side
    dims = InputDims(320, 384, 1280 + 384 + 12, 30)
    model = LatentRouter(LatentRouterConfig(), dims)
    assert model.cfg.hidden == 48  # the paper's configuration
    n = model.n_parameters()
    assert 100_000 < n <= 1_000_000
    wide = LatentRouter(LatentRouterConfig(hidden=96), dims)  # the released class default stays under 1M too
    assert n < wide.n_parameters() <= 1_000_000


@pytest.mark.parametrize("hidden", [32, 64])  # 2*C*heads = 56: 32 runs the projected form, 64 the factorised
def test_capsule_attention_equals_multihead_attention(hidden: int) -> None:
    model = _model(hidden=hidden)
    caps = model.capsules
    x = _inputs()
    with torch.no_grad():
        segs, side_tok = model.query_inputs(x["img_tokens"], x["img_mask"], x["txt_tokens"], x["txt_mask"],
                                            x["side"])
        r = caps(segs, side_tok)
        seq, ignore = caps.explicit_sequence(segs, side_tok)
        # the explicit sequence is the standardised tokens through the projections (valid positions)
        img_ref = caps.img_proj((x["img_tokens"] - caps.img_mean) / caps.img_std) + caps.type_emb[0]
        valid = x["img_mask"]
        torch.testing.assert_close(seq[:, :8][valid], img_ref[valid], atol=1e-5, rtol=1e-5)
        q = caps.capsule_q.expand(4, -1, -1)
        ref, _ = caps.attn(q, seq, seq, key_padding_mask=ignore)
        ref = caps.norm(q + ref)
        ref = caps.norm2(ref + caps.ffn(ref))
        torch.testing.assert_close(r, ref, atol=1e-5, rtol=1e-5)
        # second call hits the eval cache and must give the same answer; a weight change invalidates it
        torch.testing.assert_close(caps(segs, side_tok), r)
        caps.txt_proj.weight.mul_(2.0)
        assert not torch.allclose(caps(segs, side_tok), r, atol=1e-4)


@pytest.mark.parametrize(("s", "p"), [(7, 4), (7, 3), (6, 4), (8, 3), (5, 2)])
def test_image_token_pooling_matches_adaptive_avg_pool(s: int, p: int) -> None:
    g = torch.Generator().manual_seed(s * 10 + p)
    x = torch.randn(3, s * s, 5, generator=g)
    ref = F.adaptive_avg_pool2d(x.view(3, s, s, 5).permute(0, 3, 1, 2), p).permute(0, 2, 3, 1).reshape(3, p * p, 5)
    got, valid = pool_image_tokens(x, torch.ones(3, s * s, dtype=torch.bool), p)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    assert valid.shape == (3, p * p) and valid.all()
    # with a mask: each cell is the mean of its valid tokens, a cell without one is masked
    mask = torch.rand(3, s * s, generator=g) > 0.6
    mask[2] = False  # no image at all stays no image
    got, valid = pool_image_tokens(x, mask, p)
    wins = adaptive_windows(s, p)
    for b in range(3):
        for i, (r0, r1) in enumerate(wins):
            for j, (c0, c1) in enumerate(wins):
                cell = [r * s + c for r in range(r0, r1) for c in range(c0, c1) if mask[b, r * s + c]]
                assert bool(valid[b, i * p + j]) == bool(cell)
                if cell:
                    torch.testing.assert_close(got[b, i * p + j], x[b, cell].mean(0), atol=1e-5, rtol=1e-5)
    assert not valid[2].any()
    # grids that are not square, or already small, pass through untouched
    for t in (8, 4):
        y, v = pool_image_tokens(x[:, :t], mask[:, :t], 2 if t == 4 else p)
        assert y is x[:, :t] or torch.equal(y, x[:, :t])
        assert torch.equal(v, mask[:, :t])


def test_first_valid_tokens_keeps_order_and_handles_inner_padding() -> None:
    x = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    valid = torch.tensor([[True, False, True, True, False, True], [False, False, True, False, False, False]])
    got, v = first_valid_tokens(x, valid, 3)
    assert got[0, :, 0].tolist() == [0.0, 2.0, 3.0] and v[0].all()
    assert got[1, 0, 0].item() == 8.0 and v[1].tolist() == [True, False, False]
    prefix = torch.tensor([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    got, v = first_valid_tokens(x, prefix, 3)
    assert torch.equal(got, x[:, :3]) and torch.equal(v, prefix[:, :3])
    assert first_valid_tokens(x, valid, 0)[0] is x  # 0 = keep every token


def test_token_reduction_is_what_the_capsules_read() -> None:
    """A 4x4 image grid pooled to 2x2 and the first 3 question tokens give the same scores as feeding the
    reduced tokens to the same weights with the reduction off; make_batch's early cut changes nothing."""
    dims = InputDims(img_dim=16, txt_dim=12, side_dim=10, model_feat_dim=5)
    model = _model(dims=dims, image_token_pool=2, max_text_tokens=3)
    off = LatentRouter(dataclasses.replace(model.cfg, image_token_pool=0, max_text_tokens=0), dims).eval()
    off.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(5)
    x = dict(_inputs(), img_tokens=torch.randn(4, 16, 16, generator=g), img_mask=torch.ones(4, 16, dtype=torch.bool))
    x["txt_mask"] = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4, [True] * 6])
    pooled = F.adaptive_avg_pool2d(x["img_tokens"].view(4, 4, 4, 16).permute(0, 3, 1, 2), 2)
    reduced = dict(x, img_tokens=pooled.permute(0, 2, 3, 1).reshape(4, 4, 16), img_mask=torch.ones(4, 4, dtype=torch.bool),
                   txt_tokens=x["txt_tokens"][:, :3], txt_mask=x["txt_mask"][:, :3])
    with torch.no_grad():
        out, ref, full = model(**x), off(**reduced), off(**x)
    torch.testing.assert_close(out["score"], ref["score"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["mu_tilde"], full["mu_tilde"], atol=1e-4)  # the reduction is not a no-op

    data = synthetic_routing_data(n=30, k=3, seed=2, ti=16, di=16, tq=8, dq=12)
    data.txt_mask[:, 5:] = False
    cfg = dataclasses.replace(model.cfg, max_text_tokens=4)
    batch = make_batch(data, np.arange(6), cfg, torch.device("cpu"))
    assert batch["txt_tokens"].shape[1] == 4  # cut while converting: the model gets what it will read
    net = LatentRouter(cfg, InputDims.from_data(data, cfg)).eval()
    whole = dict(batch, txt_tokens=torch.as_tensor(data.txt_tokens[:6], dtype=torch.float32),
                 txt_mask=torch.as_tensor(data.txt_mask[:6]))
    with torch.no_grad():
        torch.testing.assert_close(net(**batch)["score"], net(**whole)["score"], atol=1e-6, rtol=1e-6)


def test_graph_capture_takes_the_general_token_paths_with_the_same_result(monkeypatch) -> None:
    """Under torch.compile / export / jit tracing the token reduction must not branch on tensor values (a
    captured graph would bake one request's mask in); its general path must give the fast path's result."""
    import router.models.latent_router.capsules as capsules
    import router.models.latent_router.pooling as pooling

    model = _model(dims=InputDims(img_dim=16, txt_dim=12, side_dim=10, model_feat_dim=5), image_token_pool=2,
                   max_text_tokens=3)
    g = torch.Generator().manual_seed(7)
    x = dict(_inputs(), img_tokens=torch.randn(4, 16, 16, generator=g), img_mask=torch.ones(4, 16, dtype=torch.bool),
             txt_mask=torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4, [True] * 6]))
    no_img = dict(x, img_mask=torch.zeros(4, 16, dtype=torch.bool))
    with torch.no_grad():
        fast = [model(**x)["score"], model(**no_img)["score"]]
        for module in (pooling, capsules):  # every user of graph_capture takes its general path
            monkeypatch.setattr(module, "graph_capture", lambda: True)
        general = [model(**x)["score"], model(**no_img)["score"]]
    for a, b in zip(fast, general, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast[0], fast[1], atol=1e-4)  # the image matters, so both paths were exercised


def test_configs_from_before_token_reduction_load_with_it_off() -> None:
    old = {k: v for k, v in LatentRouterConfig().to_dict().items() if k not in ("image_token_pool", "max_text_tokens")}
    cfg = LatentRouterConfig.from_dict(old)
    assert (cfg.image_token_pool, cfg.max_text_tokens) == (0, 0)
    assert LatentRouterConfig.from_dict(LatentRouterConfig().to_dict()) == LatentRouterConfig()
    with pytest.raises(ValueError, match="image_token_pool"):
        LatentRouterConfig(image_token_pool=-1)


@pytest.mark.parametrize("b", [3, 40])  # below 32 rows the fused kernel runs, from 32 the plain-op path
@pytest.mark.parametrize("full_bias", [True, False])
def test_attend_equals_multihead_attention_with_bias_and_mask(b: int, full_bias: bool) -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, kv = torch.randn(b, 5, 32), torch.randn(b, 7, 32)
    ignore = torch.rand(b, 7) > 0.5
    ignore[:, 2] = False
    bias = torch.randn(b, 4, 5, 7) if full_bias else torch.randn(b, 1, 1, 7)
    with torch.no_grad():
        got = attend(mha, q, kv, bias, ignore)
        full = bias.expand(b, 4, 5, 7).masked_fill(ignore[:, None, None, :], float("-inf")).reshape(b * 4, 5, 7)
        ref, _ = mha(q, kv, kv, attn_mask=full)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attend(mha, q, kv), mha(q, kv, kv)[0], atol=1e-5, rtol=1e-5)


def test_permutation_equivariance_prop_b3() -> None:
    model = _model()
    x = _inputs(k=6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    xp = dict(x, model_feats=x["model_feats"][perm], model_cost=x["model_cost"][:, perm], avail=x["avail"][:, perm])
    with torch.no_grad():
        out, outp = model(**x, lam=0.3), model(**xp, lam=0.3)
    for key in ("score", "mu_tilde", "sigma", "delta"):
        a, b = out[key][:, perm], outp[key]
        av = xp["avail"]
        torch.testing.assert_close(a[av], b[av], atol=1e-5, rtol=1e-5)
    assert torch.isneginf(outp["score"][~xp["avail"]]).all()
    torch.testing.assert_close(out["layer_scores"][:, :, perm], outp["layer_scores"], atol=1e-5, rtol=1e-5)


def test_bounded_correction_prop_b2() -> None:
    rho = 0.05
    model = _model(rho=rho)
    with torch.no_grad():  # saturate the correction so the bound is reached; spread the base means
        model.correction.fc2.weight.mul_(200.0)
        model.head.fc2.weight.mul_(10.0)
    x = _inputs(b=16, k=6, seed=3)
    with torch.no_grad():
        out = model(**x, lam=0.5)
    av = x["avail"]
    delta, mu, mu_t = out["delta"], out["mu"], out["mu_tilde"]
    assert delta.abs().max() <= rho + 1e-6
    assert delta[av].abs().max() > 0.9 * rho  # the test is not vacuous
    torch.testing.assert_close(mu_t, mu + delta)
    torch.testing.assert_close(out["score"][av], (mu_t - 0.5 * x["model_cost"])[av])
    # a base margin larger than 2 rho is never flipped; compare every available pair
    base = mu.unsqueeze(2) - mu.unsqueeze(1)
    corr = mu_t.unsqueeze(2) - mu_t.unsqueeze(1)
    pair_av = av.unsqueeze(2) & av.unsqueeze(1)
    wide = (base.abs() > 2 * rho) & pair_av
    assert wide.any()
    assert (torch.sign(base[wide]) == torch.sign(corr[wide])).all()
    # without the correction there is none
    with torch.no_grad():
        plain = _model(bounded_correction=False)(**x)
    assert (plain["delta"] == 0).all()


def test_masked_models_never_chosen_and_do_not_influence_others() -> None:
    model = _model()
    x = _inputs(b=5, k=6, seed=4)
    with torch.no_grad():
        out = model(**x, lam=0.2)
        pick = out["score"].argmax(dim=1)
        assert x["avail"][torch.arange(5), pick].all()
        assert torch.isneginf(out["score"][~x["avail"]]).all()
        # rewrite the masked models' features and costs, including non-finite values
        feats = x["model_feats"].unsqueeze(0).expand(5, -1, -1).clone()
        cost = x["model_cost"].clone()
        masked = ~x["avail"]
        feats[masked] = 1e6
        feats[masked.nonzero()[0, 0], masked.nonzero()[0, 1], 0] = float("nan")
        cost[masked] = float("inf")
        out2 = model(**dict(x, model_feats=feats, model_cost=cost), lam=0.2)
    av = x["avail"]
    torch.testing.assert_close(out2["score"][av], out["score"][av], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out2["sigma"][av], out["sigma"][av], atol=1e-6, rtol=1e-6)
    # masked models are as good as absent: scoring each query over its available models alone agrees
    for i in range(5):
        keep = av[i]
        xi = {key: v[i : i + 1] for key, v in x.items() if key != "model_feats"}
        xi.update(model_feats=x["model_feats"][keep], model_cost=xi["model_cost"][:, keep],
                  avail=xi["avail"][:, keep])
        with torch.no_grad():
            alone = model(**xi, lam=0.2)
        torch.testing.assert_close(alone["score"][0], out["score"][i, keep], atol=1e-5, rtol=1e-5)


def test_all_but_one_masked_and_nothing_available_give_no_nan() -> None:
    model = _model()
    x = _inputs(b=3, k=5, seed=5)
    avail = torch.zeros(3, 5, dtype=torch.bool)
    avail[0, 2] = True
    avail[1, 4] = True  # row 2: nothing available at all
    with torch.no_grad():
        out = model(**dict(x, avail=avail), lam=0.1)
    for key in ("mu", "sigma", "delta", "mu_tilde", "layer_scores"):
        assert torch.isfinite(out[key]).all(), key
    assert out["score"].argmax(1)[:2].tolist() == [2, 4]
    assert torch.isfinite(out["score"][avail]).all() and torch.isneginf(out["score"][~avail]).all()


def test_scores_a_pool_of_different_size_through_model_tokens() -> None:
    model = _model()
    x = _inputs(b=4, k=6)
    with torch.no_grad():
        base = model(**x)
        # add two models the router has never seen: the existing models' scores change only through
        # the comparison (they are available), and masking the newcomers restores the original scores
        x9 = dict(x, model_feats=torch.cat([x["model_feats"], torch.randn(2, 5)]),
                  model_cost=torch.cat([x["model_cost"], torch.rand(4, 2)], 1),
                  avail=torch.cat([x["avail"], torch.zeros(4, 2, dtype=torch.bool)], 1))
        masked_new = model(**x9)
        x9["avail"][:, 6:] = True
        with_new = model(**x9)
    assert with_new["score"].shape == (4, 8) and torch.isfinite(with_new["score"][:, 6:]).all()
    torch.testing.assert_close(masked_new["score"][:, :6][x["avail"]], base["score"][x["avail"]], atol=1e-6,
                               rtol=1e-6)


ABLATIONS = ["use_capsules", "use_model_tokens", "use_communication", "use_pairwise_bias", "use_feedback",
             "use_model_exchange", "distributional", "bounded_correction"]


@pytest.mark.parametrize("switch", ABLATIONS)
def test_ablation_switches_run_forward_and_backward(switch: str) -> None:
    model = _model(**{switch: False}).train()
    full = _model().train()
    x = _inputs()
    out = model(**x, lam=0.1)
    av = x["avail"]
    loss = ((out["mu_tilde"] - 0.5) ** 2)[av].mean() + out["sigma"][av].mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.n_parameters() < full.n_parameters()
    if switch == "use_communication":
        assert len(model.layers) == 0 and out["layer_scores"].shape[1] == 0
    if switch in ("use_feedback", "use_model_exchange"):
        assert out["layer_scores"].shape[1] == 0
    if switch == "distributional":
        assert (out["sigma"] == 1).all()
    if switch == "use_capsules":
        model.eval()
        with torch.no_grad():
            segs, side_tok = model.query_inputs(x["img_tokens"], x["img_mask"], x["txt_tokens"], x["txt_mask"],
                                                x["side"])
            assert model.capsules(segs, side_tok).shape == (4, 1, 32)


def test_read_only_communication_reads_the_query_but_not_the_other_models() -> None:
    """use_model_exchange=False: one read of the capsules, no model-model exchange, no feedback."""
    ro, full = _model(use_model_exchange=False), _model()
    assert len(ro.layers) == 1 and ro.layers[0].self_attn is None and ro.layers[0].score_head is None
    x = _inputs(b=4, k=5)
    x["avail"][:] = True
    other = dict(x, model_feats=x["model_feats"].clone())
    other["model_feats"][0] += 3.0  # change model 0's capability token only
    q2 = dict(x, txt_tokens=x["txt_tokens"] + 1.0)  # change the question
    with torch.no_grad():
        base, moved, asked = ro(**x), ro(**other), ro(**q2)
        f_base, f_moved = full(**x), full(**other)
    # no exchange: the other models' predictions ignore model 0's token (the full model's do not)
    torch.testing.assert_close(moved["mu_tilde"][:, 1:], base["mu_tilde"][:, 1:])
    assert not torch.allclose(f_moved["mu_tilde"][:, 1:], f_base["mu_tilde"][:, 1:])
    # but the head still sees the query, unlike H = 0 (query-blind apart from the bounded correction)
    assert not torch.allclose(asked["mu"], base["mu"])


def test_no_model_id_embedding_identical_tokens_get_identical_scores() -> None:
    """No fixed K-way classifier: two models with equal features and cost are indistinguishable."""
    model = _model()
    x = _inputs(b=3, k=4)
    x["model_feats"][2] = x["model_feats"][0]
    x["model_cost"][:, 2] = x["model_cost"][:, 0]
    x["avail"][:] = True
    with torch.no_grad():
        out = model(**x)
    torch.testing.assert_close(out["score"][:, 0], out["score"][:, 2], atol=1e-6, rtol=1e-6)


def test_missing_image_equals_fully_masked_image() -> None:
    model = _model()
    x = _inputs()
    with torch.no_grad():
        no_img = model(**dict(x, img_tokens=None, img_mask=None))
        masked = model(**dict(x, img_mask=torch.zeros_like(x["img_mask"])))
        full = model(**x)
    torch.testing.assert_close(no_img["mu_tilde"], masked["mu_tilde"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(no_img["mu_tilde"], full["mu_tilde"], atol=1e-4)


def test_text_only_data_and_batch_builder() -> None:
    data = synthetic_routing_data(n=20, k=3, text_only=True)
    cfg = LatentRouterConfig(hidden=16, n_heads=2, use_pooled=True)
    dims = InputDims.from_data(data, cfg)
    assert dims.img_dim == 0 and dims.side_dim == data.side.shape[1] + data.pooled.shape[1]
    assert InputDims.from_data(data, LatentRouterConfig(hidden=16, n_heads=2, use_pooled=False)).side_dim == \
        data.side.shape[1]
    model = LatentRouter(cfg, dims).eval()
    batch = make_batch(data, np.arange(5), cfg, torch.device("cpu"))
    assert batch["img_tokens"] is None
    with torch.no_grad():
        out = model(**batch)
    assert out["score"].shape == (5, 3) and torch.isfinite(out["score"]).all()


def test_bad_inputs_name_the_problem() -> None:
    model = _model()
    x = _inputs()
    with pytest.raises(ValueError, match="txt_tokens"):
        model(**dict(x, txt_tokens=torch.randn(4, 6, 99)))
    with pytest.raises(ValueError, match="model_feats"):
        model(**dict(x, model_feats=torch.randn(6, 3)))
    with pytest.raises(ValueError, match="avail"):
        model(**dict(x, avail=x["avail"][:, :3]))
    with pytest.raises(ValueError, match="img_tokens"):
        model(**dict(x, img_tokens=torch.randn(4, 8, 3)))
    with pytest.raises(ValueError, match="hidden"):
        LatentRouterConfig(hidden=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        LatentRouterConfig.from_dict({**dataclasses.asdict(LatentRouterConfig()), "bogus": 1})


def test_side_residual_feeds_the_side_tokens_to_every_capsule() -> None:
    base, res = _model(0), _model(0, side_residual=True)
    res.load_state_dict(base.state_dict())  # no new weights: the same state dict loads either way
    x = _inputs()
    with torch.no_grad():
        segs, side_tok = base.query_inputs(x["img_tokens"], x["img_mask"], x["txt_tokens"], x["txt_mask"], x["side"])
        r0, r1 = base.capsules(segs, side_tok), res.capsules(segs, side_tok)
        # what the switch adds before the norm is exactly the mean side token
        caps = res.capsules
        out = caps._projected(segs, side_tok) if 2 * caps.cfg.n_capsules * caps.cfg.n_heads > caps.cfg.hidden \
            else caps._factorised(segs, side_tok)
        r = caps.norm(caps.capsule_q + out + side_tok.mean(dim=1, keepdim=True))
        torch.testing.assert_close(r1, caps.norm2(r + caps.ffn(r)))
        assert not torch.allclose(r0, r1)
        # with it, a change of the side input moves every capsule even when the attention ignores the side
        x2 = {**x, "side": x["side"] + 1.0}
        segs2, side2 = res.query_inputs(x2["img_tokens"], x2["img_mask"], x2["txt_tokens"], x2["txt_mask"], x2["side"])
        moved = (res.capsules(segs2, side2) - r1).abs().amax(dim=-1)
        assert (moved > 1e-4).all()
    assert LatentRouterConfig.from_dict({"hidden": 32}).side_residual is False  # older checkpoints: off
