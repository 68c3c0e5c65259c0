"""Build the in-memory `RoutingData` from the warehouse tables (queries, traces, splits, profiles, features).

Why: every router trains on the same dense [N, K] arrays, so the rules that decide what a router may see live
here once: outcomes come from the latest ok attempt; the cost normaliser and all feature standardisation
statistics come from TRAIN rows only; the cost a router may condition on (``exp_cost``) is known before
answering (price x calibration mean tokens), never the realised per-sample cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from router.data.calibration import calibration_rows, check_traces, latest_attempts
from router.data.profiles import profile_matrix
from router.data.routing_data import RoutingData, normalise_cost
from router.features.feature_set import FeatureSet
from warehouse.vocabulary import SPLIT_NAMES


@dataclass(frozen=True)
class Standardiser:
    """Per-dimension z-scores with mean/std fitted on some rows (train rows: no leakage); all zeros when
    fitted on no rows. Kept so a request at routing time is scaled exactly like the training rows."""

    mean: np.ndarray | None
    std: np.ndarray | None

    @classmethod
    def fit(cls, x: np.ndarray, fit_rows: np.ndarray) -> Standardiser:
        if len(fit_rows) == 0:
            return cls(None, None)
        sub = x[fit_rows].astype(np.float32)
        sd = sub.std(axis=0)
        return cls(sub.mean(axis=0), np.where(sd > 1e-6, sd, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        if self.mean is None or self.std is None:
            return np.zeros_like(x)
        return (x - self.mean) / self.std


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 1e-12, n, 1.0)


@dataclass(frozen=True)
class PooledNormaliser:
    """``RoutingData.pooled``: the L2-normalised concat of per-block standardised image, text and side vectors
    (train statistics). Each block is scaled to unit length per row so no block dominates by its width; rows
    without an image get a zero image block (masked, not a made-up image)."""

    img: Standardiser | None
    txt: Standardiser
    side: Standardiser

    @classmethod
    def fit(cls, features: FeatureSet, train_rows: np.ndarray) -> PooledNormaliser:
        img = None
        if features.img_pooled is not None:
            img = Standardiser.fit(features.img_pooled, train_rows[features.has_image[train_rows]])
        return cls(img, Standardiser.fit(features.txt_pooled, train_rows), Standardiser.fit(features.side, train_rows))

    def __call__(self, img_pooled: np.ndarray | None, txt_pooled: np.ndarray, side: np.ndarray,
                 has_image: np.ndarray) -> np.ndarray:
        blocks = []
        if self.img is not None and img_pooled is not None:
            img = self.img(img_pooled)
            img[~has_image] = 0.0
            blocks.append(_unit_rows(img))
        blocks.append(_unit_rows(self.txt(txt_pooled)))
        blocks.append(_unit_rows(self.side(side)))
        return _unit_rows(np.concatenate(blocks, axis=1)).astype(np.float32)


def _expected_cost_usd(
    calib: pl.DataFrame, models: pl.DataFrame, model_ids: list[str], has_image: np.ndarray,
    task_group: np.ndarray, qmeta: dict[str, tuple[str, bool]],
) -> np.ndarray:
    """[N, K] USD cost expected before answering, from calibration rows only.

    Prompt tokens: the model's calibration mean for queries with / without an image (else the pool's mean for
    that kind of query); completion tokens: its mean for the query's task group (else its overall mean, else
    the pool's). Models without
    prices but with calibration costs use their mean calibration cost for the same kind of query.
    """
    ok = calib.filter(pl.col("status") == "ok")
    k = len(model_ids)
    qids = ok["query_id"].to_list()
    ok = ok.with_columns(
        pl.Series("_tg", [qmeta[q][0] for q in qids], dtype=pl.String),
        pl.Series("_img", [qmeta[q][1] for q in qids], dtype=pl.Boolean),
    )

    def means(col: str, by: str) -> dict[tuple[str, object], float]:
        g = ok.group_by(["model_id", by]).agg(pl.col(col).cast(pl.Float64).mean().alias("m"))
        return {(r["model_id"], r[by]): r["m"] for r in g.iter_rows(named=True) if r["m"] is not None}

    def overall(col: str) -> dict[str, float]:
        g = ok.group_by("model_id").agg(pl.col(col).cast(pl.Float64).mean().alias("m"))
        return {r["model_id"]: r["m"] for r in g.iter_rows(named=True) if r["m"] is not None}

    def pool(col: str, by: str | None = None) -> dict[object, float]:
        if by is None:
            v = ok[col].cast(pl.Float64).mean() if ok.height else None
            return {None: float(v) if v is not None else 0.0}
        g = ok.group_by(by).agg(pl.col(col).cast(pl.Float64).mean().alias("m"))
        return {r[by]: r["m"] for r in g.iter_rows(named=True) if r["m"] is not None}

    p_img, p_all, p_pool, p_pool_img = means("prompt_tokens", "_img"), overall("prompt_tokens"), \
        pool("prompt_tokens")[None], pool("prompt_tokens", "_img")
    c_tg, c_all, c_pool, c_pool_tg = means("completion_tokens", "_tg"), overall("completion_tokens"), \
        pool("completion_tokens")[None], pool("completion_tokens", "_tg")
    cost_img, cost_all = means("cost_usd", "_img"), overall("cost_usd")
    price = {r["model_id"]: (r["price_in_per_mtok"] or 0.0, r["price_out_per_mtok"] or 0.0)
             for r in models.iter_rows(named=True)}

    combos = sorted({(bool(h), str(g)) for h, g in zip(has_image, task_group, strict=True)})
    per_combo = np.zeros((len(combos), k), dtype=np.float64)
    for j, m in enumerate(model_ids):
        pin, pout = price[m]
        for c, (hi, tg) in enumerate(combos):
            if pin > 0 or pout > 0:
                pt = p_img.get((m, hi), p_pool_img.get(hi, p_all.get(m, p_pool)))
                ct = c_tg.get((m, tg), c_all.get(m, c_pool_tg.get(tg, c_pool)))
                per_combo[c, j] = (pin * pt + pout * ct) / 1e6
            else:
                per_combo[c, j] = cost_img.get((m, hi), cost_all.get(m, 0.0))
    pos = {cb: c for c, cb in enumerate(combos)}
    return per_combo[[pos[(bool(h), str(g))] for h, g in zip(has_image, task_group, strict=True)]]


def calibration_inputs(
    queries: pl.DataFrame, traces: pl.DataFrame, splits: pl.DataFrame, model_ids: list[str],
    calib_limit: Mapping[str, int] | None = None,
) -> tuple[pl.DataFrame, dict[str, tuple[str, bool]]]:
    """Calibration traces of ``model_ids`` and each query's (task group, has image): what expected costs
    are estimated from."""
    all_q = queries["query_id"].to_list()
    img_paths = (queries["image_path"].fill_null("").to_list() if "image_path" in queries.columns
                 else [""] * len(all_q))
    qmeta = {q: (tg, bool(p.strip())) for q, tg, p in zip(all_q, queries["task_group"].fill_null("").to_list(),
                                                           img_paths, strict=True)}
    calib = calibration_rows(traces.filter(pl.col("model_id").is_in(model_ids)), splits, calib_limit)
    return calib.filter(pl.col("query_id").is_in(list(qmeta))), qmeta


def expected_cost_usd(calib: pl.DataFrame, models: pl.DataFrame, qmeta: dict[str, tuple[str, bool]],
                      has_image: bool, task_group: str) -> np.ndarray:
    """[K] USD cost expected before answering for one query of this kind (a request at routing time)."""
    ids = models["model_id"].to_list()
    return _expected_cost_usd(calib, models, ids, np.array([has_image]), np.array([task_group], dtype=object),
                              qmeta)[0]


@dataclass(frozen=True)
class QueryNormalisers:
    """Everything ``build_routing_data`` fitted on train / calibration rows that a NEW query needs to become
    a row of the same arrays (the routing API): side and pooled standardisers, the calibration traces that
    expected costs come from, and the train cost scale."""

    side: Standardiser
    pooled: PooledNormaliser
    calib: pl.DataFrame
    qmeta: dict[str, tuple[str, bool]]
    cost_scale: float


def build_routing_data(
    queries: pl.DataFrame,
    traces: pl.DataFrame,
    splits: pl.DataFrame,
    profiles: pl.DataFrame,
    features: FeatureSet,
    models: pl.DataFrame,
    calib_limit: Mapping[str, int] | None = None,
) -> RoutingData:
    """Dense routing arrays for the queries that have features and a split, and every model in ``models``.

    ``calib_limit`` must match the one the profiles were built with (cold start), so the expected cost of a
    held-out model is estimated from the same few calibration rows.
    """
    return build_routing_data_and_normalisers(queries, traces, splits, profiles, features, models, calib_limit)[0]


def _check_build_inputs(queries: pl.DataFrame, traces: pl.DataFrame, splits: pl.DataFrame,
                        features: FeatureSet) -> dict[str, str]:
    """Fail early, naming the first offending row, on inputs the arrays cannot be built from; returns the
    split of every query."""
    check_traces(traces)
    for c in ("query_id", "task_group", "dataset"):
        if c not in queries.columns:
            raise ValueError(f"queries: missing column {c!r}; have {queries.columns}")
    for c in ("query_id", "split", "in_calibration"):
        if c not in splits.columns:
            raise ValueError(f"splits: missing column {c!r}; have {splits.columns}")
    qrow = set(queries["query_id"].to_list())
    split_of = dict(zip(splits["query_id"].to_list(), splits["split"].to_list(), strict=True))
    unknown = [q for q in features.query_ids if q not in qrow]
    if unknown:
        raise ValueError(f"features: query_id {unknown[0]!r} is not in the queries table ({len(unknown)} such rows)")
    no_split = [q for q in features.query_ids if q not in split_of]
    if no_split:
        raise ValueError(f"splits: no split for query_id {no_split[0]!r} ({len(no_split)} feature rows without "
                         "a split); rebuild splits after adding queries")
    bad = {split_of[q] for q in features.query_ids} - set(SPLIT_NAMES)
    if bad:
        raise ValueError(f"splits: unknown split value(s) {sorted(bad)}")
    return split_of


def _outcomes(
    traces: pl.DataFrame, query_ids: list[str], model_ids: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(quality, cost_usd, latency_ms, avail) [N, K] from the latest ok attempt per (query, model).

    Scattered into the matrices by a join on row and column positions: a Python loop over the N x K rows
    took seconds per build at 20k queries, and every router asset builds these arrays."""
    n = len(query_ids)
    qi = {q: i for i, q in enumerate(query_ids)}
    mi = {m: j for j, m in enumerate(model_ids)}
    t = latest_attempts(traces.filter(pl.col("query_id").is_in(query_ids) & pl.col("model_id").is_in(model_ids)))
    quality = np.zeros((n, len(model_ids)), dtype=np.float32)
    cost_usd = np.zeros((n, len(model_ids)), dtype=np.float64)
    latency = np.full((n, len(model_ids)), np.nan, dtype=np.float64)
    avail = np.zeros((n, len(model_ids)), dtype=bool)
    ok = (t.filter(pl.col("status") == "ok")
          .join(pl.DataFrame({"query_id": list(qi), "_i": list(qi.values())},
                             schema={"query_id": t.schema["query_id"], "_i": pl.Int64}), on="query_id")
          .join(pl.DataFrame({"model_id": list(mi), "_j": list(mi.values())},
                             schema={"model_id": t.schema["model_id"], "_j": pl.Int64}), on="model_id"))
    i, j = ok["_i"].to_numpy(), ok["_j"].to_numpy()
    quality[i, j] = np.clip(ok["quality"].cast(pl.Float64).to_numpy(), 0.0, 1.0)
    cost = ok["cost_usd"].cast(pl.Float64).fill_null(0.0).to_numpy()
    cost_usd[i, j] = np.where(cost == 0.0, 0.0, cost)  # `cost or 0.0` as the row loop had it: -0.0 -> 0.0
    latency[i, j] = ok["latency_ms"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    avail[i, j] = True
    return quality, cost_usd, latency, avail


def build_routing_data_and_normalisers(
    queries: pl.DataFrame,
    traces: pl.DataFrame,
    splits: pl.DataFrame,
    profiles: pl.DataFrame,
    features: FeatureSet,
    models: pl.DataFrame,
    calib_limit: Mapping[str, int] | None = None,
) -> tuple[RoutingData, QueryNormalisers]:
    """``build_routing_data`` plus the normalisers it fitted, for routing new queries the same way."""
    split_of = _check_build_inputs(queries, traces, splits, features)
    qrow = {q: i for i, q in enumerate(queries["query_id"].to_list())}
    query_ids = list(features.query_ids)
    model_ids = models["model_id"].to_list()
    if not model_ids:
        raise ValueError("models: empty; nothing to route between")
    model_feats, feat_names = profile_matrix(profiles, model_ids)
    split = np.array([split_of[q] for q in query_ids], dtype=object)
    qsel = queries[[qrow[q] for q in query_ids]]
    task_group = np.array(qsel["task_group"].fill_null("").to_list(), dtype=object)
    dataset = np.array(qsel["dataset"].fill_null("").to_list(), dtype=object)
    train_rows = np.flatnonzero(split == "train")

    quality, cost_usd, latency, avail = _outcomes(traces, query_ids, model_ids)
    cost, scale = normalise_cost(cost_usd, avail, train_rows)

    # cost known before answering, from calibration rows only, on the same train-only scale
    calib, qmeta = calibration_inputs(queries, traces, splits, model_ids, calib_limit)
    exp_cost_usd = _expected_cost_usd(calib, models, model_ids, features.has_image, task_group, qmeta)
    exp_cost = (exp_cost_usd / scale).astype(np.float32)
    pooled = PooledNormaliser.fit(features, train_rows)  # its side block is the side standardiser too
    norms = QueryNormalisers(side=pooled.side, pooled=pooled, calib=calib, qmeta=qmeta, cost_scale=float(scale))

    simulated = (models["simulated"].fill_null(False).to_list() if "simulated" in models.columns
                 else [False] * len(model_ids))
    data = RoutingData(
        query_ids=query_ids,
        model_ids=model_ids,
        img_tokens=features.img_tokens,
        img_mask=features.img_mask,
        txt_tokens=features.txt_tokens,
        txt_mask=features.txt_mask,
        pooled=norms.pooled(features.img_pooled, features.txt_pooled, features.side, features.has_image),
        side=norms.side(features.side),
        quality=quality,
        cost=cost,
        cost_usd=cost_usd,
        avail=avail,
        exp_cost=exp_cost,
        model_feats=model_feats,
        model_feat_names=feat_names,
        split=split,
        task_group=task_group,
        dataset=dataset,
        simulated=[bool(s) for s in simulated],
        text_only=features.img_tokens is None,
        latency_ms=latency,
    )
    return data, norms
