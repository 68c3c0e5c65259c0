"""Calibration and pick-accuracy instruments (router.training.curves)."""

from __future__ import annotations

import numpy as np
import pytest

from router.data.routing_data import synthetic_routing_data
from router.models.baselines import StrongestRouter
from router.training.curves import calibration, format_table, pick_accuracy, reliability


def test_calibration_separates_honest_from_overconfident_estimates() -> None:
    data = synthetic_routing_data(n=3000, k=3, seed=1)
    rows = np.arange(data.n)
    # each model's base rate is calibrated (within every bin it is the only value); always-1 is overconfident
    honest = np.broadcast_to(data.quality.mean(0), (data.n, data.k)).copy()
    over = np.ones_like(honest)
    cal_h = {r["model"]: r for r in calibration(honest, data, rows)}
    cal_o = {r["model"]: r for r in calibration(over, data, rows)}
    assert set(cal_h) == {*data.model_ids, "all"}
    for m in data.model_ids:
        assert cal_h[m]["ece"] < 0.02 and cal_h[m]["mean_pred"] == pytest.approx(cal_h[m]["mean_real"])
        assert cal_o[m]["ece"] == pytest.approx(1 - cal_o[m]["mean_real"])
        assert cal_o[m]["brier"] > cal_h[m]["brier"]
    # unavailable entries are ignored
    data.avail[:, 0] = False
    assert calibration(over, data, rows)[0]["n"] == 0
    rel = reliability(honest, data, rows, bins=5)
    assert len(rel) == 5 and sum(r["n"] for r in rel) == int(data.avail.sum())
    with pytest.raises(ValueError, match="q_hat has shape"):
        calibration(honest[:10], data, rows)
    assert "| model |" in format_table(calibration(honest, data, rows))


def test_pick_accuracy_is_the_mean_quality_of_the_picks() -> None:
    data = synthetic_routing_data(n=400, k=3, seed=2)
    r = StrongestRouter().fit(data)
    rows = data.idx("test")
    pick = r.select(data, rows, 0.0)
    assert pick_accuracy(r, data, rows) == pytest.approx(float(data.quality[rows, pick].mean()))
