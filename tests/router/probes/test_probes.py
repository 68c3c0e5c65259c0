"""Probe mechanics on a tiny random Llama: the rebuilt layer, LoRA via peft, the Gaussian bottleneck and its
KL term, and that each probe learns a planted correctness signal from hidden states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from router.models.probes import AttentionProbe, LastTokenProbe, ProbeFeatures, ReLopeProbe, make_probe
from router.models.probes.layer import load_layer
from router.models.probes.relope import ReLopeConfig, ReLopeModule, kl_standard_normal
from router.models.probes.training import ProbeTrainConfig, auc_or_nan

FAST = ProbeTrainConfig(epochs=25, batch_size=16, lr=3e-3, patience=8)


def test_rebuilt_layer_reproduces_the_models_next_layer_on_padded_batches(tiny_features):
    feats = tiny_features["feats"]
    layer = load_layer(feats.layer_dir)
    rows = np.arange(8)  # different lengths: right padding must not change the last real token's state
    x = torch.as_tensor(feats.seq[rows, : feats.lengths[rows].max()].astype(np.float32))
    with torch.no_grad():
        out = layer(x, torch.as_tensor(feats.lengths[rows])).numpy()
    want = feats.last[rows, feats.layer].astype(np.float32)
    np.testing.assert_allclose(out, want, atol=2e-2)  # float16 storage
    assert all(not p.requires_grad for p in layer.parameters())


def test_only_transformers_classes_are_rebuilt(tiny_features, tmp_path):
    import json
    import shutil

    d = shutil.copytree(tiny_features["feats"].layer_dir, tmp_path / "evil")
    meta = json.loads((d / "layer.json").read_text())
    meta["layer_class"] = "os.system"
    (d / "layer.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="only transformers"):
        load_layer(d)


def test_kl_term_is_the_gaussian_kl_to_the_standard_normal():
    mu, ls = torch.zeros(4, 3), torch.zeros(4, 3)
    assert float(kl_standard_normal(mu, ls)) == pytest.approx(0.0)
    mu, ls = torch.full((2, 3), 0.5), torch.full((2, 3), np.log(2.0))
    # per dim: 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) = 0.5 * (0.25 + 4 - 1 - log 4)
    assert float(kl_standard_normal(mu, ls)) == pytest.approx(3 * 0.5 * (0.25 + 4 - 1 - np.log(4)), rel=1e-5)


def test_relope_lora_starts_at_the_frozen_layer_and_trains_only_adapters_and_heads(tiny_features):
    feats = tiny_features["feats"]
    layer = load_layer(feats.layer_dir)
    d = feats.dim
    mod = ReLopeModule(load_layer(feats.layer_dir), d, ReLopeConfig(lora_r=4), np.zeros(d, np.float32),
                       np.ones(d, np.float32))
    names = [n for n, p in mod.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and any("lora_B" in n for n in names)
    assert all(("lora_" in n) or n.split(".")[0] in ("to_mu", "to_log_sigma", "head") for n in names)
    assert any("q_proj.lora_A" in n for n in names) and any("o_proj.lora_B" in n for n in names)
    rows = np.arange(6)
    x, lengths = ReLopeProbe._batch(feats, rows)
    with torch.no_grad():  # LoRA B = 0 at init: the adapted layer is the frozen one
        np.testing.assert_allclose(mod.layer(x, lengths).numpy(), layer(x, lengths).numpy(), atol=1e-5)
    mod.train()
    a, b = mod(x, lengths)[0], mod(x, lengths)[0]
    assert not torch.allclose(a, b)  # reparameterised sample in training
    mod.eval()
    a, b = mod(x, lengths)[0], mod(x, lengths)[0]
    assert torch.allclose(a, b)  # posterior mean at inference


def test_relope_fit_moves_lora_weights_and_not_the_frozen_ones(tiny_features):
    f, y = tiny_features["feats"], tiny_features["y"]
    probe = ReLopeProbe(ReLopeConfig(train=ProbeTrainConfig(epochs=3, batch_size=16, lr=3e-3, patience=3)))
    probe.fit(f, y, tiny_features["train"], tiny_features["val"], seed=0)
    frozen = load_layer(f.layer_dir).layer.state_dict()
    state = probe.module.layer.layer.state_dict()
    base = [k for k in frozen if k in state]
    assert base and all(torch.equal(frozen[k], state[k]) for k in base)
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert np.isfinite(probe.last_kl) and probe.last_kl >= 0
    assert 0 < probe.n_parameters() < sum(p.numel() for p in probe.module.parameters())


@pytest.mark.parametrize("name", ["Probe (last token)", "Attention Probe", "ReLope"])
def test_each_probe_learns_a_planted_correctness_signal(tiny_features, name):
    f, y = tiny_features["feats"], tiny_features["y"]
    kw = {} if name == "Probe (last token)" else {"train": FAST}
    probe = make_probe(name, **kw).fit(f, y, tiny_features["train"], tiny_features["val"], seed=0)
    test = tiny_features["test"]
    p = probe.predict(f, test)
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    auc = auc_or_nan(y[test], p)
    assert auc > 0.75, f"{name}: test AUC {auc:.3f}"
    np.testing.assert_allclose(probe.predict(f, test), p)  # deterministic at inference


def test_attention_probe_weights_are_a_distribution_over_valid_tokens(tiny_features):
    f, y = tiny_features["feats"], tiny_features["y"]
    probe = AttentionProbe().fit(f, y, tiny_features["train"][:40], tiny_features["val"], seed=0)
    rows = np.arange(5)
    x, lengths = AttentionProbe._batch(f, rows)
    with torch.no_grad():
        a = probe.module.weights(x, lengths).numpy()
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-5)
    for i, n in enumerate(f.lengths[rows]):
        assert np.all(a[i, n:] == 0)


def test_last_token_probe_with_one_class_labels_predicts_the_base_rate(tiny_features):
    f = tiny_features["feats"]
    y = np.zeros(f.n, dtype=np.float32)
    p = LastTokenProbe().fit(f, y, tiny_features["train"], tiny_features["val"]).predict(f, tiny_features["test"])
    assert np.all(p == 0.0)


def test_features_roundtrip_and_size(tiny_features, tmp_path):
    f = tiny_features["feats"]
    path = f.save(tiny_features["dir"] / "probe_features.npz")
    g = ProbeFeatures.load(path)
    assert g.query_ids == f.query_ids and g.layer == f.layer and g.layer_dir == f.layer_dir
    np.testing.assert_array_equal(g.seq, f.seq)
    # 4 layers x 32 dims x 2 bytes of last-token states + mean length x 32 x 2 bytes of token states
    assert g.bytes_per_query == pytest.approx(4 * 32 * 2 + f.lengths.mean() * 32 * 2)
    with pytest.raises(ValueError):
        ProbeFeatures(["a"], f.last[:2], f.seq[:1], f.lengths[:1], f.layer)
