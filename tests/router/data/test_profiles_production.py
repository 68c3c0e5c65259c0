"""Production rows (labelled gateway requests) as extra calibration evidence of the models that served them:
they move that model's overall parts (and group parts only where the request named a group), no other
model's raw parts, never pairwise parts; the leakage proof accepts them and still catches val/test rows."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from router.data.calibration import calibration_rows
from router.data.leakage import leakage_report
from router.data.profiles import PAIRWISE_PARTS, build_profiles
from router.serving.gateway.served_log import production_traces
from tests.router.data.test_splits_profiles import make_models, make_queries, make_traces
from warehouse.schemas import SERVED_FEEDBACK, SERVED_REQUESTS, conform


@pytest.fixture(scope="module")
def tables():
    from router.data.splits import make_splits

    q = make_queries()
    return q, make_traces(q), make_splits(q, seed=0), make_models()


def labelled(model: str, labels: list[float], task_group: str | None = None, dataset: str | None = None,
             prefix: str = "r", labelled_at: str = "2026-02-01T00:00:00.000+00:00") -> pl.DataFrame:
    """Served + feedback rows as ``read_served`` returns them (one request per label)."""
    n = len(labels)
    served = conform(pl.DataFrame({
        "request_id": [f"{prefix}{i}" for i in range(n)], "received_at": ["2026-02-01T00:00:00Z"] * n,
        "policy": ["lrouter"] * n, "requested_model": ["lrouter"] * n, "lambda": [0.1] * n,
        "chosen_model": [model] * n, "predicted_quality": [0.5] * n, "expected_cost_usd": [1e-4] * n,
        "realised_cost_usd": [1e-4] * n, "prompt_tokens": [50] * n, "completion_tokens": [20] * n,
        "latency_ms": [300.0] * n, "routing_ms": [2.0] * n, "upstream_ms": [250.0] * n, "status": ["ok"] * n,
        "http_status": [200] * n, "fallbacks": [0] * n, "attempts": ["[]"] * n, "stream": [False] * n,
        "has_image": [True] * n, "error": [""] * n, "prompt": [None] * n, "task_group": [task_group] * n,
        "dataset": [dataset] * n, "key_id": [None] * n,
    }, schema_overrides={"prompt": pl.String, "task_group": pl.String, "dataset": pl.String, "key_id": pl.String}),
        SERVED_REQUESTS, "served_requests")
    fb = conform(pl.DataFrame({"request_id": served["request_id"], "label": labels, "labelled_at": [labelled_at] * n,
                               "label_source": ["api"] * n}), SERVED_FEEDBACK, "served_feedback")
    return served.join(fb, on="request_id")


def _raw(p: pl.DataFrame, m: str) -> dict[str, float]:
    row = p.filter(pl.col("model_id") == m).row(0, named=True)
    return dict(zip(row["feature_names"], row["raw"], strict=True))


def _same(a: dict[str, float], b: dict[str, float], names) -> bool:
    return all((np.isnan(a[n]) and np.isnan(b[n])) or a[n] == pytest.approx(b[n], abs=1e-12) for n in names)


def test_production_rows_move_the_serving_model_only(tables):
    q, t, s, models = tables
    base = build_profiles(t, s, q, models)
    prod = pl.concat([production_traces(labelled("c", [1.0] * 40, prefix="c")),
                      production_traces(labelled("a", [0.0] * 30, prefix="a"))])
    p = build_profiles(t, s, q, models, production=prod)
    names = list(p["feature_names"][0])
    outcome = [n for n in names if not n.startswith(("log_price", "log_params", "params_missing"))]

    ok_c = calibration_rows(t, s).filter((pl.col("model_id") == "c") & (pl.col("status") == "ok"))
    want = (ok_c["quality"].sum() + 40.0) / (ok_c.height + 40)
    assert _raw(p, "c")["quality_overall"] == pytest.approx(want)
    assert _raw(p, "c")["quality_overall"] > _raw(base, "c")["quality_overall"] + 0.05  # labelled 1: up
    assert _raw(p, "a")["quality_overall"] < _raw(base, "a")["quality_overall"] - 0.05  # labelled 0: down
    assert _raw(p, "a")["availability"] > _raw(base, "a")["availability"]  # every production row answered
    assert _same(_raw(p, "b"), _raw(base, "b"), outcome)  # b served nothing: its raw parts do not move
    for m in ("a", "c"):  # no group named: group/dataset parts untouched; one model per row: no pairwise part
        untouched = [n for n in outcome if n.startswith(("quality_group:", "quality_dataset:"))] + list(PAIRWISE_PARTS)
        assert _same(_raw(p, m), _raw(base, m), untouched)
    assert json.loads(p["built_from"][0])["cost_scale"] == json.loads(base["built_from"][0])["cost_scale"]

    row = p.filter(pl.col("model_id") == "c").row(0, named=True)
    base_row = base.filter(pl.col("model_id") == "c").row(0, named=True)
    assert row["n_production_rows"] == 40 and row["n_calib_rows"] == base_row["n_calib_rows"]
    assert row["n_ok_rows"] == base_row["n_ok_rows"] + 40
    assert sum(x.startswith("production:c") for x in row["source_query_ids"]) == 40  # lineage stays true
    assert p.filter(pl.col("model_id") == "b")["n_production_rows"][0] == 0
    built = json.loads(row["built_from"])
    assert built["n_production_rows"] == 70 and built["production_until"] == "2026-02-01T00:00:00.000+00:00"
    assert not np.allclose(np.array(row["vector"]), np.array(base_row["vector"]))


def test_named_task_group_and_dataset_reach_only_their_parts(tables):
    q, t, s, models = tables
    base = build_profiles(t, s, q, models)
    p = build_profiles(t, s, q, models, production=production_traces(labelled("c", [1.0] * 30, "ocr", "docs")))
    before, after = _raw(base, "c"), _raw(p, "c")
    assert after["quality_group:ocr"] > before["quality_group:ocr"] + 0.05
    assert after["quality_dataset:docs"] > before["quality_dataset:docs"] + 0.05
    others = [n for n in before if n.startswith(("quality_group:", "quality_dataset:"))
              and n not in ("quality_group:ocr", "quality_dataset:docs")]
    assert others and _same(after, before, others)
    # a group or dataset the benchmark does not know counts toward the overall parts only
    odd = build_profiles(t, s, q, models, production=production_traces(labelled("c", [1.0] * 30, "poetry", "x")))
    groups = [n for n in before if n.startswith(("quality_group:", "quality_dataset:"))]
    assert _same(_raw(odd, "c"), before, groups) and list(odd["feature_names"][0]) == list(base["feature_names"][0])
    assert _raw(odd, "c")["quality_overall"] == pytest.approx(after["quality_overall"])


def test_no_production_gives_the_old_profiles_exactly(tables):
    q, t, s, models = tables
    base = build_profiles(t, s, q, models)
    assert build_profiles(t, s, q, models, production=None).equals(base)
    assert build_profiles(t, s, q, models, production=production_traces(labelled("c", [])).clear()).equals(base)
    # rows of a model outside the (active) pool count for nothing
    assert build_profiles(t, s, q, models, production=production_traces(labelled("retired:1b", [1.0] * 5))
                          ).equals(base)
    assert json.loads(base["built_from"][0])["n_production_rows"] == 0


def test_latest_label_wins_and_benchmark_ids_are_refused(tables):
    q, t, s, models = tables
    first = production_traces(labelled("c", [0.0] * 20, labelled_at="2026-02-01T00:00:00.000+00:00"))
    again = production_traces(labelled("c", [1.0] * 20, labelled_at="2026-02-02T00:00:00.000+00:00"))
    p = build_profiles(t, s, q, models, production=pl.concat([first, again]))
    only_new = build_profiles(t, s, q, models, production=again)
    assert p["n_production_rows"].to_list() == [0, 0, 20]
    assert _raw(p, "c")["quality_overall"] == pytest.approx(_raw(only_new, "c")["quality_overall"])
    test_id = s.filter(pl.col("split") == "test")["query_id"][0]
    with pytest.raises(ValueError, match="benchmark query"):
        build_profiles(t, s, q, models, production=first.with_columns(pl.lit(test_id).alias("query_id")).head(1))


def test_leakage_check_allows_production_rows_and_still_catches_val_test(tables, tmp_path):
    q, t, s, models = tables
    prod = production_traces(labelled("c", [1.0] * 25, "ocr"))
    build_profiles(t, s, q, models, production=prod).write_parquet(tmp_path / "profiles.parquet")
    honest = pl.read_parquet(tmp_path / "profiles.parquet")
    rep = leakage_report(t, s, honest, queries=q, models=models, production=prod)
    assert rep["passed"], rep
    assert rep["n_production_rows"] == 25
    # a label that arrives after the build (new request, or a relabel) does not break the proof
    later = pl.concat([prod, production_traces(labelled("c", [0.0] * 5, prefix="late",
                                                        labelled_at="2026-03-01T00:00:00.000+00:00")),
                       production_traces(labelled("c", [0.0] * 3, "ocr", labelled_at="2026-03-01T00:00:00.000+00:00"))])
    assert leakage_report(t, s, honest, queries=q, models=models, production=later)["passed"]

    # without the production table the production ids are unexplained: fail
    rep = leakage_report(t, s, honest, queries=q, models=models)
    assert not rep["passed"] and not rep["checks"]["profile_queries_in_calibration"]

    # a val/test benchmark query among the recorded ones still fails, production rows or not
    held = s.filter(pl.col("split") != "train")["query_id"].head(3).to_list()
    forged = honest.with_columns(pl.col("source_query_ids").list.concat(pl.lit(held, pl.List(pl.String))))
    rep = leakage_report(t, s, forged, queries=q, models=models, production=prod)
    assert not rep["passed"] and not rep["checks"]["profile_queries_in_calibration"]

    # numbers from test rows passed off as production evidence: the recomputation catches them
    leaky = s.with_columns(
        pl.when(pl.col("split") == "test").then(pl.lit("train")).otherwise(pl.col("split")).alias("split"),
        (pl.col("in_calibration") | (pl.col("split") == "test")).alias("in_calibration"))
    from_test = build_profiles(t, leaky, q, models, production=prod)
    forged = honest.with_columns(from_test["raw"], from_test["vector"])
    rep = leakage_report(t, s, forged, queries=q, models=models, production=prod)
    assert not rep["passed"] and not rep["checks"]["outcome_parts_recompute"]
