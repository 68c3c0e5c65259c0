"""Probe routers over a small model's hidden states (ReLope paper, "KL-Regularized LoRA Probes for
Multimodal LLM Routing"): each predicts whether the small model's own answer is correct, from the states it
computed while answering, so a hybrid system keeps the small model's answer or escalates to a large one.

- `LastTokenProbe`: logistic regression on layer l's last-token state (the standard probe);
- `AttentionProbe`: a learned routing query attends over layer l-1's token states (the paper's Eq. for
  alpha_t), the pooled state feeds an MLP head;
- `ReLopeProbe`: LoRA adapters (peft) on layer l, which maps layer l-1's states to layer l's, then a
  Gaussian bottleneck (mu and log-sigma heads; reparameterised sample in training, posterior mean at
  inference) and an MLP head; loss BCE + beta * KL(q(z|h) || N(0, I)).

Inputs are a `ProbeFeatures` table (`features`), written from what the local backend captured; the layer
that ReLope adapts is rebuilt from a snapshot of its weights (`layer`), so no model has to be reloaded.
May import torch, transformers, peft, sklearn and numpy; never ``collectors`` or Dagster.
"""

from router.models.probes.features import ProbeFeatures
from router.models.probes.probes import (
    PROBES,
    AttentionProbe,
    AttentionProbeConfig,
    CorrectnessProbe,
    LastTokenProbe,
    LastTokenProbeConfig,
    make_probe,
)
from router.models.probes.relope import ReLopeConfig, ReLopeProbe

__all__ = ["PROBES", "AttentionProbe", "AttentionProbeConfig", "CorrectnessProbe", "LastTokenProbe",
           "LastTokenProbeConfig", "ProbeFeatures", "ReLopeConfig", "ReLopeProbe", "make_probe"]
