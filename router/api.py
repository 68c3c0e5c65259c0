"""Route a new request: ``RouterService.route(image, question, pool=None, lam=0.0)``.

Uses the latest trained LatentRouter checkpoint, the same frozen encoders as the features asset, and the
CURRENT capability profiles and registry: a model added after training is scored through its capability
token, a disabled model is masked out at once. The request is appended to the warehouse's queries as one
extra test row, so it goes through exactly the arrays and train-only normalisers the router was trained on.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from router.artifacts import latest_checkpoint_dir
from router.checkpoint import load_checkpoint
from router.features import FeatureConfig, FeatureSet, encode_single, side_features
from router.pipeline_data import WarehouseInputs, load_inputs, routing_data
from router.training import predict
from warehouse.store import Warehouse, lrouter_home

REQUEST_ID = "__request__"


def _vocab(side_names: list[str], prefix: str) -> list[str]:
    return [n.split("=", 1)[1] for n in side_names if n.startswith(prefix + "=") and n != f"{prefix}=other"]


def _pad(x: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((length, x.shape[1]), dtype=np.float16)
    n = min(length, x.shape[0])
    out[:n] = x[:n]
    mask = np.zeros(length, dtype=bool)
    mask[:n] = True
    return out, mask


class RouterService:
    def __init__(self, wh: Warehouse, feature_cfg: FeatureConfig | None = None):
        ckpt = latest_checkpoint_dir(wh)
        if ckpt is None:
            raise FileNotFoundError(f"no trained router in {wh.artifacts_dir}; run `make demo` or materialize "
                                    "latent_router first")
        self.wh = wh
        self.checkpoint = ckpt
        self.model, self.cfg, self.meta = load_checkpoint(ckpt)
        self.inputs: WarehouseInputs = load_inputs(wh)
        self.feature_cfg = replace(feature_cfg or FeatureConfig(), progress=False)

    def _request_features(self, image: Image.Image | None, question: str, task_group: str | None,
                          dataset: str | None) -> FeatureSet:
        fs = self.inputs.features
        enc = encode_single(image, question, self.feature_cfg)
        tg = task_group or "other"
        ds = dataset or "other"
        side, _ = side_features([question], [tg], [ds], np.asarray([enc["image_wh"] if image is not None
                                                                    else (0, 0)]), np.array([image is not None]),
                                _vocab(fs.side_names, "task_group"), _vocab(fs.side_names, "dataset"))
        if side.shape[1] < fs.side.shape[1]:  # declared import side features: unknown for a new request
            side = np.concatenate([side, np.zeros((1, fs.side.shape[1] - side.shape[1]), np.float32)], axis=1)
        txt, txt_mask = _pad(enc["txt_tokens"], fs.txt_tokens.shape[1])
        arrays: dict[str, np.ndarray | None] = {
            "txt_tokens": txt[None], "txt_mask": txt_mask[None], "txt_pooled": enc["txt_pooled"][None],
            "side": side.astype(np.float32),
        }
        if fs.img_tokens is not None:
            if image is not None:
                arrays["img_tokens"] = enc["img_tokens"][None].astype(fs.img_tokens.dtype)
                arrays["img_mask"] = np.ones((1, fs.img_tokens.shape[1]), dtype=bool)
                arrays["img_pooled"] = enc["img_pooled"][None].astype(fs.img_pooled.dtype)
            else:
                arrays["img_tokens"] = np.zeros((1, *fs.img_tokens.shape[1:]), dtype=fs.img_tokens.dtype)
                arrays["img_mask"] = np.zeros((1, fs.img_tokens.shape[1]), dtype=bool)
                arrays["img_pooled"] = np.zeros((1, fs.img_pooled.shape[1]), dtype=fs.img_pooled.dtype)
        merged = {a: (None if getattr(fs, a) is None else np.concatenate([getattr(fs, a), arrays[a]], axis=0))
                  for a in FeatureSet.ARRAYS}
        return FeatureSet(query_ids=[*fs.query_ids, REQUEST_ID], side_names=list(fs.side_names),
                          image_encoder_id=fs.image_encoder_id, text_encoder_id=fs.text_encoder_id,
                          image_encoder_version=fs.image_encoder_version,
                          text_encoder_version=fs.text_encoder_version, **merged)

    def route(self, image: str | Path | bytes | Image.Image | None, question: str, pool: list[str] | None = None,
              lam: float = 0.0, task_group: str | None = None, dataset: str | None = None) -> list[dict]:
        """Ranked candidate models with predicted quality, uncertainty, expected cost and utility."""
        if not question or not question.strip():
            raise ValueError("question is empty")
        img = None
        if image is not None:
            if isinstance(image, Image.Image):
                img = image
            else:
                raw = image if isinstance(image, bytes) else Path(image).read_bytes()
                try:
                    img = Image.open(io.BytesIO(raw))
                    img.load()
                except Exception as exc:
                    raise ValueError(f"cannot read image {image if not isinstance(image, bytes) else '<bytes>'}: "
                                     f"{exc}") from exc
                img = img.convert("RGB")
        inp = self.inputs
        features = self._request_features(img, question, task_group, dataset)
        req_q = {c: None for c in inp.queries.columns}
        req_q.update(query_id=REQUEST_ID, question=question, task_group=task_group or "", dataset=dataset or "",
                     image_path="request.png" if img is not None else "", answer="", answer_kind="exact")
        queries = pl.concat([inp.queries, pl.DataFrame([req_q], schema=inp.queries.schema)], how="vertical")
        splits = pl.concat([inp.splits, pl.DataFrame([{**{c: None for c in inp.splits.columns},
                                                      "query_id": REQUEST_ID, "split": "test",
                                                      "in_calibration": False, "stratum": ""}],
                                                    schema=inp.splits.schema)], how="vertical")
        data = routing_data(WarehouseInputs(queries, inp.traces, splits, inp.profiles, inp.models, features))
        models = data.model_ids
        if pool:
            unknown = [m for m in pool if m not in models]
            if unknown:
                raise ValueError(f"unknown or inactive model(s) in pool: {unknown}; active: {models}")
        avail = np.array([[m in pool if pool else True for m in models]], dtype=bool)
        row = np.array([data.n - 1])
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one request: a second thread costs more in sync than it saves (bench/router.py)
        try:
            mu, sigma, score = predict(self.model, data, row, lam, avail=avail)
        finally:
            torch.set_num_threads(threads)
        scale = float(np.nansum(data.cost_usd) / max(np.nansum(data.cost), 1e-12))
        out = []
        for j, m in enumerate(models):
            if not avail[0, j]:
                continue
            out.append({
                "model_id": m,
                "quality": float(mu[0, j]),
                "uncertainty": float(sigma[0, j]),
                "cost_usd": float(data.exp_cost[row[0], j] * scale),
                "utility": float(score[0, j]),
                "simulated": bool(data.simulated[j]) if data.simulated else False,
            })
        return sorted(out, key=lambda r: -r["utility"])


def load_router(home: Path | None = None) -> RouterService:
    home = Path(home) if home is not None else lrouter_home()
    return RouterService(Warehouse(home / "warehouse"))
