"""Benchmark LatentRouter: parameter count, training seconds per epoch and CPU forward latency.

Runs on synthetic data shaped like the real features (49 image tokens x 320, 32 text tokens x 384, pooled
1280+384, K=8 models) and prints the figures next to the targets (<= 1M parameters, <= 0.1 ms/query at batch
256, <= 2 ms p50 for a single query on 2 threads). Usage: ``python bench/router.py [--hidden 48 96]``.

OpenMP's wait policy matters a lot here: with ``OMP_WAIT_POLICY=PASSIVE`` (what ``make test`` uses, so idle
workers do not steal the other core) every one of the ~150 small ops per forward wakes the second thread,
and two threads end up slower than one. The figures are taken with the policy the process was started with
(unset = the OpenMP default, as a router service runs); the first line says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.data.routing_data import RoutingData, synthetic_routing_data  # noqa: E402
from router.models.latent_router.model import InputDims, LatentRouter, LatentRouterConfig  # noqa: E402
from router.training.trainer import TrainConfig, make_batch, train_latent_router  # noqa: E402


def real_shaped_data(n: int, k: int, seed: int = 0) -> RoutingData:
    """synthetic_routing_data at the real token shapes, with real-width pooled/side/profile vectors."""
    d = synthetic_routing_data(n=n, k=k, seed=seed, ti=49, di=320, tq=32, dq=384)
    rng = np.random.default_rng(seed + 1)
    txt_mask = np.ones((n, 32), dtype=bool)
    lengths = rng.integers(8, 33, size=n)
    txt_mask[np.arange(32)[None, :] >= lengths[:, None]] = False  # questions are padded to 32 tokens
    pooled = rng.normal(size=(n, 1280 + 384)).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    feats = rng.normal(size=(k, 30)).astype(np.float32)
    return dataclasses.replace(
        d, img_tokens=d.img_tokens.astype(np.float16), txt_tokens=d.txt_tokens.astype(np.float16),
        txt_mask=txt_mask, pooled=pooled, side=rng.normal(size=(n, 12)).astype(np.float32),
        model_feats=feats, model_feat_names=[f"f{i}" for i in range(30)])


def latency(model: LatentRouter, data: RoutingData, threads: int, reps_single: int, reps_batch: int) -> dict:
    torch.set_num_threads(threads)
    model.eval()
    dev = torch.device("cpu")
    rng = np.random.default_rng(0)
    singles = [make_batch(data, rng.integers(0, data.n, size=1), model.cfg, dev) for _ in range(32)]
    big = make_batch(data, np.arange(256) % data.n, model.cfg, dev)
    out: dict[str, float] = {}
    with torch.inference_mode():
        for b in singles[:8]:
            model(**b)
        ts = []
        for i in range(reps_single):
            t0 = time.perf_counter()
            model(**singles[i % len(singles)])
            ts.append(time.perf_counter() - t0)
        out["single_p50_ms"] = 1e3 * float(np.percentile(ts, 50))
        out["single_p99_ms"] = 1e3 * float(np.percentile(ts, 99))
        model(**big)
        tb = []
        for _ in range(reps_batch):
            t0 = time.perf_counter()
            model(**big)
            tb.append(time.perf_counter() - t0)
        out["batch256_ms_per_query"] = 1e3 * float(np.median(tb)) / 256
        out["batch256_ms_per_query_best"] = 1e3 * float(np.min(tb)) / 256
        tc = []
        for _ in range(reps_batch):
            t0 = time.perf_counter()
            model.capsules(*model.query_inputs(big["img_tokens"], big["img_mask"], big["txt_tokens"],
                                               big["txt_mask"], big["side"]))
            tc.append(time.perf_counter() - t0)
        out["batch256_capsule_share"] = float(np.median(tc) / np.median(tb))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[48, 96])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for the latency figures")
    ap.add_argument("--reps", type=int, default=300, help="single-query repetitions")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile'd forwards (needs a C++ compiler; minutes of compile time)")
    ap.add_argument("--home", type=Path, default=None,
                    help="an LROUTER_HOME with a trained router (after `make demo`): also time RouterService.route "
                         "end to end (default: $LROUTER_HOME or ./data when it holds one)")
    args = ap.parse_args(argv)

    data = real_shaped_data(args.n, args.k)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"train device {device}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default)')}, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the box skews timings)")
    print(f"data: N={data.n} ({len(data.idx('train'))} train), image tokens {data.img_tokens.shape[1:]}, "
          f"text tokens {data.txt_tokens.shape[1:]}, side {data.side.shape[1]}+pooled {data.pooled.shape[1]}, "
          f"K={data.k}, profile P={data.model_feats.shape[1]}")
    for hidden in args.hidden:
        cfg = LatentRouterConfig(hidden=hidden)
        model = LatentRouter(cfg, InputDims.from_data(data, cfg))
        n_params = model.n_parameters()
        torch.set_num_threads(args.threads)
        res = train_latent_router(data, cfg, TrainConfig(epochs=args.epochs, patience=args.epochs, seed=0))
        secs = [h.seconds for h in res.history]
        lat = latency(res.model.cpu(), data, args.threads, args.reps, 50)
        lat1 = latency(res.model, data, 1, args.reps, 50) if args.threads != 1 else lat
        print(f"\n== LatentRouter hidden={hidden} (C={cfg.n_capsules}, H={cfg.n_layers}, heads={cfg.n_heads})")
        print(f"parameters            {n_params:>10,d}   target <= 1,000,000  {'ok' if n_params <= 1e6 else 'MISSED'}")
        print(f"train s/epoch ({device}) {np.mean(secs):>8.2f}   per epoch: {', '.join(f'{s:.2f}' for s in secs)} "
              f"(batch 128, {len(data.idx('train'))} rows, {args.threads} threads)")
        for th, lt in ((args.threads, lat), (1, lat1)):
            ok_b = "ok" if lt["batch256_ms_per_query"] <= 0.1 else "MISSED"
            ok_s = "ok" if lt["single_p50_ms"] <= 2.0 else "MISSED"
            print(f"CPU {th} thread(s): batch 1 p50 {lt['single_p50_ms']:.3f} ms ({ok_s} <= 2 ms), "
                  f"p99 {lt['single_p99_ms']:.3f} ms; batch 256 {lt['batch256_ms_per_query']:.4f} ms/query "
                  f"(best {lt['batch256_ms_per_query_best']:.4f}; {ok_b} <= 0.1; capsule stage "
                  f"{100 * lt['batch256_capsule_share']:.0f}%)")
            if th == 1 and args.threads == 1:
                break
        if args.compile:
            t0 = time.perf_counter()
            compiled = torch.compile(res.model, dynamic=False)
            lc = latency(compiled, data, args.threads, args.reps, 20)  # type: ignore[arg-type]
            print(f"torch.compile ({time.perf_counter() - t0:.0f} s incl. compiling), {args.threads} thread(s): "
                  f"batch 1 p50 {lc['single_p50_ms']:.3f} ms, p99 {lc['single_p99_ms']:.3f} ms; "
                  f"batch 256 {lc['batch256_ms_per_query']:.4f} ms/query")
    route_api(args.home)


def route_api(home: Path | None, calls: int = 30) -> None:
    """End-to-end ``RouterService.route`` on a real warehouse: encoders + request row + one router forward."""
    from PIL import Image

    from router.serving.service import load_router
    from router.training.artifacts import latest_checkpoint_dir
    from warehouse.store import Warehouse, lrouter_home

    home = home or lrouter_home()
    wh = Warehouse(home / "warehouse")
    if not wh.root.is_dir() or latest_checkpoint_dir(wh) is None:
        print(f"\n(route API not timed: no trained router under {home}; run `make demo` or pass --home)")
        return
    t0 = time.perf_counter()
    svc = load_router(home)
    t_load = time.perf_counter() - t0
    images = sorted(wh.images_dir.glob("*.png"))[:calls]
    questions = wh.read_table("queries")["question"].to_list()[:calls]
    t0 = time.perf_counter()
    svc.route(Image.open(images[0]), questions[0])
    t_first = time.perf_counter() - t0
    ts = []
    for img, q in zip(images, questions, strict=False):
        t0 = time.perf_counter()
        svc.route(Image.open(img), q)
        ts.append(time.perf_counter() - t0)
    print(f"\n== RouterService.route end to end ({wh.root}, {svc.data.n} stored queries, K={svc.data.k})")
    print(f"service start {t_load:.2f} s; first request {t_first:.2f} s (encoder weights load); then p50 "
          f"{1e3 * np.median(ts):.1f} ms, p99 {1e3 * np.percentile(ts, 99):.1f} ms over {len(ts)} requests "
          "(image + question encoding is most of it)")


if __name__ == "__main__":
    main()
