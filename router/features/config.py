"""Feature-extraction settings: which frozen encoders, at what size, precision and batch size.

Why a module of its own: the encoders, the extraction loop and the asset config all read ``FeatureConfig``, and
every field that changes the numbers is part of the cache version (with ``FEATURE_CODE_VERSION``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from warehouse.vocabulary import TASK_GROUPS

FEATURE_CODE_VERSION = "1"  # bump when preprocessing or token extraction changes (invalidates caches)


@dataclass(frozen=True)
class FeatureConfig:
    """What to encode with and how; every field that changes the numbers is part of the cache version."""

    image_batch_size: int = 32
    text_batch_size: int = 128
    max_text_tokens: int = 32  # token states kept per question (the pooled vector sees the whole question)
    image_size: int = 224
    image_resize: str = "pad"  # "pad": letterbox the whole image (charts/documents keep their edges); "crop"
    crop_pct: float = 0.875  # only for image_resize == "crop" (ImageNet evaluation protocol)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: bf16 on CPUs with native bf16, fp16 on CUDA)
    num_threads: int | None = None  # torch intra-op threads; None leaves torch's setting alone
    # how the default encoders run (not part of the cache version: same weights, outputs equal to ~1e-5): "torch"
    # (eager, what extraction uses), "onnx" (ONNX Runtime graphs exported in memory: 2-3x faster on one request),
    # "auto" (onnx on a float32 CPU when onnx + onnxruntime are installed; what the routing service uses);
    # "onnx_int8" (serving only: int8 text-encoder weights, ~2x faster, cosine ~0.993; in the text version)
    runtime: str = "torch"
    loader_threads: int = 2  # threads decoding/resizing images while the encoder runs
    # concurrent encoder runs inside one routing batch on the graph runtimes (encode_requests): its images split
    # across the lanes, its questions too; not in the cache version (each item's numbers do not depend on it)
    encode_lanes: int = 1
    clip_arch: str | None = None  # e.g. "ViT-B-32"; with clip_checkpoint selects open_clip as encoder of record
    clip_checkpoint: str | None = None  # local file; never downloaded
    task_group_vocab: tuple[str, ...] = TASK_GROUPS
    dataset_vocab: tuple[str, ...] | None = None  # None: sorted datasets of the queries passed in
    cache_flush_every: int = 2048  # items per cache shard, so an interrupted run keeps its progress
    progress: bool = True

    def __post_init__(self) -> None:
        if self.image_resize not in ("pad", "crop"):
            raise ValueError(f"FeatureConfig.image_resize must be 'pad' or 'crop', got {self.image_resize!r}")
        if bool(self.clip_arch) != bool(self.clip_checkpoint):
            raise ValueError("FeatureConfig: set both clip_arch and clip_checkpoint (or neither); got "
                             f"clip_arch={self.clip_arch!r}, clip_checkpoint={self.clip_checkpoint!r}")
        if self.runtime not in ("torch", "onnx", "onnx_int8", "auto"):
            raise ValueError(f"FeatureConfig.runtime must be torch|onnx|onnx_int8|auto, got {self.runtime!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"FeatureConfig.dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        for name in ("image_batch_size", "text_batch_size", "max_text_tokens", "image_size", "encode_lanes"):
            if getattr(self, name) < 1:
                raise ValueError(f"FeatureConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def uses_clip(self) -> bool:
        return bool(self.clip_arch and self.clip_checkpoint)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def resolved_dtype(self) -> torch.dtype:
        """Compute dtype of the encoders. bf16 halves CPU time where the CPU has native bf16 (AVX512-BF16 /
        AMX) at a cosine of >= 0.999 to fp32 features; elsewhere fp32. Part of the cache version."""
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        if self.resolved_device().type == "cuda":
            return torch.float16
        try:
            native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        except AttributeError:
            native_bf16 = False
        return torch.bfloat16 if native_bf16 else torch.float32
