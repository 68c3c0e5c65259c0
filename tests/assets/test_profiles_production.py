"""serve -> label -> recalibrate, end to end: labelled gateway requests become production traces (the feedback
sensor), and materialising capability_profiles uses them as calibration evidence of the model that served
them, with the leakage check still passing; ``use_production_traces: false`` gives the calibration-only
profiles."""

from __future__ import annotations

import json
import time

import dagster as dg
import polars as pl
import pytest

from assets.resources import OllamaResource, WarehouseResource
from tests.conftest import home_env
from warehouse.store import Warehouse

N_LABELS = 24


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """A warehouse with queries, models, splits and every model's traces (no features, no router)."""
    from pipelines.definitions import materialize
    from pipelines.definitions import resources as home_resources

    home = tmp_path_factory.mktemp("production_loop")
    mp = home_env(home)
    resources = {**home_resources(home), "ollama": OllamaResource(sim_time_scale=0.0, concurrency=8)}
    instance = dg.DagsterInstance.ephemeral()
    r = materialize(["benchmark_queries", "candidate_models", "data_splits"], instance=instance, resources=resources,
                    run_config={"ops": {"benchmark_queries": {"config": {"n_queries": 64, "seed": 3}}}})
    assert r.success
    for m in instance.get_dynamic_partitions("models"):
        assert materialize(["outcome_traces"], instance=instance, resources=resources, partition_key=m).success
    yield home, instance, resources
    mp.undo()


def _profiles(collected, **config) -> tuple[pl.DataFrame, dg.ExecuteInProcessResult]:
    from pipelines.definitions import materialize

    home, instance, resources = collected
    run_config = {"ops": {"capability_profiles": {"config": config}}} if config else None
    r = materialize(["capability_profiles"], instance=instance, resources=resources, run_config=run_config)
    assert r.success
    checks = r.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["profiles_leakage_free"] and checks[0].passed, checks[0].metadata
    return Warehouse(home / "warehouse").read_table("profiles"), r


def _quality(p: pl.DataFrame, m: str, part: str = "quality_overall") -> float:
    row = p.filter(pl.col("model_id") == m).row(0, named=True)
    return float(row["raw"][list(row["feature_names"]).index(part)])


def _label_requests(root, model: str) -> list[str]:
    """What the gateway writes for N_LABELS answered requests by ``model`` (half naming task group ocr),
    each labelled 1.0 through the feedback path."""
    from router.serving.gateway.chat import Served
    from router.serving.gateway.served_log import ServedLog, now_iso

    log = ServedLog(root)
    ids = []
    for i in range(N_LABELS):
        rec = Served(request_id=f"chatcmpl-lr-test{i:03d}", received_at=now_iso(), t0=time.perf_counter(),
                     requested_model="lrouter", policy="lrouter", lam=0.1, chosen_model=model,
                     predicted_quality=0.5, expected_cost_usd=1e-5, realised_cost_usd=1e-5, prompt_tokens=40,
                     completion_tokens=10, routing_ms=1.0, upstream_ms=200.0, has_image=True,
                     task_group="ocr" if i % 2 else None)
        log.record(rec.row())
        log.add_feedback(rec.request_id, 1.0)
        ids.append(rec.request_id)
    log.flush()
    return ids


def test_recalibration_uses_production_labels(collected, monkeypatch):
    import pipelines.production as production
    from router.serving.gateway.served_log import read_production_traces

    home, instance, _ = collected
    off, _ = _profiles(collected, use_production_traces=False)
    assert json.loads(off["built_from"][0])["n_production_rows"] == 0
    weakest = min(off["model_id"].to_list(), key=lambda m: _quality(off, m))

    root = home / "warehouse"
    ids = _label_requests(root, weakest)
    monkeypatch.setattr(production, "MIN_LABELS", 1)
    with dg.build_sensor_context(instance=instance, resources={"warehouse": WarehouseResource(home=str(home))}) as ctx:
        result = production.production_feedback_sensor(ctx)
    assert [r.job_name for r in result.run_requests] == ["recalibrate_job"]
    traces = read_production_traces(root)
    assert traces.height == N_LABELS and traces["task_group"].null_count() == N_LABELS // 2

    on, r = _profiles(collected)  # the default: production evidence on; the leakage check passed
    mat = r.asset_materializations_for_node("capability_profiles")[0]
    assert mat.metadata["n_production_rows"].value == N_LABELS
    built = json.loads(on["built_from"][0])
    assert built["n_production_rows"] == N_LABELS
    row = on.filter(pl.col("model_id") == weakest).row(0, named=True)
    assert row["n_production_rows"] == N_LABELS
    assert {f"production:{i}" for i in ids} <= set(row["source_query_ids"])
    assert _quality(on, weakest) > _quality(off, weakest) + 0.05  # labelled 1.0: its quality went up
    assert _quality(on, weakest, "quality_group:ocr") > _quality(off, weakest, "quality_group:ocr")
    assert _quality(on, weakest, "quality_group:math") == pytest.approx(_quality(off, weakest, "quality_group:math"),
                                                                          nan_ok=True)
    for m in off["model_id"].to_list():
        if m != weakest:
            assert _quality(on, m) == pytest.approx(_quality(off, m))
            assert on.filter(pl.col("model_id") == m)["n_production_rows"][0] == 0

    again, _ = _profiles(collected, use_production_traces=False)  # switched off: the calibration-only profiles
    assert again.equals(off)
