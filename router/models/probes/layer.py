"""Rebuild one transformer decoder layer from its snapshot and run it on stored token states.

ReLope adapts layer l (the map from hidden_states[l-1] to hidden_states[l]) with LoRA. The local backend
saves that layer's class, model config and weights; here it is rebuilt with `transformers` (only classes
from the ``transformers`` package are accepted), frozen, and run causally on right-padded sequences: with
no attention mask, attention is causal, so a sequence's last real token never sees the padding after it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn


def _import(path: str) -> type:
    mod, _, name = path.rpartition(".")
    if not mod.startswith("transformers."):
        raise ValueError(f"refusing to import {path!r}: only transformers classes may be rebuilt")
    return getattr(importlib.import_module(mod), name)


class FrozenLayer(nn.Module):
    """A decoder layer and its rotary embedding; ``forward`` returns the last real token's output state."""

    def __init__(self, layer: nn.Module, rotary: nn.Module):
        super().__init__()
        self.layer, self.rotary = layer, rotary
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        pos = torch.arange(t, device=x.device).unsqueeze(0).expand(b, t)
        pe = self.rotary(x, pos)
        out = self.layer(x, attention_mask=None, position_ids=pos, position_embeddings=pe)
        h = out[0] if isinstance(out, tuple) else out
        return h[torch.arange(b, device=x.device), lengths - 1]


def load_layer(layer_dir: Path | str) -> FrozenLayer:
    """The frozen layer of a snapshot written by the local backend (``layer.json`` + ``layer.safetensors``)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    d = Path(layer_dir)
    meta = json.loads((d / "layer.json").read_text(encoding="utf-8"))
    cfg_dict = dict(meta["config"])
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **{k: v for k, v in cfg_dict.items() if k != "transformers_version"})
    config._attn_implementation = "sdpa"
    layer = _import(meta["layer_class"])(config, int(meta["layer_index"]))
    layer.load_state_dict(load_file(str(d / "layer.safetensors")))
    rotary = _import(meta["rotary_class"])(config=config)
    return FrozenLayer(layer.float().eval(), rotary.float().eval())
