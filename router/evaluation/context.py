"""The shared state of one evaluation run: fitted routers and their test sweeps, memoised, so that every
experiment judges the same LatentRouter and baselines (see ``router.evaluation.experiments``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from router.data.routing_data import RoutingData
from router.evaluation.config import AVG, BASELINE_NAMES, LATENT, ORACLE, STRONGEST, EvalConfig
from router.evaluation.metrics.cost import cost_bounds
from router.evaluation.metrics.sweep import Sweep, evaluate_sweep, lambda_sweep
from router.evaluation.profile_sources import ProfileSource
from router.models.base import Router
from router.models.baselines import (
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
    VLFeatureConfig,
    VLFeatureRouter,
)
from router.models.latent_router.model import LatentRouterConfig
from router.training.trainer import LatentRouterRouter, TrainConfig
from warehouse.vocabulary import SETTINGS


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
        """Fail early, naming the problem, on data no experiment can run on."""
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
        """LatentRouter training for a setting: lambda = 0 only (oriented) or drawn from cost_train_lambdas."""
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
        """An unfitted baseline of display name ``name``, sized by ``cfg.baselines``."""
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
        """The baseline ``name`` fitted at ``seed`` (one fit serves both settings)."""
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
        """The primary metric: mean of the oriented and the cost value (the paper's average over settings)."""
        pm = self.cfg.primary_metric
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
        m = evaluate_sweep(sw, ed, self.bounds)
        return {k: v for k, v in m.items() if k.startswith(f"{setting}/")}
