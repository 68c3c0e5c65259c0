"""Evaluation experiments: eval_results contract, oracle/random ordering, Welch test, pool masks, cold start."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
from scipy import stats

from router.data.routing_data import RoutingData, synthetic_routing_data
from router.evaluation.ablations import ablation_variants
from router.evaluation.config import EXPERIMENTS, LATENT, LEARNED_BASELINES, ORACLE, ROUTERS, EvalConfig
from router.evaluation.context import EvalContext
from router.evaluation.experiments import run_all, run_experiments
from router.evaluation.metrics.sweep import lambda_sweep
from router.evaluation.pool_changes import cold_start, pool_masks
from router.evaluation.profile_sources import (
    calibration_rows,
    default_cold_start_model,
    fallback_profile_source,
    insertion_view,
)
from router.evaluation.results import EvalOutput
from router.training.trainer import LatentRouterRouter
from warehouse.schemas import EVAL_RESULTS, ROUTING_DECISIONS


@pytest.fixture(scope="module")
def data() -> RoutingData:
    return synthetic_routing_data(n=320, k=4, seed=0)


@pytest.fixture(scope="module")
def cfg() -> EvalConfig:
    return EvalConfig.quick(cold_start_sizes=(0, 16), h_values=(0, 1), c_values=(1, 4))


@pytest.fixture(scope="module")
def ctx(data: RoutingData, cfg: EvalConfig) -> EvalContext:
    return EvalContext(data, cfg, run_id="test-run")


@pytest.fixture(scope="module")
def output(ctx: EvalContext) -> EvalOutput:
    return run_experiments(ctx)


def _summary(out: EvalOutput, setting: str, metric: str) -> dict[str, float]:
    f = out.tables["main_summary"].filter((pl.col("setting") == setting) & (pl.col("metric") == metric))
    return dict(zip(f["router"].to_list(), f["mean"].to_list(), strict=True))


def test_eval_results_conform_to_schema(output: EvalOutput) -> None:
    er = output.eval_results
    assert er.columns[: len(EVAL_RESULTS)] == list(EVAL_RESULTS)
    assert dict(zip(er.columns, er.dtypes, strict=False)) == EVAL_RESULTS
    assert set(er["experiment"].unique().to_list()) == set(EXPERIMENTS)
    assert set(er["setting"].unique().to_list()) <= {"oriented", "cost", "avg"}
    assert er.select(pl.exclude("value")).null_count().sum_horizontal().item() == 0
    assert (er["run_id"] == "test-run").all()
    # one value per (experiment, router, setting, seed, metric, pool, task_group)
    keys = ["experiment", "router", "setting", "seed", "metric", "pool", "task_group"]
    assert er.select(keys).is_duplicated().sum() == 0
    # every router of Table 1 has its primary metric for every seed
    main = er.filter((pl.col("experiment") == "main_table") & (pl.col("setting") == "avg") & (pl.col("seed") >= 0))
    assert set(main["router"].to_list()) == set(ROUTERS)
    assert main.height == len(ROUTERS) * 2


def test_oracle_bounds_every_router_and_random_is_low(output: EvalOutput) -> None:
    for setting, metric in (("oriented", "quality"), ("oriented", "rank_score"), ("cost", "rank_score"),
                            ("cost", "nauc_step")):
        vals = _summary(output, setting, metric)
        assert all(vals[ORACLE] >= v - 1e-9 for v in vals.values()), (setting, metric, vals)
    q = _summary(output, "oriented", "quality")
    learned = [q[r] for r in ("KNNRouter", "KMeansRouter", "MLPMFRouter", "VL feature router", LATENT)]
    # planted reversals: query-aware routers beat a uniform draw, which is near the bottom
    assert q["Random"] < np.mean(learned)
    assert q["Random"] < max(learned) - 0.1
    regret = _summary(output, "oriented", "regret")
    assert regret[ORACLE] == pytest.approx(0.0)
    assert min(regret.values()) >= 0


def test_welch_p_value_is_reported(output: EvalOutput) -> None:
    w = output.tables["welch"]
    assert set(w["setting"].to_list()) == {"oriented", "cost", "avg"}
    prim = w.filter(pl.col("metric") == "rank_score")
    assert prim.height == 3
    assert ORACLE not in prim["best_baseline"].to_list()
    for r in prim.iter_rows(named=True):
        # one split: Welch over seeds; NaN exactly when neither sample has spread (never "significant")
        if r["latent_std"] == 0 and r["baseline_std"] == 0:
            assert math.isnan(r["p"]) and not r["significant"]
        else:
            assert 0 <= r["p"] <= 1
        assert r["latent_is_best"] == (r["latent_mean"] > r["baseline_mean"])
        # the baseline named is the best non-oracle one of that column
        vals = _summary(output, r["setting"], "rank_score")
        others = {k: v for k, v in vals.items() if k not in (ORACLE, LATENT)}
        assert r["baseline_mean"] == pytest.approx(max(others.values()))
    rows = output.eval_results.filter(pl.col("metric") == "welch_p:rank_score")
    assert rows.height == 3 and (rows["seed"] == -1).all()


def test_routing_decisions_one_row_per_query_router_lambda(output: EvalOutput, data: RoutingData,
                                                           cfg: EvalConfig) -> None:
    rd = output.routing_decisions
    assert rd.columns[: len(ROUTING_DECISIONS)] == list(ROUTING_DECISIONS)
    n_test = len(data.idx("test"))
    assert rd.height == n_test * len(ROUTERS) * 2
    assert rd.select(["query_id", "router", "lambda"]).is_duplicated().sum() == 0
    assert sorted(rd["lambda"].unique().to_list()) == [0.0, cfg.decision_lambda]
    assert set(rd["query_id"].to_list()) == {data.query_ids[i] for i in data.idx("test")}
    qi = {q: i for i, q in enumerate(data.query_ids)}
    for r in rd.sample(50, seed=0).iter_rows(named=True):
        i, j = qi[r["query_id"]], data.model_ids.index(r["chosen_model"])
        assert r["quality"] == pytest.approx(float(data.quality[i, j]))
        assert r["cost_usd"] == pytest.approx(float(data.cost_usd[i, j]))
        assert set(json.loads(r["scores"])) <= set(data.model_ids)
        if r["lambda"] == 0.0:  # the oracle's pick is at least as good as anyone's
            assert data.quality[i, data.model_ids.index(r["oracle_model"])] >= r["quality"]
    # the decisions agree with the main table: LatentRouter's mean quality at lambda 0 is seed 0's accuracy
    lat = rd.filter((pl.col("router") == LATENT) & (pl.col("lambda") == 0.0))["quality"].mean()
    seed0 = output.eval_results.filter((pl.col("experiment") == "main_table") & (pl.col("router") == LATENT)
                                       & (pl.col("setting") == "oriented") & (pl.col("metric") == "quality")
                                       & (pl.col("seed") == 0))["value"].item()
    assert lat == pytest.approx(seed0)


def test_pool_changes_mask_models_and_one_model_pool_has_zero_regret(output: EvalOutput, data: RoutingData,
                                                                      cfg: EvalConfig) -> None:
    masks = dict(pool_masks(data, cfg, seed=0))
    assert set(masks) == {"full", "remove_strongest", "remove_cheapest", "remove_random_30pct",
                          "leave_one_model_out", "one_model"}
    assert [m.sum() for m in masks["one_model"]] == [1] * data.k
    assert all(m.sum() == data.k - 1 for m in masks["leave_one_model_out"])
    tr = data.idx("train")
    removed = int(np.flatnonzero(~masks["remove_strongest"][0])[0])
    val = data.idx("val")
    assert removed == int(np.argmax(data.quality[val].mean(0)))  # decided on validation, not test
    assert tr.size  # (train rows exist, so cheapest is train-based)

    detail = output.tables["pool_changes_detail"]
    one = detail.filter(pl.col("pool") == "one_model")
    assert one.height == data.k * len(cfg.seeds) * 3
    assert (one["regret"] == 0).all() and (one["cost_regret"] == 0).all()
    # with one model every router makes the same choice, so the primary metric coincides
    per = one.group_by(["seed", "models"]).agg(pl.col("primary").n_unique().alias("distinct"))
    assert (per["distinct"] == 1).all()
    # the recomputed pool oracle never has regret; the removed model never appears in its pool's list
    assert (detail.filter(pl.col("router") == ORACLE)["regret"] == 0).all()
    rs = detail.filter(pl.col("pool") == "remove_strongest")
    assert not any(data.model_ids[removed] in m.split(",") for m in rs["models"].to_list())
    summary = output.tables["pool_changes"]
    assert summary.filter(pl.col("router") == LATENT)["latency_ms_mean"].is_not_null().all()


def test_masked_latent_router_never_picks_a_removed_model(data: RoutingData, ctx: EvalContext,
                                                          output: EvalOutput) -> None:
    router = ctx.latent("cost", 0)  # the fit the pool-change experiment used
    te = ctx.test
    for pool, masks in pool_masks(data, ctx.cfg, 0):
        for mask in masks:
            sw = lambda_sweep(router, data, te, ctx.lambdas, data.avail[te] & mask[None, :])
            assert mask[np.unique(sw.choices)].all(), pool


def test_fits_never_read_test_outcomes(data: RoutingData, ctx: EvalContext, output: EvalOutput) -> None:
    """Scrambling every test-row outcome and cost changes no fitted router's test predictions."""
    te = data.idx("test")
    rng = np.random.default_rng(1)
    poisoned = replace(data, quality=data.quality.copy(), cost=data.cost.copy(), cost_usd=data.cost_usd.copy())
    poisoned.quality[te] = rng.permutation(1.0 - poisoned.quality[te])
    poisoned.cost[te] *= 7.0
    poisoned.cost_usd[te] *= 7.0
    clean, dirty = ctx, EvalContext(poisoned, ctx.cfg)
    for name in ("KNNRouter", "KMeansRouter", "MLPMFRouter", "VL feature router", LATENT):
        a = clean.router_for(name, "oriented", 0).predict(data, te)[0]
        b = dirty.router_for(name, "oriented", 0).predict(poisoned, te)[0]
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=name)
    model = default_cold_start_model(data)
    assert model == default_cold_start_model(poisoned)
    np.testing.assert_allclose(fallback_profile_source(data, model)(16), fallback_profile_source(poisoned, model)(16))


def test_cold_start_interface_with_callable_and_mapping(data: RoutingData) -> None:
    model = data.model_ids[2]
    j = 2
    calls: list[int | None] = []
    base = fallback_profile_source(data, model, seed=0)

    def profile_fn(n: int | None) -> np.ndarray:
        calls.append(n)
        return base(n)

    cfg = EvalConfig.quick(seeds=(0,), cold_start_model=model, cold_start_sizes=(0, 16), experiments=("cold_start",))
    res = cold_start(EvalContext(data, cfg, profile_source=profile_fn))
    assert calls == [None, 0, 16]  # the full-calibration view first: the router trains on it
    table = res.tables["cold_start"]
    assert table["calib"].to_list() == ["0", "16", "full", "excluded", "seen in training"]
    assert table["n_used"].null_count() == table.height  # the caller's source defines its own subsets
    assert table["primary_mean"].is_finite().all() and (table["regret_mean"] >= 0).all()
    assert set(res.results["pool"].unique().to_list()) == {
        f"insert:{model}:calib=0", f"insert:{model}:calib=16", f"insert:{model}:calib=full", f"without:{model}",
        f"seen:{model}"}

    # a mapping works too, with a row, a whole matrix or a RoutingData per n (which also brings exp_cost,
    # aligned by model and query id even when its order differs)
    other = data.subset_models(list(reversed(data.model_ids)))
    other.model_feats[data.k - 1 - j] = 0.0
    other.exp_cost[:, data.k - 1 - j] = 0.5
    mapping = {0: base(0), 16: other, None: data.model_feats}
    np.testing.assert_allclose(insertion_view(mapping, 0, data, model).model_feats[j], base(0))
    view16 = insertion_view(mapping, 16, data, model)
    np.testing.assert_allclose(view16.model_feats[j], 0.0)
    np.testing.assert_allclose(view16.exp_cost[:, j], 0.5)
    np.testing.assert_allclose(view16.model_feats[[i for i in range(data.k) if i != j]],
                               data.model_feats[[i for i in range(data.k) if i != j]])
    np.testing.assert_allclose(insertion_view(mapping, None, data, model).model_feats, data.model_feats)
    with pytest.raises(ValueError, match="shape"):
        insertion_view({0: np.zeros(3)}, 0, data, model)
    with pytest.raises(ValueError, match="lacks model"):
        insertion_view({0: data.subset_models(data.model_ids[:2])}, 0, data, model)


def test_cold_start_training_masks_the_held_out_model(data: RoutingData, monkeypatch: pytest.MonkeyPatch) -> None:
    model = data.model_ids[0]
    seen: list[tuple[bool, bool]] = []  # (held-out model available in any fit row, fitted on the full data)
    original = LatentRouterRouter.fit

    def spy(self: LatentRouterRouter, d: RoutingData, seed: int = 0) -> LatentRouterRouter:
        rows = np.concatenate([d.idx("train"), d.idx("val")])
        seen.append((bool(d.avail[rows, 0].any()), d is data))
        return original(self, d, seed)

    monkeypatch.setattr(LatentRouterRouter, "fit", spy)
    cfg = EvalConfig.quick(seeds=(0,), cold_start_model=model, cold_start_sizes=(0,), experiments=("cold_start",),
                           tuning_trials=1)
    ctx = EvalContext(data, cfg)
    res = cold_start(ctx)
    # two cold-start fits (oriented, cost) never saw the model; two main fits ("seen in training") did
    assert sorted(seen) == [(False, False), (False, False), (True, True), (True, True)]
    assert res.tables["cold_start"]["n_used"].to_list()[:2] == [0, None]  # fallback: n examples, full
    # the cold-start router's scores for the inserted model depend on its profile row (token, not an ID)
    router = ctx.latent("oriented", 0, tag=f"cold:{model}")
    te = ctx.test
    s0 = router.scores(insertion_view(fallback_profile_source(data, model), 0, data, model), te, 0.0)
    s_full = router.scores(data, te, 0.0)
    assert not np.allclose(s0[:, 0], s_full[:, 0])
    rows = calibration_rows(data, model, 16, seed=0)
    assert len(rows) == 16 and set(data.split[rows]) == {"train"}


# synthetic_routing_data: skill on latent type t is the accuracy on task group ["ocr", "chart", "math", "general"][t]
SYNTHETIC_STATS = {"skill_0": "acc:ocr", "skill_1": "acc:chart", "skill_2": "acc:math", "skill_3": "acc:general",
                   "price": "cost"}


def test_fallback_profile_recovers_synthetic_profiles() -> None:
    data = synthetic_routing_data(n=600, k=5, seed=0)  # 4 other models to fit each column's affine map on
    for j, model in enumerate(data.model_ids):
        src = fallback_profile_source(data, model, seed=0, column_stats=SYNTHETIC_STATS)
        true = data.model_feats[j]
        full, few, none = src(len(data.idx("train"))), src(16), src(0)
        assert np.corrcoef(full, true)[0, 1] > 0.9, model
        # more calibration examples move the profile toward the truth; price is known before answering
        assert np.linalg.norm(full - true) < np.linalg.norm(none - true), model
        assert full[-1] == pytest.approx(none[-1]) == pytest.approx(few[-1])
        np.testing.assert_allclose(src(None), true)
    auto = fallback_profile_source(data, data.model_ids[0])(0)  # automatic column matching still gives a row
    assert auto.shape == (data.model_feats.shape[1],) and np.isfinite(auto).all()
    with pytest.raises(ValueError, match="unknown column"):
        fallback_profile_source(data, data.model_ids[0], column_stats={"skill_0": "latency"})


def test_ablations_cover_components_depth_and_capsules(output: EvalOutput, cfg: EvalConfig) -> None:
    variants = ablation_variants(cfg.model, cfg.h_values, cfg.c_values)
    by_label = {label: v for _, label, v in variants}
    assert not by_label["w/o routing capsules"].use_capsules
    assert not by_label["w/o model capability tokens"].use_model_tokens
    assert by_label["query-blind (H=0)"].effective_layers == 0
    read_once = by_label["w/o latent communication (read once)"]
    assert not read_once.use_model_exchange and read_once.effective_layers == 1
    assert not by_label["w/o pairwise bias"].use_pairwise_bias and not by_label["w/o feedback"].use_feedback
    assert not by_label["w/o distributional prediction"].distributional
    assert not by_label["w/o bounded correction"].bounded_correction
    assert by_label["H=1"].n_layers == 1 and by_label["C=4"].n_capsules == 4
    ab = output.tables["ablations"]
    assert set(ab["label"].to_list()) == set(by_label)
    prim = ab.filter(pl.col("metric") == "rank_score")
    assert prim.group_by("label").agg(pl.col("setting").n_unique())["setting"].min() == 3
    # no communication and H = 0 are the same model, trained once
    def val(label: str) -> float:
        return prim.filter((pl.col("label") == label) & (pl.col("setting") == "avg"))["mean"].item()
    assert val("H=0") == val("query-blind (H=0)")


def test_outcome_prediction_and_efficiency_tables(output: EvalOutput) -> None:
    oc = output.tables["outcome"]
    methods = set(oc["router"].to_list())
    assert {"Direct classifier (VL feature)", "Point-score router", "No latent communication", LATENT} <= methods
    assert set(oc["metric"].to_list()) >= {"mse", "ndcg", "spearman", "top3_recall"}
    nd = oc.filter(pl.col("metric") == "ndcg")["mean"]
    assert nd.is_between(0, 1).all()
    ef = output.tables["efficiency"]
    assert set(ef["router"].to_list()) == {*LEARNED_BASELINES, LATENT}  # whatever the router list holds
    assert (ef["params"] > 0).all() and (ef["latency_ms_batch"] > 0).all()


def test_results_are_deterministic(data: RoutingData, cfg: EvalConfig, output: EvalOutput) -> None:
    again = run_all(data, replace(cfg, seeds=(1,), experiments=("main_table",)), run_id="test-run")
    keep = (pl.col("experiment") == "main_table") & (pl.col("seed") == 1)
    cols = ["router", "setting", "metric", "value"]
    a = output.eval_results.filter(keep).select(cols).sort(cols[:3])
    assert again.eval_results.filter(keep).select(cols).sort(cols[:3]).equals(a)


def test_config_and_data_errors_are_clear(data: RoutingData) -> None:
    with pytest.raises(ValueError, match="unknown experiment"):
        EvalConfig(experiments=("main_table", "nope"))
    with pytest.raises(ValueError, match="primary_metric"):
        EvalConfig(primary_metric="accuracy")
    no_test = replace(data, split=np.where(data.split == "test", "train", data.split).astype(object))
    with pytest.raises(ValueError, match="'test' rows"):
        EvalContext(no_test, EvalConfig.quick())
    with pytest.raises(ValueError, match="not in the pool"):
        cold_start(EvalContext(data, EvalConfig.quick(seeds=(0,), cold_start_model="nope")))


TUNED = ("KNNRouter", "RouteLLM-MF", LATENT)


def test_hyperparameters_are_chosen_on_validation_only(data: RoutingData) -> None:
    """Poisoning every test outcome (quality and cost) leaves the chosen values and their scores unchanged."""
    cfg = EvalConfig.quick(seeds=(0,), tuning_trials=3)
    clean = EvalContext(data, cfg)
    te = data.idx("test")
    rng = np.random.default_rng(5)
    q, usd = data.quality.copy(), data.cost_usd.copy()
    q[te] = rng.random((len(te), data.k)).astype(np.float32)
    usd[te] = usd[te] * rng.uniform(0.1, 10.0, (len(te), data.k))
    poisoned = EvalContext(replace(data, quality=q, cost_usd=usd), cfg)
    for name in TUNED:
        assert len(clean.candidates(name)) == 3  # the same budget for every trainable router
        assert poisoned.hparams(name) == clean.hparams(name)
        np.testing.assert_allclose(poisoned.tuning_log[name]["scores"], clean.tuning_log[name]["scores"])
    assert clean.candidates("Random") == [{}]


def test_repeated_splits_rebuild_the_split_and_pair_the_test(data: RoutingData) -> None:
    cfg = EvalConfig.quick(seeds=(0,), n_splits=3, tuning_trials=1, experiments=("main_table",))
    groups = [f"g{i // 4}" for i in range(data.n)]  # 4 variants per question
    ctx = EvalContext(data, cfg, groups=groups, routers=("Strongest", "Cheapest", "KNNRouter", LATENT))
    out = run_experiments(ctx)
    s1, s2 = ctx.split_ctx(1).data, ctx.split_ctx(2).data
    assert not np.array_equal(s1.split, s2.split) and not np.array_equal(s1.split, data.split)
    for d in (s1, s2):  # group-aware: no group straddles two splits
        by_group: dict[str, set[str]] = {}
        for g, sp in zip(groups, d.split, strict=True):
            by_group.setdefault(g, set()).add(sp)
        assert max(len(v) for v in by_group.values()) == 1
        # the cost normaliser is rebuilt from the split's own train rows
        tr = d.idx("train")
        means = np.nanmean(np.where(d.avail[tr], d.cost[tr], np.nan), axis=0)
        assert np.nanmax(means) == pytest.approx(1.0, rel=1e-5)
    res = out.eval_results.filter((pl.col("experiment") == "main_table") & (pl.col("seed") >= 0))
    assert sorted(res["split"].unique().to_list()) == [0, 1, 2]
    comps = out.tables["comparisons"]
    assert set(comps["baseline"].to_list()) == {"Strongest", "Cheapest", "KNNRouter"}
    assert (comps["test"] == "paired t over splits").all()
    # the paired test is over the 3 per-split means
    r = comps.filter((pl.col("setting") == "avg") & (pl.col("baseline") == "KNNRouter")).row(0, named=True)
    key = f"avg/{cfg.primary_metric}"
    lat = [ctx.split_ctx(i).seed_metrics(LATENT, 0)[key] for i in range(3)]
    knn = [ctx.split_ctx(i).seed_metrics("KNNRouter", 0)[key] for i in range(3)]
    assert r["paired_p"] == pytest.approx(stats.ttest_rel(lat, knn).pvalue)
    # 3 splits: the paired test is what the report's sentences and significance flags rest on
    from router.evaluation.reports.tables import verdict_sentences

    assert all("paired t over 3 splits, two-sided p = " in v for v in verdict_sentences(out))
    for row in comps.iter_rows(named=True):
        assert row["significant"] == (row["diff"] > 0 and row["paired_p"] < 0.05)
    # Strongest vs Cheapest are deterministic per split, but still differ across splits: a real test;
    # the Rank Score bounds are one benchmark constant stored with the run
    bounds = out.eval_results.filter(pl.col("router") == "benchmark")
    assert set(bounds["metric"].to_list()) == {"rank_cmin", "rank_cmax", "rank_beta"}
    assert out.meta["rank_bounds_usd"] == list(ctx.bounds) and out.meta["n_splits"] == 3
