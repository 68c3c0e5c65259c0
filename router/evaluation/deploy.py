"""Which router to deploy: LatentRouter or a baseline, chosen on VALIDATION utility at the deploy lambda.

The pipeline trains LatentRouter and fits the baselines on the same train rows; every candidate is scored on
the validation rows by the mean realised utility ``quality - lambda * cost`` of its picks at ``deploy_lambda``
(no test row is read). The best one is deployed; LatentRouter wins ties. A baseline that wins is saved next to
the LatentRouter safetensors (``baseline.joblib``, a pickle of the fitted router: load checkpoints you wrote
yourself only) and ``deployed.json`` names it, with the validation table. ``RouterService`` (hence
``lrouter route``, ``lrouter serve``, the gateway) and ``current_pool_routing`` read that file; without one a
checkpoint serves its LatentRouter, as before.

A baseline scores the fixed pool it was fitted on; when the registry holds a model it has never seen, the
service falls back to the LatentRouter of the same checkpoint (capability tokens) and says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.data.routing_data import RoutingData
from router.models.base import Router

DEPLOY_FILE = "deployed.json"
BASELINE_FILE = "baseline.joblib"
LATENT = "LatentRouter"
DEPLOY_CANDIDATES: tuple[str, ...] = (
    "Strongest", "GroupBest", "KNNRouter", "KMeansRouter", "MLPMFRouter", "RouteLLM-MF", "VL feature router", "ECVL",
    "RouterDC", "GraphRouter", "R2-Router",
)


@dataclass
class DeployConfig:
    """How the ``latent_router`` asset chooses what to deploy (see the module docstring)."""

    deploy_select: bool = True  # False: always deploy LatentRouter (no baselines are fitted)
    deploy_lambda: float = 0.1  # the gateway's default lambda; validation utility is measured here
    deploy_candidates: tuple[str, ...] = DEPLOY_CANDIDATES

    def __post_init__(self) -> None:
        if not (math.isfinite(self.deploy_lambda) and self.deploy_lambda >= 0):
            raise ValueError(f"DeployConfig.deploy_lambda must be finite and >= 0, got {self.deploy_lambda}")


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


def fit_baselines(data: RoutingData, names: Sequence[str], seed: int = 0) -> dict[str, Router]:
    """The named baselines with the evaluation's demo sizes and default hyperparameters (no tuning: the deployed
    LatentRouter is not tuned either), fitted on train rows (val for early stopping)."""
    from router.evaluation.config import EvalConfig
    from router.evaluation.context import EvalContext

    ctx = EvalContext(data, EvalConfig.demo(experiments=("main_table",), tuning_trials=1), "deploy")
    return {n: ctx.make_baseline(n, {}).fit(data, seed=seed) for n in names}


def save_deployment(ckpt_dir: Path, chosen: str, lam: float, table: Sequence[Mapping[str, Any]],
                    router: Router | None = None) -> Path:
    """Write ``deployed.json`` (and ``baseline.joblib`` when a baseline is chosen) into ``ckpt_dir``."""
    import joblib

    ckpt_dir = Path(ckpt_dir)
    if chosen != LATENT:
        if router is None:
            raise ValueError(f"save_deployment: the fitted {chosen!r} is needed to deploy it")
        joblib.dump(router, ckpt_dir / BASELINE_FILE)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in table]
    doc = {"deployed": chosen, "lambda": float(lam), "selected_on": "validation utility (quality - lambda * cost)",
           "file": BASELINE_FILE if chosen != LATENT else "model.safetensors",
           "model_ids": list(getattr(router, "_model_ids", None) or []), "validation": clean}
    path = ckpt_dir / DEPLOY_FILE
    path.write_text(json.dumps(doc, indent=2, allow_nan=False))
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
