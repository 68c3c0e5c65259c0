"""Model-pool lifecycle end to end, in-process: build a small pipeline, add the held-back simulated model
through the CLI, let the sensor collect and recalibrate, and check the existing router routes to the new
model without its checkpoint changing. Also: disable, re-add, an unreachable endpoint, the schedule, and
the routing API (its HTTP server: tests/router/serving/test_http.py)."""

from __future__ import annotations

import datetime
import hashlib

import dagster as dg
import numpy as np
import polars as pl
import pytest

from collectors.simulator.specs import HELD_OUT
from pipelines import cli
from pipelines.automation import model_pool_sensor, recalibration_schedule
from pipelines.jobs import RECALIBRATE_ASSETS, RECALIBRATE_JOB, RETRAIN_JOB
from router.training.artifacts import latest_checkpoint_dir
from tests.conftest import TINY_QUERIES as N_QUERIES
from warehouse.catalog import run_query
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow  # subprocess runs / the whole graph: `pytest -m 'not slow'` skips them

WHEN = datetime.datetime(2026, 11, 30, 3, 0, tzinfo=datetime.UTC)


def _sensor_resources(defs) -> dict:
    """Sensors and schedules read only the warehouse resource (the IO manager is for runs)."""
    return {"warehouse": defs.resources["warehouse"]}


def _tick(sensor, instance, defs, cursor=None):
    """One sensor evaluation, as the daemon runs it (resources opened for the tick)."""
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=_sensor_resources(defs),
                                 cursor=cursor) as ctx:
        return sensor(ctx)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline


def _run(defs, instance, job_name, **kw):
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, **kw)
    assert result.success
    return result


def test_add_model_sensor_collects_recalibrates_and_routes_without_retraining(pipeline, capsys):
    home, instance, defs = pipeline
    wh = Warehouse(home / "warehouse")
    ckpt = latest_checkpoint_dir(wh)
    weights_before = _digest(ckpt / "model.safetensors")

    # nothing changed yet: the sensor skips
    res = _tick(model_pool_sensor, instance, defs)
    assert not res.run_requests and res.skip_reason

    # add the held-back model through the CLI
    assert cli.main(["models", "add", HELD_OUT.name, "--backend", "sim", "--price-in",
                     str(HELD_OUT.price_in_per_mtok), "--price-out", str(HELD_OUT.price_out_per_mtok),
                     "--params-b", str(HELD_OUT.params_b)]) == 0
    assert "added" in capsys.readouterr().out

    res = _tick(model_pool_sensor, instance, defs, cursor=res.cursor)
    assert [r.partition_key for r in res.run_requests] == [HELD_OUT.name]
    assert res.dynamic_partitions_requests[0].partition_keys == [HELD_OUT.name]
    instance.add_dynamic_partitions("models", [HELD_OUT.name])
    _run(defs, instance, res.run_requests[0].job_name, partition_key=HELD_OUT.name)
    traces = wh.read_trace_partition(HELD_OUT.name)
    assert traces.height == N_QUERIES and (traces["status"] == "ok").all()

    # next tick: the collection is done, so the sensor asks for a recalibration (not a retraining)
    res = _tick(model_pool_sensor, instance, defs, cursor=res.cursor)
    assert [r.job_name for r in res.run_requests] == [RECALIBRATE_JOB]
    _run(defs, instance, RECALIBRATE_JOB)

    profiles = wh.read_table("profiles")
    assert HELD_OUT.name in profiles["model_id"].to_list()
    assert latest_checkpoint_dir(wh) == ckpt and _digest(ckpt / "model.safetensors") == weights_before
    dec = run_query(wh, "select chosen_model, count(*) n, any_value(scores) s from pool_decisions "
                        "where router = 'LatentRouter (deployed)' group by 1")
    assert HELD_OUT.name in dec["s"][0], "the new model is scored through its capability token"
    mats = instance.fetch_materializations(dg.AssetKey("current_pool_routing"), limit=1).records
    md = mats[0].asset_materialization.metadata
    assert HELD_OUT.name in md["models_new_since_training"].value

    # the routing API scores the new model too, and a disabled model is masked out at once
    from router.serving.service import load_router

    image = next(wh.images_dir.glob("*.png"))
    ranked = load_router(home).route(image, "What word is written in the box?")
    assert HELD_OUT.name in [r["model_id"] for r in ranked]
    assert all(np.isfinite(r["quality"]) and r["uncertainty"] > 0 and r["cost_usd"] > 0 for r in ranked)
    assert ranked == sorted(ranked, key=lambda r: -r["utility"])
    assert cli.main(["models", "disable", HELD_OUT.name]) == 0
    ranked = load_router(home).route(image, "What word is written in the box?", lam=0.5)
    assert HELD_OUT.name not in [r["model_id"] for r in ranked]
    pool = ranked[-1]["model_id"], ranked[0]["model_id"]
    sub = load_router(home).route(image, "What word is written in the box?", pool=list(pool))
    assert {r["model_id"] for r in sub} == set(pool)
    assert traces.height == wh.read_trace_partition(HELD_OUT.name).height, "disabling loses no traces"


def test_readding_and_unreachable_endpoint_are_refused_cleanly(pipeline, capsys):
    home, _, _ = pipeline
    registry = (home / "models.yaml").read_bytes()
    assert cli.main(["models", "add", "simvl-nano:1b", "--backend", "sim"]) == 2
    assert "already registered and active" in capsys.readouterr().err
    assert cli.main(["models", "add", "llava:7b", "--backend", "ollama", "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert cli.main(["models", "add", "x", "--backend", "vllm"]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert (home / "models.yaml").read_bytes() == registry


def test_schedule_recalibrates_or_retrains(pipeline, monkeypatch):
    home, instance, defs = pipeline
    with dg.build_schedule_context(instance=instance, resources=_sensor_resources(defs),
                                   scheduled_execution_time=WHEN) as ctx:
        req = recalibration_schedule(ctx)
    # few new traces since training: the schedule's job (retrain_job) limited to the recalibration assets
    assert req.job_name == RETRAIN_JOB and set(req.asset_selection) == set(RECALIBRATE_ASSETS)
    monkeypatch.setattr("pipelines.automation.RETRAIN_MIN_NEW_TRACES", 1)
    wh = Warehouse(home / "warehouse")
    t = wh.read_trace_partition("simvl-nano:1b")
    wh.write_trace_partition("simvl-nano:1b", t.with_columns(pl.lit("2999-01-01T00:00:00").alias("collected_at")))
    with dg.build_schedule_context(instance=instance, resources=_sensor_resources(defs),
                                   scheduled_execution_time=WHEN) as ctx:
        req = recalibration_schedule(ctx)
    assert req.job_name == RETRAIN_JOB and not req.asset_selection and "new traces" in req.tags["lrouter/reason"]


def test_lineage_names_the_run(pipeline, capsys):
    from pipelines.lineage import lineage_records

    _, instance, _ = pipeline
    rows = lineage_records("profiles", instance=instance)
    assert rows and rows[0]["asset"] == "capability_profiles" and rows[0]["run_id"]
    assert np.all([r["materialized_at"] for r in rows])


def test_evaluation_report_asset_writes_tables_and_report(pipeline):
    home, instance, defs = pipeline
    from pipelines.definitions import materialize

    r = materialize(["evaluation_report"], instance=instance, resources=defs.resources,
                       run_config={"ops": {"evaluation_report": {"config": {
                           "preset": "quick", "seeds": [0, 1],
                           "experiments": ["main_table", "pool_changes", "cold_start"]}}}})
    assert r.success
    (md,) = [m.metadata for m in r.asset_materializations_for_node("evaluation_report")
             if m.asset_key.to_user_string() == "evaluation_report"]
    checks = {c.check_name: c for c in r.get_asset_check_evaluations()}
    assert checks["evaluation_report_is_sound"].passed, checks["evaluation_report_is_sound"].metadata
    report = md["report"].value
    text = open(report).read()
    assert "SIMULATED" in text and "LatentRouter" in text and "KNNRouter" in text
    wh = Warehouse(home / "warehouse")
    res = run_query(wh, "select router, setting, count(distinct seed) seeds from eval_results "
                        "where experiment = 'main_table' and seed >= 0 group by 1, 2")
    routers = set(res["router"].to_list())
    assert {"LatentRouter", "Oracle", "Strongest", "Cheapest", "Random", "KNNRouter", "KMeansRouter",
            "MLPMFRouter", "RouteLLM-MF", "VL feature router"} <= routers
    assert res.filter(pl.col("router") == "LatentRouter")["seeds"].min() == 2
    p = run_query(wh, "select count(*) n from eval_results where metric like 'welch_p:%'")["n"][0]
    assert p > 0
    dec = run_query(wh, "select count(distinct router) n from routing_decisions")["n"][0]
    assert dec >= 10  # every evaluated router (the deployed router's rows are pool_decisions)


def test_routing_api_request_row_equals_rebuilding_the_warehouse_arrays(pipeline):
    """The service builds the warehouse arrays once and turns a request into one row with the stored
    normalisers; that row must be exactly what appending the request to the tables and rebuilding gives."""
    import dataclasses

    from PIL import Image

    from router.data.warehouse_inputs import WarehouseInputs, routing_data
    from router.features.extract import encode_single
    from router.features.feature_set import FeatureSet
    from router.features.side import side_features
    from router.serving.service import REQUEST_ID, _vocab, load_router
    from router.training.trainer import predict

    home, _, _ = pipeline
    svc = load_router(home)
    inp, fs = svc.inputs, svc.inputs.features
    image = Image.open(next(svc.wh.images_dir.glob("*.png"))).convert("RGB")
    for img, question, tg in ((image, "What is the value of the largest bar?", "chart"),
                              (None, "Which word is longest: cat, giraffe, ox?", None)):
        fast = svc.request_data(img, question, task_group=tg)
        enc = encode_single(img, question, svc.feature_cfg)
        row = {"txt_tokens": fast.txt_tokens.astype(fs.txt_tokens.dtype), "txt_mask": fast.txt_mask,
               "txt_pooled": enc["txt_pooled"][None], "img_tokens": fast.img_tokens, "img_mask": fast.img_mask,
               "img_pooled": (enc["img_pooled"][None] if img is not None
                              else np.zeros((1, fs.img_pooled.shape[1]), fs.img_pooled.dtype))}
        # raw side features, as the features asset computes them for a stored query
        side, _ = side_features([question], [tg or "other"], ["other"],
                                np.asarray([img.size if img is not None else (0, 0)]), np.array([img is not None]),
                                _vocab(fs.side_names, "task_group"), _vocab(fs.side_names, "dataset"))
        row["side"] = np.concatenate([side, np.zeros((1, fs.side.shape[1] - side.shape[1]), np.float32)], axis=1)
        merged = {a: np.concatenate([getattr(fs, a), row[a].astype(getattr(fs, a).dtype)]) for a in FeatureSet.ARRAYS}
        features = dataclasses.replace(fs, query_ids=[*fs.query_ids, REQUEST_ID], **merged)
        q = {c: None for c in inp.queries.columns} | {"query_id": REQUEST_ID, "question": question,
                                                        "task_group": tg or "", "dataset": "",
                                                        "image_path": "r.png" if img is not None else ""}
        s = {c: None for c in inp.splits.columns} | {"query_id": REQUEST_ID, "split": "test",
                                                       "in_calibration": False, "stratum": ""}
        full = routing_data(WarehouseInputs(
            pl.concat([inp.queries, pl.DataFrame([q], schema=inp.queries.schema)]), inp.traces,
            pl.concat([inp.splits, pl.DataFrame([s], schema=inp.splits.schema)]), inp.profiles, inp.models, features))
        last = np.array([full.n - 1])
        for name in ("side", "pooled", "exp_cost", "txt_tokens", "txt_mask", "img_tokens", "img_mask"):
            np.testing.assert_allclose(np.asarray(getattr(fast, name), np.float64),
                                       np.asarray(getattr(full, name)[last], np.float64), rtol=1e-6, atol=1e-6,
                                       err_msg=name)
        np.testing.assert_array_equal(fast.model_feats, full.model_feats)
        assert fast.avail.all()  # the request has no traces: availability is the pool, not trace coverage
        for a, b in zip(predict(svc.model, fast, np.array([0]), 0.3, avail=fast.avail),
                        predict(svc.model, full, last, 0.3, avail=fast.avail), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_long_lived_routing_service_follows_the_registry(pipeline):
    """A service built once sees a model disabled (and re-enabled) before its next request, without
    being rebuilt by hand; with auto_refresh off it keeps its snapshot."""
    from router.serving.service import load_router

    home, _, _ = pipeline
    svc = load_router(home)
    pinned = load_router(home)
    pinned.auto_refresh = False
    wh = Warehouse(home / "warehouse")
    image = next(wh.images_dir.glob("*.png"))
    name = "simvl-nano:1b"
    assert name in [r["model_id"] for r in svc.route(image, "What word is written in the box?")]
    assert not svc.refresh()  # nothing changed: no rebuild
    try:
        assert cli.main(["models", "disable", name]) == 0
        ranked = svc.route(image, "What word is written in the box?")
        assert name not in [r["model_id"] for r in ranked] and len(ranked) >= 1
        assert name in [r["model_id"] for r in pinned.route(image, "What word is written in the box?")]
    finally:
        assert cli.main(["models", "add", name, "--backend", "sim"]) == 0
    assert name in [r["model_id"] for r in svc.route(image, "What word is written in the box?")]


def test_routing_api_refuses_requests_from_another_encoder(pipeline):
    import dataclasses

    from router.serving.service import load_router

    home, _, _ = pipeline
    svc = load_router(home)
    svc.auto_refresh = False
    svc.inputs = dataclasses.replace(svc.inputs, features=dataclasses.replace(svc.inputs.features,
                                                                              text_encoder_id="imported:vlrb"))
    with pytest.raises(ValueError, match="question features from 'imported:vlrb'"):
        svc.route(None, "What word is written in the box?")


def test_latent_router_asset_records_what_was_trained(pipeline):
    from router.training.checkpoint import load_checkpoint

    home, instance, _ = pipeline
    rec = instance.fetch_materializations(dg.AssetKey("latent_router"), limit=1).records[0]
    md = rec.asset_materialization.metadata
    ckpt = md["checkpoint"].value
    model, cfg, meta = load_checkpoint(ckpt)
    assert md["parameters"].value == model.n_parameters() <= 1_000_000
    assert md["model_config"].value["hidden"] == 32 == cfg.hidden  # the run config reached the model
    assert md["model_config"].value["image_token_pool"] == cfg.image_token_pool == 4
    assert md["seconds_per_epoch"].value > 0 and np.isfinite(md["val_utility"].value)
    curve = md["training_curve"]  # a table (one row per epoch) and its plot
    assert len(curve.records) >= 1 and "val_utility" in [c.name for c in curve.schema.columns]
    assert "data:image/png;base64," in md["training_curve_plot"].value
    assert md["test_quality_lambda0"].value == pytest.approx(meta["test_quality_lambda0"], rel=1e-3)  # 4 digits
