"""The hybrid small/large evaluation on synthetic routing data and tiny-model probe features."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from router.data.routing_data import synthetic_routing_data
from router.evaluation.hybrid import (
    HybridConfig,
    evaluate_hybrid,
    load_hybrid_tables,
    save_hybrid,
    share_curve,
)
from router.evaluation.reports.hybrid import render_hybrid
from router.evaluation.reports.render import Doc
from router.models.probes.training import ProbeTrainConfig


def test_share_curve_endpoints_and_order():
    qs, ql = np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0])
    conf = np.array([0.9, 0.1, 0.8, 0.2])  # the two wrong answers are the least confident
    c = share_curve(conf, qs, ql, np.array([0.0, 0.5, 1.0]))
    assert c.tolist() == [0.5, 1.0, 1.0]


def test_evaluate_hybrid_end_to_end(tiny_features, tmp_path):
    feats, y = tiny_features["feats"], tiny_features["y"]
    data = synthetic_routing_data(n=feats.n, k=3)
    data.query_ids[:] = feats.query_ids
    split = np.array(["train"] * 120 + ["val"] * 40 + ["test"] * 80)
    data.split[:] = split
    data.avail[:] = True
    small, large = data.model_ids[0], data.model_ids[1]
    data.quality[:, 0] = y
    data.quality[:, 1] = 1.0
    fast = ProbeTrainConfig(epochs=4, batch_size=32, lr=3e-3, patience=2)
    res = evaluate_hybrid(data, feats, y.astype(float), HybridConfig(small, large, seeds=(0, 1), probe_train=fast))
    assert set(res.auc["method"]) >= {"Probe (last token)", "Attention Probe", "ReLope", "Random", "Oracle"}
    assert res.auc.filter(pl.col("method") == "Probe (last token)").height == 2
    cur = res.curve.filter(pl.col("method") == "Oracle").sort("share")
    assert cur["quality_mean"][0] == pytest.approx(y[160:].mean()) and cur["quality_mean"][-1] == pytest.approx(1.0)
    assert res.meta["n_rows"] == {"train": 120, "val": 40, "test": 80}
    save_hybrid(res, tmp_path / "h")
    tables = load_hybrid_tables(tmp_path / "h")
    doc = Doc()
    assert render_hybrid(doc, tables, tmp_path)
    md = doc.to_md()
    assert "Hybrid small/large" in md and small in md and (tmp_path / "hybrid_curve.png").exists()
    assert not render_hybrid(Doc(), load_hybrid_tables(tmp_path / "missing"), tmp_path)
    # the probes fitted on 2 processes give the same predictions, hence the same AUCs and curves
    par = evaluate_hybrid(data, feats, y.astype(float),
                          HybridConfig(small, large, seeds=(0, 1), probe_train=fast, workers=2))
    assert par.auc.equals(res.auc) and par.curve.equals(res.curve)
