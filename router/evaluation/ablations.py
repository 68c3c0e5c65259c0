"""Ablations and sensitivity of LatentRouter: one component removed at a time, communication depth H and
capsule count C (paper Fig. 3, Tables 5 and 9)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import polars as pl

from router.evaluation.config import AVG, LATENT
from router.evaluation.context import EvalContext
from router.evaluation.results import ExperimentResult, result_rows, results_frame, summarise
from router.models.latent_router.model import LatentRouterConfig
from warehouse.vocabulary import SETTINGS

FULL_LABEL = "Full LatentRouter"

def ablation_variants(base: LatentRouterConfig, h_values: Sequence[int] = (0, 1, 2, 3),
                      c_values: Sequence[int] = (1, 4, 7, 12)) -> list[tuple[str, str, LatentRouterConfig]]:
    """(family, label, config): component removals (paper Fig. 3b / Table 5), depth H and capsule count C."""
    out = [
        ("component", FULL_LABEL, base),
        ("component", "w/o routing capsules", replace(base, use_capsules=False)),
        ("component", "w/o model capability tokens", replace(base, use_model_tokens=False)),
        # paper's "w/o latent communication": model tokens read the capsules once, no model-model exchange,
        # no feedback; the head still sees the query
        ("component", "w/o latent communication (read once)", replace(base, use_model_exchange=False)),
        ("component", "query-blind (H=0)", replace(base, use_communication=False)),
        ("component", "w/o pairwise bias", replace(base, use_pairwise_bias=False)),
        ("component", "w/o feedback", replace(base, use_feedback=False)),
        ("component", "w/o distributional prediction", replace(base, distributional=False)),
        ("component", "w/o bounded correction", replace(base, bounded_correction=False)),
    ]
    out += [("H", f"H={h}", replace(base, n_layers=int(h))) for h in h_values]
    out += [("C", f"C={c}", replace(base, n_capsules=int(c))) for c in c_values]
    return out



def ablations(ctx: EvalContext) -> ExperimentResult:
    """Component ablations, communication depth H and capsule count C (paper Fig. 3, Tables 5 and 9).

    With ``ablation_shared_fit`` every variant (the full model included) is trained once at lambda = 0 and
    judged in both settings, so its cost column differs from the main table's cost-aware LatentRouter; the
    comparison between variants stays like for like.
    """
    cfg, rows, info = ctx.cfg, [], []
    seeds = cfg.ablation_seeds or cfg.seeds
    for family, label, variant in ablation_variants(ctx.model_cfg, cfg.h_values, cfg.c_values):
        info.append({"router": f"{LATENT} [{label}]", "family": family, "label": label})
        for seed in seeds:
            m: dict[str, float] = {}
            for st in SETTINGS:
                m.update(ctx.latent_metrics(st, seed, variant, tag="ablation"))
            m[f"{AVG}/{cfg.primary_metric}"] = ctx.primary_of(m, m)
            rows += result_rows(ctx.run_id, "ablations", f"{LATENT} [{label}]", seed, m)
    res = results_frame(rows)
    summary = summarise(res, ("router", "setting", "metric")).join(pl.DataFrame(info), on="router", how="left")
    return ExperimentResult(res, {"ablations": summary})
