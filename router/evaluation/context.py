"""The shared state of one evaluation run: fitted routers and their test sweeps, memoised, so that every
experiment judges the same LatentRouter and baselines (see ``router.evaluation.experiments``).

One context is one split of the queries; :meth:`EvalContext.split_ctx` gives the context of repeated split r
(its data from the split source, the same Rank Score bounds, its own validation-only tuning and fits).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.evaluation.config import (
    AVG,
    LATENT,
    ORACLE,
    ROUTERS,
    TRAINING_FREE,
    EvalConfig,
)
from router.evaluation.fits import FitStore, data_fingerprint, fit_key
from router.evaluation.metrics.cost import RankBounds, rank_bounds
from router.evaluation.metrics.sweep import BudgetSweep, Sweep, budget_sweep, evaluate_sweep, lambda_sweep
from router.evaluation.profile_sources import ProfileSource
from router.evaluation.resampling import SplitSource, data_split_source
from router.evaluation.tuning import choose, validation_bounds, validation_score
from router.models.base import Router
from router.models.latent_router.model import LatentRouterConfig
from router.models.registry import LatentRouterSetup, apply_overrides, spec
from router.threads import torch_threads
from router.training.trainer import LatentRouterRouter, TrainConfig
from warehouse.vocabulary import SETTINGS

TUNING_SEED = 0  # candidates are fitted at this seed whatever the seed list, so a choice never depends on it


def _variant_key(cfg: LatentRouterConfig) -> str:
    """A config key where functionally identical configs coincide (no communication == H = 0)."""
    if cfg.effective_layers == 0:
        cfg = replace(cfg, n_layers=0, use_communication=True, use_model_exchange=True)
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _split_overrides(over: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """LatentRouter candidate (``LatentRouterSetup`` keys) -> (LatentRouterConfig overrides, TrainConfig
    overrides)."""
    apply_overrides(LatentRouterSetup(), over)  # unknown keys raise here, naming the field
    model = {k[len("model."):]: v for k, v in over.items() if k.startswith("model.")}
    train = {k[len("train."):]: v for k, v in over.items() if k.startswith("train.")}
    return model, train


class EvalContext:
    """Shared state of one evaluation run on one split: data, config, tuned hyperparameters, fitted routers
    and their test sweeps (memoised)."""

    def __init__(self, data: RoutingData, cfg: EvalConfig | None = None, run_id: str = "eval",
                 progress: Callable[[str], None] | bool | None = None,
                 profile_source: ProfileSource | None = None, *,
                 shipped_bounds: Mapping[str, Any] | None = None,
                 split_source: SplitSource | None = None,
                 groups: Sequence[str] | None = None,
                 routers: Sequence[str] | None = None,
                 split_index: int = 0, parent: EvalContext | None = None,
                 fit_store: FitStore | None = None, rank: RankBounds | None = None,
                 fit_threads: int = 1) -> None:
        self.data, self.cfg, self.run_id = data, cfg or EvalConfig(), run_id
        self._validate()
        self.test = data.idx("test")
        self.lambdas = self.cfg.sweep_lambdas
        self.profile_source = profile_source
        self.fit_store = fit_store if parent is None else parent.fit_store
        # every fit runs on this many torch / BLAS threads, serial or in a worker, so tables never depend on
        # how the fits were spread (router.evaluation.parallel)
        self.fit_threads = int(fit_threads if parent is None else parent.fit_threads)
        self._fingerprint: str | None = None
        self.split_index = int(split_index)
        self.notes: list[str] = [] if parent is None else parent.notes
        if parent is not None:
            self.log: Callable[[str], None] = parent.log
        elif progress is True:
            self.log = lambda msg: print(f"[eval] {msg}", flush=True)
        elif callable(progress):
            self.log = progress
        else:
            self.log = lambda msg: None
        self.routers: tuple[str, ...] = tuple(routers) if routers is not None else (
            parent.routers if parent is not None else tuple(ROUTERS))
        # Rank Score constants are a benchmark constant: computed once over every row, shared by all splits
        self.rank: RankBounds = parent.rank if parent is not None else (
            rank if rank is not None else rank_bounds(data, shipped_bounds))
        self.bounds = self.rank.pair
        if parent is None and not self.rank.defined and self.cfg.primary_metric == "rank_score":
            self.cfg = replace(self.cfg, primary_metric="nauc_budget")
            self.notes.append("No model has a positive cost, so Rank Score is undefined; the primary metric is "
                              "nAUC (budget sweep) instead.")
            self.log(self.notes[-1])
        if parent is not None:
            self.cfg = parent.cfg
        self._split_source = split_source or (parent._split_source if parent is not None else None) or \
            data_split_source(data, self.cfg.split_fractions, groups)
        self._splits: dict[int, EvalContext] = {0: self}
        self._latent: dict[tuple[str, str, int, str], LatentRouterRouter] = {}
        self._baselines: dict[tuple[str, int], Router] = {}
        self._sweeps: dict[tuple[str, int, str], Sweep] = {}
        self._budgets: dict[tuple[str, int], BudgetSweep] = {}
        self._main: dict[tuple[str, int], dict[str, float]] | None = None
        self._tuned: dict[str, dict[str, Any]] = {}
        self.tuning_log: dict[str, dict[str, Any]] = {}
        self.fit_seconds = 0.0
        self.units_run = 0  # fit units (router.evaluation.parallel) made by this run / loaded from the store
        self.units_loaded = 0

    def _validate(self) -> None:
        """Fail early, naming the problem, on data no experiment can run on."""
        d = self.data
        if d.k < 2:
            raise ValueError(f"evaluation needs at least 2 models, RoutingData has {d.k}")
        for split in ("train", "test"):
            if len(d.idx(split)) == 0:
                raise ValueError(f"evaluation needs {split!r} rows; RoutingData.split has none")
        if not d.avail[d.idx("test")].any():
            raise ValueError("evaluation: no test row has an available model (RoutingData.avail)")

    # -- splits -----------------------------------------------------------------------------------------------

    def split_ctx(self, r: int) -> EvalContext:
        """The context of repeated split ``r`` (0 = this one): data from the split source, shared bounds."""
        if r not in self._splits:
            t0 = time.perf_counter()
            data = self._split_source(int(r))
            self._splits[r] = EvalContext(data, self.cfg, self.run_id, split_index=r, parent=self)
            self.log(f"split {r}: rebuilt in {time.perf_counter() - t0:.1f}s "
                     f"(train / val / test {[len(data.idx(s)) for s in ('train', 'val', 'test')]})")
        return self._splits[r]

    @property
    def total_fit_seconds(self) -> float:
        return sum(c.fit_seconds for c in self._splits.values())

    # -- hyperparameters --------------------------------------------------------------------------------------

    def candidates(self, name: str) -> list[dict[str, Any]]:
        """The first ``tuning_trials`` candidates of ``name``'s grid (defaults only when it has none)."""
        if name in TRAINING_FREE:
            return [{}]
        return [dict(c) for c in spec(name).grid[: self.cfg.tuning_trials]]

    def hparams(self, name: str) -> dict[str, Any]:
        """The overrides chosen for ``name`` on this split's validation rows (computed once; see tuning)."""
        if name not in self._tuned:
            self._tune(name)
        return self._tuned[name]

    def _tune(self, name: str) -> None:
        cands = self.candidates(name)
        if len(cands) == 1 or len(self.data.idx("val")) == 0:
            self._tuned[name] = cands[0] if len(cands) == 1 else {}
            self.tuning_log[name] = {"chosen": self._tuned[name], "trials": 1 if len(cands) == 1 else 0,
                                     "scores": [], "candidates": cands}
            return
        seed = TUNING_SEED
        bounds = validation_bounds(self.data, self.rank)
        t0 = time.perf_counter()
        if name == LATENT:
            def fit(c: dict[str, Any]) -> Router:
                mo, to = _split_overrides(c)
                r = LatentRouterRouter(apply_overrides(self.cfg.model, mo),
                                       apply_overrides(self.train_cfg("cost", {}), to), name=LATENT)
                with self.fit_scope():
                    return r.fit(self.data, seed=seed)
        else:
            def fit(c: dict[str, Any]) -> Router:
                return self.fit_baseline(name, c, seed)
        best, scores, fitted = choose(cands, fit, lambda r: validation_score(
            r, self.data, self.lambdas, bounds, self.rank.beta, self.cfg.primary_metric))
        self.fit_seconds += time.perf_counter() - t0
        self._tuned[name] = cands[best]
        self.tuning_log[name] = {"chosen": cands[best], "trials": len(cands), "scores": scores, "candidates": cands}
        self.log(f"split {self.split_index}: tuned {name} on validation: {cands[best] or 'defaults'} "
                 f"(scores {[round(x, 4) for x in scores]})")
        if name == LATENT:  # the chosen fit is the main-table cost fit at this seed
            self._latent[(_variant_key(self.model_cfg), "cost", seed, "main")] = fitted[best]  # type: ignore
        else:
            self._baselines[(name, seed)] = fitted[best]

    @property
    def model_cfg(self) -> LatentRouterConfig:
        """The configured LatentRouter with its validation-chosen architecture overrides."""
        return apply_overrides(self.cfg.model, _split_overrides(self.hparams(LATENT))[0])

    # -- fits -------------------------------------------------------------------------------------------------

    @contextmanager
    def fit_scope(self) -> Iterator[None]:
        """Run a fit on ``fit_threads`` torch and BLAS / OpenMP threads (restored afterwards)."""
        from threadpoolctl import threadpool_limits

        if self.fit_threads <= 0:  # 0: the process's own settings
            yield
            return
        with torch_threads(self.fit_threads), threadpool_limits(self.fit_threads):
            yield

    def train_cfg(self, setting: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """LatentRouter training for a setting: lambda = 0 only (oriented) or drawn from cost_train_lambdas,
        with the validation-chosen training overrides (``overrides`` given: those instead)."""
        to = _split_overrides(self.hparams(LATENT))[1] if overrides is None else dict(overrides)
        base = apply_overrides(self.cfg.train, to)
        if setting == "oriented":
            return replace(base, lam=0.0, lam_choices=())
        if setting == "cost":
            return replace(base, lam=0.0, lam_choices=tuple(self.cfg.cost_train_lambdas))
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")

    def latent(self, setting: str, seed: int, variant: LatentRouterConfig | None = None,
               tag: str = "main", data: RoutingData | None = None) -> LatentRouterRouter:
        """The LatentRouter of ``variant`` (default: the tuned model) trained for ``setting`` at ``seed``.

        ``tag`` names the training data when it is not ``self.data`` (cold start masks a model out).
        """
        mc = variant or self.model_cfg
        key = (_variant_key(mc), setting, int(seed), tag)
        if key not in self._latent:
            t0 = time.perf_counter()
            router = LatentRouterRouter(mc, self.train_cfg(setting), name=LATENT)
            with self.fit_scope():
                router.fit(self.data if data is None else data, seed=int(seed))
            self.fit_seconds += time.perf_counter() - t0
            changed = {k: v for k, v in mc.to_dict().items() if self.cfg.model.to_dict().get(k) != v}
            self.log(f"fit LatentRouter split={self.split_index} setting={setting} seed={seed} tag={tag} "
                     f"variant={changed or 'base'} ({time.perf_counter() - t0:.1f}s, "
                     f"best epoch {router.result.best_epoch + 1})")
            self._latent[key] = router
        return self._latent[key]

    def baseline_config(self, name: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Baseline ``name``'s config: ``cfg.routers``'s (registry default when absent) with ``overrides``
        (default: the validation-chosen ones) and the sweep's top lambda where the config has ``sweep_max``."""
        over = self.hparams(name) if overrides is None else overrides
        sweep_max = float(self.lambdas.max()) if self.lambdas.max() > 0 else 1.0
        return spec(name).configure(self.cfg.routers.get(name), over, sweep_max=sweep_max)

    def make_baseline(self, name: str, overrides: Mapping[str, Any] | None = None) -> Router:
        """An unfitted baseline ``name`` from the registry with :meth:`baseline_config`."""
        return spec(name).build(self.baseline_config(name, overrides))

    def fit_baseline(self, name: str, overrides: Mapping[str, Any] | None, seed: int) -> Router:
        """Baseline ``name`` fitted at ``seed``: from the fit store when an identical fit is there (same data,
        config and seed), else fitted now and stored."""
        config = self.baseline_config(name, overrides)
        if self.fit_store is None:
            with self.fit_scope():
                return spec(name).build(config).fit(self.data, seed=int(seed))
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.data)
        key = fit_key(name, config, seed)
        router = self.fit_store.get(self._fingerprint, key)
        if router is None:
            with self.fit_scope():
                router = spec(name).build(config).fit(self.data, seed=int(seed))
            self.fit_store.put(self._fingerprint, key, router)
        return router

    def baseline(self, name: str, seed: int) -> Router:
        """The baseline ``name`` fitted at ``seed`` with its tuned hyperparameters (one fit serves both settings)."""
        self.hparams(name)  # tuning may already have fitted the chosen candidate at the first seed
        key = (name, int(seed))
        if key not in self._baselines:
            t0 = time.perf_counter()
            self._baselines[key] = self.fit_baseline(name, None, int(seed))
            self.fit_seconds += time.perf_counter() - t0
            self.log(f"fit {name} split={self.split_index} seed={seed} ({time.perf_counter() - t0:.1f}s)")
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

    def budget(self, name: str, seed: int) -> BudgetSweep:
        """MMR-Bench's budget sweep over the predicted costs of the cost-setting router (test rows)."""
        key = (name, int(seed))
        if key not in self._budgets:
            self._budgets[key] = budget_sweep(self.router_for(name, "cost", seed), self.data, self.test)
        return self._budgets[key]

    def seed_metrics(self, name: str, seed: int) -> dict[str, float]:
        """Table-1 metrics of one router and seed: oriented/* from its oriented fit, cost/* from its cost fit
        (lambda sweep and budget sweep), plus avg/<primary>."""
        if self._main is None:
            self._main = {}
        key = (name, int(seed))
        if key not in self._main:
            out: dict[str, float] = {}
            for st in SETTINGS:
                bs = self.budget(name, seed) if st == "cost" else None
                m = evaluate_sweep(self.sweep(name, st, seed), self.data, self.bounds, self.rank.beta, bs)
                out.update({k: v for k, v in m.items() if k.startswith(f"{st}/")})
            out[f"{AVG}/{self.cfg.primary_metric}"] = self.primary_of(out, out)
            self._main[key] = out
        return self._main[key]

    def baseline_names(self) -> list[str]:
        """Non-oracle baselines of this run, in router-list order."""
        return [n for n in self.routers if n not in (LATENT, ORACLE)]

    def best_baseline(self, setting: str = AVG, metric: str | None = None,
                      scores: Mapping[str, float] | None = None) -> str:
        """The non-oracle baseline with the best mean ``setting/metric`` over seeds (ties: router-list order)."""
        metric = metric or self.cfg.primary_metric
        if scores is None:
            scores = {n: float(np.mean([self.seed_metrics(n, s)[f"{setting}/{metric}"] for s in self.cfg.seeds]))
                      for n in self.baseline_names()}
        order = self.baseline_names()
        clean = {n: (v if np.isfinite(v) else -np.inf) for n, v in scores.items()}  # undefined metric: last
        return max(clean, key=lambda n: (clean[n], -order.index(n) if n in order else 0))

    def primary_of(self, oriented: Mapping[str, float], cost: Mapping[str, float]) -> float:
        """The primary metric. Rank Score: mean of the oriented and the cost value (the paper's average over
        settings). nAUC: the cost value (one oriented operating point has no area)."""
        pm = self.cfg.primary_metric
        if pm.startswith("nauc"):
            return float(cost.get(f"cost/{pm}", float("nan")))
        return 0.5 * (oriented[f"oriented/{pm}"] + cost[f"cost/{pm}"])

    def latent_metrics(self, setting: str, seed: int, variant: LatentRouterConfig | None,
                       avail: np.ndarray | None = None, tag: str = "main", data: RoutingData | None = None,
                       eval_data: RoutingData | None = None) -> dict[str, float]:
        """``setting/*`` metrics of a LatentRouter variant on the test rows (optionally with a pool mask).

        ``tag="ablation"`` trains on the main data and, with ``ablation_shared_fit``, judges one lambda = 0 fit
        in both settings; ``data`` / ``eval_data`` are the training and the judged views (cold start).
        """
        shared = self.cfg.ablation_shared_fit and variant is not None and tag == "ablation"
        fit_setting = "oriented" if shared else setting
        router = self.latent(fit_setting, seed, variant, "main" if tag == "ablation" else tag, data)
        lams = np.array([0.0]) if setting == "oriented" else self.lambdas
        ed = eval_data or self.data
        sw = lambda_sweep(router, ed, self.test, lams, avail)
        bs = budget_sweep(router, ed, self.test, avail) if setting == "cost" else None
        m = evaluate_sweep(sw, ed, self.bounds, self.rank.beta, bs)
        return {k: v for k, v in m.items() if k.startswith(f"{setting}/")}
