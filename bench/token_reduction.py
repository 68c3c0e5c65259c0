"""Does the capsules' input-token reduction cost routing quality? LatentRouter test accuracy at lambda=0 with
the default reduction (7x7 image grid pooled to 4x4, first 16 question tokens) and without it, 3 seeds each,
on a real warehouse (after ``make demo``). Usage: ``python bench/token_reduction.py [--home DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.data.warehouse_inputs import load_inputs, routing_data  # noqa: E402
from router.models.latent_router.model import LatentRouterConfig  # noqa: E402
from router.training.artifacts import latest_checkpoint_dir  # noqa: E402
from router.training.trainer import TrainConfig, predict, train_latent_router  # noqa: E402
from warehouse.store import Warehouse, lrouter_home  # noqa: E402

VARIANTS = {
    "default (pool 4x4, 16 question tokens)": {},
    "no reduction (49 image, 32 question tokens)": {"image_token_pool": 0, "max_text_tokens": 0},
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=None, help="LROUTER_HOME with features and profiles")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)
    wh = Warehouse((args.home or lrouter_home()) / "warehouse")
    if not wh.root.is_dir() or latest_checkpoint_dir(wh) is None:
        print(f"(token reduction not measured: no trained pipeline under {wh.root}; run `make demo` or pass --home)")
        return
    torch.set_num_threads(1)
    data = routing_data(load_inputs(wh))
    test = data.idx("test")
    print(f"{wh.root}: {data.n} queries ({len(test)} test), {data.k} models; TrainConfig defaults, 1 thread")
    for name, kw in VARIANTS.items():
        accs, t0 = [], time.perf_counter()
        for seed in args.seeds:
            res = train_latent_router(data, LatentRouterConfig(**kw), TrainConfig(seed=seed))
            _, _, score = predict(res.model, data, test)
            accs.append(float(data.quality[test, score.argmax(1)].mean()))
        print(f"{name:<45} accuracy@λ=0 {np.mean(accs):.4f} ± {np.std(accs):.4f}  per seed "
              f"{[round(a, 4) for a in accs]}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
