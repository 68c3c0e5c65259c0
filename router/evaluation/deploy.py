"""Which router serves: one deployment decision, made on VALIDATION utility at the deploy lambda.

Candidates are the checkpoint's LatentRouter and the baselines named in ``DeployConfig.deploy_candidates``
(router registry names). Each baseline is the evaluation's own fit: its validation-tuned config, fitted through
the evaluation context and its fit store (``router.evaluation.fits``), so the evaluation and the deployment
fit every router once. Every candidate is scored on the validation rows by the mean realised utility
``quality - lambda * cost`` of its picks at ``deploy_lambda`` (no test row is read); the best one is deployed,
LatentRouter first among equals. ``deployed.json`` in the checkpoint folder holds the decision, its reason,
the chosen router's config and the validation table; a winning baseline is saved beside it
(``baseline.joblib``, a pickle of the fitted router: load checkpoints you wrote yourself only). The report,
``RouterService`` (``lrouter route``, ``lrouter serve``, the gateway, ``/health``) and
``current_pool_routing`` all read that one file; a checkpoint without one serves its LatentRouter.

A baseline scores the fixed pool it was fitted on; when the registry holds a model it has never seen, the
service falls back to the LatentRouter of the same checkpoint (capability tokens) and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.evaluation.config import PRESETS
from router.evaluation.context import EvalContext
from router.models.base import Router
from router.models.registry import LATENT, ORACLE, STRONGEST, router_names, spec
from warehouse.store import atomic_write_bytes

SELECT_BY: tuple[str, ...] = ("validation", "oof")
RouterFactory = Callable[[], Router]
DEPLOY_FILE = "deployed.json"
BASELINE_FILE = "baseline.joblib"
# every registered router that can serve a request without its answer, LatentRouter aside (it is always a
# candidate); Oracle reads outcomes, Cheapest and Random never win on quality
DEPLOY_CANDIDATES: tuple[str, ...] = tuple(
    n for n in router_names() if n not in (ORACLE, LATENT, "Cheapest", "Random"))


@dataclass
class DeployConfig:
    """How the ``deployed_router`` asset chooses what serves (see the module docstring)."""

    deploy_select: bool = True  # False: always deploy LatentRouter (no baselines are fitted)
    deploy_lambda: float = 0.1  # the gateway's default lambda; validation utility is measured here
    deploy_candidates: tuple[str, ...] = DEPLOY_CANDIDATES
    # the evaluation preset whose validation-tuned fits the candidates are (the same as evaluation_report's,
    # so the evaluation reuses them)
    preset: str = "demo"
    # validation: utility on the validation rows (cheap; a router that early-stopped on them is scored on the
    # rows it chose its epoch on, which flatters it). oof: K-fold cross-fitting over train + val, every fit
    # early-stopped on another fold, with the out-of-fold-weighted ensemble of the candidates competing too
    # (K more fits per candidate; router.evaluation.crossfit)
    select_by: str = "validation"
    oof_folds: int = 5
    workers: int = 0  # processes fitting the candidates (0 = one per core); the choice is the same for any count

    def __post_init__(self) -> None:
        if not (math.isfinite(self.deploy_lambda) and self.deploy_lambda >= 0):
            raise ValueError(f"DeployConfig.deploy_lambda must be finite and >= 0, got {self.deploy_lambda}")
        for name in self.deploy_candidates:
            spec(name)  # an unknown name raises here, listing the registered ones
        if self.preset not in PRESETS:
            raise ValueError(f"DeployConfig.preset must be one of {PRESETS}, got {self.preset!r}")
        if self.workers < 0:
            raise ValueError(f"DeployConfig.workers must be >= 0 (0 = one per core), got {self.workers}")
        if self.select_by not in SELECT_BY or self.oof_folds < 2:
            raise ValueError(f"DeployConfig needs select_by in {SELECT_BY} and oof_folds >= 2, got "
                             f"{self.select_by!r}, {self.oof_folds}")


def validation_utility(router: Router, data: RoutingData, lam: float, rows: np.ndarray | None = None) -> float:
    """Mean realised ``quality - lam * cost`` (normalised cost) of the router's picks on the validation rows."""
    rows = data.idx("val") if rows is None else np.asarray(rows)
    rows = rows[data.avail[rows].any(axis=1)]
    if len(rows) == 0:
        return float("nan")
    pick = np.asarray(router.select(data, rows, float(lam)))
    return float(np.mean(data.quality[rows, pick] - lam * data.cost[rows, pick]))


def validation_table(routers: Mapping[str, Router], data: RoutingData, lam: float) -> list[dict[str, Any]]:
    """One row per candidate (validation utility, quality and cost of its picks at ``lam``), best first;
    LatentRouter first among equals."""
    va = data.idx("val")
    va = va[data.avail[va].any(axis=1)]
    rows = []
    for name, r in routers.items():
        pick = np.asarray(r.select(data, va, float(lam))) if len(va) else np.zeros(0, dtype=int)
        q = float(data.quality[va, pick].mean()) if len(va) else float("nan")
        c = float(data.cost[va, pick].mean()) if len(va) else float("nan")
        rows.append({"router": name, "val_utility": q - lam * c if len(va) else float("nan"),
                     "val_quality": q, "val_cost": c, "n_val": int(len(va))})
    rows.sort(key=lambda x: (-(x["val_utility"] if math.isfinite(x["val_utility"]) else -math.inf),
                             x["router"] != LATENT))
    return rows


def choose(table: Sequence[Mapping[str, Any]]) -> str:
    """The deployed router's name: the top of :func:`validation_table` (LatentRouter when nothing is finite)."""
    finite = [r for r in table if math.isfinite(r["val_utility"])]
    return str(finite[0]["router"]) if finite else LATENT


def candidate_fits(ctx: EvalContext, names: Sequence[str], workers: int = 1) -> dict[str, Router]:
    """The named baselines exactly as the evaluation fits them on its split 0 (validation-tuned config, the
    decisions seed), from ``ctx``'s fit store when they are there, else fitted on ``workers`` processes."""
    from router.evaluation.parallel import fit_units, plan_main

    seed = ctx.cfg.decisions_seed if ctx.cfg.decisions_seed is not None else ctx.cfg.seeds[0]
    names = [n for n in names if n != LATENT]
    fit_units(ctx, plan_main(ctx, routers=names, seeds=(seed,), splits=[0]), workers)
    return {n: ctx.baseline(n, seed) for n in names}


def explain(table: Sequence[Mapping[str, Any]], chosen: str, lam: float, previous: str | None = None) -> str:
    """One sentence saying why ``chosen`` serves: its validation (or out-of-fold) utility next to the runner-up,
    LatentRouter and Strongest, and what it replaces when the decision changed."""
    rows = {str(r["router"]): r for r in table}
    oof = any("oof_utility" in r for r in table)
    key, what = ("oof_utility", "out-of-fold") if oof else ("val_utility", "validation")
    n = rows.get(chosen, {}).get("n_oof" if oof else "n_val", 0)
    if chosen not in rows or not math.isfinite(rows[chosen].get(key, float("nan"))):
        why = f"{chosen} serves: no candidate has a finite {what} utility (no validation rows)"
    else:
        def u(name: str) -> str:
            return f"{name} {rows[name][key]:.4f}"

        others = [str(r["router"]) for r in table if r["router"] != chosen]
        shown = list(dict.fromkeys(n for n in (*others[:1], LATENT, STRONGEST) if n in rows and n != chosen))
        why = (f"{chosen} has the best {what} utility (quality - {lam:g} x cost) over {n} "
               f"{'train + validation rows, cross-fitted' if oof else 'validation rows'}: {rows[chosen][key]:.4f}"
               + (f" vs {', '.join(u(n) for n in shown)}" if shown else ""))
    if previous and previous != chosen:
        why += f"; it replaces {previous}"
    return why + "."


def decide(latent: Router, candidates: Mapping[str, Router], data: RoutingData, lam: float,
           previous: str | None = None) -> tuple[str, list[dict[str, Any]], str]:
    """(chosen name, validation table, reason) among LatentRouter and the fitted ``candidates``."""
    table = validation_table({LATENT: latent, **candidates}, data, lam)
    chosen = choose(table)
    return chosen, table, explain(table, chosen, lam, previous)


def decide_oof(latent: Router, latent_factory: RouterFactory, candidates: Mapping[str, Router],
               factories: Mapping[str, RouterFactory], data: RoutingData, lam: float, n_folds: int = 5,
               previous: str | None = None) -> tuple[str, list[dict[str, Any]], str, Router | None]:
    """(chosen name, out-of-fold table, reason, the router to save) by K-fold cross-fitting of LatentRouter
    and the candidates (the factories build them unfitted with their tuned configs; ``latent`` and
    ``candidates`` are the same routers fitted on all train rows, which serve when chosen). The OOF-weighted
    ensemble of them competes too, scored with weights chosen on the other folds; when it wins it is saved
    built from those fitted routers."""
    from router.evaluation.crossfit import ENSEMBLE, oof_deployment_choice
    from router.models.ensemble import EnsembleRouter

    res = oof_deployment_choice({LATENT: latent_factory, **factories}, data, lam, n_folds=n_folds, seed=0,
                                prefer=LATENT)
    table = [{k: v for k, v in r.items() if k not in ("best_epochs", "weights")} for r in res.table]
    chosen = res.chosen
    router: Router | None = candidates.get(chosen)
    if chosen == ENSEMBLE:
        weights = {n: w for n, w in res.ensemble_weights.items() if w > 0}
        router = EnsembleRouter.from_fitted({LATENT: latent, **candidates}, weights, name=ENSEMBLE)
    return chosen, table, explain(table, chosen, lam, previous), router


def save_deployment(ckpt_dir: Path, chosen: str, lam: float, table: Sequence[Mapping[str, Any]],
                    router: Router | None = None, *, config: Mapping[str, Any] | None = None,
                    reason: str = "", run_id: str | None = None, previous: str | None = None) -> Path:
    """Write ``deployed.json`` (and ``baseline.joblib`` when a baseline is chosen) into ``ckpt_dir``."""
    import joblib

    ckpt_dir = Path(ckpt_dir)
    if chosen != LATENT:
        if router is None:
            raise ValueError(f"save_deployment: the fitted {chosen!r} is needed to deploy it")
        joblib.dump(router, ckpt_dir / BASELINE_FILE)
    else:
        (ckpt_dir / BASELINE_FILE).unlink(missing_ok=True)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in table]
    oof = any("oof_utility" in r for r in table)
    doc = {"deployed": chosen, "lambda": float(lam),
           "selected_on": ("out-of-fold" if oof else "validation") + " utility (quality - lambda * cost)",
           "reason": reason, "previous": previous, "run_id": run_id,
           "file": BASELINE_FILE if chosen != LATENT else "model.safetensors",
           "model_ids": (router.fitted_model_ids() if router is not None else None) or [],
           "config": json.loads(json.dumps(dict(config or {}), default=str)), "validation": clean}
    path = ckpt_dir / DEPLOY_FILE
    atomic_write_bytes(json.dumps(doc, indent=2, allow_nan=False).encode(), path)
    return path


def read_deployment(ckpt_dir: Path) -> dict[str, Any]:
    """``deployed.json`` of a checkpoint ({"deployed": "LatentRouter"} when it has none)."""
    path = Path(ckpt_dir) / DEPLOY_FILE
    if not path.is_file():
        return {"deployed": LATENT}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("deployed"), str):
        raise ValueError(f"{path}: field 'deployed' is missing or not a string")
    return doc


def serving_router(ckpt_dir: Path, model_ids: Sequence[str]) -> tuple[str, Router | None, dict[str, Any],
                                                                      str | None]:
    """(deployed name, the baseline that serves ``model_ids`` or None when LatentRouter serves, deployed.json,
    a note when the deployed baseline was fitted on another pool and LatentRouter serves in its place)."""
    name, baseline, doc = load_deployed_baseline(ckpt_dir)
    if baseline is not None and (baseline.fitted_model_ids() or list(model_ids)) != list(model_ids):
        return name, None, doc, (f"{name} was fitted on another model pool; serving LatentRouter (capability "
                                 "tokens) until the next training")
    return name, baseline, doc, None


def load_deployed_baseline(ckpt_dir: Path) -> tuple[str, Router | None, dict[str, Any]]:
    """(deployed name, the fitted baseline or None for LatentRouter, deployed.json)."""
    doc = read_deployment(ckpt_dir)
    if doc["deployed"] == LATENT:
        return LATENT, None, doc
    import joblib

    path = Path(ckpt_dir) / BASELINE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: deployed.json names {doc['deployed']!r} but its file is missing")
    return doc["deployed"], joblib.load(path), doc
