"""LatentRouter architecture: Prop. B.2 / B.3 of the paper, availability masking, ablation switches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from router.data import synthetic_routing_data
from router.latent_router import InputDims, LatentRouter, LatentRouterConfig, attend
from router.training import make_batch

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
    model = LatentRouter(LatentRouterConfig(), InputDims(320, 384, 1280 + 384 + 12, 30))
    n = model.n_parameters()
    assert 200_000 < n <= 1_000_000
    small = LatentRouter(LatentRouterConfig(hidden=48), InputDims(320, 384, 1280 + 384 + 12, 30))
    assert small.n_parameters() < n


def test_factorised_capsule_attention_equals_multihead_attention() -> None:
    model = _model()
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


def test_attend_equals_multihead_attention_with_bias_and_mask() -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    q, kv = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    ignore = torch.rand(3, 7) > 0.5
    ignore[:, 2] = False
    bias = torch.randn(3, 4, 5, 7)
    with torch.no_grad():
        got = attend(mha, q, kv, bias, ignore)
        full = bias.masked_fill(ignore[:, None, None, :], float("-inf")).reshape(12, 5, 7)
        ref, _ = mha(q, kv, kv, attn_mask=full)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


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
             "distributional", "bounded_correction"]


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
    if switch == "use_feedback":
        assert out["layer_scores"].shape[1] == 0
    if switch == "distributional":
        assert (out["sigma"] == 1).all()
    if switch == "use_capsules":
        model.eval()
        with torch.no_grad():
            segs, side_tok = model.query_inputs(x["img_tokens"], x["img_mask"], x["txt_tokens"], x["txt_mask"],
                                                x["side"])
            assert model.capsules(segs, side_tok).shape == (4, 1, 32)


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
