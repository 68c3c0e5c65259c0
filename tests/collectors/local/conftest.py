"""A local pipeline built from a tiny randomly initialised Llama and a word-level tokenizer made in the test
(no weights, no downloads), with a stub OCR engine."""

from __future__ import annotations

import pytest
import torch

from collectors.local.capture import HiddenStateStore
from collectors.local.lm import CausalLM, GenerationConfig
from collectors.local.ocr import StubOcr
from collectors.local.pipeline import OcrLmPipeline
from collectors.local.specs import SMOLLM2_OCR

WORDS = ["<unk>", "<eos>", "the", "answer", "is", "1", "2", "3", "yes", "no", "text", "image", "Answer:"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


def tiny_lm(capture_layer: int = 2, max_new_tokens: int = 4) -> CausalLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=1, pad_token_id=1, bos_token_id=1)
    cfg._attn_implementation = "sdpa"
    return CausalLM(LlamaForCausalLM(cfg), tiny_tokenizer(),
                    GenerationConfig(max_new_tokens=max_new_tokens, capture_layer=capture_layer))


@pytest.fixture()
def make_pipeline(tmp_path):
    def make(ocr_text: str = "the text 2", store: bool = True) -> OcrLmPipeline:
        st = HiddenStateStore(tmp_path / "hs") if store else None
        return OcrLmPipeline(SMOLLM2_OCR, tiny_lm(), StubOcr(lambda im: ocr_text), st)
    return make
