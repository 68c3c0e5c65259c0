"""Every fit of an evaluation as a keyed unit of work, run on all cores (or on several machines) with tables
bitwise equal to a serial run.

A :class:`FitUnit` is one independent piece of fitting: a router's main-table fits on one split (its
validation tuning, then its fit at every seed: both settings for LatentRouter), or one extra LatentRouter fit
on split 0 (an ablation variant, an outcome-prediction variant, a cold-start fit). :func:`plan_main` lists the
units of the main table, :func:`plan_extra` those the other experiments need once LatentRouter's split-0
hyperparameters are known. :func:`run_unit` runs one unit on a detached copy of its split's context (the
same ``EvalContext`` methods a serial run calls) and returns what it fitted as a :class:`UnitResult`;
:func:`install` puts that into the run's context, so the experiments find every fit already made.

Why the tables do not depend on the worker count: every fit seeds its own generators, runs under the same
``fit_threads`` torch / BLAS threads (1 by default, serial or parallel), and results are installed in plan
order whatever order the workers finish in. Units are stored by key (``UnitStore``: the split's data
fingerprint, the unit and the whole evaluation config), so a unit fitted by another process, another step or
another machine of the cluster is loaded, not refitted.

May import: `router.data`, `router.models`, `router.training`, `router.evaluation` (not `experiments`),
joblib, threadpoolctl, the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from router.data.routing_data import RoutingData
from router.evaluation.ablations import ablation_variants
from router.evaluation.config import LATENT, EvalConfig
from router.evaluation.context import EvalContext, _variant_key
from router.evaluation.fits import FitStore, data_fingerprint
from router.evaluation.metrics.cost import RankBounds
from router.models.latent_router.model import LatentRouterConfig
from router.models.registry import BUILTIN_ROUTERS, ORACLE, ROUTERS, RouterSpec, spec
from router.threads import usable_cpus
from warehouse.vocabulary import SETTINGS

UNIT_PREFIX = "unit-"  # unit results share the fit store's folders with single baseline fits
OUTCOME_BASELINES = ("VL feature router", "MLPMFRouter")  # the baselines of the outcome-prediction table


def resolve_workers(workers: int) -> int:
    """``workers`` processes for the fits; 0 = one per available core."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = one per core), got {workers}")
    return workers or usable_cpus()


@dataclass(frozen=True)
class FitUnit:
    """One independent piece of fitting (see the module docstring)."""

    split: int
    router: str
    seeds: tuple[int, ...] = ()  # main units: the seeds to fit after tuning
    setting: str = ""  # extra units (LatentRouter): the training setting, "" for main units
    seed: int = 0
    variant: LatentRouterConfig | None = None  # None: the tuned model
    tag: str = "main"
    data: RoutingData | None = field(default=None, compare=False)  # a training view other than the split's

    @property
    def main(self) -> bool:
        return not self.setting

    @property
    def label(self) -> str:
        if self.main:
            return f"split {self.split} {self.router}"
        what = "tuned" if self.variant is None else "variant"
        return f"split {self.split} {self.router} {self.setting} seed {self.seed} {self.tag} ({what})"

    def key(self, cfg: EvalConfig, rank: RankBounds) -> str:
        """What the unit's result depends on besides its split's data: the unit, the whole config, the Rank
        Score bounds and the fingerprint of its own training view."""
        doc = {"split": self.split, "router": self.router, "seeds": list(self.seeds), "setting": self.setting,
               "seed": self.seed, "variant": self.variant.to_dict() if self.variant is not None else None,
               "tag": self.tag, "data": data_fingerprint(self.data) if self.data is not None else None,
               "config": cfg.to_dict(), "rank": [rank.cmin, rank.cmax, rank.beta, rank.source]}
        return UNIT_PREFIX + hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class SplitState:
    """What a worker needs to fit on one split (picklable): its data, the run's config and bounds, and the
    hyperparameters already chosen on it (extra units need LatentRouter's)."""

    data: RoutingData
    cfg: EvalConfig
    rank: RankBounds
    routers: tuple[str, ...]
    split: int
    run_id: str
    tuned: dict[str, dict[str, Any]]
    fit_threads: int
    fit_store: FitStore | None = None
    # routers registered at run time (not by router.models.registry itself): a worker process registers them
    specs: tuple[RouterSpec, ...] = ()

    @cached_property
    def fingerprint(self) -> str:
        """The split data's digest (the fit store's folder), hashed once per state, not once per unit."""
        return data_fingerprint(self.data)

    def context(self) -> EvalContext:
        """A detached context of this split: the same fitting code as the run's own split context."""
        for sp in self.specs:
            ROUTERS.setdefault(sp.name, sp)
        ctx = EvalContext(self.data, self.cfg, self.run_id, rank=self.rank, routers=self.routers,
                          split_index=self.split, fit_store=self.fit_store, fit_threads=self.fit_threads)
        ctx._tuned.update(self.tuned)
        return ctx


@dataclass
class UnitResult:
    """What one unit fitted: chosen hyperparameters and their log, fitted routers by context key, seconds."""

    unit: FitUnit
    tuned: dict[str, dict[str, Any]]
    tuning_log: dict[str, dict[str, Any]]
    latent: dict[tuple[str, str, int, str], Any]
    baselines: dict[tuple[str, int], Any]
    fit_seconds: float
    log: list[str]
    worker: str = ""


def split_state(ctx: EvalContext, r: int) -> SplitState:
    """The state of split ``r`` of the run ``ctx`` (split 0 = ``ctx`` itself)."""
    sc = ctx.split_ctx(r)
    extra = tuple(s for n, s in ROUTERS.items() if n not in BUILTIN_ROUTERS)
    return SplitState(sc.data, sc.cfg, sc.rank, tuple(sc.routers), r, sc.run_id, dict(sc._tuned),
                      sc.fit_threads, sc.fit_store, extra)


def plan_main(ctx: EvalContext, routers: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
              splits: Iterable[int] | None = None) -> list[FitUnit]:
    """The main table's units: every trained router on every split (LatentRouter first: its units are the
    longest, and starting them first shortens the run)."""
    names = [n for n in (routers if routers is not None else ctx.routers)
             if n != ORACLE and not spec(n).training_free]
    names.sort(key=lambda n: n != LATENT)
    seeds = tuple(int(s) for s in (seeds if seeds is not None else ctx.cfg.seeds))
    rs = list(splits) if splits is not None else list(range(ctx.cfg.n_splits))
    return [FitUnit(r, n, seeds) for n in names for r in rs]


def plan_extra(ctx: EvalContext) -> list[FitUnit]:
    """The split-0 LatentRouter fits of the ablations, the outcome prediction and the cold start (those not
    already made); needs LatentRouter's split-0 hyperparameters (run the main units first)."""
    from router.evaluation.pool_changes import cold_start_training

    cfg = ctx.cfg
    units: list[FitUnit] = []
    seen = {k for k in ctx._latent}

    def add(setting: str, seed: int, variant: LatentRouterConfig | None, tag: str = "main",
            data: RoutingData | None = None) -> None:
        key = (_variant_key(variant or ctx.model_cfg), setting, int(seed), tag)
        if key not in seen:
            seen.add(key)
            units.append(FitUnit(0, LATENT, setting=setting, seed=int(seed), variant=variant, tag=tag, data=data))

    if LATENT not in ctx.routers:
        return units
    if "ablations" in cfg.experiments:
        for _family, _label, variant in ablation_variants(ctx.model_cfg, cfg.h_values, cfg.c_values):
            for seed in cfg.ablation_seeds or cfg.seeds:
                for st in (("oriented",) if cfg.ablation_shared_fit else SETTINGS):
                    add(st, seed, variant)
    if "outcome_prediction" in cfg.experiments:
        # its baseline rows are fitted whether or not the run's router list has them
        units += [FitUnit(0, n, tuple(cfg.seeds)) for n in OUTCOME_BASELINES if n not in ctx.routers]
        for seed in cfg.seeds:
            add("oriented", seed, replace(ctx.model_cfg, distributional=False))
            add("oriented", seed, replace(ctx.model_cfg, use_model_exchange=False))
    if "cold_start" in cfg.experiments:
        for seed in cfg.cold_start_seeds or cfg.seeds:
            tag, train_data = cold_start_training(ctx, seed)
            for st in SETTINGS:
                add(st, seed, None, tag, train_data)
    return units


def run_unit(state: SplitState, unit: FitUnit) -> UnitResult:
    """Fit ``unit`` on a detached context of its split; what it fitted comes back as a :class:`UnitResult`."""
    lines: list[str] = []
    sc = state.context()
    sc.log = lines.append
    if unit.main:
        if unit.router == LATENT:
            sc.hparams(LATENT)
            for seed in unit.seeds:
                for st in SETTINGS:
                    sc.latent(st, seed)
        else:
            for seed in unit.seeds:
                sc.baseline(unit.router, seed)
    else:
        sc.latent(unit.setting, unit.seed, unit.variant, unit.tag, unit.data)
    return UnitResult(unit, dict(sc._tuned), dict(sc.tuning_log), dict(sc._latent), dict(sc._baselines),
                      sc.fit_seconds, lines, worker=f"pid {os.getpid()}")


def made(ctx: EvalContext, unit: FitUnit) -> bool:
    """Whether ``ctx`` already holds every fit of ``unit`` (nothing to run)."""
    sc = ctx.split_ctx(unit.split)
    if not unit.main:
        mc = unit.variant or (sc.model_cfg if LATENT in sc._tuned else None)
        return mc is not None and (_variant_key(mc), unit.setting, unit.seed, unit.tag) in sc._latent
    if unit.router != LATENT:
        return all((unit.router, int(s)) in sc._baselines for s in unit.seeds)
    if LATENT not in sc._tuned:
        return False
    vk = _variant_key(sc.model_cfg)
    return all((vk, st, int(s), "main") in sc._latent for s in unit.seeds for st in SETTINGS)


def install(ctx: EvalContext, result: UnitResult, ran_here: bool = True) -> None:
    """Put a unit's fits and choices into split ``result.unit.split`` of the run ``ctx`` (and its fit seconds
    when this run made it, not when it was loaded)."""
    sc = ctx.split_ctx(result.unit.split)
    for name, chosen in result.tuned.items():
        sc._tuned.setdefault(name, chosen)
    for name, log in result.tuning_log.items():
        sc.tuning_log.setdefault(name, log)
    for key, router in result.latent.items():
        sc._latent.setdefault(key, router)
    for key, router in result.baselines.items():
        sc._baselines.setdefault(key, router)
    if ran_here:
        sc.fit_seconds += result.fit_seconds


class UnitStore:
    """Unit results in a :class:`FitStore` (under their split's data fingerprint), so another process, step
    or machine reuses them."""

    def __init__(self, store: FitStore) -> None:
        self.store = store

    def get(self, state: SplitState, unit: FitUnit) -> UnitResult | None:
        got = self.store.get(state.fingerprint, unit.key(state.cfg, state.rank))
        return got if isinstance(got, UnitResult) else None

    def put(self, state: SplitState, result: UnitResult) -> None:
        self.store.put(state.fingerprint, result.unit.key(state.cfg, state.rank), result)  # type: ignore[arg-type]


def _run_stored(state: SplitState, unit: FitUnit) -> UnitResult:
    """:func:`run_unit`, stored in the state's fit store when it has one (the worker writes it itself)."""
    result = run_unit(state, unit)
    if state.fit_store is not None:
        UnitStore(state.fit_store).put(state, result)
    return result


def fit_units(ctx: EvalContext, units: Sequence[FitUnit], workers: int = 1,
              progress: Callable[[str], None] | None = None) -> list[UnitResult]:
    """Run ``units`` (stored ones are loaded) on ``workers`` processes (0 = one per core; 1 = in this process)
    and install them into ``ctx`` in plan order. Units whose fits ``ctx`` holds already are skipped. Returns the
    results, loaded ones included."""
    log = progress or ctx.log
    units = [u for u in units if not made(ctx, u)]
    if not units:
        return []
    states = {r: split_state(ctx, r) for r in sorted({u.split for u in units})}
    # a unit's state carries the hyperparameters chosen so far (extra units need LatentRouter's)
    store = UnitStore(ctx.fit_store) if ctx.fit_store is not None else None
    results: dict[int, UnitResult] = {}
    todo: list[int] = []
    for i, u in enumerate(units):
        got = store.get(states[u.split], u) if store is not None else None
        if got is not None:
            results[i] = got
        else:
            todo.append(i)
    n_workers = min(resolve_workers(workers), max(len(todo), 1))
    t0 = time.perf_counter()
    if results:
        log(f"fits: {len(results)} of {len(units)} unit(s) loaded from the fit store")
    if todo:
        log(f"fits: {len(todo)} unit(s) on {n_workers} process(es), {ctx.fit_threads} thread(s) each")
    done = 0

    def finished(i: int, res: UnitResult) -> None:
        nonlocal done
        done += 1
        results[i] = res
        log(f"fits {done}/{len(todo)}: {res.unit.label} in {res.fit_seconds:.1f}s "
            f"({time.perf_counter() - t0:.0f}s elapsed)")

    if n_workers <= 1:
        for i in todo:
            finished(i, _run_stored(states[units[i].split], units[i]))
    elif todo:
        from joblib import Parallel, delayed

        jobs = Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")(
            delayed(_indexed)(i, states[units[i].split], units[i]) for i in todo)
        for i, res in jobs:
            finished(i, res)
    for i in range(len(units)):  # plan order, whatever order the workers finished in
        install(ctx, results[i], ran_here=i in todo)
        ctx.units_run += i in todo
        ctx.units_loaded += i not in todo
        for line in results[i].log if i in todo else ():
            ctx.log(line)
    return [results[i] for i in range(len(units))]


def _indexed(i: int, state: SplitState, unit: FitUnit) -> tuple[int, UnitResult]:
    return i, _run_stored(state, unit)


def prefit(ctx: EvalContext, workers: int = 1, progress: Callable[[str], None] | None = None) -> float:
    """Every fit the selected experiments need, main units first then the split-0 extras; returns seconds."""
    t0 = time.perf_counter()
    fit_units(ctx, plan_main(ctx), workers, progress)
    fit_units(ctx, plan_extra(ctx), workers, progress)
    return time.perf_counter() - t0
