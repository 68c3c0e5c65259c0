"""Out-of-fold comparison of LatentRouter variants and baselines: the evidence for (not) changing a default.

Cross-fits every router on the train + validation rows of one split (K group-aware folds,
``router.evaluation.crossfit``; test rows are never read) and prints, per router, the OOF accuracy at
lambda 0 (mean realised quality of the held-out picks), its std over folds, the paired difference to the
LatentRouter default per fold with a paired t p-value, the early-stopping epochs, and for LatentRouter
variants the last training-curve figures (train / validation pick accuracy at the best epoch next to
GroupBest's on the same rows). Optionally the OOF-weighted ensemble of the baselines and the default
(``--ensemble``), scored with weights chosen on the other folds (``nested_oof_utility``).

    .venv/bin/python bench/latent_oof.py --home HOME [--split 0] [--folds 5] [--variants default,side_residual]
        [--routers GroupBest,KNNRouter,MLPMFRouter,ECVL] [--ensemble] [--json out.json]
    .venv/bin/python bench/latent_oof.py --synthetic 1500   # real-shaped synthetic data (a smoke run)

HOME is an lrouter home with features (``lrouter import ...``, ``lrouter run setup``, ``lrouter run
features``). Sizes: the ``demo`` evaluation preset (LatentRouter hidden 48, 12 epochs, patience 3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.data.routing_data import RoutingData  # noqa: E402
from router.evaluation.crossfit import OOFPredictions, crossfit, oof_fold_utilities, oof_utility  # noqa: E402
from router.evaluation.metrics.statistics import paired_t  # noqa: E402
from router.training.trainer import LatentRouterRouter, TrainConfig  # noqa: E402

# name -> (LatentRouterConfig overrides, TrainConfig overrides); every one is a config option with a test
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "side_residual": ({"side_residual": True}, {}),
    "init_head_mean": ({}, {"init_head_mean": True}),
    "loss_pointwise": ({}, {"w_pair": 0.1, "w_list": 0.1, "w_mean": 1.0}),
    "tau_list_0.2": ({}, {"tau_list": 0.2}),
    "steps_x4 (batch 32)": ({}, {"batch_size": 32}),
    "text_64_tokens": ({"max_text_tokens": 64}, {}),
    "use_pooled": ({"use_pooled": True}, {}),
    "token_drop_0.3": ({}, {"token_drop": 0.3}),
    # the whole epoch budget in every fold (no per-fold early stopping): its rows add the epoch count chosen
    # out of fold (crossfit.choose_epochs) and that rule's nested OOF accuracy
    "epochs_by_oof": ({}, {"restore_best": False}),
    "side_residual+epochs_by_oof": ({"side_residual": True}, {"restore_best": False}),
    "side+token_drop_0.3": ({"side_residual": True}, {"token_drop": 0.3}),
    # a fixed 5-epoch budget, no early stopping (5 = the pooled OOF epoch curve's argmax on VisOnlyQA split 0)
    "fixed_5_epochs": ({}, {"restore_best": False, "epochs": 5}),
    "side+init": ({"side_residual": True}, {"init_head_mean": True}),
    "side+init+pointwise": ({"side_residual": True}, {"init_head_mean": True, "w_pair": 0.1, "w_list": 0.1,
                                                       "w_mean": 1.0}),
}
DEFAULT_ROUTERS = ("Strongest", "GroupBest", "KNNRouter", "MLPMFRouter", "ECVL")


def load(home: Path | None, synthetic: int, split: int) -> RoutingData:
    if home is None:
        from bench.router import real_shaped_data

        return real_shaped_data(synthetic, 8, seed=split)
    from router.data.warehouse_inputs import load_inputs
    from router.evaluation.resampling import warehouse_split_source
    from warehouse.store import Warehouse

    inputs = load_inputs(Warehouse(home / "warehouse"))
    return warehouse_split_source(inputs)(split)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--synthetic", type=int, default=1500, help="queries of real-shaped synthetic data (no --home)")
    ap.add_argument("--split", type=int, default=0, help="which split's train + val rows (0 = the data's own)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="default", help=f"comma list of {list(VARIANTS)}")
    ap.add_argument("--routers", default=",".join(DEFAULT_ROUTERS), help="baselines (registry names), comma list")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--ensemble", action="store_true", help="also the OOF-weighted ensemble (nested OOF score)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("LROUTER_BENCH_THREADS", "1")))
    from router.evaluation.config import EvalConfig
    from router.evaluation.context import EvalContext

    t0 = time.perf_counter()
    data = load(args.home, args.synthetic, args.split)
    cfg = EvalConfig.demo(experiments=("main_table",), tuning_trials=1)
    ctx = EvalContext(data, cfg, "bench")
    base_train: TrainConfig = replace(cfg.train, epochs=args.epochs)
    oofs: dict[str, OOFPredictions] = {}
    curves: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    nested_rows: dict[str, tuple[float, np.ndarray, int, np.ndarray]] = {}
    for v in [s for s in args.variants.split(",") if s]:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {list(VARIANTS)}")
        mo, to = VARIANTS[v]
        mc, tc = replace(cfg.model, **mo), replace(base_train, **to)
        t1 = time.perf_counter()
        # a fixed epoch budget records the held-out fold as its validation curve (honest: nothing is selected
        # on it); every other fit early-stops on the next fold (inner validation)
        o = crossfit(lambda mc=mc, tc=tc: LatentRouterRouter(mc, tc), data, args.folds, args.seed, (0.0,),
                     name=f"LR {v}", keep_fitted=True, inner_val=not v.endswith("epochs_by_oof"))
        seconds[f"LR {v}"] = time.perf_counter() - t1
        oofs[f"LR {v}"] = o
        res = [m.result for m in o.fitted]
        curves[f"LR {v}"] = {
            "train_acc": float(np.mean([r.history[r.best_epoch].train_acc for r in res])),
            "val_acc": float(np.mean([r.history[r.best_epoch].val_acc for r in res])),
            "gb_train_acc": float(np.mean([r.reference.get("group_best_train_acc", np.nan) for r in res])),
            "gb_val_acc": float(np.mean([r.reference.get("group_best_val_acc", np.nan) for r in res])),
        }
        if v.endswith("epochs_by_oof"):
            from router.evaluation.crossfit import choose_epochs

            e, pooled, nested, per_fold = choose_epochs(o)
            curves[f"LR {v}"]["oof_epochs"] = e
            curves[f"LR {v}"]["nested_acc"] = nested
            nested_rows[f"LR {v} @ OOF-chosen epochs (nested)"] = (nested, per_fold, e, pooled)
            print(f"[oof] LR {v}: pooled held-out accuracy per epoch {np.round(pooled, 4).tolist()}; "
                  f"chosen {e} epochs; nested OOF {nested:.4f}", flush=True)
        o.fitted = []
        print(f"[oof] LR {v}: {oof_utility(o, data, 0.0):.4f} ({seconds[f'LR {v}']:.0f}s)", flush=True)
    for name in [s for s in args.routers.split(",") if s]:
        t1 = time.perf_counter()
        oofs[name] = crossfit(lambda n=name: ctx.make_baseline(n, {}), data, args.folds, args.seed, (0.0,), name=name)
        seconds[name] = time.perf_counter() - t1
        print(f"[oof] {name}: {oof_utility(oofs[name], data, 0.0):.4f} ({seconds[name]:.0f}s)", flush=True)
    ens_row = None
    if args.ensemble:
        from router.models.ensemble import EnsembleConfig, nested_oof_utility

        members = {n: o for n, o in oofs.items() if n == "LR default" or not n.startswith("LR ")}
        u, per_fold, weights = nested_oof_utility(members, data, 0.0, EnsembleConfig(size=20))
        ens_row = {"router": "Ensemble (nested OOF)", "u": u, "per_fold": per_fold, "weights": weights}

    ref = oofs.get("LR default")
    ref_folds = oof_fold_utilities(ref, data, 0.0) if ref is not None else None
    n_tr, n_va = len(data.idx("train")), len(data.idx("val"))
    src = args.home or f"synthetic {args.synthetic}"
    print(f"\n{src}: split {args.split}, {n_tr}+{n_va} train+val rows x {data.k} models, {args.folds} folds, "
          f"seed {args.seed}; OOF accuracy at lambda 0 (test rows not read)")
    print("| router | OOF acc | fold std | diff vs LR default | p | best epochs | train acc (GB) | val acc (GB) | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    out_rows = []
    for name, o in oofs.items():
        fu = oof_fold_utilities(o, data, 0.0)
        diff = p = float("nan")
        if ref_folds is not None and name != "LR default":
            diff, p = float(np.mean(fu - ref_folds)), paired_t(fu, ref_folds)[1]
        c = curves.get(name, {})
        row = {"router": name, "oof_acc": oof_utility(o, data, 0.0), "fold_std": float(np.std(fu, ddof=1)),
               "diff": diff, "p": p, "best_epochs": o.best_epochs, **c, "seconds": seconds[name]}
        out_rows.append(row)
        tr = f"{c['train_acc']:.4f} ({c['gb_train_acc']:.4f})" if c else ""
        va = f"{c['val_acc']:.4f} ({c['gb_val_acc']:.4f})" if c else ""
        print(f"| {name} | {row['oof_acc']:.4f} | {row['fold_std']:.4f} | {diff:+.4f} | {p:.3f} | "
              f"{o.best_epochs} | {tr} | {va} | {seconds[name]:.0f} |")
    for name, (u, fu, e, _) in nested_rows.items():
        diff, p = (float(np.mean(fu - ref_folds)), paired_t(fu, ref_folds)[1]) if ref_folds is not None else (
            float("nan"), float("nan"))
        print(f"| {name} | {u:.4f} | {np.std(fu, ddof=1):.4f} | {diff:+.4f} | {p:.3f} | {e} (all folds) | | | |")
        out_rows.append({"router": name, "oof_acc": u, "diff": diff, "p": p, "epochs": e})
    if ens_row is not None:
        fu = ens_row["per_fold"]
        diff, p = (float(np.mean(fu - ref_folds)), paired_t(fu, ref_folds)[1]) if ref_folds is not None else (
            float("nan"), float("nan"))
        print(f"| {ens_row['router']} | {ens_row['u']:.4f} | {np.std(fu, ddof=1):.4f} | {diff:+.4f} | {p:.3f} | "
              f"weights per fold: {[{k: round(v, 2) for k, v in w.items()} for w in ens_row['weights']]} |")
        out_rows.append({"router": ens_row["router"], "oof_acc": ens_row["u"], "diff": diff, "p": p,
                         "weights": ens_row["weights"]})
    print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min")
    if args.json:
        args.json.write_text(json.dumps({"source": str(src), "split": args.split, "folds": args.folds,
                                         "rows": out_rows}, indent=1, default=float))


if __name__ == "__main__":
    main()
