"""The local multimodal pipeline: OCR the image, then a small text LM answers from the OCR text.

A text-only LM cannot see pixels, so the image reaches it as the text OCR reads off it. When OCR finds no
text (a shapes-only picture) the model still answers from the question alone, and the reply says so in its
``note`` (the server returns it in the reply's ``lrouter`` metadata and stores it with the capture).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collectors.local.capture import HiddenStateStore, capture_key
from collectors.local.lm import CausalLM, Generation
from collectors.local.ocr import OcrEngine, decode_image
from collectors.local.specs import LocalModelSpec

OCR_PROMPT = "Text read from the image by OCR: {ocr}\n\n{question}"
NO_TEXT_PROMPT = "(OCR found no text in the image.)\n\n{question}"
NO_TEXT_NOTE = "OCR found no text in the image; answered from the question alone"
NO_IMAGE_NOTE = "no image in the request; answered from the question alone"


@dataclass
class LocalAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    ocr_s: float
    prompt_s: float
    eval_s: float
    total_s: float
    done_reason: str
    ocr_text: str
    note: str  # "" when the model saw OCR text
    key: str  # the capture key (see `collectors.local.capture`)

    def metadata(self) -> dict[str, Any]:
        """The reply's ``lrouter`` extension field (ignored by Ollama clients that do not know it)."""
        return {"local": True, "ocr_chars": len(self.ocr_text), "ocr_seconds": round(self.ocr_s, 4),
                "note": self.note, "capture_key": self.key}


class OcrLmPipeline:
    """OCR + causal LM behind one model name; optionally stores hidden states while answering."""

    def __init__(self, spec: LocalModelSpec, lm: CausalLM | None, ocr: OcrEngine | None,
                 store: HiddenStateStore | None = None,
                 loader: Callable[[], tuple[CausalLM, OcrEngine]] | None = None):
        """``lm``/``ocr`` may be None with a ``loader``: the models load on the first request, so a server that
        is only listed or asked about already-collected queries starts at once."""
        if (lm is None or ocr is None) and loader is None:
            raise ValueError("OcrLmPipeline needs lm and ocr, or a loader")
        self.spec, self.lm, self.ocr, self.store, self._loader = spec, lm, ocr, store, loader
        self.load_s = 0.0

    def ensure_loaded(self) -> None:
        if self.lm is None or self.ocr is None:
            t0 = time.perf_counter()
            self.lm, self.ocr = self._loader()  # type: ignore[misc]
            self.load_s = time.perf_counter() - t0
        if self.store is not None and not (self.store.root / "layer" / "layer.json").exists():
            self.lm.layer_snapshot(self.store.root / "layer")  # what ReLope adapts, next to the captures

    def answer(self, question: str, images: list[bytes], num_predict: int | None = None) -> LocalAnswer:
        """Answer ``question`` about ``images[0]`` (`BadImage` when it cannot be decoded)."""
        self.ensure_loaded()
        assert self.lm is not None and self.ocr is not None
        t0 = time.perf_counter()
        ocr_text, ocr_s, note, sha = "", 0.0, NO_IMAGE_NOTE, ""
        if images:
            sha = hashlib.sha256(images[0]).hexdigest()
            result = self.ocr(decode_image(images[0]))
            ocr_text, ocr_s = result.text, result.seconds
            note = "" if ocr_text else NO_TEXT_NOTE
        prompt = OCR_PROMPT.format(ocr=ocr_text, question=question) if ocr_text else \
            NO_TEXT_PROMPT.format(question=question)
        gen: Generation = self.lm.generate(prompt, num_predict)
        total = time.perf_counter() - t0
        key = capture_key(sha, question)
        if self.store is not None:
            self.store.write(key, gen.last_states, gen.seq_states, {
                "model": self.spec.name, "layer": gen.layer, "ocr_text": ocr_text, "note": note,
                "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                "answer": gen.text, "image_sha256": sha, "seconds": round(total, 4)})
        return LocalAnswer(text=gen.text, prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                           ocr_s=ocr_s, prompt_s=gen.prompt_s, eval_s=gen.eval_s, total_s=total,
                           done_reason=gen.done_reason, ocr_text=ocr_text, note=note, key=key)
