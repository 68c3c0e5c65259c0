"""What an evaluation run runs and how big: the experiment names, Table 1's rows (the router registry's
names, ``router.models.registry``), and :class:`EvalConfig` with its ``quick`` (CI), ``demo`` (pipeline) and
``paper`` presets. Each router's sizes live in its own config dataclass (``EvalConfig.routers``); its tuning
candidates are its registry grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from router.models.baselines import TorchTrainConfig
from router.models.latent_router.model import LatentRouterConfig
from router.models.registry import LATENT, apply_overrides, router_names, spec
from router.models.registry import ORACLE as ORACLE  # re-exported: the evaluation's spelling of the names
from router.models.registry import STRONGEST as STRONGEST
from router.training.trainer import TrainConfig

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
AVG = "avg"  # setting label of the primary metric (mean of the oriented and cost values)
PRIMARY_METRICS: tuple[str, ...] = ("rank_score", "nauc_budget", "nauc_interp", "nauc_step")
LATENCY_THREADS = 1  # efficiency timings: one CPU thread per call, the routing API's setting
# the rows of Table 1, in order: every registered router (LatentRouter last)
ROUTERS: tuple[str, ...] = router_names()
BASELINE_NAMES: tuple[str, ...] = tuple(n for n in ROUTERS if n != LATENT)
TRAINING_FREE: frozenset[str] = frozenset(router_names(learned=False))
LEARNED_BASELINES: tuple[str, ...] = tuple(n for n in BASELINE_NAMES if n not in TRAINING_FREE)
# 0 plus 12 roughly log-spaced weights in [0.01, 3] on the normalised cost (cost 1 = the priciest model's mean)
DEFAULT_EVAL_LAMBDAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
FULL_POOL = "full"
ALL_GROUPS = "all"
NO_SEED = -1  # seed of aggregate rows (Welch / paired tests)
PRESETS: tuple[str, ...] = ("quick", "demo", "paper")
MIN_SPLITS_FOR_SIGNIFICANCE = 3  # a significance claim needs a paired test over at least this many splits


def router_configs(train: TorchTrainConfig | None = None,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The config of every baseline (registry defaults), ``train`` set on each that trains with torch, then
    per-router ``overrides`` (router name -> {field: value}, keys as in the tuning grids)."""
    train = TorchTrainConfig() if train is None else train
    out: dict[str, Any] = {}
    for name in BASELINE_NAMES:
        cfg = spec(name).default_config()
        if "train" in {f.name for f in fields(cfg)} and isinstance(cfg.train, TorchTrainConfig):
            cfg = replace(cfg, train=train)
        out[name] = cfg
    for name, over in (overrides or {}).items():
        if name not in out:
            raise ValueError(f"router_configs: {name!r} is not a baseline; known: {list(out)}")
        out[name] = apply_overrides(out[name], over)
    return out


@dataclass
class EvalConfig:
    """What to run and how big; ``quick()`` for CI, ``demo()`` for the pipeline, ``paper()`` for the full protocol."""

    seeds: tuple[int, ...] = (0, 1, 2)
    lambdas: tuple[float, ...] = DEFAULT_EVAL_LAMBDAS  # evaluation sweep (0 is always added)
    decision_lambda: float = 0.3  # the cost-aware lambda of routing_decisions and the task-group cost view
    cost_train_lambdas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0)  # cost-aware LatentRouter training
    experiments: tuple[str, ...] = EXPERIMENTS
    primary_metric: str = "rank_score"  # rank_score | nauc_budget | nauc_interp | nauc_step
    model: LatentRouterConfig = field(default_factory=lambda: LatentRouterConfig(hidden=48))
    # the evaluation's fits draw no per-epoch training curve (curve_rows=0: two fewer forward passes per epoch,
    # the same weights); the latent_router asset's checkpoint keeps its curve
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, patience=5, curve_rows=0))
    # every baseline's own config (router name -> its registry config dataclass); see router_configs
    routers: dict[str, Any] = field(default_factory=router_configs)
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
    # R seeded random re-splits of the queries (split 0 = the data's own split); group-aware when the data has
    # groups. Only the main table runs on every split; the other experiments judge split 0.
    n_splits: int = 1
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    # hyperparameter candidates tried per trainable router on each split's validation rows (seed 0), see
    # the registry grids; 1 = the defaults only
    tuning_trials: int = 1

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
        if self.n_splits < 1 or self.tuning_trials < 1:
            raise ValueError(f"EvalConfig needs n_splits >= 1 and tuning_trials >= 1, got {self.n_splits}, "
                             f"{self.tuning_trials}")
        fr = self.split_fractions
        if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0 or fr[2] <= 0 or abs(sum(fr) - 1) > 1e-6:
            raise ValueError(f"EvalConfig.split_fractions must be (train, val, test) summing to 1, got {fr}")

    @property
    def sweep_lambdas(self) -> np.ndarray:
        """Sorted evaluation lambdas, always containing 0 and ``decision_lambda``."""
        return np.unique(np.asarray([0.0, self.decision_lambda, *self.lambdas], dtype=np.float64))

    @classmethod
    def quick(cls, **overrides: Any) -> EvalConfig:
        """Tiny routers, 2 seeds (Welch needs 2), few epochs, one split, two tuning trials: a smoke run of every
        experiment (CI's tests; about a minute of evaluation on the 1,000-query demo graph on 2 cores)."""
        tt = TorchTrainConfig(epochs=3, batch_size=64, patience=2)
        base: dict[str, Any] = dict(
            seeds=(0, 1),
            lambdas=(0.0, 0.03, 0.1, 0.3, 1.0, 3.0),
            cost_train_lambdas=(0.0, 0.3, 1.0),
            model=LatentRouterConfig(hidden=16, n_heads=2, n_side_tokens=2),
            train=TrainConfig(epochs=3, patience=2, batch_size=64, curve_rows=0),
            routers=router_configs(tt, {
                "KNNRouter": {"k": 20}, "KMeansRouter": {"n_clusters": 8, "n_init": 2},
                "MLPMFRouter": {"hidden": (32, 16)}, "RouteLLM-MF": {"dim": 16},
                "VL feature router": {"hidden": (32,), "lambdas": (0.0, 1.0, 3.0)}, "ECVL": {"d_model": 16},
                "RouterDC": {"dim": 16, "lambdas": (0.0, 1.0)}, "GraphRouter": {"hidden": 16, "steps": 30},
                "R2-Router": {"hidden": (32, 16)}}),
            ablation_seeds=(0,),
            ablation_shared_fit=True,
            pool_random_draws=2,
            cold_start_sizes=(0, 16, 64),
            cold_start_seeds=(0,),
            latency_batch=64,
            latency_single_calls=10,
            latency_repeats=2,
            tuning_trials=2,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def demo(cls, **overrides: Any) -> EvalConfig:
        """Two splits x one seed, the paper's hidden size 48, a moderate epoch budget and two tuning trials per
        router: the pipeline default, sized for ``make demo`` on 2 cores (the paper preset runs 3 x 3 x 4)."""
        tt = TorchTrainConfig(epochs=15, batch_size=64, patience=3)
        base: dict[str, Any] = dict(
            model=LatentRouterConfig(hidden=48),
            train=TrainConfig(epochs=12, patience=3, batch_size=128, curve_rows=0),
            routers=router_configs(tt, {"KMeansRouter": {"n_init": 4}}),
            seeds=(0,),  # one seed per split: 2 x 2 seeds measured 13.4 min for `make demo` (target 10)
            ablation_seeds=(0,),
            ablation_shared_fit=True,
            cold_start_seeds=(0,),
            n_splits=2,
            tuning_trials=2,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def paper(cls, **overrides: Any) -> EvalConfig:
        """The full protocol: 3 splits x 3 seeds, 4 tuning trials per router, separate oriented / cost fits for
        ablations, 20 epochs."""
        base: dict[str, Any] = dict(n_splits=3, tuning_trials=4)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EvalConfig:
        """The named preset (``quick`` | ``demo`` | ``paper``) with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown evaluation preset {name!r}; expected one of {', '.join(PRESETS)}")
        return getattr(cls, name)(**overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the report's ``meta`` (the run states the config it ran with)."""
        return asdict(self)
