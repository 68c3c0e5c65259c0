"""The router registry: one name per router, mapped to its class, its own config dataclass and its tuning grid.

Every surface resolves routers here and nowhere else: the evaluation (which routers make Table 1, what each
tries on validation), the deployment choice, serving and the CLI. A router's config dataclass is the one a
user edits, the one its tuning grid is written in (grid keys are that dataclass's fields; ``"train.lr"``
reaches a nested dataclass) and the one stored next to a deployed router.

Adding a router is one module with a :class:`~router.models.base.Router` subclass and its config dataclass,
plus one :func:`register` call (``docs/router.md`` shows it)::

    register(RouterSpec("MyRouter", build=MyRouter, config=MyRouterConfig, grid=({}, {"width": 64})))

May import: `router.models`, `router.training` (LatentRouter's fit), the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any

from router.models.base import Router
from router.models.baselines import (
    CheapestRouter,
    ECVLConfig,
    ECVLRouter,
    GraphRouter,
    GraphRouterConfig,
    GroupBestConfig,
    GroupBestRouter,
    KMeansConfig,
    KMeansRouter,
    KNNConfig,
    KNNRouter,
    MLPMFConfig,
    MLPMFRouter,
    OracleRouter,
    R2Router,
    R2RouterConfig,
    RandomRouter,
    RouteLLMConfig,
    RouteLLMMFRouter,
    RouterDCConfig,
    RouterDCRouter,
    StrongestRouter,
    VLFeatureConfig,
    VLFeatureRouter,
)
from router.models.latent_router.model import LatentRouterConfig
from router.training.trainer import LatentRouterRouter, TrainConfig

LATENT = "LatentRouter"
ORACLE = "Oracle"
STRONGEST = "Strongest"


@dataclass
class NoConfig:
    """Routers without settings (Oracle, Strongest, Cheapest, Random)."""


@dataclass
class LatentRouterSetup:
    """LatentRouter's config: the model (architecture) and its training."""

    model: LatentRouterConfig = field(default_factory=lambda: LatentRouterConfig(hidden=48))
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class RouterSpec:
    """A registered router: ``build(config)`` gives an unfitted router; ``grid`` lists validation-only tuning
    candidates (overrides of ``config``'s fields, the defaults first); ``training_free`` routers are never
    tuned."""

    name: str
    build: Callable[[Any], Router]
    config: type = NoConfig
    grid: tuple[Mapping[str, Any], ...] = ({},)
    training_free: bool = False

    def default_config(self) -> Any:
        return self.config()

    def configure(self, config: Any | None = None, overrides: Mapping[str, Any] | None = None,
                  **runtime: Any) -> Any:
        """``config`` (default: the registry's) with ``overrides`` applied; ``runtime`` sets config fields the
        caller knows only at run time (the evaluation's ``sweep_max``) on configs that have them."""
        cfg = self.default_config() if config is None else config
        if not isinstance(cfg, self.config):
            raise TypeError(f"router {self.name!r} takes a {self.config.__name__}, got {type(cfg).__name__}")
        if overrides:
            cfg = apply_overrides(cfg, overrides)
        names = {f.name for f in fields(cfg)}
        extra = {k: v for k, v in runtime.items() if k in names and v is not None}
        return replace(cfg, **extra) if extra else cfg

    def make(self, config: Any | None = None, overrides: Mapping[str, Any] | None = None,
             **runtime: Any) -> Router:
        """An unfitted router of :meth:`configure`'s config."""
        return self.build(self.configure(config, overrides, **runtime))


def apply_overrides(obj: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of dataclass ``obj`` with ``overrides`` set; "a.b" keys reach nested dataclasses. Unknown keys
    raise, so a grid cannot silently tune nothing."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, val in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = val
        else:
            top[head] = val
    names = {f.name for f in fields(obj)}
    bad = [k for k in [*top, *nested] if k not in names]
    if bad:
        raise ValueError(f"{type(obj).__name__} has no field(s) {bad}")
    for head, sub in nested.items():
        inner = getattr(obj, head)
        if not is_dataclass(inner):
            raise ValueError(f"{type(obj).__name__}.{head} is not a config dataclass")
        top[head] = apply_overrides(inner, sub)
    return replace(obj, **top)


def config_dict(config: Any) -> dict[str, Any]:
    """Plain values of a router config (what a deployment or a report stores)."""
    return asdict(config) if is_dataclass(config) else {}


ROUTERS: dict[str, RouterSpec] = {}
"""Every router by its one name, in Table 1's row order (LatentRouter last)."""


def register(spec: RouterSpec) -> RouterSpec:
    """Add a router; its name must be new."""
    if spec.name in ROUTERS:
        raise ValueError(f"router {spec.name!r} is registered already")
    if not is_dataclass(spec.config):
        raise TypeError(f"router {spec.name!r}: config must be a dataclass, got {spec.config!r}")
    ROUTERS[spec.name] = spec
    return spec


def spec(name: str) -> RouterSpec:
    """The registered router ``name``; the error lists the known names."""
    try:
        return ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}") from None


def router_names(*, learned: bool | None = None) -> tuple[str, ...]:
    """Registered names in Table 1 order; ``learned=True`` / ``False`` keeps trainable / training-free ones."""
    return tuple(n for n, s in ROUTERS.items() if learned is None or s.training_free != learned)


for _spec in (
    RouterSpec(ORACLE, lambda c: OracleRouter(), training_free=True),
    RouterSpec(STRONGEST, lambda c: StrongestRouter(), training_free=True),
    RouterSpec("Cheapest", lambda c: CheapestRouter(), training_free=True),
    RouterSpec("Random", lambda c: RandomRouter(), training_free=True),
    RouterSpec("GroupBest", GroupBestRouter, GroupBestConfig, training_free=True),
    RouterSpec("KNNRouter", lambda c: KNNRouter(k=c.k), KNNConfig, ({}, {"k": 20}, {"k": 100}, {"k": 10})),
    RouterSpec("KMeansRouter", lambda c: KMeansRouter(n_clusters=c.n_clusters, n_init=c.n_init), KMeansConfig,
               ({}, {"n_clusters": 8}, {"n_clusters": 40}, {"n_clusters": 4})),
    RouterSpec("MLPMFRouter", MLPMFRouter, MLPMFConfig,
               ({}, {"train.lr": 3e-3}, {"train.lr": 3e-4}, {"hidden": (64, 32)})),
    RouterSpec("RouteLLM-MF", RouteLLMMFRouter, RouteLLMConfig,
               ({}, {"dim": 32}, {"train.lr": 3e-3}, {"dim": 256})),
    RouterSpec("VL feature router", VLFeatureRouter, VLFeatureConfig,
               ({}, {"hidden": (64,)}, {"train.lr": 3e-3}, {"hidden": (512,)})),
    RouterSpec("ECVL", ECVLRouter, ECVLConfig, ({}, {"mes_scale": 0.3}, {"train.lr": 3e-3}, {"d_model": 32})),
    RouterSpec("RouterDC", RouterDCRouter, RouterDCConfig,
               ({}, {"temperature": 0.1}, {"train.lr": 3e-3}, {"n_clusters": 10})),
    RouterSpec("GraphRouter", GraphRouter, GraphRouterConfig,
               ({}, {"hidden": 32}, {"lr": 3e-3}, {"mask_rate": 0.5})),
    RouterSpec("R2-Router", R2Router, R2RouterConfig, ({}, {"dropout": 0.1}, {"train.lr": 3e-3}, {"hidden": (128, 64)})),
    RouterSpec(LATENT, lambda c: LatentRouterRouter(c.model, c.train, name=LATENT), LatentRouterSetup,
               ({}, {"model.dropout": 0.1}, {"train.lr": 3e-3}, {"model.dropout": 0.3})),
):
    register(_spec)
BUILTIN_ROUTERS: frozenset[str] = frozenset(ROUTERS)  # a worker process has these; others are sent to it
