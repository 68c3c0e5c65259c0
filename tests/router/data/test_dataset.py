"""RoutingData built from tables: latest ok outcome, train-only normalisers, pre-answer expected cost."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from router.data.build import build_routing_data
from router.data.calibration import calibration_rows
from router.data.profiles import build_profiles, profile_matrix
from router.data.routing_data import RoutingData
from router.data.splits import make_splits
from router.features.feature_set import FeatureSet
from warehouse.schemas import MODELS, QUERIES, TRACES, conform

GROUPS = ("ocr", "chart", "math", "general")
PRICE = {"m1": (0.2, 0.6), "m2": (1.0, 3.0), "m3": (0.0, 0.0)}  # m3: no price, cost only from traces


def _queries(n: int, text_only: bool = False) -> pl.DataFrame:
    return conform(pl.DataFrame({
        "query_id": [f"q{i:03d}" for i in range(n)], "benchmark": ["b"] * n,
        "dataset": ["d1" if i % 3 else "d2" for i in range(n)], "task_group": [GROUPS[i % 4] for i in range(n)],
        "task": ["t"] * n, "question": [f"q {i}" for i in range(n)], "answer": ["1"] * n, "answer_kind": ["exact"] * n,
        "image_path": ["" if text_only or i % 4 == 3 else f"{i}.png" for i in range(n)],
        "image_sha256": [""] * n, "source_meta": ["{}"] * n, "official_split": [""] * n,
    }), QUERIES, "queries")


def _models() -> pl.DataFrame:
    ids = list(PRICE)
    return conform(pl.DataFrame({
        "model_id": ids, "backend": ["sim"] * 3, "endpoint": [""] * 3,
        "price_in_per_mtok": [PRICE[m][0] for m in ids], "price_out_per_mtok": [PRICE[m][1] for m in ids],
        "params_b": [3.0, 8.0, None], "added_at": [""] * 3, "active": [True] * 3,
        "simulated": [True, True, False], "description": [""] * 3,
    }, schema_overrides={"params_b": pl.Float64}), MODELS, "models")


def _row(q: str, m: str, attempt: int, status: str, quality=None, pt=0, ct=0, cost=None, lat=None) -> dict:
    return dict(query_id=q, model_id=m, attempt=attempt, status=status, quality=quality,
                correct=None if quality is None else quality >= 0.5, prompt_tokens=pt, completion_tokens=ct,
                image_tokens=0, cost_usd=cost, latency_ms=lat)


def _traces(queries: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in queries.iter_rows(named=True):
        img = 500 if r["image_path"] else 0
        for m, (pin, pout) in PRICE.items():
            pt, ct = 30 + img + int(rng.integers(0, 20)), 10 + 20 * GROUPS.index(r["task_group"]) + int(rng.integers(0, 5))
            cost = (pt * pin + ct * pout) / 1e6 if pin else 1e-4 * (1 + rng.uniform())
            rows.append(_row(r["query_id"], m, 1, "ok", float(rng.uniform() < 0.6), pt, ct, cost, 100.0 * (1 + rng.uniform())))
    df = pl.DataFrame(rows, schema_overrides={"quality": pl.Float64, "correct": pl.Boolean, "cost_usd": pl.Float64,
                                              "latency_ms": pl.Float64})
    return conform(df.with_columns(pl.lit("").alias("prediction"), pl.lit("").alias("error"),
                                   pl.lit("").alias("collected_at"), pl.lit("").alias("model_digest"),
                                   pl.lit("").alias("run_id")), TRACES, "traces")


def _features(queries: pl.DataFrame, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    n = queries.height
    has = np.array([bool(p) for p in queries["image_path"]])
    img = None
    if has.any():
        img = rng.normal(size=(n, 6, 5)).astype(np.float16)
        img[~has] = 0
    side = np.stack([has.astype(np.float32), rng.uniform(1, 5, size=n).astype(np.float32)], axis=1)
    tq = np.ones((n, 4), dtype=bool)
    tq[:, 3] = rng.uniform(size=n) < 0.5
    return FeatureSet(
        query_ids=queries["query_id"].to_list(), img_tokens=img,
        img_mask=None if img is None else np.repeat(has[:, None], 6, axis=1),
        txt_tokens=rng.normal(size=(n, 4, 3)).astype(np.float16), txt_mask=tq,
        img_pooled=None if img is None else np.where(has[:, None], rng.normal(2.0, 3.0, size=(n, 7)), 0).astype(np.float16),
        txt_pooled=rng.normal(size=(n, 8)).astype(np.float16), side=side, side_names=["has_image", "len"],
        image_encoder_id=None if img is None else "img-enc", text_encoder_id="txt-enc")


def _build(n: int = 120, text_only: bool = False, traces_fn=None):
    q = _queries(n, text_only)
    t = _traces(q)
    if traces_fn is not None:
        t = traces_fn(t)
    s = make_splits(q, seed=0)
    m = _models()
    p = build_profiles(t, s, q, m)
    return q, t, s, p, m, build_routing_data(q, t, s, p, _features(q), m)


def test_shapes_outcomes_and_latest_ok_attempt():
    extra = [
        _row("q000", "m1", 2, "ok", 1.0, 40, 10, 5e-6, 50.0),  # a later ok attempt replaces attempt 1
        _row("q000", "m1", 3, "error"),  # a later failure does not hide the ok answer
        _row("q001", "m2", 2, "timeout"),
    ]

    def edit(t: pl.DataFrame) -> pl.DataFrame:
        t = t.with_columns(pl.when((pl.col("query_id") == "q000") & (pl.col("model_id") == "m1")).then(0.0)
                           .otherwise(pl.col("quality")).alias("quality"))
        t = t.filter(~((pl.col("query_id") == "q001") & (pl.col("model_id") == "m2")))  # only a timeout left
        add = pl.DataFrame(extra, schema_overrides={"quality": pl.Float64, "correct": pl.Boolean,
                                                    "cost_usd": pl.Float64, "latency_ms": pl.Float64})
        return pl.concat([t, conform(add.with_columns(*(pl.lit("").alias(c) for c in
                                     ("prediction", "error", "collected_at", "model_digest", "run_id"))),
                                     TRACES, "traces")])

    q, t, s, p, m, d = _build(traces_fn=edit)
    assert isinstance(d, RoutingData) and (d.n, d.k) == (120, 3)
    assert d.model_ids == ["m1", "m2", "m3"] and d.simulated == [True, True, False]
    i0, i1 = d.query_ids.index("q000"), d.query_ids.index("q001")
    assert d.quality[i0, 0] == 1.0 and d.avail[i0, 0] and d.cost_usd[i0, 0] == pytest.approx(5e-6)
    assert not d.avail[i1, 1] and d.quality[i1, 1] == 0.0 and d.cost_usd[i1, 1] == 0.0
    assert d.avail.sum() == 120 * 3 - 1
    split = dict(zip(s["query_id"], s["split"], strict=True))
    assert d.split.tolist() == [split[x] for x in d.query_ids]
    assert d.task_group.tolist() == [GROUPS[i % 4] for i in range(120)]
    np.testing.assert_array_equal(d.model_feats, profile_matrix(p, d.model_ids)[0])
    assert d.model_feat_names == list(p["feature_names"][0]) and not d.text_only


def test_cost_normaliser_and_features_use_train_rows_only():
    q, t, s, p, m, d = _build()
    train = d.idx("train")
    means = np.where(d.avail, d.cost, np.nan)[train].mean(axis=0)
    assert np.nanmax(means) == pytest.approx(1.0)

    test_ids = set(s.filter(pl.col("split") == "test")["query_id"])
    pricier = t.with_columns(pl.when(pl.col("query_id").is_in(list(test_ids))).then(pl.col("cost_usd") * 100)
                             .otherwise(pl.col("cost_usd")).alias("cost_usd"))
    d2 = build_routing_data(q, pricier, s, p, _features(q), m)
    np.testing.assert_allclose(d2.cost[train], d.cost[train])  # test costs do not move the normaliser
    np.testing.assert_allclose(d2.exp_cost, d.exp_cost)  # nor the expected cost

    # changing test-row features leaves every train row's pooled vector untouched
    f = _features(q)
    test_rows = d.idx("test")
    f.txt_pooled[test_rows] = 50.0
    f.side[test_rows] = -9.0
    d3 = build_routing_data(q, t, s, p, f, m)
    np.testing.assert_allclose(d3.pooled[train], d.pooled[train], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(d.pooled, axis=1), 1.0, atol=1e-5)
    no_img = ~np.array([bool(x) for x in q["image_path"]])
    assert d.img_mask[no_img].sum() == 0 and d.img_mask[~no_img].all()
    np.testing.assert_allclose(d.side[train].mean(axis=0), 0.0, atol=1e-5)


def test_expected_cost_is_price_times_calibration_tokens_not_realised():
    q, t, s, p, m, d = _build()
    calib = calibration_rows(t, s).filter((pl.col("model_id") == "m2") & (pl.col("status") == "ok"))
    meta = q.select("query_id", "task_group", "image_path")
    calib = calib.join(meta, on="query_id")
    pt = calib.filter(pl.col("image_path") != "")["prompt_tokens"].mean()
    ct = calib.filter(pl.col("task_group") == "math")["completion_tokens"].mean()
    train = d.idx("train")
    scale = np.nanmax(np.where(d.avail, d.cost_usd, np.nan)[train].mean(axis=0))
    rows = [i for i in range(d.n) if d.task_group[i] == "math" and d.img_mask[i].any()]
    want = (1.0 * pt + 3.0 * ct) / 1e6 / scale
    np.testing.assert_allclose(d.exp_cost[rows, 1], want, rtol=1e-5)
    assert not np.allclose(d.exp_cost[rows, 1], d.cost[rows, 1])  # realised cost varies, expected does not
    # the unpriced model falls back to its calibration mean cost
    m3 = calibration_rows(t, s).filter((pl.col("model_id") == "m3") & (pl.col("status") == "ok")).join(meta, on="query_id")
    want3 = m3.filter(pl.col("image_path") != "")["cost_usd"].mean() / scale
    np.testing.assert_allclose(d.exp_cost[rows, 2], want3, rtol=1e-5)
    # math answers are longer than ocr answers in this fixture, so their expected cost is higher
    ocr_rows = [i for i in range(d.n) if d.task_group[i] == "ocr" and d.img_mask[i].any()]
    assert d.exp_cost[rows[0], 1] > d.exp_cost[ocr_rows[0], 1]


def test_text_only_mode_and_errors():
    q, t, s, p, m, d = _build(n=60, text_only=True)
    assert d.text_only and d.img_tokens is None and d.img_mask is None
    assert d.pooled.shape[1] == 8 + 2
    f = _features(q)
    s_missing = s.filter(pl.col("query_id") != "q005")
    with pytest.raises(ValueError, match="q005"):
        build_routing_data(q, t, s_missing, p, f, m)
    with pytest.raises(KeyError, match="m3"):
        build_routing_data(q, t, s, p.filter(pl.col("model_id") != "m3"), f, m)
