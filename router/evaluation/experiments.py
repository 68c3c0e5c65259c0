"""The experiments behind "which router should I deploy, and what does it buy me?" (LatentRouter paper §4, App. C).

Every experiment is a pure function of a :class:`RoutingData`, an :class:`EvalConfig` and a seed list, run
through one :class:`EvalContext` so that fitted routers and their test sweeps are shared between experiments
(the main-table LatentRouter is the same object the pool-change, efficiency and decision experiments use).
Each returns :class:`ExperimentResult`: rows in the long ``eval_results`` shape of
``warehouse.schemas.EVAL_RESULTS`` plus small summary frames for tables and plots. :func:`run_all` runs the
selected experiments and returns an :class:`EvalOutput`.

Protocol (documented choices; they are the same for every router):

* Fits read only ``data.idx('train')`` / ``data.idx('val')`` (routers' ``fit`` contract); every metric is
  computed on ``data.idx('test')`` only. The split is fixed; seeds change router initialisation / sampling.
* Settings (paper Table 1): **oriented** = the performance-oriented router (LatentRouter trained at
  lambda = 0) judged at its lambda = 0 pick; its Rank Score is the Rank Score of that single operating point
  and its nAUC is that point's quality (a one-point frontier). **cost** = the cost-aware router (LatentRouter
  trained with a lambda drawn per batch from ``cost_train_lambdas``) judged over the whole lambda sweep; its
  Rank Score is the best over the sweep (VL-RouterBench) and nAUC is reported in both variants of
  ``router.evaluation.metrics.nauc``: ``nauc_interp`` (MMR-Bench: strict Pareto frontier, linear interpolation) and
  ``nauc_step`` (LatentRouter's evaluator: running-max step curve). Baselines have one fit that serves both
  settings (they predict quality and cost, or train one classifier per lambda).
* The **primary metric** (``EvalConfig.primary_metric``, Rank Score by default) of a router is the mean of
  its oriented and cost values, the paper's "average over the main settings"; it is written with
  ``setting = "avg"``. Rank Score cost bounds are a benchmark constant: ``cost_bounds(data)`` over all rows
  and the full pool, also for changed pools.
* Oracle regret is ``max_available u - u_chosen`` at lambda = 0 (``regret``) and averaged over the sweep for
  the cost setting; in changed pools the oracle is recomputed over the available models.
* Mean +- std are over seeds (sample std); Welch's t-test compares LatentRouter with the best non-oracle
  baseline of each setting over the per-seed values (``router.evaluation.metrics.welch_t``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from router.data.routing_data import RoutingData
from router.evaluation.metrics import (
    Sweep,
    cost_bounds,
    evaluate_sweep,
    lambda_sweep,
    mean_std,
    outcome_metrics,
    welch_t,
)
from router.models.base import Router
from router.models.baselines.families import (
    CheapestRouter,
    KMeansRouter,
    KNNRouter,
    MLPMFConfig,
    MLPMFRouter,
    OracleRouter,
    RandomRouter,
    RouteLLMConfig,
    RouteLLMMFRouter,
    StrongestRouter,
    TorchTrainConfig,
    VLFeatureConfig,
    VLFeatureRouter,
)
from router.models.latent_router.model import LatentRouterConfig
from router.threads import torch_threads
from router.training.trainer import LatentRouterRouter, TrainConfig
from warehouse.schemas import EVAL_RESULTS, ROUTING_DECISIONS, conform

EXPERIMENTS: tuple[str, ...] = (
    "main_table",
    "frontier",
    "task_groups",
    "outcome_prediction",
    "ablations",
    "pool_changes",
    "cold_start",
    "efficiency",
)
SETTINGS: tuple[str, ...] = ("oriented", "cost")
AVG = "avg"  # setting label of the primary metric (mean of the oriented and cost values)
PRIMARY_METRICS: tuple[str, ...] = ("rank_score", "nauc_interp", "nauc_step")
LATENT = "LatentRouter"
LATENCY_THREADS = 1  # efficiency timings: one CPU thread per call, the routing API's setting
ORACLE = "Oracle"
STRONGEST = "Strongest"
# display name -> baseline class; the order is the row order of Table 1
BASELINE_NAMES: tuple[str, ...] = (
    ORACLE, STRONGEST, "Cheapest", "Random", "KNNRouter", "KMeansRouter", "MLPMFRouter", "RouteLLM-MF",
    "VL feature router",
)
ROUTERS: tuple[str, ...] = (*BASELINE_NAMES, LATENT)
TRAINING_FREE: frozenset[str] = frozenset({ORACLE, STRONGEST, "Cheapest", "Random"})
LEARNED_BASELINES: tuple[str, ...] = tuple(n for n in BASELINE_NAMES if n not in TRAINING_FREE)
# 0 plus 12 roughly log-spaced weights in [0.01, 3] on the normalised cost (cost 1 = the priciest model's mean)
DEFAULT_EVAL_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FULL_POOL = "full"
ALL_GROUPS = "all"
NO_SEED = -1  # seed of aggregate rows (Welch tests)


# --------------------------------------------------------------------------------------------- config


@dataclass
class BaselineConfig:
    """Sizes of the baseline routers (MMR-Bench / VL-RouterBench defaults; ``quick`` shrinks them)."""

    knn_k: int = 50
    kmeans_clusters: int = 20
    kmeans_n_init: int = 10
    mlpmf_hidden: tuple[int, ...] = (256, 128, 64)
    routellm_dim: int = 128
    vl_hidden: tuple[int, ...] = (256,)
    vl_lambdas: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0, 30.0)
    train: TorchTrainConfig = field(default_factory=TorchTrainConfig)


@dataclass
class EvalConfig:
    """What to run and how big; ``quick()`` for CI, ``demo()`` for the pipeline, ``paper()`` for the full protocol."""

    seeds: tuple[int, ...] = (0, 1, 2)
    lambdas: tuple[float, ...] = DEFAULT_EVAL_LAMBDAS  # evaluation sweep (0 is always added)
    decision_lambda: float = 0.3  # the cost-aware lambda of routing_decisions and the task-group cost view
    cost_train_lambdas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)  # cost-aware LatentRouter training
    experiments: tuple[str, ...] = EXPERIMENTS
    primary_metric: str = "rank_score"  # rank_score | nauc_interp | nauc_step
    model: LatentRouterConfig = field(default_factory=lambda: LatentRouterConfig(hidden=48))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, patience=5))
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    ablation_seeds: tuple[int, ...] | None = None  # None: ``seeds``
    # True: one fit per variant, trained at lambda = 0, serves both settings (as for the baselines: its
    # lambda = 0 pick is "oriented", its sweep is "cost"); halves the ablation cost. False: separate oriented
    # and cost-aware fits, as for LatentRouter in the main table.
    ablation_shared_fit: bool = False
    h_values: tuple[int, ...] = (0, 1, 2, 3)
    c_values: tuple[int, ...] = (1, 4, 7, 12)
    pool_random_frac: float = 0.3
    pool_random_draws: int = 3
    cold_start_model: str | None = None  # None: see default_cold_start_model
    cold_start_sizes: tuple[int, ...] = (0, 16, 64, 128)
    cold_start_seeds: tuple[int, ...] | None = None  # None: ``seeds``
    latency_batch: int = 256
    latency_single_calls: int = 50
    latency_repeats: int = 5
    decisions_seed: int | None = None  # None: the first seed

    def __post_init__(self) -> None:
        unknown = [e for e in self.experiments if e not in EXPERIMENTS]
        if unknown:
            raise ValueError(f"EvalConfig.experiments: unknown experiment(s) {unknown}; known: {list(EXPERIMENTS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"EvalConfig.seeds must be non-empty and distinct, got {self.seeds}")
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(f"EvalConfig.primary_metric must be one of {PRIMARY_METRICS}, got {self.primary_metric!r}")
        lams = [*self.lambdas, self.decision_lambda, *self.cost_train_lambdas]
        if any(not (math.isfinite(x) and x >= 0) for x in lams):
            raise ValueError(f"EvalConfig: lambdas must be finite and >= 0, got {lams}")
        if not self.cost_train_lambdas:
            raise ValueError("EvalConfig.cost_train_lambdas must not be empty")
        if not 0 < self.pool_random_frac < 1 or self.pool_random_draws < 1:
            raise ValueError("EvalConfig needs 0 < pool_random_frac < 1 and pool_random_draws >= 1")
        if any(n < 0 for n in self.cold_start_sizes):
            raise ValueError(f"EvalConfig.cold_start_sizes must be >= 0, got {self.cold_start_sizes}")
        if self.latency_batch < 1 or self.latency_single_calls < 1 or self.latency_repeats < 1:
            raise ValueError("EvalConfig latency sizes must be >= 1")

    @property
    def sweep_lambdas(self) -> np.ndarray:
        """Sorted evaluation lambdas, always containing 0 and ``decision_lambda``."""
        return np.unique(np.asarray([0.0, self.decision_lambda, *self.lambdas], dtype=np.float64))

    @classmethod
    def quick(cls, **overrides: Any) -> EvalConfig:
        """Tiny routers, 2 seeds (Welch needs 2), few epochs: every experiment in seconds (CI)."""
        tt = TorchTrainConfig(epochs=3, batch_size=64, patience=2)
        base: dict[str, Any] = dict(
            seeds=(0, 1),
            lambdas=(0.0, 0.03, 0.1, 0.3, 1.0, 3.0),
            cost_train_lambdas=(0.0, 0.3, 1.0),
            model=LatentRouterConfig(hidden=16, n_heads=2, n_side_tokens=2),
            train=TrainConfig(epochs=3, patience=2, batch_size=64),
            baselines=BaselineConfig(knn_k=20, kmeans_clusters=8, kmeans_n_init=2, mlpmf_hidden=(32, 16),
                                     routellm_dim=16, vl_hidden=(32,), vl_lambdas=(0.0, 1.0, 3.0), train=tt),
            ablation_seeds=(0,),
            ablation_shared_fit=True,
            pool_random_draws=2,
            cold_start_sizes=(0, 16, 64),
            cold_start_seeds=(0,),
            latency_batch=64,
            latency_single_calls=10,
            latency_repeats=2,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def demo(cls, **overrides: Any) -> EvalConfig:
        """Three seeds, the paper's hidden size 48 and a moderate epoch budget: the pipeline default on CPU."""
        tt = TorchTrainConfig(epochs=15, batch_size=64, patience=3)
        base: dict[str, Any] = dict(
            model=LatentRouterConfig(hidden=48),
            train=TrainConfig(epochs=12, patience=3, batch_size=128),
            baselines=BaselineConfig(train=tt, kmeans_n_init=4),
            ablation_seeds=(0, 1),
            ablation_shared_fit=True,
            cold_start_seeds=(0, 1),
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper(cls, **overrides: Any) -> EvalConfig:
        """The full protocol: 3 seeds everywhere, separate oriented / cost fits for ablations, 20 epochs."""
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------- results


@dataclass
class ExperimentResult:
    """Rows in the eval_results shape plus named summary frames for tables and plots."""

    results: pl.DataFrame
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass
class EvalOutput:
    """Everything an evaluation run produced; ``meta`` carries the facts a report must state."""

    run_id: str
    eval_results: pl.DataFrame  # EVAL_RESULTS
    routing_decisions: pl.DataFrame  # ROUTING_DECISIONS
    tables: dict[str, pl.DataFrame]
    timings: dict[str, float]  # seconds per experiment (and "total")
    meta: dict[str, Any] = field(default_factory=dict)


def _rows(
    run_id: str, experiment: str, router: str, seed: int, values: Mapping[str, float],
    pool: str = FULL_POOL, task_group: str = ALL_GROUPS, setting: str | None = None,
) -> list[dict[str, Any]]:
    """Long rows from a metrics dict. Keys "setting/metric" give their own setting; bare keys need ``setting``."""
    out = []
    for key, val in values.items():
        if "/" in key:
            st, metric = key.split("/", 1)
        elif setting is not None:
            st, metric = setting, key
        else:
            continue
        if st not in (*SETTINGS, AVG):
            continue
        out.append({"run_id": run_id, "experiment": experiment, "router": router, "setting": st,
                    "seed": int(seed), "metric": metric, "value": float(val), "pool": pool,
                    "task_group": task_group})
    return out


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=EVAL_RESULTS)
    return conform(pl.DataFrame(rows, schema=EVAL_RESULTS), EVAL_RESULTS, "eval_results")


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """``metrics.mean_std`` that also accepts infinite values (QNC is inf when never reached): equal values
    have std 0, otherwise NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and not np.all(np.isfinite(v)):
        with np.errstate(invalid="ignore"):
            mean = float(np.mean(v))
        return mean, (0.0 if np.all(v == v[0]) else float("nan"))
    mean, std = mean_std(v)
    # floating noise of identical per-seed values (e.g. a mean USD cost) is reported as 0
    return mean, (0.0 if std <= 1e-12 * abs(mean) else std)


def summarise(results: pl.DataFrame, by: Sequence[str] = ("experiment", "router", "setting", "metric", "pool",
                                                           "task_group")) -> pl.DataFrame:
    """Mean and sample std over seeds (aggregate rows with seed < 0 are left out) per ``by`` group."""
    per = results.filter(pl.col("seed") >= 0)
    if per.height == 0:
        return pl.DataFrame(schema={**{c: pl.String for c in by}, "mean": pl.Float64, "std": pl.Float64,
                                    "n_seeds": pl.Int64})
    recs = []
    for key, grp in per.group_by(list(by), maintain_order=True):
        m, s = _mean_std(grp["value"].to_numpy())
        recs.append({**dict(zip(by, key, strict=True)), "mean": m, "std": s, "n_seeds": grp.height})
    return pl.DataFrame(recs, schema_overrides={"mean": pl.Float64, "std": pl.Float64, "n_seeds": pl.Int64})


def _wide(summary: pl.DataFrame, keys: Sequence[str], wanted: Mapping[str, tuple[str, str]]) -> pl.DataFrame:
    """One row per ``keys`` with ``<label>_mean`` / ``<label>_std`` columns for each (setting, metric)."""
    base = summary.select(list(keys)).unique(maintain_order=True)
    for label, (st, metric) in wanted.items():
        part = summary.filter((pl.col("setting") == st) & (pl.col("metric") == metric)).select(
            [*keys, pl.col("mean").alias(f"{label}_mean"), pl.col("std").alias(f"{label}_std")])
        base = base.join(part, on=list(keys), how="left", maintain_order="left")
    return base


# --------------------------------------------------------------------------------------------- cold-start profiles

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


# --------------------------------------------------------------------------------------------- context


def _variant_key(cfg: LatentRouterConfig) -> str:
    """A config key where functionally identical configs coincide (no communication == H = 0)."""
    if cfg.effective_layers == 0:
        cfg = replace(cfg, n_layers=0, use_communication=True)
    return json.dumps(cfg.to_dict(), sort_keys=True)


class EvalContext:
    """Shared state of one evaluation run: data, config, fitted routers and their test sweeps (memoised)."""

    def __init__(self, data: RoutingData, cfg: EvalConfig | None = None, run_id: str = "eval",
                 progress: Callable[[str], None] | bool | None = None,
                 profile_source: ProfileSource | None = None) -> None:
        self.data, self.cfg, self.run_id = data, cfg or EvalConfig(), run_id
        self._validate()
        self.test = data.idx("test")
        self.lambdas = self.cfg.sweep_lambdas
        self.profile_source = profile_source
        self.notes: list[str] = []
        if progress is True:
            self.log: Callable[[str], None] = lambda msg: print(f"[eval] {msg}", flush=True)
        elif callable(progress):
            self.log = progress
        else:
            self.log = lambda msg: None
        try:
            self.bounds = cost_bounds(data)
        except ValueError:  # every model is free (e.g. a local Ollama pool): Rank Score is undefined
            self.bounds = (float("nan"), float("nan"))
            if self.cfg.primary_metric == "rank_score":
                self.cfg = replace(self.cfg, primary_metric="nauc_interp")
                self.notes.append("No model has a positive cost, so Rank Score is undefined; the primary "
                                  "metric is nAUC (interp) instead.")
                self.log(self.notes[-1])
        self._latent: dict[tuple[str, str, int, str], LatentRouterRouter] = {}
        self._baselines: dict[tuple[str, int], Router] = {}
        self._sweeps: dict[tuple[str, int, str], Sweep] = {}
        self._main: dict[tuple[str, int], dict[str, float]] | None = None
        self.fit_seconds = 0.0

    def _validate(self) -> None:
        d = self.data
        if d.k < 2:
            raise ValueError(f"evaluation needs at least 2 models, RoutingData has {d.k}")
        for split in ("train", "test"):
            if len(d.idx(split)) == 0:
                raise ValueError(f"evaluation needs {split!r} rows; RoutingData.split has none")
        if not d.avail[d.idx("test")].any():
            raise ValueError("evaluation: no test row has an available model (RoutingData.avail)")

    # -- fits -------------------------------------------------------------------------------------------------

    def train_cfg(self, setting: str) -> TrainConfig:
        if setting == "oriented":
            return replace(self.cfg.train, lam=0.0, lam_choices=())
        if setting == "cost":
            return replace(self.cfg.train, lam=0.0, lam_choices=tuple(self.cfg.cost_train_lambdas))
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")

    def latent(self, setting: str, seed: int, variant: LatentRouterConfig | None = None,
               tag: str = "main", data: RoutingData | None = None) -> LatentRouterRouter:
        """The LatentRouter of ``variant`` (default: the configured model) trained for ``setting`` at ``seed``.

        ``tag`` names the training data when it is not ``self.data`` (cold start masks a model out).
        """
        mc = variant or self.cfg.model
        key = (_variant_key(mc), setting, int(seed), tag)
        if key not in self._latent:
            t0 = time.perf_counter()
            router = LatentRouterRouter(mc, self.train_cfg(setting), name=LATENT)
            router.fit(self.data if data is None else data, seed=int(seed))
            self.fit_seconds += time.perf_counter() - t0
            changed = {k: v for k, v in mc.to_dict().items() if self.cfg.model.to_dict().get(k) != v}
            self.log(f"fit LatentRouter setting={setting} seed={seed} tag={tag} variant={changed or 'base'} "
                     f"({time.perf_counter() - t0:.1f}s, best epoch {router.result.best_epoch + 1})")
            self._latent[key] = router
        return self._latent[key]

    def make_baseline(self, name: str) -> Router:
        b = self.cfg.baselines
        makers: dict[str, Callable[[], Router]] = {
            ORACLE: OracleRouter,
            STRONGEST: StrongestRouter,
            "Cheapest": CheapestRouter,
            "Random": RandomRouter,
            "KNNRouter": lambda: KNNRouter(k=b.knn_k),
            "KMeansRouter": lambda: KMeansRouter(n_clusters=b.kmeans_clusters, n_init=b.kmeans_n_init),
            "MLPMFRouter": lambda: MLPMFRouter(MLPMFConfig(hidden=tuple(b.mlpmf_hidden), train=b.train)),
            "RouteLLM-MF": lambda: RouteLLMMFRouter(RouteLLMConfig(dim=b.routellm_dim, train=b.train)),
            "VL feature router": lambda: VLFeatureRouter(VLFeatureConfig(hidden=tuple(b.vl_hidden),
                                                                         lambdas=tuple(b.vl_lambdas), train=b.train)),
        }
        if name not in makers:
            raise ValueError(f"unknown baseline {name!r}; known: {list(makers)}")
        return makers[name]()

    def baseline(self, name: str, seed: int) -> Router:
        key = (name, int(seed))
        if key not in self._baselines:
            t0 = time.perf_counter()
            self._baselines[key] = self.make_baseline(name).fit(self.data, seed=int(seed))
            self.fit_seconds += time.perf_counter() - t0
            self.log(f"fit {name} seed={seed} ({time.perf_counter() - t0:.1f}s)")
        return self._baselines[key]

    def router_for(self, name: str, setting: str, seed: int) -> Router:
        """The fitted router that fills ``setting`` of Table 1 for display name ``name``."""
        return self.latent(setting, seed) if name == LATENT else self.baseline(name, seed)

    def sweep(self, name: str, setting: str, seed: int) -> Sweep:
        """The full-pool test sweep of ``router_for(name, setting, seed)`` (oriented LatentRouter: lambda 0 only)."""
        fit_setting = setting if name == LATENT else "both"
        key = (name, int(seed), fit_setting)
        if key not in self._sweeps:
            lams = np.array([0.0]) if (name == LATENT and setting == "oriented") else self.lambdas
            self._sweeps[key] = lambda_sweep(self.router_for(name, setting, seed), self.data, self.test, lams)
        return self._sweeps[key]

    def seed_metrics(self, name: str, seed: int) -> dict[str, float]:
        """Table-1 metrics of one router and seed: oriented/* from its oriented fit, cost/* from its cost fit,
        plus avg/<primary>."""
        if self._main is None:
            self._main = {}
        key = (name, int(seed))
        if key not in self._main:
            out: dict[str, float] = {}
            for st in SETTINGS:
                m = evaluate_sweep(self.sweep(name, st, seed), self.data, self.bounds)
                out.update({k: v for k, v in m.items() if k.startswith(f"{st}/")})
            pm = self.cfg.primary_metric
            out[f"{AVG}/{pm}"] = 0.5 * (out[f"oriented/{pm}"] + out[f"cost/{pm}"])
            self._main[key] = out
        return self._main[key]

    def best_baseline(self, setting: str = AVG, metric: str | None = None) -> str:
        """The non-oracle baseline with the best mean ``setting/metric`` over seeds (ties: Table-1 order)."""
        metric = metric or self.cfg.primary_metric
        scores = {n: float(np.mean([self.seed_metrics(n, s)[f"{setting}/{metric}"] for s in self.cfg.seeds]))
                  for n in BASELINE_NAMES if n != ORACLE}
        scores = {n: (v if np.isfinite(v) else -np.inf) for n, v in scores.items()}  # undefined metric: last
        return max(scores, key=lambda n: (scores[n], -BASELINE_NAMES.index(n)))

    def primary_of(self, oriented: Mapping[str, float], cost: Mapping[str, float]) -> float:
        pm = self.cfg.primary_metric
        return 0.5 * (oriented[f"oriented/{pm}"] + cost[f"cost/{pm}"])


# --------------------------------------------------------------------------------------------- experiments


def main_table(ctx: EvalContext) -> ExperimentResult:
    """Table 1: every router x {oriented, cost} x seeds, plus Welch's t-test of LatentRouter vs the best baseline.

    Rows: all oriented/* and cost/* metrics of ``router.evaluation.metrics.evaluate_sweep`` and avg/<primary>; the Welch
    statistics are aggregate rows (seed -1) with metrics ``welch_t:<metric>`` / ``welch_p:<metric>``.
    """
    cfg, rows = ctx.cfg, []
    for name in ROUTERS:
        for seed in cfg.seeds:
            rows += _rows(ctx.run_id, "main_table", name, seed, ctx.seed_metrics(name, seed))
    welch = []
    metrics = list(dict.fromkeys([cfg.primary_metric, "rank_score", "nauc_interp"]))
    for st in (*SETTINGS, AVG):
        for metric in metrics if st != AVG else [cfg.primary_metric]:
            key = f"{st}/{metric}"
            lat = np.array([ctx.seed_metrics(LATENT, s)[key] for s in cfg.seeds])
            best = ctx.best_baseline(st, metric)
            base = np.array([ctx.seed_metrics(best, s)[key] for s in cfg.seeds])
            try:
                t, p = welch_t(lat, base)
            except ValueError:  # fewer than 2 seeds (or a non-finite value): no test
                t, p = float("nan"), float("nan")
            lm, ls = mean_std(lat)
            bm, bs = mean_std(base)
            welch.append({"setting": st, "metric": metric, "latent_mean": lm, "latent_std": ls,
                          "best_baseline": best, "baseline_mean": bm, "baseline_std": bs, "t": t, "p": p,
                          "latent_is_best": bool(lm > bm), "significant": bool(lm > bm and p < 0.05),
                          "n_seeds": len(cfg.seeds)})
            for stat, val in (("welch_t", t), ("welch_p", p)):
                rows.append({"run_id": ctx.run_id, "experiment": "main_table", "router": LATENT, "setting": st,
                             "seed": NO_SEED, "metric": f"{stat}:{metric}", "value": val, "pool": FULL_POOL,
                             "task_group": ALL_GROUPS})
    res = _frame(rows)
    summary = summarise(res.filter(pl.col("seed") >= 0), ("router", "setting", "metric"))
    return ExperimentResult(res, {"main_summary": summary, "welch": pl.DataFrame(welch)})


def frontier(ctx: EvalContext) -> ExperimentResult:
    """Cost-quality operating points over the lambda sweep (test split, cost-setting fits) for every router.

    Extra frames: ``frontier`` (router, seed, lambda, cost, cost_usd, quality) and ``frontier_models`` (the
    always-pick-one-model points). Rows: nauc_interp, nauc_step, ps per router and seed (setting cost).
    """
    pts, rows = [], []
    for name in ROUTERS:
        for seed in ctx.cfg.seeds:
            sw = ctx.sweep(name, "cost", seed)
            for i, lam in enumerate(sw.lambdas):
                pts.append({"router": name, "seed": int(seed), "lambda": float(lam), "cost": float(sw.cost[i]),
                            "cost_usd": float(sw.cost_usd[i]), "quality": float(sw.quality[i])})
            m = ctx.seed_metrics(name, seed)
            rows += _rows(ctx.run_id, "frontier", name, seed,
                          {k: m[f"cost/{k}"] for k in ("nauc_interp", "nauc_step", "ps")}, setting="cost")
    d, te = ctx.data, ctx.test
    models = []
    for j, mid in enumerate(d.model_ids):
        ok = te[d.avail[te, j]]
        if len(ok):
            models.append({"model": mid, "cost": float(d.cost[ok, j].mean()),
                           "cost_usd": float(d.cost_usd[ok, j].mean()), "quality": float(d.quality[ok, j].mean()),
                           "simulated": bool(d.simulated[j]) if d.simulated else False})
    return ExperimentResult(_frame(rows), {"frontier": pl.DataFrame(pts), "frontier_models": pl.DataFrame(models)})


def _group_quality(data: RoutingData, rows: np.ndarray, choice: np.ndarray) -> dict[str, tuple[float, float]]:
    labels = np.asarray(data.task_group)[rows].astype(str)
    out = {}
    for g in sorted(set(labels.tolist())):
        sel = labels == g
        out[g] = (float(data.quality[rows[sel], choice[sel]].mean()), float(data.cost_usd[rows[sel], choice[sel]].mean()))
    out[ALL_GROUPS] = (float(data.quality[rows, choice].mean()), float(data.cost_usd[rows, choice].mean()))
    return out


def task_groups(ctx: EvalContext) -> ExperimentResult:
    """Per task group quality (and USD cost) of each router, and its gain over Strongest on the same rows.

    Oriented: the lambda = 0 pick of the oriented fit; cost: the pick at ``decision_lambda`` of the cost fit.
    """
    rows = []
    for seed in ctx.cfg.seeds:
        for st in SETTINGS:
            lam = 0.0 if st == "oriented" else ctx.cfg.decision_lambda
            ref_sw = ctx.sweep(STRONGEST, st, seed)
            ref = _group_quality(ctx.data, ref_sw.rows, ref_sw.choices[ref_sw.at(lam)])
            for name in ROUTERS:
                sw = ctx.sweep(name, st, seed)
                if not np.array_equal(sw.rows, ref_sw.rows):
                    raise RuntimeError("task_groups: routers evaluated on different rows")
                for g, (q, c) in _group_quality(ctx.data, sw.rows, sw.choices[sw.at(lam)]).items():
                    rows += _rows(ctx.run_id, "task_groups", name, seed,
                                  {"quality": q, "cost_usd": c, "gain_vs_strongest": q - ref[g][0]},
                                  task_group=g, setting=st)
    res = _frame(rows)
    return ExperimentResult(res, {"task_groups": summarise(res, ("router", "setting", "metric", "task_group"))})


OUTCOME_METHODS: tuple[str, ...] = ("Direct classifier (VL feature)", "MLPMFRouter", "Point-score router",
                                    "No latent communication", LATENT)


def outcome_prediction(ctx: EvalContext) -> ExperimentResult:
    """Table 2: how well each method predicts the full per-model outcome vector on test rows (lambda 0 fits).

    Direct classifier = the VL feature router's lambda-0 class probabilities used as outcome scores (its MSE
    compares probabilities with outcomes, as the paper's "direct classifier" row does); point-score router =
    LatentRouter with ``distributional=False``; no latent communication = ``use_communication=False``.
    """
    d, te, rows = ctx.data, ctx.test, []
    variants: dict[str, Callable[[int], Router]] = {
        "Direct classifier (VL feature)": lambda s: ctx.baseline("VL feature router", s),
        "MLPMFRouter": lambda s: ctx.baseline("MLPMFRouter", s),
        "Point-score router": lambda s: ctx.latent("oriented", s, replace(ctx.cfg.model, distributional=False)),
        "No latent communication": lambda s: ctx.latent("oriented", s, replace(ctx.cfg.model, use_communication=False)),
        LATENT: lambda s: ctx.latent("oriented", s),
    }
    te = te[d.avail[te].any(axis=1)]
    for name in OUTCOME_METHODS:
        for seed in ctx.cfg.seeds:
            q_hat, _ = variants[name](seed).predict(d, te)
            m = outcome_metrics(np.asarray(q_hat, dtype=np.float64), d.quality[te], d.avail[te])
            rows += _rows(ctx.run_id, "outcome_prediction", name, seed, m, setting="oriented")
    res = _frame(rows)
    return ExperimentResult(res, {"outcome": summarise(res, ("router", "metric"))})


def ablation_variants(base: LatentRouterConfig, h_values: Sequence[int] = (0, 1, 2, 3),
                      c_values: Sequence[int] = (1, 4, 7, 12)) -> list[tuple[str, str, LatentRouterConfig]]:
    """(family, label, config): component removals (paper Fig. 3b / Table 5), depth H and capsule count C."""
    out = [
        ("component", "Full LatentRouter", base),
        ("component", "w/o routing capsules", replace(base, use_capsules=False)),
        ("component", "w/o model capability tokens", replace(base, use_model_tokens=False)),
        ("component", "w/o latent communication", replace(base, use_communication=False)),
        ("component", "w/o distributional prediction", replace(base, distributional=False)),
        ("component", "w/o bounded correction", replace(base, bounded_correction=False)),
    ]
    out += [("H", f"H={h}", replace(base, n_layers=int(h))) for h in h_values]
    out += [("C", f"C={c}", replace(base, n_capsules=int(c))) for c in c_values]
    return out


def _latent_metrics(ctx: EvalContext, setting: str, seed: int, variant: LatentRouterConfig | None,
                    avail: np.ndarray | None = None, tag: str = "main", data: RoutingData | None = None,
                    eval_data: RoutingData | None = None) -> dict[str, float]:
    """``setting/*`` metrics of a LatentRouter variant on the test rows (optionally with a pool mask)."""
    shared = ctx.cfg.ablation_shared_fit and variant is not None and tag == "ablation"
    fit_setting = "oriented" if shared else setting
    router = ctx.latent(fit_setting, seed, variant, "main" if tag == "ablation" else tag, data)
    lams = np.array([0.0]) if setting == "oriented" else ctx.lambdas
    ed = eval_data or ctx.data
    sw = lambda_sweep(router, ed, ctx.test, lams, avail)
    m = evaluate_sweep(sw, ed, ctx.bounds)
    return {k: v for k, v in m.items() if k.startswith(f"{setting}/")}


def ablations(ctx: EvalContext) -> ExperimentResult:
    """Component ablations, communication depth H and capsule count C (paper Fig. 3, Tables 5 and 9).

    With ``ablation_shared_fit`` every variant (the full model included) is trained once at lambda = 0 and
    judged in both settings, so its cost column differs from the main table's cost-aware LatentRouter; the
    comparison between variants stays like for like.
    """
    cfg, rows, info = ctx.cfg, [], []
    seeds = cfg.ablation_seeds or cfg.seeds
    for family, label, variant in ablation_variants(cfg.model, cfg.h_values, cfg.c_values):
        info.append({"router": f"{LATENT} [{label}]", "family": family, "label": label})
        for seed in seeds:
            m: dict[str, float] = {}
            for st in SETTINGS:
                m.update(_latent_metrics(ctx, st, seed, variant, tag="ablation"))
            m[f"{AVG}/{cfg.primary_metric}"] = ctx.primary_of(m, m)
            rows += _rows(ctx.run_id, "ablations", f"{LATENT} [{label}]", seed, m)
    res = _frame(rows)
    summary = summarise(res, ("router", "setting", "metric")).join(pl.DataFrame(info), on="router", how="left")
    return ExperimentResult(res, {"ablations": summary})


def pool_masks(data: RoutingData, cfg: EvalConfig, seed: int) -> list[tuple[str, list[np.ndarray]]]:
    """(pool name, [model masks [K] bool]) of the changed-pool settings; a setting's value averages its masks.

    Strongest / cheapest are decided on train + val rows only (the Strongest / Cheapest baselines' rules).
    """
    k = data.k
    one = np.ones(k, dtype=bool)
    probe = data.idx("train")[:1]
    full_av = np.ones((1, k), dtype=bool)
    strongest = int(StrongestRouter().fit(data).select(data, probe, 0.0, full_av)[0])
    cheapest = int(CheapestRouter().fit(data).select(data, probe, 0.0, full_av)[0])
    n_drop = min(k - 1, max(1, int(round(cfg.pool_random_frac * k))))
    rng = np.random.default_rng([int(seed), 30])
    rand = []
    for _ in range(cfg.pool_random_draws):
        m = one.copy()
        m[rng.choice(k, size=n_drop, replace=False)] = False
        rand.append(m)

    def without(j: int) -> np.ndarray:
        m = one.copy()
        m[j] = False
        return m

    return [
        (FULL_POOL, [one]),
        ("remove_strongest", [without(strongest)]),
        ("remove_cheapest", [without(cheapest)]),
        (f"remove_random_{int(round(100 * cfg.pool_random_frac))}pct", rand),
        ("leave_one_model_out", [without(j) for j in range(k)]),
        ("one_model", [np.eye(k, dtype=bool)[j] for j in range(k)]),
    ]


def _time_select(router: Router, data: RoutingData, rows: np.ndarray, avail: np.ndarray | None,
                 repeats: int) -> float:
    """Median wall time of one ``select`` call over ``rows`` at lambda 0, in ms per query (one warm-up call)."""
    router.select(data, rows, 0.0, avail)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        router.select(data, rows, 0.0, avail)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times)) / len(rows)


def _latency_rows(ctx: EvalContext) -> np.ndarray:
    """``latency_batch`` test rows (test rows repeated when there are fewer), fixed for every router."""
    return np.resize(ctx.test, ctx.cfg.latency_batch)


def pool_changes(ctx: EvalContext) -> ExperimentResult:
    """Changed candidate pools with the SAME trained routers (availability masks, no retraining; Fig. 4a-b).

    Per pool and seed: primary metric, oracle regret at lambda 0 (oracle over the available models) and the
    mean regret over the sweep (``cost_regret``), and LatentRouter forward latency in ms per query with that
    pool (batch of ``latency_batch`` test rows). Also the best non-oracle baseline and the pool Oracle.
    Multi-mask settings (random removal, leave-one-out, one model) average their masks per seed; the per-mask
    values are in the ``pool_changes_detail`` frame. Latency is timed on the first mask of a setting (all its
    masks keep the same number of models).
    """
    cfg, d, te = ctx.cfg, ctx.data, ctx.test
    pm = cfg.primary_metric
    best = ctx.best_baseline()
    lat_rows = _latency_rows(ctx)
    rows, detail = [], []
    for seed in cfg.seeds:
        for pool, masks in pool_masks(d, cfg, seed):
            acc: dict[str, list[dict[str, float]]] = {LATENT: [], best: [], ORACLE: []}
            for mask in masks:
                av = d.avail[te] & mask[None, :]
                models = ",".join(m for m, keep in zip(d.model_ids, mask, strict=True) if keep)
                for name in acc:
                    m: dict[str, float] = {}
                    for st in SETTINGS:
                        if name == LATENT:
                            m.update(_latent_metrics(ctx, st, seed, None, av))
                        else:
                            sw = lambda_sweep(ctx.baseline(name, seed), d, te,
                                              np.array([0.0]) if st == "oriented" else ctx.lambdas, av)
                            m.update({k: v for k, v in evaluate_sweep(sw, d, ctx.bounds).items()
                                      if k.startswith(f"{st}/")})
                    vals = {f"{AVG}/{pm}": ctx.primary_of(m, m), "oriented/regret": m["oriented/regret"],
                            "cost/regret": m["cost/regret"]}
                    if name == LATENT:
                        # every mask of a setting has the same pool size, so the first one is timed
                        if mask is masks[0]:
                            lav = d.avail[lat_rows] & mask[None, :]
                            latency = _time_select(ctx.latent("oriented", seed), d, lat_rows, lav,
                                                   cfg.latency_repeats)
                        vals["oriented/latency_ms"] = latency
                    acc[name].append(vals)
                    detail.append({"pool": pool, "router": name, "seed": int(seed), "models": models,
                                   "n_available": int(mask.sum()), "primary": vals[f"{AVG}/{pm}"],
                                   "regret": vals["oriented/regret"], "cost_regret": vals["cost/regret"],
                                   "latency_ms": vals.get("oriented/latency_ms", float("nan"))})
            for name, vals in acc.items():
                mean = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
                rows += _rows(ctx.run_id, "pool_changes", name, seed, mean, pool=pool)
    res = _frame(rows)
    summary = _wide(summarise(res, ("pool", "router", "setting", "metric")), ("pool", "router"),
                    {"primary": (AVG, pm), "regret": ("oriented", "regret"), "cost_regret": ("cost", "regret"),
                     "latency_ms": ("oriented", "latency_ms")})
    return ExperimentResult(res, {"pool_changes": summary, "pool_changes_detail": pl.DataFrame(detail),
                                  "pool_best_baseline": pl.DataFrame({"best_baseline": [best]})})


def cold_start(ctx: EvalContext) -> ExperimentResult:
    """Hold one model out of training (its column masked everywhere), insert it at test time (App. C.5).

    The model's capability profile comes from ``ctx.profile_source(n)`` for n in ``cold_start_sizes`` and
    None (full calibration); without a source, :func:`fallback_profile_source`. The router is trained on the
    full-calibration view with the model's availability masked on every row, then evaluated on the test rows
    of each insertion view. Reference rows: the pool without the model ("excluded") and the main router that
    saw the model in training ("seen in training"). Pool labels: ``insert:<model>:calib=<n|full>``,
    ``without:<model>``, ``seen:<model>``.
    """
    cfg, d = ctx.cfg, ctx.data
    model_id = cfg.cold_start_model or default_cold_start_model(d)
    if model_id not in d.model_ids:
        raise ValueError(f"cold start: model {model_id!r} is not in the pool {d.model_ids}")
    j = d.model_ids.index(model_id)
    tag = f"cold:{model_id}"
    seeds = cfg.cold_start_seeds or cfg.seeds
    fallback = ctx.profile_source is None
    rows, info = [], []
    sizes: list[int | None] = [*cfg.cold_start_sizes, None]
    for seed in seeds:
        source = ctx.profile_source or fallback_profile_source(d, model_id, seed)
        base = insertion_view(source, None, d, model_id)
        masked = base.avail.copy()
        masked[:, j] = False
        train_data = replace(base, avail=masked)

        def record(pool: str, metrics: dict[str, float], seed: int = seed) -> None:
            metrics = {**metrics, f"{AVG}/{cfg.primary_metric}": ctx.primary_of(metrics, metrics)}
            rows.extend(_rows(ctx.run_id, "cold_start", LATENT, seed, metrics, pool=pool))

        for n in sizes:
            label = "full" if n is None else str(n)
            view = base if n is None else insertion_view(source, n, d, model_id)
            m: dict[str, float] = {}
            for st in SETTINGS:
                m.update(_latent_metrics(ctx, st, seed, None, tag=tag, data=train_data, eval_data=view))
            record(f"insert:{model_id}:calib={label}", m)
            if seed == seeds[0]:
                n_used = len(calibration_rows(d, model_id, n, seed)) if (fallback and n is not None) else None
                info.append({"pool": f"insert:{model_id}:calib={label}", "calib": label, "n_used": n_used,
                             "order": len(info)})
        av = d.avail[ctx.test].copy()
        av[:, j] = False
        m = {}
        for st in SETTINGS:
            m.update(_latent_metrics(ctx, st, seed, None, av, tag=tag, data=train_data, eval_data=base))
        record(f"without:{model_id}", m)
        seen = ctx.seed_metrics(LATENT, seed)
        record(f"seen:{model_id}", {k: v for k, v in seen.items() if not k.startswith(f"{AVG}/")})
    info += [{"pool": f"without:{model_id}", "calib": "excluded", "n_used": None, "order": len(info)},
             {"pool": f"seen:{model_id}", "calib": "seen in training", "n_used": None, "order": len(info) + 1}]
    res = _frame(rows)
    summary = _wide(summarise(res, ("pool", "setting", "metric")), ("pool",),
                    {"primary": (AVG, cfg.primary_metric), "regret": ("oriented", "regret"),
                     "cost_regret": ("cost", "regret"), "quality": ("oriented", "quality")})
    summary = summary.join(pl.DataFrame(info, schema_overrides={"n_used": pl.Int64}), on="pool",
                           how="left").sort("order")
    return ExperimentResult(res, {"cold_start": summary.with_columns(pl.lit(model_id).alias("model"))})


def efficiency(ctx: EvalContext) -> ExperimentResult:
    """Parameters (stored numbers for KNN / KMeans) and router-side latency of every learned router.

    Latency is ``select`` at lambda 0 (batch building, forward pass, argmax; no MLLM call) on ``LATENCY_THREADS`` CPU
    thread(s), as the routing API serves a request: ms per query at batch ``latency_batch`` (median of
    repeats) and the p50 of ``latency_single_calls`` single-query calls; seed ``seeds[0]``, oriented fits.
    Also the router's mean primary metric over seeds.
    """
    cfg, d = ctx.cfg, ctx.data
    seed = cfg.seeds[0]
    rows_b = _latency_rows(ctx)
    singles = rows_b[: cfg.latency_single_calls]
    rows, recs = [], []
    for name in (*LEARNED_BASELINES, LATENT):
        router = ctx.router_for(name, "oriented", seed)
        with torch_threads(LATENCY_THREADS):  # one stated count, whatever the run's settings (OpenMP policy)
            b256 = _time_select(router, d, rows_b, None, cfg.latency_repeats)
            one = []
            for r in singles:
                t0 = time.perf_counter()
                router.select(d, np.array([r]), 0.0)
                one.append(1000.0 * (time.perf_counter() - t0))
        primary = float(np.mean([ctx.seed_metrics(name, s)[f"{AVG}/{cfg.primary_metric}"] for s in cfg.seeds]))
        vals = {"params": float(router.n_parameters()), "latency_ms_batch": b256,
                "latency_ms_single_p50": float(np.median(one))}
        rows += _rows(ctx.run_id, "efficiency", name, seed, {**vals, f"{AVG}/{cfg.primary_metric}": primary},
                      setting="oriented")
        recs.append({"router": name, **vals, "primary": primary, "batch": len(rows_b)})
    return ExperimentResult(_frame(rows), {"efficiency": pl.DataFrame(recs)})


EXPERIMENT_FUNCS: dict[str, Callable[[EvalContext], ExperimentResult]] = {
    "main_table": main_table,
    "frontier": frontier,
    "task_groups": task_groups,
    "outcome_prediction": outcome_prediction,
    "ablations": ablations,
    "pool_changes": pool_changes,
    "cold_start": cold_start,
    "efficiency": efficiency,
}


# --------------------------------------------------------------------------------------------- decisions


def routing_decisions(ctx: EvalContext) -> pl.DataFrame:
    """One row per (test query, router, lambda) for lambda in {0, decision_lambda} on the full pool.

    LatentRouter uses its oriented fit at lambda 0 and its cost fit at ``decision_lambda``; scores are the
    router's own per-model scores at that lambda over the available models (JSON, 6 significant digits).
    """
    cfg, d = ctx.cfg, ctx.data
    seed = cfg.seeds[0] if cfg.decisions_seed is None else cfg.decisions_seed
    if seed not in cfg.seeds:
        raise ValueError(f"EvalConfig.decisions_seed={seed} is not one of seeds {cfg.seeds}")
    recs = []
    for lam, st in ((0.0, "oriented"), (cfg.decision_lambda, "cost")):
        osw = ctx.sweep(ORACLE, st, seed)
        oracle_choice = osw.choices[osw.at(lam)]
        for name in ROUTERS:
            sw = ctx.sweep(name, st, seed)
            choice = sw.choices[sw.at(lam)]
            rows = sw.rows
            if not np.array_equal(rows, osw.rows):
                raise RuntimeError("routing_decisions: routers evaluated on different rows")
            scores = np.asarray(ctx.router_for(name, st, seed).scores(d, rows, lam), dtype=np.float64)
            for i, r in enumerate(rows):
                sc = {m: float(f"{scores[i, j]:.6g}") for j, m in enumerate(d.model_ids)
                      if d.avail[r, j] and np.isfinite(scores[i, j])}
                recs.append({"run_id": ctx.run_id, "query_id": d.query_ids[r], "router": name, "lambda": float(lam),
                             "pool": FULL_POOL, "chosen_model": d.model_ids[choice[i]],
                             "oracle_model": d.model_ids[oracle_choice[i]],
                             "quality": float(d.quality[r, choice[i]]), "cost_usd": float(d.cost_usd[r, choice[i]]),
                             "scores": json.dumps(sc, sort_keys=True), "seed": int(seed)})
    if not recs:
        return pl.DataFrame(schema=ROUTING_DECISIONS)
    return conform(pl.DataFrame(recs), ROUTING_DECISIONS, "routing_decisions")


# --------------------------------------------------------------------------------------------- run all


def run_all(
    data: RoutingData,
    cfg: EvalConfig | None = None,
    run_id: str = "eval",
    progress: Callable[[str], None] | bool | None = None,
    *,
    profile_source: ProfileSource | None = None,
) -> EvalOutput:
    """Run ``cfg.experiments`` (in the canonical order) and the routing decisions; see the module docstring.

    ``profile_source`` feeds the cold-start experiment (see :func:`insertion_view`,
    :func:`warehouse_profile_source`); without one, :func:`fallback_profile_source` is used.
    """
    return run_experiments(EvalContext(data, cfg, run_id, progress, profile_source))


def run_experiments(ctx: EvalContext) -> EvalOutput:
    """:func:`run_all` on an existing context (its fitted routers stay available, e.g. to save a checkpoint)."""
    cfg, data, run_id, profile_source = ctx.cfg, ctx.data, ctx.run_id, ctx.profile_source
    t_all = time.perf_counter()
    frames, tables, timings = [], {}, {}
    for name in EXPERIMENTS:
        if name not in cfg.experiments:
            continue
        ctx.log(f"experiment {name} ...")
        t0 = time.perf_counter()
        out = EXPERIMENT_FUNCS[name](ctx)
        timings[name] = time.perf_counter() - t0
        frames.append(out.results)
        tables.update(out.tables)
        ctx.log(f"experiment {name} done in {timings[name]:.1f}s")
    t0 = time.perf_counter()
    decisions = routing_decisions(ctx)
    timings["routing_decisions"] = time.perf_counter() - t0
    timings["fits"] = ctx.fit_seconds
    timings["total"] = time.perf_counter() - t_all
    results = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=EVAL_RESULTS)
    d = data
    meta = {
        "model_ids": list(d.model_ids),
        "simulated_models": [m for m, s in zip(d.model_ids, d.simulated or [False] * d.k, strict=True) if s],
        "text_only": bool(d.text_only),
        "n_queries": {s: int(len(d.idx(s))) for s in ("train", "val", "test")},
        "task_groups": sorted(set(np.asarray(d.task_group).astype(str).tolist())),
        "primary_metric": cfg.primary_metric,
        "lambdas": ctx.lambdas.tolist(),
        "decision_lambda": cfg.decision_lambda,
        "seeds": list(cfg.seeds),
        "rank_bounds_usd": list(ctx.bounds),
        "experiments": [e for e in EXPERIMENTS if e in cfg.experiments],
        "profile_source": "caller" if profile_source is not None else "fallback_profile_source",
        "notes": list(ctx.notes),
        "config": cfg.to_dict(),
    }
    if "cold_start" in cfg.experiments:
        meta["cold_start_model"] = cfg.cold_start_model or default_cold_start_model(d)
    return EvalOutput(run_id, conform(results, EVAL_RESULTS, "eval_results"), decisions, tables, timings, meta)
