"""The local backend's Ollama API with a tiny random model: listing, show, inference through the real
``ollama`` client, measured durations and compute-priced cost, hidden-state capture, bad input, the subset."""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import numpy as np
import ollama
import polars as pl
import pytest
from PIL import Image

from collectors.collection.client import DEFAULT_PROMPT, CollectConfig, collect_model
from collectors.collection.resume import collect_partition
from collectors.local.capture import capture_key
from collectors.local.pipeline import NO_TEXT_NOTE
from collectors.local.server import LocalServer
from collectors.local.specs import SMOLLM2_OCR, USD_PER_COMPUTE_S
from collectors.local.subset import OUTSIDE_REASON, LocalSubsetConfig, local_subset, outside_subset
from collectors.registry import ModelEntry, default_entries
from warehouse.store import Warehouse

NAME = SMOLLM2_OCR.name


def _png(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return buf.getvalue()


def _entry() -> ModelEntry:
    return next(e for e in default_entries(include_local=True) if e.backend == "local")


def _queries(images_dir, n=4, corrupt_last=True):
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        data = _png((10 * i, 50, 90))
        if corrupt_last and i == n - 1:
            data = data[:20]  # truncated PNG
        sha = hashlib.sha256(data).hexdigest()
        (images_dir / f"{sha}.png").write_bytes(data)
        rows.append({"query_id": f"q{i}", "question": f"is the answer {i}?", "answer": str(i), "answer_kind": "exact",
                     "image_path": f"{sha}.png", "image_sha256": sha, "source_meta": "{}"})
    return pl.DataFrame(rows)


def test_registry_lists_the_local_model_as_real():
    e = _entry()
    assert e.model_id == NAME and e.backend == "local" and e.simulated is False
    assert e.price_per_compute_s == pytest.approx(USD_PER_COMPUTE_S) and "REAL, LOCAL" in e.description
    assert all(x.backend == "sim" for x in default_entries(include_local=False))


def test_tags_show_and_unknown_model(make_pipeline):
    with LocalServer({NAME: make_pipeline()}) as srv:
        c = ollama.Client(host=srv.url)
        assert [m.model for m in c.list().models] == [NAME]
        show = c.show(NAME)
        assert show.modelinfo["lrouter.local"] is True and show.modelinfo["lrouter.simulated"] is False
        with pytest.raises(ollama.ResponseError) as exc:
            c.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
        assert exc.value.status_code == 404


def test_collector_gets_real_tokens_durations_cost_and_captures(make_pipeline, tmp_path):
    pipe = make_pipeline()
    q = _queries(tmp_path / "images")
    with LocalServer({NAME: pipe}) as srv:
        df, stats = collect_model(_entry(), q, tmp_path / "images", srv.url, CollectConfig(concurrency=2, progress=False))
    ok = df.filter(pl.col("status") == "ok")
    assert ok.height == 3 and stats.by_status["skipped"] == 1
    bad = df.filter(pl.col("status") == "skipped").row(0, named=True)
    assert bad["query_id"] == "q3" and "corrupt image" in bad["error"]
    assert (ok["prompt_tokens"] > 0).all() and (ok["completion_tokens"] >= 1).all()
    assert (ok["latency_ms"] > 0).all()
    # cost = measured compute seconds (the reply's total_duration) x the documented rate
    np.testing.assert_allclose(ok["cost_usd"].to_numpy(), ok["latency_ms"].to_numpy() / 1e3 * USD_PER_COMPUTE_S)
    for r in q.head(3).iter_rows(named=True):
        cap = pipe.store.read(capture_key(r["image_sha256"], DEFAULT_PROMPT.format(question=r["question"])))
        assert cap is not None and cap.last.shape == (4, 32) and cap.seq.shape[1] == 32
        assert cap.seq.shape[0] == cap.meta["prompt_tokens"] and cap.meta["ocr_text"] == "the text 2"
    assert (pipe.store.root / "layer" / "layer.json").exists()  # the layer ReLope adapts, next to the captures


def test_no_ocr_text_is_answered_from_the_question_and_recorded(make_pipeline):
    with LocalServer({NAME: make_pipeline(ocr_text="")}) as srv:
        body = {"model": NAME, "stream": False, "messages": [
            {"role": "user", "content": "is the answer 2?", "images": [base64.b64encode(_png()).decode()]}]}
        r = httpx.post(f"{srv.url}/api/chat", json=body, timeout=60).json()
    assert r["done"] is True and isinstance(r["message"]["content"], str)
    assert r["lrouter"]["note"] == NO_TEXT_NOTE and r["lrouter"]["ocr_chars"] == 0
    assert r["prompt_eval_count"] > 0 and r["total_duration"] > 0


def test_undecodable_image_is_a_400_and_streaming_works(make_pipeline):
    with LocalServer({NAME: make_pipeline()}) as srv:
        bad = {"model": NAME, "stream": False, "messages": [
            {"role": "user", "content": "q", "images": [base64.b64encode(b"not an image").decode()]}]}
        r = httpx.post(f"{srv.url}/api/chat", json=bad, timeout=60)
        assert r.status_code == 400 and "cannot decode image" in r.json()["error"]
        chunks = list(ollama.Client(host=srv.url).chat(model=NAME, stream=True,
                                                       messages=[{"role": "user", "content": "is it 1?"}]))
        assert chunks[-1].done and chunks[-1].eval_count >= 1
        assert srv.stats["bad_requests"] == 1


def test_subset_selection_and_skipped_rows(make_pipeline, tmp_path):
    wh = Warehouse(tmp_path / "wh").ensure()
    q = _queries(wh.images_dir, n=6, corrupt_last=False)
    splits = pl.DataFrame({"query_id": q["query_id"], "split": ["train", "train", "val", "test", "test", "train"],
                           "in_calibration": [True, False, False, False, False, True]})
    cfg = LocalSubsetConfig(n_calibration=1, n_val=1, n_test=1)
    assert local_subset(q, splits, cfg) == ["q0", "q2", "q3"]
    with LocalServer({NAME: make_pipeline(store=False)}) as srv:
        res = collect_partition(wh, _entry(), q, srv.url, CollectConfig(progress=False),
                                skip=outside_subset(q, splits, cfg))
        t = res.traces
        assert t.height == 6 and res.attempted == 3
        skipped = t.filter(pl.col("status") == "skipped")
        assert sorted(skipped["query_id"]) == ["q1", "q4", "q5"] and set(skipped["error"]) == {OUTSIDE_REASON}
        grown = LocalSubsetConfig(n_calibration=2, n_val=1, n_test=2)  # a bigger subset collects the new rows
        res = collect_partition(wh, _entry(), q, srv.url, CollectConfig(progress=False),
                                skip=outside_subset(q, splits, grown))
        assert res.attempted == 2 and res.traces.filter(pl.col("status") == "ok").height == 5
        again = collect_partition(wh, _entry(), q, srv.url, CollectConfig(progress=False),
                                  skip=outside_subset(q, splits, grown))
        assert again.attempted == 0  # idempotent


def test_subset_sizes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LROUTER_LOCAL_SUBSET", "5,2,3")
    assert LocalSubsetConfig.from_env() == LocalSubsetConfig(5, 2, 3)
    monkeypatch.setenv("LROUTER_LOCAL_SUBSET", "5,2")
    with pytest.raises(ValueError):
        LocalSubsetConfig.from_env()
