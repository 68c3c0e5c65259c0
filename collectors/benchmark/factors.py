"""The five hidden difficulty factors of a scene (``source_meta["visual"]``), computed from its rendering
parameters, and their validated read-back from stored metadata.

The simulated pool reads these factors, so they must follow what was drawn: smaller text, more speckle or
blur, a larger angle, more elements, fainter ink each raise one factor.
"""

from __future__ import annotations

import json

import numpy as np

from collectors.benchmark.drawing import lum
from collectors.benchmark.spec import MAX_ROTATION_DEG, SHAPE_PX_RANGE, TEXT_PX_RANGE, Params
from warehouse.vocabulary import TASK_GROUPS, VISUAL_FACTORS


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _text_small(px: float) -> float:
    lo, hi = TEXT_PX_RANGE
    return _clip01((hi - px) / (hi - lo))


def visual_from_params(params: Params) -> dict[str, float]:
    """The five normalised difficulty factors of a scene, from its rendering parameters."""
    g = params["group"]
    angle = abs(float(params.get("angle", 0.0)))
    wash = float(params.get("wash", 0.0))
    u = float(params.get("noise", 0.0))
    noise = u * (0.85 + (0.15 if float(params.get("blur", 0.0)) > 0 else 0.0))
    if g == "general":
        shapes = params["shapes"]
        lo, hi = SHAPE_PX_RANGE
        small = _clip01((hi - float(params["obj_size"])) / (hi - lo))
        density = _clip01(0.8 * (len(shapes) - 3) / 21 + 0.2 * float(params["occlusion"]))
        contrast = float(np.mean([abs(lum(params["bg"]) - lum(s["rgb"])) for s in shapes])) / 255
        low_contrast = _clip01((0.6 - contrast * (1 - wash)) / 0.4)
    else:
        if g == "ocr":
            size = params["target"]["size_px"]
            density = len(params["others"]) / 6
        elif g == "chart":
            size = params["size_px"]
            n, (lo, hi) = (
                len(params["values"]),
                {"bar": (3, 12), "line": (4, 12), "pie": (3, 8)}[params["chart"]],
            )
            density = (n - lo) / (hi - lo)
        elif g == "math":
            size = params["size_px"]
            if params["figure"] == "table":
                cells = len(params["table"]) * len(params["table"][0])
                density = (cells - 6) / (40 - 6)
            else:
                density = len(params["extras"]) / 3
        else:
            raise ValueError(f"params: unknown group {g!r}; expected one of {', '.join(TASK_GROUPS)}")
        small = _text_small(size)
        contrast = (lum(params["bg"]) - lum(params["ink"])) / 255 * (1 - wash)
        low_contrast = _clip01((0.9 - contrast) / 0.7)
        density = _clip01(density)
    vis = {
        "small_text": small,
        "noise": _clip01(noise),
        "rotation": _clip01(angle / MAX_ROTATION_DEG),
        "density": density,
        "low_contrast": low_contrast,
    }
    return {k: round(v, 4) for k, v in vis.items()}


def visual_factors(meta_json: str | dict, default: float | None = None) -> dict[str, float]:
    """The five visual factors stored in a ``source_meta`` JSON string.

    Missing factors raise ValueError unless ``default`` is given (imported benchmarks may have none).
    """
    try:
        meta = json.loads(meta_json) if isinstance(meta_json, str) else dict(meta_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"source_meta: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"source_meta: expected a JSON object, got {type(meta).__name__}")
    vis = meta.get("visual") or {}
    if not isinstance(vis, dict):
        raise ValueError(f"source_meta.visual: expected an object, got {type(vis).__name__}")
    out: dict[str, float] = {}
    for k in VISUAL_FACTORS:
        if k not in vis:
            if default is None:
                raise ValueError(f"source_meta.visual: factor {k!r} missing (have {sorted(vis)})")
            out[k] = float(default)
            continue
        try:
            v = float(vis[k])
        except (TypeError, ValueError):
            raise ValueError(f"source_meta.visual: factor {k!r} is not a number: {vis[k]!r}") from None
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"source_meta.visual: factor {k!r} = {v} outside [0, 1]")
        out[k] = v
    return out
