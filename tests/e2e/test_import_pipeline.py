"""Bring your own data: the whole asset graph runs in-process on imported benchmarks.

A VL-RouterBench-shaped folder (text-only, official splits, precomputed text embeddings) and an
MMR-Bench CSV with images are written by the test, imported through ``benchmark_queries``' config, and
taken through traces, splits, features, profiles, the LatentRouter and the evaluation report.
"""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from warehouse.catalog import run_query
from warehouse.store import Warehouse

SMALL_ROUTER = {"epochs": 2, "hidden": 32, "n_capsules": 4, "patience": 2, "batch_size": 64}
DATASETS = ["ChartQA", "DocVQA", "MathVista", "MMStar"]


def _vl_routerbench(root, n=160, k=4):
    d = root / "vlrb"
    (d / "SPLITS").mkdir(parents=True)
    (d / "EMBEDDINGS" / "text").mkdir(parents=True)
    rng = np.random.default_rng(0)
    ds = np.array([DATASETS[i % 4] for i in range(n)])
    skill = rng.uniform(0.1, 0.9, size=(4, k))  # dataset x model: the best model depends on the dataset
    y = (rng.uniform(size=(n, k)) < skill[[DATASETS.index(x) for x in ds]]).astype(np.int8)
    c = (np.linspace(1e-4, 2e-3, k)[None, :] * rng.uniform(0.8, 1.2, size=(n, k))).astype(np.float32)
    np.savez(d / "Y.npz", Y=y)
    np.save(d / "C.npy", c)
    ids = [f"s{i:04d}" for i in range(n)]
    pl.DataFrame({"sample_id": ids, "dataset": ds.tolist(), "split": ["train"] * n, "task": ["vqa"] * n,
                  "question": [f"Question {i} about {x}?" for i, x in enumerate(ds)],
                  "answer": ["A"] * n}).write_parquet(d / "meta.parquet")
    (d / "models.json").write_text(json.dumps([f"vlm-{j}" for j in range(k)]))
    parts = {"train": range(0, 100), "dev": range(100, 120), "test": range(120, n)}
    for split, rows in parts.items():
        (d / "SPLITS" / f"{split}.jsonl").write_text("".join(json.dumps({"sample_id": ids[i]}) + "\n" for i in rows))
    emb = rng.normal(size=(n, 8)).astype(np.float32) + np.eye(4, 8, dtype=np.float32)[[DATASETS.index(x) for x in ds]]
    pl.DataFrame({"sample_id": ids, "embedding": emb.tolist()}).write_parquet(d / "EMBEDDINGS" / "text" / "e5.parquet")
    return d, parts


def _mmr_bench(root, n=40):
    d = root / "mmr"
    models = ["ModelA", "ModelB"]
    rows, rng = [], np.random.default_rng(1)
    for i in range(n):
        ds = "OCRBench" if i % 2 else "ChartQA"
        img_dir = d / "images" / ds
        img_dir.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (i * 5 % 255, 90, 200 if i % 2 else 20)).save(img_dir / f"{i}.jpg")
        row = {"dataset_idx": f"{ds}_{i}", "question": f"What is shown in image {i}?", "answer": "x",
               "category": "doc" if i % 4 < 2 else "scene"}
        for j, m in enumerate(models):
            row[f"{m}_correct"] = int(rng.uniform() < (0.8 if (i % 2) == j else 0.3))
            row[f"{m}_cost"] = round(0.001 * (j + 1), 6)
        rows.append(row)
    pl.DataFrame(rows).write_csv(d / "mmr.csv")
    return d


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LROUTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LROUTER_REGISTRY", raising=False)
    from pipelines.definitions import defs

    return tmp_path, dg.DagsterInstance.ephemeral(), defs


def _run_graph(defs, instance, bench_config: dict, eval_experiments: list[str]):
    from pipelines.definitions import materialize

    def mat(names, **kw):
        r = materialize(names, instance=instance, resources=defs.resources, **kw)
        assert r.success, names
        return r

    mat(["benchmark_queries", "candidate_models", "data_splits"],
        run_config={"ops": {"benchmark_queries": {"config": bench_config}}})
    for m in instance.get_dynamic_partitions("models"):
        r = mat(["outcome_traces"], partition_key=m)
        assert all(c.passed for c in r.get_asset_check_evaluations())
    mat(["warehouse_views", "query_features", "capability_profiles", "latent_router"],
        run_config={"ops": {"latent_router": {"config": SMALL_ROUTER}}})
    return mat(["evaluation_report"], run_config={"ops": {"evaluation_report": {"config": {
        "preset": "quick", "seeds": [0, 1], "experiments": eval_experiments}}}})


def test_vl_routerbench_text_only_import_trains_and_evaluates(env):
    tmp, instance, defs = env
    folder, parts = _vl_routerbench(tmp)
    r = _run_graph(defs, instance, {"source": "vl-routerbench", "path": str(folder)}, ["main_table"])
    wh = Warehouse(tmp / "home" / "warehouse")
    # the official split is honoured (dev -> val) and calibration rows come from train only
    sp = run_query(wh, "select s.split, count(*) n, sum(in_calibration::int) c from splits s group by 1 order by 1")
    assert dict(zip(sp["split"], sp["n"], strict=True)) == {"test": 40, "train": 100, "val": 20}
    assert sp.filter(pl.col("split") != "train")["c"].sum() == 0
    # imported models replaced the simulated pool; their traces were kept, not collected
    models = run_query(wh, "select model_id, backend, active from models where active")
    assert sorted(models["model_id"]) == [f"vlm-{j}" for j in range(4)] and set(models["backend"]) == {"import"}
    # text-only: no image features, the imported embedding is the text feature
    feats = run_query(wh, "select any_value(text_encoder) t, bool_or(has_image) img from features")
    assert feats["t"][0] == "imported:e5" and feats["img"][0] is False
    text = open(_report_materialization(r).metadata["report"].value).read()
    assert "text-only" in text.lower() and "SIMULATED" not in text.split("\n", 3)[0]
    lat = run_query(wh, "select count(*) n from eval_results where router = 'LatentRouter' and "
                        "experiment = 'main_table' and metric like '%rank_score%'")
    assert lat["n"][0] > 0


def test_mmr_bench_import_with_images_runs_the_graph(env):
    tmp, instance, defs = env
    d = _mmr_bench(tmp)
    _run_graph(defs, instance, {"source": "mmr-bench", "path": str(d / "mmr.csv"), "images": str(d / "images"),
                                "on_error": "skip", "side_features": ["category"]}, ["main_table"])
    wh = Warehouse(tmp / "home" / "warehouse")
    from router.features.feature_set import FeatureSet

    fs = FeatureSet.load(wh.features_dir / "current")
    cols = [i for i, n in enumerate(fs.side_names) if n.startswith("meta:category=")]
    assert [fs.side_names[i] for i in cols] == ["meta:category=doc", "meta:category=scene"]
    assert (fs.side[:, cols].sum(axis=1) == 1).all()  # every query has exactly one declared category
    feats = run_query(wh, "select bool_and(has_image) img, any_value(image_encoder) e from features")
    assert feats["img"][0] is True and "efficientnet" in feats["e"][0]
    tr = run_query(wh, "select model_id, count(*) n, avg(quality) q from traces group by 1 order by 1")
    assert tr["model_id"].to_list() == ["ModelA", "ModelB"] and tr["n"].to_list() == [40, 40]


def _report_materialization(result):
    """The evaluation_report asset's own materialization (its node also materializes eval_results and
    routing_decisions)."""
    (mat,) = [m for m in result.asset_materializations_for_node("evaluation_report")
              if m.asset_key.to_user_string() == "evaluation_report"]
    return mat
