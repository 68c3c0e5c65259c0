"""What serving in float32 (or int8) ONNX graphs costs in routing decisions when the features were computed in bf16.

On a CPU with native bf16 the features asset encodes in bf16 (``FeatureConfig.dtype="auto"``); the routing
service then runs the same eager bf16 encoders so a request's features match the stored ones, and ONNX Runtime
(float32 only) is not used. ``LROUTER_SERVING_DTYPE=float32`` serves from the fp32 graphs instead, ``int8`` from
them with the text encoder's weights in int8. This script routes the warehouse's first ``--n`` queries (their
images and questions, re-encoded) through the stored-dtype service and each of ``--modes``, and prints how often
the top-ranked model differs, how far the predicted qualities move, and the single-request routing time of each
(text only, and with an image).

Usage: ``python bench/serving_precision.py --home data`` (a warehouse with a trained router, e.g. after
``make demo``). On a CPU without native bf16 the float32 service is the stored one and agreement is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.features.config import FeatureConfig  # noqa: E402
from router.features.encoders import load_encoders  # noqa: E402
from router.serving.service import RouteRequest, RouterService, ServingOptions  # noqa: E402
from warehouse.store import Warehouse  # noqa: E402


def _single_ms(service: RouterService, image: Image.Image | None, n: int = 120) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        service.route_many([RouteRequest(image, f"Request {i}: What word is written in the box?")])
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times[n // 6:], 50))


def _qualities(ranked: list[dict]) -> np.ndarray:
    return np.array([c["quality"] for c in sorted(ranked, key=lambda c: c["model_id"])])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default="data")
    p.add_argument("--n", type=int, default=300, help="queries to route through both services")
    p.add_argument("--lambdas", default="0,0.3,1", help="comma-separated cost trade-offs")
    p.add_argument("--modes", default="float32,int8", help="LROUTER_SERVING_DTYPE values to compare")
    a = p.parse_args()
    wh = Warehouse(Path(a.home).resolve() / "warehouse")
    stored = RouterService(wh, auto_refresh=False)
    services = {"features dtype": stored}
    for mode in a.modes.split(","):
        services[mode] = RouterService(wh, FeatureConfig(), auto_refresh=False, serving=ServingOptions(dtype=mode))
    for s in services.values():
        s.warm_up()
    print(f"# bench/serving_precision.py: {os.cpu_count()} CPUs; " + ", ".join(
        f"{name}: {s.feature_cfg.resolved_dtype()} ({load_encoders(s.feature_cfg).text.runtime})"
        for name, s in services.items()))
    q = pl.read_parquet(wh.table_path("queries")).head(a.n)
    paths = [wh.images_dir / p if p else None for p in q["image_path"]]
    for lam in (float(x) for x in a.lambdas.split(",")):
        reqs = [RouteRequest(img, text, None, lam, tg, ds)
                for img, text, tg, ds in zip(paths, q["question"], q["task_group"], q["dataset"], strict=True)]
        got = {name: [r for i in range(0, len(reqs), 16) for r in s.route_many(reqs[i:i + 16])]
               for name, s in services.items()}
        ref = got.pop("features dtype")
        for mode, rows in got.items():
            same = np.mean([x[0]["model_id"] == y[0]["model_id"] for x, y in zip(ref, rows, strict=True)])
            dq = np.abs(np.stack([_qualities(r) for r in ref]) - np.stack([_qualities(r) for r in rows]))
            print(f"lambda {lam:g}, {mode}: top-1 model agreement {same:.3f} over {len(reqs)} queries; "
                  f"|predicted quality difference| mean {dq.mean():.2e}, max {dq.max():.2e}")
    img = Image.open(paths[next(i for i, p in enumerate(paths) if p is not None)]).convert("RGB")
    for name, s in services.items():
        print(f"one request, {name}: routing p50 {_single_ms(s, None):.2f} ms text only, "
              f"{_single_ms(s, img, 60):.2f} ms with an image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
