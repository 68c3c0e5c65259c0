"""Routing quality on a real VL-RouterBench-shaped folder: LatentRouter vs every baseline, repeated splits.

Imports PATH into a temporary home (nothing is copied into the repository), extracts features, then runs the
evaluation's main table on R seeded, group-aware re-splits (split 0 = the folder's own) x S seeds, with
validation-only hyperparameter selection for every trainable router (the same number of trials each,
``router.evaluation.tuning``), and prints one table: accuracy at lambda = 0, cost Rank Score, nAUC (budget
sweep), the share of the Strongest -> Oracle gap closed, and paired p-values (over splits) of LatentRouter
against every baseline. A last row, "Deployed (val-selected)", is what ``router.evaluation.deploy`` would
ship: per split and seed the router with the best VALIDATION utility at lambda = 0, judged on test. With
``--oof-deploy K`` a row "Deployed (OOF-selected)" chooses instead by K-fold out-of-fold utility over train +
val among ``--oof-candidates`` and their OOF-weighted ensemble (``router.evaluation.crossfit``).

    .venv/bin/python bench/real_data.py ../shared/realdata/visonlyqa [--splits 5 --seeds 3 --trials 2]
        [--home DIR]   # reuse an imported home with features (skips import + features)
        [--oof-deploy 5]   # + the out-of-fold deployment choice (cross-fits every candidate per split)

Sizes: ``EvalConfig.demo`` (LatentRouter hidden 48, 12 epochs, patience 3; baselines 15 epochs) with only the
main table; the script prints its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.data.warehouse_inputs import load_inputs, routing_data  # noqa: E402
from router.evaluation.config import LATENT, ORACLE, STRONGEST, EvalConfig  # noqa: E402
from router.evaluation.context import EvalContext  # noqa: E402
from router.evaluation.deploy import validation_utility  # noqa: E402
from router.evaluation.experiments import run_experiments  # noqa: E402
from router.evaluation.metrics.statistics import paired_t  # noqa: E402
from router.evaluation.parallel import resolve_workers  # noqa: E402
from router.evaluation.resampling import warehouse_split_source  # noqa: E402
from warehouse.store import Warehouse  # noqa: E402

DEPLOYED = "Deployed (val-selected)"
DEPLOYED_OOF = "Deployed (OOF-selected)"
OOF_CANDIDATES = "LatentRouter,Strongest,GroupBest,KNNRouter,MLPMFRouter,ECVL"


def prepare(path: Path, images: Path, home: Path) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cli = [str(ROOT / ".venv" / "bin" / "lrouter"), "--home", str(home)]
    for cmd in (["import", "vl-routerbench", str(path), "--images", str(images)], ["run", "setup"],
                ["run", "features"]):
        subprocess.run(cli + cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def per_split(res: pl.DataFrame, router: str, key: str, n_splits: int) -> np.ndarray:
    st, metric = key.split("/", 1)
    f = res.filter((pl.col("router") == router) & (pl.col("setting") == st) & (pl.col("metric") == metric)
                   & (pl.col("split") >= 0))
    g = f.group_by("split").agg(pl.col("value").mean()).sort("split")
    out = np.full(n_splits, np.nan)
    for s, v in zip(g["split"].to_list(), g["value"].to_list(), strict=True):
        out[int(s)] = v
    return out


def deployed_rows(ctx: EvalContext, lam: float) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Per split x seed: the router with the best validation utility at ``lam``, its test metrics."""
    cfg = ctx.cfg
    acc = np.zeros((cfg.n_splits, len(cfg.seeds)))
    rank = np.zeros_like(acc)
    nauc = np.zeros_like(acc)
    picks = []
    for r in range(cfg.n_splits):
        sc = ctx.split_ctx(r)
        for i, seed in enumerate(cfg.seeds):
            cands = [n for n in sc.routers if n != ORACLE]
            val = {n: validation_utility(sc.router_for(n, "cost", seed), sc.data, lam) for n in cands}
            best = max(cands, key=lambda n: (val[n], n == LATENT))
            m = sc.seed_metrics(best, seed)
            # accuracy at lambda 0 of the deployed (cost-aware) router, as the pipeline ships it
            sw = sc.sweep(best, "cost", seed)
            acc[r, i] = float(sw.quality[sw.at(0.0)])
            rank[r, i], nauc[r, i] = m["cost/rank_score"], m["cost/nauc_budget"]
            picks.append({"split": r, "seed": seed, "deployed": best, "val_utility": round(val[best], 4),
                          "val_latent": round(val[LATENT], 4)})
    return {"oriented/quality": acc, "cost/rank_score": rank, "cost/nauc_budget": nauc}, picks


def oof_deployed_rows(ctx: EvalContext, lam: float, n_folds: int, candidates: list[str]
                      ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Per split x seed: the candidate (or the OOF-weighted ensemble of them) with the best out-of-fold
    utility at ``lam`` over the split's train + val rows (``router.evaluation.crossfit``; default
    hyperparameters for every candidate: the same budget), then judged on test like the other rows."""
    from router.evaluation.crossfit import ENSEMBLE, oof_deployment_choice
    from router.evaluation.metrics.sweep import evaluate_sweep, lambda_sweep
    from router.models.ensemble import EnsembleRouter
    from router.training.trainer import LatentRouterRouter

    cfg = ctx.cfg
    acc = np.zeros((cfg.n_splits, len(cfg.seeds)))
    rank = np.zeros_like(acc)
    nauc = np.full_like(acc, np.nan)
    picks = []
    for r in range(cfg.n_splits):
        sc = ctx.split_ctx(r)
        for i, seed in enumerate(cfg.seeds):
            facs = {n: (lambda sc=sc: LatentRouterRouter(sc.cfg.model, sc.train_cfg("cost", {}), name=LATENT))
                    if n == LATENT else (lambda n=n, sc=sc: sc.make_baseline(n, {})) for n in candidates}
            res = oof_deployment_choice(facs, sc.data, lam, n_folds, seed)
            if res.chosen == ENSEMBLE:
                router = EnsembleRouter.from_fitted({n: sc.router_for(n, "cost", seed) for n in res.ensemble_weights},
                                                    res.ensemble_weights)
            else:
                router = sc.router_for(res.chosen, "cost", seed)
            m = evaluate_sweep(lambda_sweep(router, sc.data, sc.test, sc.lambdas), sc.data, sc.bounds, sc.rank.beta)
            acc[r, i], rank[r, i] = m["oriented/quality"], m["cost/rank_score"]
            picks.append({"split": r, "seed": seed, "deployed": res.chosen,
                          "oof": [(row["router"], round(row["oof_utility"], 4)) for row in res.table],
                          "weights": res.ensemble_weights})
            print(f"[oof-deploy] split {r} seed {seed}: {res.chosen}; OOF table {picks[-1]['oof']}", flush=True)
    return {"oriented/quality": acc, "cost/rank_score": rank, "cost/nauc_budget": nauc}, picks


VARIANTS: dict[str, dict] = {
    "default (4x4 image grid, 16 question tokens)": {},
    "use_pooled (+ the baselines' pooled vectors)": {"use_pooled": True},
    "no token reduction (49 image, all question tokens)": {"image_token_pool": 0, "max_text_tokens": 0},
}


def diagnose(ctx: EvalContext, n_splits: int, seeds: list[int]) -> None:
    """VALIDATION-only comparison of LatentRouter input variants and of a seed ensemble (mean of the seeds'
    scores), cost-aware fits as deployed, utility at lambda 0; Strongest and the best baseline for reference.
    Nothing here reads test rows."""
    from dataclasses import replace

    from router.training.trainer import LatentRouterRouter

    class Ensemble:
        def __init__(self, rs):
            self.rs = rs

        def select(self, data, rows, lam, avail=None):
            mask = data.avail[rows] if avail is None else avail
            s = np.mean([r.scores(data, rows, lam, mask) for r in self.rs], axis=0)
            return np.argmax(np.where(mask, s, -np.inf), axis=1)

    table: dict[str, list[float]] = {}
    for r in range(n_splits):
        sc = ctx.split_ctx(r)
        for name, over in VARIANTS.items():
            fits = [LatentRouterRouter(replace(sc.cfg.model, **over), sc.train_cfg("cost", {}), name=LATENT)
                    .fit(sc.data, seed=s) for s in seeds]
            table.setdefault(name, []).append(float(np.mean([validation_utility(f, sc.data, 0.0) for f in fits])))
            if not over and len(fits) > 1:
                table.setdefault(f"seed ensemble of {len(fits)} (default inputs)", []).append(
                    validation_utility(Ensemble(fits), sc.data, 0.0))
        for b in (STRONGEST, "GroupBest", "GraphRouter", "MLPMFRouter"):
            table.setdefault(b, []).append(validation_utility(sc.baseline(b, seeds[0]), sc.data, 0.0))
        print(f"[diagnose] split {r}: " + "; ".join(f"{k} {v[-1]:.4f}" for k, v in table.items()), flush=True)
    print("\nVALIDATION accuracy at lambda 0 (mean over splits; per split)")
    for name, v in table.items():
        print(f"| {name} | {np.mean(v):.4f} | {[round(x, 4) for x in v]} |")


def fmt(m: float, s: float) -> str:
    return "n/a" if not np.isfinite(m) else f"{m:.4f} ± {s:.4f}"


def pv(p: float) -> str:
    return "n/a" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def stable(frame: pl.DataFrame) -> pl.DataFrame:
    """eval_results without wall-clock figures (latency, seconds): what must not depend on the worker count."""
    return frame.filter(~pl.col("metric").str.contains("latency|seconds"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="VL-RouterBench-shaped folder (Y.npz, C.npy, meta.parquet, ...)")
    ap.add_argument("--images", type=Path, default=None, help="image folder (default: PATH)")
    ap.add_argument("--home", type=Path, default=None, help="an already imported home with features (reused)")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=2, help="validation tuning trials per trainable router")
    ap.add_argument("--epochs", type=int, default=12, help="LatentRouter epochs (demo preset: 12)")
    ap.add_argument("--diagnose", action="store_true",
                    help="only the validation-only comparison of LatentRouter variants (no test figures)")
    ap.add_argument("--json", type=Path, default=None, help="also write the table and picks as JSON here")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes making the fits (0 = one per core; router.evaluation.parallel)")
    ap.add_argument("--check-serial", action="store_true",
                    help="run the evaluation again on 1 process and print its time and whether the tables are "
                         "identical")
    ap.add_argument("--oof-deploy", type=int, default=0, metavar="K",
                    help="also a row for the deployment chosen by K-fold out-of-fold utility (0 = off)")
    ap.add_argument("--oof-candidates", default=OOF_CANDIDATES, help="candidates of --oof-deploy, comma list")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    tmp = None
    home = args.home
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrouter-real-")
        home = Path(tmp.name) / "home"
        prepare(args.path, args.images or args.path, home)
    t_prep = time.perf_counter() - t0
    wh = Warehouse(home / "warehouse")
    import torch

    torch.set_num_threads(int(os.environ.get("LROUTER_BENCH_THREADS", "1")))  # 2 benches share 2 cores
    inputs = load_inputs(wh)
    data = routing_data(inputs)
    cfg = EvalConfig.demo(experiments=("main_table",), n_splits=args.splits, seeds=tuple(range(args.seeds)),
                          tuning_trials=args.trials)
    cfg.train.epochs = args.epochs
    bounds_path = wh.root / "cost_bounds.json"
    shipped = json.loads(bounds_path.read_text()) if bounds_path.exists() else None
    ctx = EvalContext(data, cfg, "bench", progress=bool(os.environ.get("LROUTER_BENCH_VERBOSE")),
                      shipped_bounds=shipped, split_source=warehouse_split_source(inputs, cfg.split_fractions))
    if args.diagnose:
        diagnose(ctx, cfg.n_splits, list(cfg.seeds))
        print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min")
        return
    t_eval = time.perf_counter()
    out = run_experiments(ctx, workers=args.workers)
    t_eval = time.perf_counter() - t_eval
    if args.check_serial:
        t_ser = time.perf_counter()
        serial = run_experiments(EvalContext(data, cfg, "bench", shipped_bounds=shipped,
                                             split_source=warehouse_split_source(inputs, cfg.split_fractions)),
                                 workers=1)
        t_ser = time.perf_counter() - t_ser
        same = stable(serial.eval_results).equals(stable(out.eval_results))
        print(f"evaluation: {t_eval:.0f} s on {resolve_workers(args.workers)} process(es), {t_ser:.0f} s on 1 "
              f"(x{t_ser / t_eval:.2f}); eval_results identical: {same}")
    res = out.eval_results.filter(pl.col("experiment") == "main_table")
    dep, picks = deployed_rows(ctx, 0.0)
    keys = ("oriented/quality", "cost/rank_score", "cost/nauc_budget", f"avg/{cfg.primary_metric}")
    routers = [n for n in ctx.routers]
    vals = {n: {k: per_split(res, n, k, cfg.n_splits) for k in keys} for n in routers}
    allv = {n: {k: res.filter((pl.col("router") == n) & (pl.col("setting") == k.split("/")[0])
                              & (pl.col("metric") == k.split("/", 1)[1]) & (pl.col("split") >= 0))["value"]
                .to_numpy() for k in keys} for n in routers}
    allv[DEPLOYED] = {k: v.ravel() for k, v in dep.items()}
    vals[DEPLOYED] = {k: v.mean(axis=1) for k, v in dep.items()}
    extra = [DEPLOYED]
    if args.oof_deploy:
        dep_oof, picks_oof = oof_deployed_rows(ctx, 0.0, args.oof_deploy,
                                               [c for c in args.oof_candidates.split(",") if c])
        allv[DEPLOYED_OOF] = {k: v.ravel() for k, v in dep_oof.items()}
        vals[DEPLOYED_OOF] = {k: v.mean(axis=1) for k, v in dep_oof.items()}
        picks += [{**p, "selection": "oof"} for p in picks_oof]
        extra.append(DEPLOYED_OOF)
    q_str = float(np.mean(allv[STRONGEST]["oriented/quality"]))
    q_orc = float(np.mean(allv[ORACLE]["oriented/quality"]))
    rows = []
    for n in [*routers, *extra]:
        a = allv[n]
        acc = float(np.mean(a["oriented/quality"]))
        row = {"router": n, "acc@0": fmt(acc, float(np.std(a["oriented/quality"], ddof=1))),
               "rank_score": fmt(float(np.mean(a["cost/rank_score"])), float(np.std(a["cost/rank_score"], ddof=1))),
               "nauc": fmt(float(np.nanmean(a["cost/nauc_budget"])) if np.isfinite(a["cost/nauc_budget"]).any()
                           else float("nan"), float(np.nanstd(a["cost/nauc_budget"], ddof=1))
                           if np.isfinite(a["cost/nauc_budget"]).sum() > 1 else float("nan")),
               "gap_closed": f"{(acc - q_str) / (q_orc - q_str):+.1%}" if q_orc > q_str else "n/a"}
        if n not in (LATENT, ORACLE):
            row["p_acc(LR vs)"] = pv(paired_t(vals[LATENT]["oriented/quality"], vals[n]["oriented/quality"])[1])
            row["p_rank(LR vs)"] = pv(paired_t(vals[LATENT]["cost/rank_score"], vals[n]["cost/rank_score"])[1])
        else:
            row["p_acc(LR vs)"] = row["p_rank(LR vs)"] = ""
        rows.append(row)
    wall = time.perf_counter() - t0
    n_tr, n_va, n_te = (len(data.idx(s)) for s in ("train", "val", "test"))
    print(f"\n{args.path.name}: {data.n} queries x {data.k} models; splits {cfg.n_splits} (split 0 = the folder's "
          f"own {n_tr}/{n_va}/{n_te}, others seeded 70/10/20 re-splits) x seeds {list(cfg.seeds)}; "
          f"tuning trials {cfg.tuning_trials} per trainable router (validation only)")
    print("published correctness; ASSUMED costs (list price x estimated tokens); test rows of each split; "
          "mean ± std over splits x seeds; p = paired t over splits (per-split seed means), LatentRouter vs row")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    for sel, label in (("val", "validation utility"), ("oof", "out-of-fold utility")):
        counts: dict[str, int] = {}
        for p in picks:
            if p.get("selection", "val") == sel:
                counts[p["deployed"]] = counts.get(p["deployed"], 0) + 1
        if counts:
            print(f"deployed by {label} at lambda 0 (split x seed): {counts}")
    tun = out.tables.get("tuning")
    if tun is not None and tun.height:
        lat = tun.filter(pl.col("router") == LATENT)
        print("LatentRouter validation tuning per split:", [(r["split"], r["chosen"], r["scores"])
                                                            for r in lat.iter_rows(named=True)])
    print(f"wall time {wall / 60:.1f} min (import + features {t_prep / 60:.1f} min, evaluation "
          f"{(wall - t_prep) / 60:.1f} min; fits {out.timings.get('fits', 0) / 60:.1f} min) on "
          f"{os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "picks": picks, "wall_s": wall}, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
