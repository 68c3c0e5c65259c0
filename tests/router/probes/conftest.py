"""A tiny randomly initialised Llama (3 layers, hidden 32) and probe features captured from it: the
mechanics of the probes without any weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from router.models.probes.features import ProbeFeatures

SIGNAL_TOKEN = 7  # queries whose prompt contains it are "answered correctly"
LAYER = 2  # hidden_states index of the probes (seq holds index 1)


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg).eval()


def snapshot_layer(model, layer: int, out_dir):
    """What the local backend writes for ReLope: decoder layer ``layer - 1`` with its class and config."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    mod = model.model.layers[layer - 1]
    rot = model.model.rotary_emb
    (out_dir / "layer.json").write_text(json.dumps({
        "layer_class": f"{type(mod).__module__}.{type(mod).__qualname__}",
        "rotary_class": f"{type(rot).__module__}.{type(rot).__qualname__}",
        "layer_index": layer - 1, "hidden_states_index": layer, "config": model.config.to_dict()}, default=str))
    save_file({k: v.contiguous().clone() for k, v in mod.state_dict().items()}, str(out_dir / "layer.safetensors"))
    return out_dir


def capture(model, prompts: list[list[int]], layer: int = LAYER):
    """Per prompt: last-token states at every layer and layer-1 token states (as the local backend keeps)."""
    last, seq = [], []
    with torch.no_grad():
        for p in prompts:
            hs = model(torch.tensor([p]), output_hidden_states=True).hidden_states
            last.append(torch.stack([h[0, -1] for h in hs]).numpy())
            seq.append(hs[layer - 1][0].numpy())
    return last, seq


@pytest.fixture(scope="package")
def tiny_features(tmp_path_factory):
    """240 prompts of 6..20 random tokens; label 1 iff the prompt ends with SIGNAL_TOKEN (a signal a random
    model carries to its last-token states through the residual stream); split 120 / 40 / 80."""
    rng = np.random.default_rng(0)
    model = tiny_llama()
    prompts, y = [], []
    for i in range(240):
        n = int(rng.integers(6, 21))
        toks = rng.integers(10, 64, size=n).tolist()
        if i % 2:
            toks[-1] = SIGNAL_TOKEN
        prompts.append(toks)
        y.append(i % 2)
    last, seq = capture(model, prompts)
    d = tmp_path_factory.mktemp("probe_features")
    layer_dir = snapshot_layer(model, LAYER, d / "layer")
    feats = ProbeFeatures.from_lists([f"q{i:03d}" for i in range(240)], last, seq, LAYER, layer_dir)
    rows = np.arange(240)
    return {"model": model, "feats": feats, "y": np.array(y, dtype=np.float32), "prompts": prompts,
            "train": rows[:120], "val": rows[120:160], "test": rows[160:], "dir": d}
