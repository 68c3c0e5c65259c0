"""Capability profiles of a model inserted after training (cold start): where its profile comes from when
only ``n`` calibration examples of it exist, and the data view the router then sees.

A *profile source* maps a number of calibration examples (None = the full calibration subset) to a profile
row, a profile matrix or a rebuilt :class:`RoutingData`; :func:`insertion_view` turns any of them into data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData

# A profile source gives, for a number of calibration examples of the held-out model (None = full
# calibration), either its profile row [P], the whole profile matrix [K, P] in data.model_ids order, or a
# RoutingData whose model_feats (same model_feat_names) hold the recomputed profiles.
ProfileValue = np.ndarray | RoutingData
ProfileSource = Callable[[int | None], ProfileValue] | Mapping[int | None, ProfileValue]


def calibration_rows(data: RoutingData, model_id: str, n: int, seed: int = 0) -> np.ndarray:
    """A seeded subset of ``n`` train rows on which ``model_id`` has a trace (the calibration examples)."""
    j = data.model_ids.index(model_id)
    tr = data.idx("train")
    tr = tr[data.avail[tr, j]]
    perm = np.random.default_rng([seed, 7919, j]).permutation(tr)
    return np.sort(perm[: min(n, len(perm))])


def _model_stats(data: RoutingData, j: int, rows: np.ndarray, groups: list[str], prior: np.ndarray | None,
                 strength: float) -> np.ndarray:
    """[overall accuracy, accuracy per task group..., mean expected cost] of model j, shrunk toward ``prior``."""
    rows = rows[data.avail[rows, j]]
    q = data.quality[rows, j].astype(np.float64)
    labels = np.asarray(data.task_group)[rows].astype(str)
    sums = [q.sum()] + [q[labels == g].sum() for g in groups]
    cnts = [len(q)] + [int((labels == g).sum()) for g in groups]
    tr = data.idx("train")
    cost = float(np.mean(data.exp_cost[tr, j])) if len(tr) else 0.0
    acc = []
    for i, (s, c) in enumerate(zip(sums, cnts, strict=True)):
        if prior is None:
            acc.append(s / c if c else np.nan)
        else:
            acc.append((s + strength * prior[i]) / (c + strength))
    return np.array([*acc, cost])


def fallback_profile_source(data: RoutingData, model_id: str, seed: int = 0, prior_strength: float = 8.0,
                            column_stats: Mapping[str, str] | None = None) -> Callable[[int | None], np.ndarray]:
    """A generic stand-in for ``router.data.profiles`` when the caller has no profile builder (synthetic data).

    ``n -> profile row [P]`` of ``model_id`` from observable statistics: its accuracy overall ("acc") and per
    task group ("acc:<group>") on ``n`` seeded calibration rows, shrunk toward the other models' mean with
    ``prior_strength`` pseudo-examples (so n = 0 gives the "average model"), and its mean expected cost
    ("cost", known before answering). Each profile column is an affine function of one statistic, fitted
    across the *other* models (whose statistics use all their train rows): the statistic named in
    ``column_stats[column name]``, else the one with the highest R^2 (>= 0.5; with few models this choice is
    noisy, so pass ``column_stats`` when the columns' meaning is known). A column no statistic explains gets
    the other models' mean. ``None`` returns ``data.model_feats`` as given (the full-calibration profile).
    """
    j = data.model_ids.index(model_id)
    others = [i for i in range(data.k) if i != j]
    groups = sorted(set(np.asarray(data.task_group).astype(str).tolist()))
    stat_names = ["acc", *[f"acc:{g}" for g in groups], "cost"]
    named = dict(column_stats or {})
    bad = {c: s for c, s in named.items() if s not in stat_names or c not in data.model_feat_names}
    if bad:
        raise ValueError(f"fallback_profile_source: unknown column(s) or statistic(s) {bad}; columns are "
                         f"{data.model_feat_names}, statistics {stat_names}")
    tr = data.idx("train")
    full = np.stack([_model_stats(data, i, tr, groups, None, 0.0) for i in others])  # [K-1, S]
    prior = np.nanmean(full[:, :-1], axis=0)
    full = np.where(np.isfinite(full), full, np.concatenate([prior, [0.0]])[None, :])
    feats = data.model_feats[others].astype(np.float64)  # [K-1, P]

    def fit(p: int, s: int) -> tuple[float, int, float, float] | None:
        x, y = full[:, s], feats[:, p]
        if len(others) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return None
        b, a = np.polyfit(x, y, 1)
        return 1 - np.sum((y - (a + b * x)) ** 2) / np.sum((y - y.mean()) ** 2), s, a, b

    maps: list[tuple[int, float, float] | None] = []
    for p, col in enumerate(data.model_feat_names):
        if col in named:
            got = fit(p, stat_names.index(named[col]))
            maps.append(None if got is None else got[1:])
            continue
        cands = [f for s in range(len(stat_names)) if len(others) >= 3 and (f := fit(p, s)) is not None]
        best = max(cands, key=lambda f: f[0]) if cands else None
        maps.append(None if best is None or best[0] < 0.5 else best[1:])

    def source(n: int | None) -> np.ndarray:
        if n is None:
            return data.model_feats[j].astype(np.float32).copy()
        stats = _model_stats(data, j, calibration_rows(data, model_id, n, seed), groups, prior, prior_strength)
        row = np.array([feats[:, p].mean() if m is None else m[1] + m[2] * stats[m[0]]
                        for p, m in enumerate(maps)])
        return row.astype(np.float32)

    return source


def insertion_view(source: ProfileSource, n: int | None, data: RoutingData, model_id: str) -> RoutingData:
    """``data`` as the router sees it when ``model_id``'s profile comes from ``n`` calibration examples.

    A row [P] replaces the model's profile; a matrix [K, P] replaces every profile; a RoutingData (e.g. from
    ``router.data.build.build_routing_data`` with the same ``calib_limit``) supplies every profile and the
    expected costs (``exp_cost``, which a calibration limit also changes), aligned by model and query id.
    """
    value = source[n] if isinstance(source, Mapping) else source(n)
    j = data.model_ids.index(model_id)
    if isinstance(value, RoutingData):
        if list(value.model_feat_names) != list(data.model_feat_names):
            raise ValueError(f"cold start: profile source for n={n} has model_feat_names {value.model_feat_names}, "
                             f"expected {data.model_feat_names}")
        missing = [m for m in data.model_ids if m not in value.model_ids]
        if missing:
            raise ValueError(f"cold start: profile source for n={n} lacks model(s) {missing}")
        cols = [value.model_ids.index(m) for m in data.model_ids]
        pos = {q: i for i, q in enumerate(value.query_ids)}
        absent = [q for q in data.query_ids if q not in pos]
        if absent:
            raise ValueError(f"cold start: profile source for n={n} lacks query {absent[0]!r} "
                             f"({len(absent)} queries missing)")
        rows = np.array([pos[q] for q in data.query_ids], dtype=np.int64)
        feats = value.model_feats[cols].astype(np.float32)
        exp_cost = value.exp_cost[np.ix_(rows, cols)].astype(np.float32)
    else:
        arr = np.asarray(value, dtype=np.float32)
        p = data.model_feats.shape[1]
        feats, exp_cost = data.model_feats.astype(np.float32).copy(), data.exp_cost
        if arr.shape == (p,):
            feats[j] = arr
        elif arr.shape == (data.k, p):
            feats = arr.copy()
        else:
            raise ValueError(f"cold start: profile source for n={n} returned shape {arr.shape}; expected ({p},) "
                             f"(the held-out model's row) or ({data.k}, {p}) (all models)")
    if not (np.all(np.isfinite(feats)) and np.all(np.isfinite(exp_cost))):
        raise ValueError(f"cold start: profile or expected cost for n={n} of model {model_id!r} is not finite")
    return replace(data, model_feats=feats, exp_cost=exp_cost)


def warehouse_profile_source(inputs: Any, model_id: str) -> Callable[[int | None], RoutingData]:
    """Profile source for the pipeline: ``n -> RoutingData`` rebuilt with ``calib_limit={model_id: n}``.

    ``inputs`` is a ``router.data.warehouse_inputs.WarehouseInputs``. Profiles of every n (and None = the full
    calibration subset) are standardised over the *other* models, so only the held-out model's vector and
    expected cost change with n.
    """
    from router.data.build import build_routing_data
    from router.data.profiles import build_profiles

    others = [m for m in inputs.models["model_id"].to_list() if m != model_id]

    def source(n: int | None) -> RoutingData:
        limit = None if n is None else {model_id: int(n)}
        profiles = build_profiles(inputs.traces, inputs.splits, inputs.queries, inputs.models, calib_limit=limit,
                                  reference_models=others)
        return build_routing_data(inputs.queries, inputs.traces, inputs.splits, profiles, inputs.features,
                                  inputs.models, calib_limit=limit)

    return source


def default_cold_start_model(data: RoutingData) -> str:
    """The model that is best on some task group by the widest margin (train + val rows only).

    It is the model whose capability token matters most: routing should send it that group's queries once it
    is inserted, which only a usable profile can make happen.
    """
    rows = np.concatenate([data.idx("train"), data.idx("val")])
    labels = np.asarray(data.task_group)[rows].astype(str)
    best_j, best_margin = 0, -np.inf
    for g in sorted(set(labels.tolist())):
        r = rows[labels == g]
        m = data.avail[r]
        with np.errstate(invalid="ignore"):
            acc = np.where(m.sum(0) > 0, np.where(m, data.quality[r], 0).sum(0) / np.maximum(m.sum(0), 1), -np.inf)
        order = np.argsort(-acc, kind="stable")
        margin = acc[order[0]] - (acc[order[1]] if data.k > 1 else 0.0)
        if margin > best_margin:
            best_j, best_margin = int(order[0]), float(margin)
    return data.model_ids[best_j]
