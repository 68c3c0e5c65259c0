"""Splits are deterministic and stratified; profiles use calibration rows only and say so provably."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from router.data.calibration import calibration_rows
from router.data.leakage import leakage_report
from router.data.profiles import BASE_PARTS, PAIRWISE_PARTS, build_profiles, profile_matrix
from router.data.splits import make_splits
from warehouse.schemas import MODELS, QUERIES, SPLITS, TRACES, conform

GROUPS = ("ocr", "chart", "math", "general")
# planted skills: model a is good at ocr, b at math, c mediocre everywhere
SKILL = {"a": (0.9, 0.6, 0.2, 0.5), "b": (0.2, 0.5, 0.9, 0.5), "c": (0.5, 0.5, 0.5, 0.5), "d": (0.7, 0.7, 0.7, 0.7)}
PRICE = {"a": (0.5, 1.5), "b": (0.1, 0.3), "c": (1.0, 2.0), "d": (2.0, 4.0), "b_clone": (0.1, 0.3)}
PARAMS = {"a": 7.0, "b": 2.0, "c": None, "d": 13.0, "b_clone": 2.0}


def make_queries(n: int = 480, seed: int = 0, official: dict[int, str] | None = None) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ds = rng.choice(["docs", "charts", "mathv"], size=n, p=[0.5, 0.3, 0.2])
    tg = rng.choice(GROUPS, size=n)
    rows = {
        "query_id": [f"q{i:04d}" for i in range(n)], "benchmark": ["builtin"] * n, "dataset": ds.tolist(),
        "task_group": tg.tolist(), "task": tg.tolist(), "question": [f"question {i}?" for i in range(n)],
        "answer": ["1"] * n, "answer_kind": ["exact"] * n,
        "image_path": [f"{i}.png" if i % 5 else "" for i in range(n)],
        "image_sha256": [f"{i:064x}" if i % 5 else "" for i in range(n)], "source_meta": ["{}"] * n,
        "official_split": [(official or {}).get(i, "") for i in range(n)],
    }
    return conform(pl.DataFrame(rows), QUERIES, "queries")


def make_models(ids=("a", "b", "c")) -> pl.DataFrame:
    return conform(pl.DataFrame({
        "model_id": list(ids), "backend": ["sim"] * len(ids), "endpoint": [""] * len(ids),
        "price_in_per_mtok": [PRICE[m][0] for m in ids], "price_out_per_mtok": [PRICE[m][1] for m in ids],
        "params_b": [PARAMS[m] for m in ids], "added_at": ["2026-01-01T00:00:00Z"] * len(ids),
        "active": [True] * len(ids), "simulated": [True] * len(ids), "description": [""] * len(ids),
    }, schema_overrides={"params_b": pl.Float64}), MODELS, "models")


def make_traces(queries: pl.DataFrame, ids=("a", "b", "c"), seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for q in queries.iter_rows(named=True):
        g = GROUPS.index(q["task_group"])
        for m in ids:
            attempt = 1
            if rng.uniform() < 0.08:  # a failed first attempt, retried
                rows.append(dict(query_id=q["query_id"], model_id=m, attempt=1, status="timeout", quality=None,
                                 correct=None, prompt_tokens=None, completion_tokens=None, image_tokens=None,
                                 cost_usd=None, latency_ms=None))
                attempt = 2
            if rng.uniform() < 0.05:
                rows.append(dict(query_id=q["query_id"], model_id=m, attempt=attempt, status="error",
                                 quality=None, correct=None, prompt_tokens=None, completion_tokens=None,
                                 image_tokens=None, cost_usd=None, latency_ms=None))
                continue
            ok = rng.uniform() < SKILL[m][g]
            img = 300 if q["image_path"] else 0
            pt, ct = 40 + img + int(rng.integers(0, 10)), int(rng.integers(5, 60))
            rows.append(dict(query_id=q["query_id"], model_id=m, attempt=attempt, status="ok",
                             quality=float(ok), correct=bool(ok), prompt_tokens=pt, completion_tokens=ct,
                             image_tokens=img, cost_usd=(pt * PRICE[m][0] + ct * PRICE[m][1]) / 1e6,
                             latency_ms=float(rng.gamma(2.0, 300.0))))
    df = pl.DataFrame(rows, schema_overrides={"quality": pl.Float64, "correct": pl.Boolean,
                                              "cost_usd": pl.Float64, "latency_ms": pl.Float64})
    df = df.with_columns(pl.lit("").alias("prediction"), pl.lit("").alias("error"),
                         pl.lit("2026-01-01T00:00:00Z").alias("collected_at"), pl.lit("sha").alias("model_digest"),
                         pl.lit("run").alias("run_id"))
    return conform(df, TRACES, "traces")


@pytest.fixture(scope="module")
def tables():
    q = make_queries()
    return q, make_traces(q), make_splits(q, seed=0), make_models()


# ----------------------------------------------------------------------------------------------- splits


def test_splits_deterministic_order_free_and_schema():
    q = make_queries()
    a = make_splits(q, seed=3)
    assert a.columns[: len(SPLITS)] == list(SPLITS) and a.height == q.height
    assert a.equals(make_splits(q, seed=3))
    shuffled = make_splits(q.sample(fraction=1.0, shuffle=True, seed=1), seed=3)
    assert a.sort("query_id").equals(shuffled.sort("query_id"))  # row order does not matter
    other = make_splits(q, seed=4)
    assert (a["split"] != other["split"]).sum() > 50  # the seed matters


def test_splits_stratified_per_stratum_and_calibration_inside_train():
    q = make_queries()
    s = make_splits(q, seed=0, fractions=(0.6, 0.15, 0.25), calib_fraction=0.4)
    for stratum, grp in s.group_by("stratum"):
        n = grp.height
        for name, f in (("train", 0.6), ("val", 0.15), ("test", 0.25)):
            assert abs(grp.filter(pl.col("split") == name).height - n * f) <= 1.0, (stratum, name)
        n_train = grp.filter(pl.col("split") == "train").height
        assert grp["in_calibration"].sum() == round(0.4 * n_train)
    assert s.filter(pl.col("in_calibration"))["split"].unique().to_list() == ["train"]
    ds, tg = q["dataset"].to_list(), q["task_group"].to_list()
    assert s["stratum"].to_list() == [f"{d}|{g}" for d, g in zip(ds, tg, strict=True)]


def test_splits_honour_official_split_and_cap():
    official = {i: "test" for i in range(0, 40)} | {i: "dev" for i in range(40, 60)} | {i: "train" for i in range(60, 80)}
    q = make_queries(official=official)
    s = make_splits(q, seed=0)
    got = dict(zip(s["query_id"], s["split"], strict=True))
    for i, want in official.items():
        assert got[f"q{i:04d}"] == {"test": "test", "dev": "val", "train": "train"}[want]
    for seed in (1, 2):  # official rows never move with the seed
        other = dict(zip(*make_splits(q, seed=seed).select("query_id", "split"), strict=True))
        assert all(other[f"q{i:04d}"] == got[f"q{i:04d}"] for i in official)

    capped = make_splits(q, seed=0, calib_cap=30)
    assert capped["in_calibration"].sum() == 30
    assert capped["split"].equals(s["split"])  # the cap only shrinks calibration
    assert set(capped.filter("in_calibration")["query_id"]) <= set(s.filter("in_calibration")["query_id"])
    assert capped.filter("in_calibration")["stratum"].n_unique() >= 8  # still spread over strata


def test_splits_reject_bad_input():
    q = make_queries(n=20)
    with pytest.raises(ValueError, match="fractions"):
        make_splits(q, fractions=(0.5, 0.2, 0.2))
    bad = q.with_columns(pl.when(pl.col("query_id") == "q0003").then(pl.lit("holdout"))
                         .otherwise(pl.col("official_split")).alias("official_split"))
    with pytest.raises(ValueError, match="q0003"):
        make_splits(bad)


# ----------------------------------------------------------------------------------------------- profiles


def _vec(p: pl.DataFrame, m: str) -> np.ndarray:
    return np.array(p.filter(pl.col("model_id") == m)["vector"][0].to_list())


def _raw(p: pl.DataFrame, m: str, part: str) -> float:
    row = p.filter(pl.col("model_id") == m)
    return float(row["raw"][0][list(row["feature_names"][0]).index(part)])


def test_profiles_reflect_planted_skills_from_calibration_only(tables):
    q, t, s, models = tables
    p = build_profiles(t, s, q, models)
    assert p["model_id"].to_list() == ["a", "b", "c"]
    mat, names = profile_matrix(p, ["c", "a"])
    assert mat.shape == (2, len(names)) and mat.dtype == np.float32
    assert set(BASE_PARTS) | set(PAIRWISE_PARTS) <= set(names)
    assert _raw(p, "a", "quality_group:ocr") > _raw(p, "b", "quality_group:ocr") + 0.4
    assert _raw(p, "b", "quality_group:math") > _raw(p, "a", "quality_group:math") + 0.4
    assert _raw(p, "b", "cost_norm") < _raw(p, "c", "cost_norm") == pytest.approx(1.0)  # c is the priciest

    calib = set(s.filter("in_calibration")["query_id"])
    n_expected = calibration_rows(t, s).filter(pl.col("model_id") == "a").height
    row_a = p.filter(pl.col("model_id") == "a").row(0, named=True)
    assert set(row_a["source_query_ids"]) <= calib and row_a["n_calib_rows"] == n_expected
    assert 0.8 < _raw(p, "a", "availability") < 1.0  # errors count as attempted, not ok
    built = json.loads(row_a["built_from"])
    assert built["split"] == "train/calibration" and built["n_queries"] == len(calib)
    # standardised across the pool; c has no params_b -> flagged and filled with the pool mean
    assert abs(mat[:, names.index("quality_overall")]).max() > 0.1
    assert p.filter(pl.col("model_id") == "c")["params_missing"][0]
    assert _raw(p, "c", "log_params_b") == pytest.approx(np.mean([np.log(7.0), np.log(2.0)]))


def test_profiles_change_with_calibration_traces_but_not_with_val_test(tables):
    q, t, s, models = tables
    base = build_profiles(t, s, q, models)
    held = set(s.filter(pl.col("split") != "train")["query_id"])
    noisy = t.with_columns(
        pl.when(pl.col("query_id").is_in(list(held)) & (pl.col("status") == "ok"))
        .then(1.0 - pl.col("quality")).otherwise(pl.col("quality")).alias("quality"),
        pl.when(pl.col("query_id").is_in(list(held))).then(pl.col("cost_usd") * 50).otherwise(pl.col("cost_usd"))
        .alias("cost_usd"),
    )
    assert build_profiles(noisy, s, q, models).equals(base)

    target = calibration_rows(t, s).filter((pl.col("model_id") == "a") & (pl.col("status") == "ok"))
    flip = set(target["query_id"].head(40).to_list())
    changed = t.with_columns(
        pl.when(pl.col("query_id").is_in(list(flip)) & (pl.col("model_id") == "a") & (pl.col("status") == "ok"))
        .then(1.0 - pl.col("quality")).otherwise(pl.col("quality")).alias("quality"))
    after = build_profiles(changed, s, q, models)
    assert not np.allclose(_vec(after, "a"), _vec(base, "a"))
    assert _raw(after, "a", "quality_overall") != pytest.approx(_raw(base, "a", "quality_overall"))


def test_cold_start_limits_and_zero_rows_get_pool_mean(tables):
    q, t, s, models = tables
    full = build_profiles(t, s, q, models)
    cold = build_profiles(t, s, q, models, calib_limit={"c": 0})
    row = cold.filter(pl.col("model_id") == "c").row(0, named=True)
    assert row["cold_start"] and row["shrunk"] and row["n_calib_rows"] == 0 and row["shrink_weight"] == 0.0
    names = list(row["feature_names"])
    outcome = [i for i, n in enumerate(names) if not n.startswith(("log_price", "log_params", "params_missing"))]
    np.testing.assert_allclose(np.array(row["vector"])[outcome], 0.0, atol=1e-6)  # exactly the pool mean
    pool_q = np.mean([_raw(cold, m, "quality_overall") for m in ("a", "b")])
    assert row["shrunk_raw"][names.index("quality_overall")] == pytest.approx(pool_q)
    # the other models do not move: the cold model is outside the reference pool
    np.testing.assert_allclose(_vec(cold, "a"), _vec(build_profiles(t, s, q, models.head(2)), "a"), atol=1e-6)

    src = {}
    for n in (16, 64):
        p = build_profiles(t, s, q, models, calib_limit={"c": n})
        r = p.filter(pl.col("model_id") == "c").row(0, named=True)
        assert r["n_calib_rows"] == n and not r["cold_start"]
        src[n] = set(r["source_query_ids"])
        assert r["shrink_weight"] == pytest.approx(r["n_ok_rows"] / (r["n_ok_rows"] + 16.0))
    assert src[16] < src[64]  # nested subsets
    d16 = np.abs(_vec(build_profiles(t, s, q, models, calib_limit={"c": 16}), "c") - _vec(full, "c")).sum()
    d64 = np.abs(_vec(build_profiles(t, s, q, models, calib_limit={"c": 64}), "c") - _vec(full, "c")).sum()
    assert d64 < d16  # more calibration rows -> closer to the full-data profile


def test_profile_length_independent_of_pool_size(tables):
    q, t, s, _ = tables
    t4 = pl.concat([t, make_traces(q, ids=("d",), seed=5)])
    p3 = build_profiles(t4, s, q, make_models(("a", "b", "c")))
    p4 = build_profiles(t4, s, q, make_models(("a", "b", "c", "d")), reference_models=["a", "b", "c"])
    assert p3["feature_names"][0].to_list() == p4["feature_names"][0].to_list()
    for m in ("a", "b", "c"):  # a fixed reference pool: adding d changes no existing vector
        np.testing.assert_allclose(_vec(p4, m), _vec(p3, m), atol=1e-6)
    # d is better than the reference models on average: it wins more often than it loses
    assert _raw(p4, "d", "win_rate_mean") > _raw(p4, "d", "loss_rate_mean") + 0.1
    assert _raw(p4, "d", "win_rate_mean") + _raw(p4, "d", "tie_rate_mean") + _raw(p4, "d", "loss_rate_mean") == \
        pytest.approx(1.0)


def test_pairwise_failure_correlation_spots_a_clone(tables):
    q, t, s, _ = tables
    clone = t.filter(pl.col("model_id") == "b").with_columns(pl.lit("b_clone").alias("model_id"))
    p = build_profiles(pl.concat([t, clone]), s, q, make_models(("a", "b", "c", "b_clone")))
    assert _raw(p, "b", "fail_corr_max") == pytest.approx(1.0)  # fails exactly where its clone fails
    assert _raw(p, "a", "fail_corr_max") < 0.5
    assert _raw(p, "b", "fail_corr_min") < 0.5


def test_leakage_report_passes_honest_and_fails_crafted_leaks(tables, tmp_path):
    q, t, s, models = tables
    build_profiles(t, s, q, models).write_parquet(tmp_path / "profiles.parquet")
    honest = pl.read_parquet(tmp_path / "profiles.parquet")  # as the asset check reads it back
    rep = leakage_report(t, s, honest, queries=q, models=models)
    assert rep["passed"], rep
    assert leakage_report(t, s, honest)["passed"]

    # leak 1: profiles built while test rows were (wrongly) part of calibration
    leaky_splits = s.with_columns(
        pl.when(pl.col("split") == "test").then(pl.lit("train")).otherwise(pl.col("split")).alias("split"),
        (pl.col("in_calibration") | (pl.col("split") == "test")).alias("in_calibration"))
    leaked = build_profiles(t, leaky_splits, q, models)
    rep = leakage_report(t, s, leaked)
    assert not rep["passed"]
    assert not rep["checks"]["profile_queries_in_calibration"]
    assert not rep["checks"]["trace_rows_match_calibration"]

    # leak 2: recorded query set looks right but the numbers came from all traces
    everything = s.with_columns(pl.lit("train").alias("split"), pl.lit(True).alias("in_calibration"))
    from_all = build_profiles(t, everything, q, models)
    forged = honest.with_columns(from_all["raw"], from_all["vector"])
    rep = leakage_report(t, s, forged, queries=q, models=models)
    assert not rep["passed"] and not rep["checks"]["outcome_parts_recompute"]
    assert not rep["checks"]["full_rebuild_matches"]

    # leak 3: a calibration flag on a test row
    bad = s.with_columns((pl.col("in_calibration") | (pl.col("split") == "test")).alias("in_calibration"))
    assert not leakage_report(t, bad, honest)["checks"]["calibration_within_train"]


def test_profiles_reject_bad_traces(tables):
    q, t, s, models = tables
    broken = t.with_columns(pl.when(pl.col("status") == "ok").then(None).otherwise(pl.col("quality")).alias("quality"))
    with pytest.raises(ValueError, match="quality is null"):
        build_profiles(broken, s, q, models)
    with pytest.raises(ValueError, match="calib_limit"):
        build_profiles(t, s, q, models, calib_limit={"nope": 3})


def test_group_aware_splits_never_straddle_a_group():
    """Variants of one question (same group_id) land in one split, for every seed; singletons are unchanged."""
    n = 300
    qs = pl.DataFrame({"query_id": [f"q{i}" for i in range(n)], "dataset": ["d"] * n,
                       "task_group": ["ocr" if i % 2 else "chart" for i in range(n)],
                       "group_id": [f"g{i // 5}" for i in range(n)]})
    for seed in range(4):
        sp = make_splits(qs, seed=seed).join(qs, on="query_id")
        per_group = sp.group_by("group_id").agg(pl.col("split").n_unique().alias("n"))
        assert per_group["n"].max() == 1
        assert set(sp["split"].to_list()) == {"train", "val", "test"}
    # the same groups through source_meta JSON give the same split
    meta = qs.with_columns(pl.format('{{"group_id": "{}"}}', pl.col("group_id")).alias("source_meta")).drop("group_id")
    a = make_splits(qs, seed=1)["split"].to_list()
    assert make_splits(meta, seed=1)["split"].to_list() == a
    # without groups every query is its own group: the split is the one before groups existed
    plain = qs.drop("group_id")
    assert make_splits(plain, seed=1).equals(make_splits(plain, seed=1, groups=plain["query_id"].to_list()))
