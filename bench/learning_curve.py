"""Learning curves: test accuracy at lambda 0 and Rank Score vs training-set size, for every router, plotted.

Why: whether LatentRouter closes its gap to the lookup baselines (GroupBest, KNN) with more traces, or the
gap is a property of the method at every size, decides where to look. For each size the train rows are a
seeded, nested subsample of the split's train rows (the validation rows stay whole for early stopping);
each router is fitted with the demo evaluation preset and judged on the split's test rows (a report
instrument: do not choose settings on it).

    .venv/bin/python bench/learning_curve.py --home HOME [--sizes 0.125,0.25,0.5,1] [--splits 1] [--seeds 1]
        [--routers Strongest,GroupBest,KNNRouter,MLPMFRouter,ECVL,LatentRouter] [--out DIR]
    .venv/bin/python bench/learning_curve.py --synthetic 2000   # real-shaped synthetic data (a smoke run)

Writes ``learning_curve.json`` and ``learning_curve.png`` (two panels: accuracy at lambda 0 and Rank Score
vs train rows, mean over splits x seeds) under --out (default: the current folder) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.data.routing_data import RoutingData  # noqa: E402

LATENT = "LatentRouter"


def subsample_train(data: RoutingData, frac: float, seed: int) -> RoutingData:
    """``data`` with only a nested ``frac`` of its train rows labelled train (the rest ``unused``): the same
    seed gives nested subsets across fractions, so a larger size only adds rows."""
    if not 0 < frac <= 1:
        raise ValueError(f"subsample_train: fraction must be in (0, 1], got {frac}")
    tr = data.idx("train")
    order = np.random.default_rng(seed).permutation(tr)
    keep = order[: max(1, int(round(frac * len(tr))))]
    split = np.asarray(data.split, dtype=object).copy()
    split[np.setdiff1d(tr, keep)] = "unused"
    return replace(data, split=split)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=None)
    ap.add_argument("--synthetic", type=int, default=2000)
    ap.add_argument("--sizes", default="0.125,0.25,0.5,1", help="fractions of the split's train rows")
    ap.add_argument("--splits", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--routers", default="Strongest,GroupBest,KNNRouter,MLPMFRouter,ECVL,LatentRouter")
    ap.add_argument("--epochs", type=int, default=12, help="LatentRouter epochs (demo preset: 12)")
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(int(os.environ.get("LROUTER_BENCH_THREADS", "1")))
    from router.evaluation.config import EvalConfig
    from router.evaluation.context import EvalContext
    from router.evaluation.metrics.sweep import evaluate_sweep, lambda_sweep
    from router.training.trainer import LatentRouterRouter

    t0 = time.perf_counter()
    if args.home is None:
        from bench.router import real_shaped_data

        source = lambda r: real_shaped_data(args.synthetic, 8, seed=r)  # noqa: E731
    else:
        from router.data.warehouse_inputs import load_inputs
        from router.evaluation.resampling import warehouse_split_source
        from warehouse.store import Warehouse

        source = warehouse_split_source(load_inputs(Warehouse(args.home / "warehouse")))
    sizes = [float(s) for s in args.sizes.split(",")]
    routers = [r for r in args.routers.split(",") if r]
    cfg = EvalConfig.demo(experiments=("main_table",), tuning_trials=1)
    rows: list[dict] = []
    for r in range(args.splits):
        full = source(r)
        ctx = EvalContext(full, cfg, "bench")
        test = full.idx("test")
        for frac in sizes:
            for seed in range(args.seeds):
                d = subsample_train(full, frac, seed)
                for name in routers:
                    t1 = time.perf_counter()
                    if name == LATENT:
                        tc = replace(ctx.train_cfg("cost", {}), epochs=args.epochs)
                        router = LatentRouterRouter(cfg.model, tc).fit(d, seed=seed)
                    else:
                        router = ctx.make_baseline(name, {}).fit(d, seed=seed)
                    m = evaluate_sweep(lambda_sweep(router, d, test, cfg.sweep_lambdas), d)
                    rows.append({"split": r, "seed": seed, "frac": frac, "n_train": len(d.idx("train")),
                                 "router": name, "acc0": m["oriented/quality"], "rank_score": m["cost/rank_score"],
                                 "seconds": time.perf_counter() - t1})
                    print(f"[curve] split {r} n_train {rows[-1]['n_train']} {name}: acc0 {m['oriented/quality']:.4f} "
                          f"rank {m['cost/rank_score']:.4f} ({rows[-1]['seconds']:.0f}s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_curve.json").write_text(json.dumps(rows, indent=1))
    table: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        table.setdefault((row["router"], row["frac"]), []).append(row)
    src = args.home or f"synthetic {args.synthetic}"
    print(f"\n{src}: TEST rows of {args.splits} split(s) x {args.seeds} seed(s); mean over them")
    print("| router | " + " | ".join(f"{f:g} train: acc@0 / rank" for f in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name in routers:
        cells = []
        for f in sizes:
            a = np.array([x["acc0"] for x in table[(name, f)]])
            k = np.array([x["rank_score"] for x in table[(name, f)]])
            cells.append(f"{a.mean():.4f} / {k.mean():.4f} (n={int(np.mean([x['n_train'] for x in table[(name, f)]]))})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    plot(rows, routers, sizes, args.out / "learning_curve.png", str(src))
    print(f"wrote {args.out / 'learning_curve.json'} and {args.out / 'learning_curve.png'}; "
          f"wall time {(time.perf_counter() - t0) / 60:.1f} min")


def plot(rows: list[dict], routers: list[str], sizes: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in routers:
        for ax, key in zip(axes, ("acc0", "rank_score"), strict=True):
            xs = [np.mean([x["n_train"] for x in rows if x["router"] == name and x["frac"] == f]) for f in sizes]
            ys = [np.mean([x[key] for x in rows if x["router"] == name and x["frac"] == f]) for f in sizes]
            ax.plot(xs, ys, marker="o", label=name, lw=2.5 if name == LATENT else 1.2)
    for ax, lab in zip(axes, ("test accuracy at lambda 0", "Rank Score (best over the lambda sweep)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("train rows")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"learning curves: {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
