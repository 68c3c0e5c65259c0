"""Hand-computed checks of every evaluation metric in router.evaluation.metrics."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from router.data.routing_data import RoutingData, synthetic_routing_data
from router.evaluation.metrics.cost import (
    best_rank_score,
    cost_bounds,
    nauc,
    pareto_frontier,
    ps,
    qnc,
    rank_bounds,
    rank_score,
    single_model_points,
    strongest_single,
)
from router.evaluation.metrics.prediction import ndcg, outcome_mse, spearman, top3_recall
from router.evaluation.metrics.statistics import ci95, mean_std, paired_t, welch_from_stats, welch_t
from router.evaluation.metrics.sweep import (
    budget_metrics,
    budget_picks,
    budget_sweep,
    evaluate_by_group,
    evaluate_router,
    group_rows,
    lambda_sweep,
    oracle_regret,
)
from router.models.base import Router


def tiny(quality, cost, cost_usd=None, avail=None, groups=None) -> RoutingData:
    """A RoutingData whose outcome matrices are exactly the given ones."""
    q = np.asarray(quality, dtype=np.float32)
    n, k = q.shape
    base = synthetic_routing_data(n=n, k=k, seed=0)
    c = np.asarray(cost, dtype=np.float32)
    return replace(
        base,
        quality=q,
        cost=c,
        cost_usd=np.asarray(c if cost_usd is None else cost_usd, dtype=np.float64),
        avail=np.ones((n, k), bool) if avail is None else np.asarray(avail, bool),
        task_group=np.array(groups if groups is not None else ["general"] * n, dtype=object),
    )


class TableRouter(Router):
    """Returns fixed predicted quality / cost tables (base selection)."""

    name = "table"

    def __init__(self, q, c) -> None:
        self.q, self.c = np.asarray(q, float), np.asarray(c, float)

    def fit(self, data, seed=0):
        return self

    def predict(self, data, rows):
        return self.q[rows], self.c[rows]


class SelectRouter(TableRouter):
    """Same tables, but through an overridden select (the slow path of lambda_sweep)."""

    def select(self, data, rows, lam, avail=None):
        return super().select(data, rows, lam, avail)


# ----------------------------------------------------------------------------------------------- rank score


def test_rank_score_formula_and_clipping():
    # cmin=1, cmax=16: log2 range 0..4; cost 4 -> C = (4 - 2) / 4 = 0.5
    assert rank_score(0.8, 4.0, 1.0, 16.0) == pytest.approx(1.1 * 0.8 * 0.5 / (0.1 * 0.8 + 0.5))
    # below cmin clips to cmin -> C = 1
    assert rank_score(0.8, 0.5, 1.0, 16.0) == pytest.approx(1.1 * 0.8 / (0.08 + 1.0))
    assert rank_score(0.8, 0.5, 1.0, 16.0) == rank_score(0.8, 1.0, 1.0, 16.0)
    # above cmax clips to cmax -> C = 0 -> S = 0
    assert rank_score(0.8, 32.0, 1.0, 16.0) == 0.0
    assert rank_score(0.8, 16.0, 1.0, 16.0) == 0.0
    assert rank_score(0.0, 1.0, 1.0, 16.0) == 0.0
    assert rank_score(1.0, 1.0, 1.0, 16.0) == pytest.approx(1.0)
    # beta changes the weighting
    assert rank_score(0.8, 4.0, 1.0, 16.0, beta=1.0) == pytest.approx(2 * 0.8 * 0.5 / (0.8 + 0.5))
    # degenerate bounds: cost carries no information, C = 1
    assert rank_score(0.6, 3.0, 2.0, 2.0) == pytest.approx(1.1 * 0.6 / (0.06 + 1.0))


@pytest.mark.parametrize("args", [(0.5, 1.0, 0.0, 1.0), (0.5, 1.0, 2.0, 1.0), (1.5, 1.0, 1.0, 2.0),
                                  (0.5, float("nan"), 1.0, 2.0)])
def test_rank_score_rejects_bad_input(args):
    with pytest.raises(ValueError):
        rank_score(*args)


def test_cost_bounds_per_sample_matrix_skip_unavailable_and_zero_cost():
    usd = [[1.0, 4.0, 0.0], [3.0, 8.0, 0.0], [100.0, 6.0, 0.0]]
    avail = [[True, True, True], [True, True, True], [False, True, True]]
    d = tiny(np.zeros((3, 3)), np.zeros((3, 3)), cost_usd=usd, avail=avail)
    # min / max over the available entries of the per-sample matrix (100 is unavailable, 0 is not positive)
    assert cost_bounds(d) == (1.0, 8.0)
    assert cost_bounds(d, rows=np.array([0])) == (1.0, 4.0)
    free = tiny(np.zeros((2, 2)), np.zeros((2, 2)), cost_usd=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="positive"):
        cost_bounds(free)
    assert not rank_bounds(free).defined


def test_rank_score_and_nauc_by_hand_with_and_without_cost_bounds_json():
    """Rank Score and budget-sweep nAUC of a hand-made 4 x 3 matrix, worked out from the references."""
    q = [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0]]
    usd = [[8.0, 2.0, 1.0], [8.0, 2.0, 1.0], [8.0, 2.0, 0.5], [8.0, 4.0, 1.0]]
    d = tiny(q, np.asarray(usd) / 8.0, cost_usd=usd)
    # no cost_bounds.json: cmin = 0.5, cmax = 8 (per-sample matrix, not the model means 1.75 / 8)
    rb = rank_bounds(d)
    assert (rb.cmin, rb.cmax, rb.beta, rb.source) == (0.5, 8.0, 0.1, "per-sample cost matrix")
    # always model 1: A = 3/4, mean cost 2.5; C = (log2 8 - log2 2.5) / (log2 8 - log2 0.5) = (3 - 1.3219) / 4
    c_term = (3.0 - math.log2(2.5)) / 4.0
    expect = 1.1 * 0.75 * c_term / (0.1 * 0.75 + c_term)
    assert rank_score(0.75, 2.5, *rb.pair, rb.beta) == pytest.approx(expect)
    # shipped bounds (VL-RouterBench cost_bounds.json, with its own beta) replace the computed ones
    shipped = rank_bounds(d, {"*": {"cmin": 1.0, "cmax": 16.0, "beta": 0.5}, "ChartQA": {"cmin": 2, "cmax": 3}})
    assert (shipped.cmin, shipped.cmax, shipped.beta, shipped.source) == (1.0, 16.0, 0.5, "cost_bounds.json")
    c2 = (4.0 - math.log2(2.5)) / 4.0
    assert rank_score(0.75, 2.5, *shipped.pair, shipped.beta) == pytest.approx(1.5 * 0.75 * c2 / (0.375 + c2))
    assert rank_bounds(d, {"cmin": 1.0, "cmax": 16.0}).source == "cost_bounds.json"
    # budget sweep over *predicted* costs: model j predicted quality [.9, .8, .3], cost [1, .25, .125]
    qh = np.tile([0.9, 0.8, 0.3], (4, 1))
    ch = np.tile([1.0, 0.25, 0.125], (4, 1))
    bs = budget_sweep(TableRouter(qh, ch), d, np.arange(4), n_budgets=5)
    # budgets = quantiles of the 12 predicted costs; budget < .25 -> model 2, [.25, 1) -> model 1, 1 -> model 0
    assert set(map(tuple, bs.choices[:, 0:1].tolist())) == {(2,), (1,), (0,)}
    # realised points (normalised cost): model 2 (0.875/8 = .109375, q .25), model 1 (.3125, .75), model 0 (1, .75)
    pts = sorted({(round(c, 6), q_) for c, q_ in bs.points().tolist()})
    assert pts == [(0.109375, 0.25), (0.3125, 0.75), (1.0, 0.75)]
    # Pareto frontier: (.109375, .25), (.3125, .75); area = .203125 * .5 over range .203125 = 0.5
    m = budget_metrics(bs, d)
    assert m["cost/nauc_budget"] == pytest.approx(0.5)
    assert m["cost/ps"] == pytest.approx(0.75)
    # strongest single model: models 0 and 1 both .75, ties to the cheaper model 1 (cost .3125) -> QNC 1
    assert m["cost/qnc"] == pytest.approx(1.0)
    # a fixed router has one operating point: nAUC NaN
    fixed = TableRouter(qh, ch)
    fixed.learned = False
    one = budget_sweep(fixed, d, np.arange(4))
    assert len(one.budgets) == 1 and math.isnan(budget_metrics(one, d)["cost/nauc_budget"])


def test_budget_picks_best_predicted_quality_that_fits():
    qh = np.array([[0.9, 0.5, 0.4], [0.2, 0.6, 0.6]])
    ch = np.array([[1.0, 0.5, 0.1], [1.0, 0.5, 0.1]])
    mask = np.array([[True, True, True], [True, False, True]])
    np.testing.assert_array_equal(budget_picks(qh, ch, mask, 0.5), [1, 2])
    np.testing.assert_array_equal(budget_picks(qh, ch, mask, 0.05), [2, 2])  # nothing fits: cheapest
    np.testing.assert_array_equal(budget_picks(qh, ch, mask, 1.0), [0, 2])  # ties (.6, .6) -> cheaper


def test_best_rank_score_picks_best_lambda():
    accs, costs, lams = [0.9, 0.8, 0.5], [16.0, 4.0, 1.0], [0.0, 0.5, 5.0]
    best, lam = best_rank_score(accs, costs, lams, 1.0, 16.0)
    assert lam == 0.5
    assert best == pytest.approx(0.88 * 0.5 / 0.58)
    with pytest.raises(ValueError):
        best_rank_score([0.5], [1.0, 2.0], [0.0], 1.0, 2.0)


# ----------------------------------------------------------------------------------------------- frontier


def test_pareto_frontier_removes_dominated_and_duplicates():
    pts = [(1, 0.5), (2, 0.4), (3, 0.9), (3, 0.7), (4, 0.9), (0.5, 0.3), (1, 0.5), (np.nan, 1.0)]
    np.testing.assert_allclose(pareto_frontier(pts), [[0.5, 0.3], [1, 0.5], [3, 0.9]])
    assert pareto_frontier([]).shape == (0, 2)


def test_nauc_interp_vs_step():
    pts = [(0.0, 0.5), (0.5, 0.4), (1.0, 0.9)]
    # interp (MMR-Bench): frontier (0, .5)-(1, .9): area 0.7 over range 1
    assert nauc(pts, "interp") == pytest.approx(0.7)
    # step (LatentRouter): (0,.5),(.5,.5),(1,.9): 0.5*0.5 + 0.5*(0.5+0.9)/2 = 0.6
    assert nauc(pts, "step") == pytest.approx(0.6)
    # an expensive dominated point: dropped by interp, a flat segment at the running max for step
    pts4 = [*pts, (2.0, 0.8)]
    assert nauc(pts4, "interp") == pytest.approx(0.7)
    assert nauc(pts4, "step") == pytest.approx((0.6 + 0.9) / 2.0)
    # no dominated point: both agree; (0,.2),(1,.6),(3,1): (0.4 + 1.6) / 3
    clean = [(3.0, 1.0), (0.0, 0.2), (1.0, 0.6)]
    assert nauc(clean, "interp") == pytest.approx(2.0 / 3.0)
    assert nauc(clean, "step") == pytest.approx(2.0 / 3.0)
    # the cost scale does not matter
    assert nauc([(10 * c, q) for c, q in pts4], "step") == pytest.approx(0.75)
    with pytest.raises(ValueError):
        nauc(pts, "trapz")


def test_nauc_single_point_and_degenerate():
    # the reference (interp) definition: fewer than two frontier points has no area -> NaN
    assert math.isnan(nauc([(0.3, 0.6)], "interp"))
    assert math.isnan(nauc([(0.3, 0.6), (0.5, 0.6), (0.9, 0.2)], "interp"))  # one frontier point of three
    assert nauc([(0.3, 0.6)], "step") == pytest.approx(0.6)
    # same cost twice: one distinct point
    assert math.isnan(nauc([(1.0, 0.5), (1.0, 0.7)], "interp"))
    assert nauc([(1.0, 0.5), (1.0, 0.7)], "step") == pytest.approx(0.7)
    assert math.isnan(nauc([], "interp"))


def test_ps_and_qnc():
    pts = [(0.0, 0.5), (1.0, 0.7), (2.0, 0.9), (3.0, 0.8)]
    assert ps(pts) == pytest.approx(0.9)
    # strongest single model: quality 0.7 at cost 2 -> the router reaches 0.7 at cost 1 -> QNC 0.5
    assert qnc(pts, 0.7, 2.0) == pytest.approx(0.5)
    assert qnc(pts, 0.85, 4.0) == pytest.approx(0.5)
    assert qnc(pts, 0.95, 2.0) == math.inf
    assert qnc(pts, 0.7, 0.0) == math.inf


def test_single_model_points_and_strongest():
    q = [[1, 0, 1], [0, 0, 1], [1, 1, 0]]
    c = [[0.1, 0.5, 1.0], [0.3, 0.5, 1.0], [0.2, 0.5, 1.0]]
    avail = [[True, True, True], [True, True, True], [True, False, True]]
    d = tiny(q, c, avail=avail)
    pts = single_model_points(d, np.arange(3))
    np.testing.assert_allclose(pts, [[0.2, 2 / 3], [0.5, 0.0], [1.0, 2 / 3]], rtol=1e-6)
    # ties on quality go to the cheaper model
    j, qb, cb = strongest_single(pts)
    assert (j, qb, cb) == (0, pytest.approx(2 / 3), pytest.approx(0.2))


# ----------------------------------------------------------------------------------------------- sweep / regret


def _sweep_data():
    q = [[1, 0], [0, 1], [1, 1], [0, 0]]
    c = [[1.0, 0.2], [1.0, 0.2], [1.0, 0.2], [1.0, 0.2]]
    usd = [[4.0, 1.0], [4.0, 1.0], [4.0, 1.0], [4.0, 1.0]]
    return tiny(q, c, cost_usd=usd, groups=["ocr", "ocr", "chart", "chart"])


def test_lambda_sweep_picks_outcomes_and_paths_agree():
    d = _sweep_data()
    # predicted quality: model 0 always looks better by 0.3
    qh = np.array([[0.8, 0.5]] * 4)
    ch = np.array([[1.0, 0.2]] * 4)
    rows = np.arange(4)
    sw = lambda_sweep(TableRouter(qh, ch), d, rows, [1.0])
    np.testing.assert_allclose(sw.lambdas, [0.0, 1.0])  # 0 is always added
    # lambda 0 -> model 0 everywhere; lambda 1: 0.8 - 1 < 0.5 - 0.2 -> model 1 everywhere
    np.testing.assert_array_equal(sw.choices, [[0, 0, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(sw.quality, [0.5, 0.5])
    np.testing.assert_allclose(sw.cost, [1.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(sw.cost_usd, [4.0, 1.0])
    slow = lambda_sweep(SelectRouter(qh, ch), d, rows, [1.0])
    np.testing.assert_array_equal(slow.choices, sw.choices)
    # a pool without model 0 on row 1 and with no model at all on row 3
    avail = np.array([[1, 1], [0, 1], [1, 1], [0, 0]], bool)
    sw2 = lambda_sweep(TableRouter(qh, ch), d, rows, [1.0], avail=avail)
    np.testing.assert_array_equal(sw2.rows, [0, 1, 2])
    np.testing.assert_array_equal(sw2.choices[0], [0, 1, 0])


def test_sweep_rejects_router_choosing_unavailable():
    class Bad(TableRouter):
        def select(self, data, rows, lam, avail=None):
            return np.zeros(len(rows), dtype=int)

    d = _sweep_data()
    avail = np.array([[0, 1]] * 4, bool)
    with pytest.raises(ValueError, match="unavailable model 'm0'"):
        lambda_sweep(Bad(np.zeros((4, 2)), np.zeros((4, 2))), d, np.arange(4), [0.0], avail=avail)


def test_oracle_regret_hand_computed():
    d = tiny([[1, 0], [0, 1], [1, 1]], [[1.0, 0.2]] * 3)
    choice = np.array([0, 0, 0])
    assert oracle_regret(d, np.arange(3), choice, 0.0) == pytest.approx(1 / 3)
    # lambda 1: u = q - c = [[0, -0.2], [-1, 0.8], [0, 0.8]]; picking model 0 loses 0 + 1.8 + 0.8
    assert oracle_regret(d, np.arange(3), choice, 1.0) == pytest.approx(2.6 / 3)
    # the pool restricts the best: without model 1 on row 1, picking model 0 there is no regret
    avail = np.array([[1, 1], [1, 0], [1, 1]], bool)
    assert oracle_regret(d, np.arange(3), choice, 0.0, avail) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------- outcome metrics


def test_mse_over_available_entries_only():
    pred = np.array([[0.5, 9.0], [1.0, 0.0]])
    true = np.array([[1.0, 0.0], [0.0, 0.0]])
    avail = np.array([[True, False], [True, True]])
    assert outcome_mse(pred, true, avail) == pytest.approx((0.25 + 1.0 + 0.0) / 3)


def test_ndcg_hand_computed():
    true = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    pred = np.array([[0.2, 0.9, 0.5], [0.1, 0.2, 0.3]])
    avail = np.ones((2, 3), bool)
    # row 0: predicted order m1 (0), m2 (.5), m0 (1); row 1 has ideal DCG 0 and is skipped
    dcg = 0.0 + 0.5 / math.log2(3) + 1.0 / math.log2(4)
    idcg = 1.0 + 0.5 / math.log2(3)
    assert ndcg(pred, true, avail) == pytest.approx(dcg / idcg)
    assert ndcg(pred, true, avail, k=1) == pytest.approx(0.0)
    assert ndcg(pred, true, avail, k=2) == pytest.approx((0.5 / math.log2(3)) / idcg)
    # perfect order -> 1; removing the best model from the pool changes the ideal list
    assert ndcg(true, true, avail) == pytest.approx(1.0)
    m = np.array([[False, True, True], [True, True, True]])
    assert ndcg(pred, true, m) == pytest.approx((0.5 / math.log2(3)) / 0.5)


def test_spearman_per_query_mean_skips_constant_rows():
    pred = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    true = np.array([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    avail = np.ones((4, 3), bool)
    # row 0: rho = 1 - 6*2/(3*8) = 0.5; row 1: -1; rows 2 (constant truth) and 3 (constant prediction) skipped
    assert spearman(pred, true, avail) == pytest.approx((0.5 - 1.0) / 2)
    assert math.isnan(spearman(pred[2:], true[2:], avail[2:]))


def test_top3_recall_of_true_best_models():
    true = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], float)
    pred = np.array([[0.9, 0.1, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]])
    avail = np.ones((3, 5), bool)
    # row 0: best {0, 1}, top-3 {0, 2, 3} -> 1/2; row 1 all tie -> skipped; row 2: best {4} not in top-3 -> 0
    assert top3_recall(pred, true, avail) == pytest.approx(0.25)
    # mask models 2 and 3 out of row 0: top-3 of {0, 1, 4} holds both best models
    avail[0, 2:4] = False
    assert top3_recall(pred[:1], true[:1], avail[:1]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------- evaluate_router


def test_evaluate_router_settings_are_consistent():
    d = _sweep_data()
    qh = np.array([[0.8, 0.5]] * 4)
    ch = np.array([[1.0, 0.2]] * 4)
    rows = np.arange(4)
    out = evaluate_router(TableRouter(qh, ch), d, rows, [1.0])
    cmin, cmax = 1.0, 4.0  # min / max of the per-sample cost_usd matrix
    assert (out["rank_cmin"], out["rank_cmax"]) == (cmin, cmax)
    assert out["oriented/quality"] == pytest.approx(0.5)
    assert out["oriented/cost_usd"] == pytest.approx(4.0)
    assert out["oriented/rank_score"] == 0.0  # the most expensive model every time
    assert math.isnan(out["oriented/nauc_interp"]) and out["oriented/nauc_step"] == pytest.approx(0.5)
    # lambda 1 routes to the cheap model: same quality, cost 1 -> C = 1
    assert out["cost/rank_score"] == pytest.approx(1.1 * 0.5 / (0.05 + 1.0))
    assert out["cost/rank_lambda"] == 1.0
    # both points have quality .5: the frontier is the cheap point alone -> no area (NaN) in both sweeps
    assert math.isnan(out["cost/nauc_interp"]) and math.isnan(out["cost/nauc_budget"])
    assert out["cost/ps"] == out["cost/ps_lambda"] == pytest.approx(0.5)
    # strongest single model: both 0.5, cheaper model 1 (cost .2) -> router reaches it at cost .2 -> QNC 1
    assert out["cost/qnc"] == out["cost/qnc_lambda"] == pytest.approx(1.0)
    # regret at lambda 0: rows 1 (0 vs 1) -> 1/4; at lambda 1 (u = q - c): choices model 1:
    # best u per row [0, .8, .8, -.2] vs chosen [-.2, .8, .8, -.2] -> .2/4
    assert out["oriented/regret"] == pytest.approx(0.25)
    assert out["cost/regret"] == pytest.approx((0.25 + 0.05) / 2)
    assert out["outcome/mse"] == pytest.approx(np.mean((qh - d.quality) ** 2))
    assert out["n_rows"] == 4.0


def test_outcome_metrics_only_for_routers_that_predict_outcomes():
    d = _sweep_data()
    r = TableRouter(np.zeros((4, 2)), np.zeros((4, 2)))
    r.predicts_outcomes = False
    out = evaluate_router(r, d, np.arange(4), [0.0])
    assert not any(k.startswith("outcome/") for k in out)


def test_group_breakdown():
    d = _sweep_data()
    r = TableRouter(np.array([[0.8, 0.5]] * 4), np.array([[1.0, 0.2]] * 4))
    groups = group_rows(d, np.arange(4))
    assert list(groups) == ["chart", "ocr"]
    np.testing.assert_array_equal(groups["ocr"], [0, 1])
    by = evaluate_by_group(r, d, np.arange(4), [1.0])
    # lambda 0 picks model 0: ocr rows (1, 0) -> 0.5; chart rows (1, 0) -> 0.5; regret ocr 1/2, chart 0
    assert by["ocr"]["oriented/quality"] == pytest.approx(0.5)
    assert by["ocr"]["oriented/regret"] == pytest.approx(0.5)
    assert by["chart"]["oriented/regret"] == pytest.approx(0.0)
    assert by["chart"]["rank_cmax"] == 4.0  # benchmark-wide bounds
    with pytest.raises(ValueError, match="no per-query field"):
        group_rows(d, np.arange(4), key="nope")


# ----------------------------------------------------------------------------------------------- statistics


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == (pytest.approx(2.0), pytest.approx(1.0))
    assert mean_std([0.7]) == (pytest.approx(0.7), 0.0)


def test_welch_against_scipy_and_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    t, p = welch_t(a, b)
    se = math.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 5)
    assert t == pytest.approx((2.5 - 6.0) / se)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert 0.05 < p < 0.1
    tf, pf = welch_from_stats(2.5, np.std(a, ddof=1), 4, 6.0, np.std(b, ddof=1), 5)
    assert (tf, pf) == (pytest.approx(t), pytest.approx(p))


def test_welch_zero_variance_and_bad_input():
    # two zero-variance samples carry no evidence: NaN, never p = 0 ("significant")
    for a, b in (([0.5] * 3, [0.5] * 3), ([0.7] * 3, [0.5] * 3), ([0.5] * 2, [0.7] * 3)):
        assert all(math.isnan(x) for x in welch_t(a, b))
    assert all(math.isnan(x) for x in welch_from_stats(0.7, 0.0, 3, 0.5, 0.0, 3))
    # one constant sample is an ordinary Welch test: se = sqrt(0.01 / 3), df = n_b - 1 = 2
    t, p = welch_t([0.5, 0.5, 0.5], [0.6, 0.7, 0.8])
    assert t == pytest.approx(-0.2 / math.sqrt(0.01 / 3))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=2))
    with pytest.raises(ValueError):
        welch_t([0.5], [0.5, 0.6])
    with pytest.raises(ValueError):
        welch_t([0.5, float("nan")], [0.5, 0.6])


def test_paired_t_over_splits_and_zero_variance():
    a, b = [0.70, 0.72, 0.75, 0.71], [0.68, 0.69, 0.74, 0.70]
    t, p = paired_t(a, b)
    d = np.subtract(a, b)
    assert t == pytest.approx(d.mean() / (d.std(ddof=1) / 2.0))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), df=3))
    # identical differences on every split (or one split): no spread -> NaN, not "significant"
    assert all(math.isnan(x) for x in paired_t([0.7, 0.8, 0.9], [0.6, 0.7, 0.8]))
    assert all(math.isnan(x) for x in paired_t([0.7], [0.6]))
    m, half = ci95([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and half == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert math.isnan(ci95([1.0])[1])
