"""LatentRouter checkpoints: ``model.safetensors`` (weights and input-normaliser buffers) + ``config.json``.

config.json holds everything needed to rebuild and use the model without the training data: the model
config, the input feature dimensions, and caller metadata (model_feat_names and model ids at train time,
normaliser statistics such as the cost scale and profile mean/std, metrics). The per-dimension input
standardisation of tokens and side features is part of the weights file (buffers).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from router.data.routing_data import RoutingData
from router.models.latent_router.model import InputDims, LatentRouter, LatentRouterConfig

FORMAT = "lrouter.latent_router/v1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def _jsonable(x: Any) -> Any:
    """numpy scalars/arrays and paths to plain JSON values; non-finite floats become None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def meta_from_data(data: RoutingData, **extra: Any) -> dict[str, Any]:
    """The train-time facts about the data a checkpoint should carry, plus ``extra`` (metrics, normalisers)."""
    return {
        "model_ids": list(data.model_ids),
        "model_feat_names": list(data.model_feat_names),
        "text_only": bool(data.text_only),
        "n_queries": int(data.n),
        **extra,
    }


def save_checkpoint(
    model: LatentRouter, model_cfg: LatentRouterConfig, extra_meta: dict[str, Any], path_dir: str | Path
) -> Path:
    """Write model.safetensors and config.json under ``path_dir`` (created); returns the directory."""
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_cfg.to_dict() != model.cfg.to_dict():
        raise ValueError("save_checkpoint: model_cfg differs from the config the model was built with")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT})
    cfg_json = {
        "format": FORMAT,
        "model_config": model_cfg.to_dict(),
        "dims": model.dims.to_dict(),
        "n_params": model.n_parameters(),
        "meta": _jsonable(extra_meta),
    }
    (out / CONFIG).write_text(json.dumps(cfg_json, indent=2, sort_keys=True, allow_nan=False))
    return out


def load_checkpoint(
    path_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[LatentRouter, LatentRouterConfig, dict[str, Any]]:
    """Rebuild the model (eval mode) from a checkpoint directory; returns (model, config, meta).

    ``meta`` is the caller metadata plus ``dims`` and ``n_params``.
    """
    d = Path(path_dir)
    cfg_path, w_path = d / CONFIG, d / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"LatentRouter checkpoint file missing: {p}")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from e
    if raw.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: field 'format' is {raw.get('format')!r}, expected {FORMAT!r}")
    for key in ("model_config", "dims"):
        if not isinstance(raw.get(key), dict):
            raise ValueError(f"{cfg_path}: field {key!r} is missing or not an object")
    try:
        cfg = LatentRouterConfig.from_dict(raw["model_config"])
        dims = InputDims(**raw["dims"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_path}: {e}") from e
    model = LatentRouter(cfg, dims)
    state = load_file(str(w_path))
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ValueError(f"{w_path}: weights do not match config.json (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    for k, v in model.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{w_path}: tensor {k!r} has shape {tuple(state[k].shape)}, config.json implies "
                             f"{tuple(v.shape)}")
    model.load_state_dict(state)
    model.to(device).eval()
    meta = dict(raw.get("meta") or {})
    meta["dims"] = dims.to_dict()
    meta["n_params"] = int(raw.get("n_params", model.n_parameters()))
    return model, cfg, meta
