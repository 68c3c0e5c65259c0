"""Collector throughput: traces per second against the simulator when every call takes 200 ms.

Why: collection time is dominated by waiting on model servers, so the collector must overlap calls. The
simulator runs with ``time_scale=0`` (no simulated inference time) and the ``slow`` fault at rate 1 with
``slow_extra_s=0.2``, so every call really waits 200 ms on the server and nothing else. With N calls in
flight the ideal speed-up over one at a time is N; the target for concurrency 8 is at least 6x.

    .venv/bin/python bench/collect.py [--calls-per-slot 25] [--concurrency 1 8]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from collectors.collection.client import CollectConfig, collect_model
from collectors.registry import ModelEntry
from collectors.simulator.faults import FaultConfig
from collectors.simulator.server import SimServer
from collectors.simulator.specs import DEFAULT_POOL, SimModelSpec
from warehouse.schemas import QUERIES, conform

CALL_LATENCY_S = 0.2
GROUPS = ("ocr", "chart", "math", "general")


def synthetic_queries(n: int, images_dir: Path, seed: int = 0) -> pl.DataFrame:
    """``n`` answer-key queries with distinct small PNGs written to ``images_dir`` (seeded)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        im = Image.new("RGB", (128, 64), "white")
        d = ImageDraw.Draw(im)
        d.text((4, 4), f"item {i} value {3 * i + 4}", fill="black")
        for _ in range(40):
            d.point((int(rng.integers(128)), int(rng.integers(64))), fill="gray")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        (images_dir / f"{sha}.png").write_bytes(buf.getvalue())
        visual = {f: round(float(rng.uniform(0, 0.8)), 3)
                  for f in ("small_text", "noise", "rotation", "density", "low_contrast")}
        group = GROUPS[i % 4]
        rows.append({
            "query_id": f"b{seed}-{i:06d}", "benchmark": "custom", "dataset": "bench", "task_group": group,
            "task": group, "question": f"Image {i}: what value is printed after 'value'?",
            "answer": str(3 * i + 4), "answer_kind": "numeric", "image_path": f"{sha}.png", "image_sha256": sha,
            "source_meta": json.dumps({"visual": visual, "distractors": [str(3 * i + 7)]}), "official_split": "",
        })
    return conform(pl.DataFrame(rows, schema=QUERIES), QUERIES, "queries")


def model_entry(spec: SimModelSpec) -> ModelEntry:
    return ModelEntry(model_id=spec.name, backend="sim", price_in_per_mtok=spec.price_in_per_mtok,
                      price_out_per_mtok=spec.price_out_per_mtok, params_b=spec.params_b, simulated=True)


def measure(concurrency: int, n_calls: int, queries: pl.DataFrame, images_dir: Path,
            spec: SimModelSpec) -> dict[str, float]:
    """Traces per second for one concurrency level on a fresh server (so fault draws start afresh)."""
    faults = FaultConfig(slow=1.0, slow_extra_s=CALL_LATENCY_S)
    q = queries.head(n_calls)
    with SimServer(q, models=[spec], time_scale=0.0, faults=faults) as server:
        cfg = CollectConfig(concurrency=concurrency, timeout_s=30.0, progress=False)
        t0 = time.perf_counter()
        df, stats = collect_model(model_entry(spec), q, images_dir, server.url, cfg)
        wall = time.perf_counter() - t0
        slow = server.stats["faults"]["slow"]
    if set(df["status"]) != {"ok"} or df.height != n_calls or slow != n_calls or stats.retries:
        raise RuntimeError(f"benchmark run was not clean: {df['status'].value_counts().rows()}, slow={slow}")
    return {"concurrency": concurrency, "calls": n_calls, "wall_s": wall, "traces_per_s": n_calls / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls-per-slot", type=int, default=25, help="calls per concurrent slot (per level)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    spec = next(s for s in DEFAULT_POOL if s.name == "simvl-lite:3b")
    levels = sorted(set(args.concurrency))
    with tempfile.TemporaryDirectory(prefix="lrouter-bench-") as tmp:
        images = Path(tmp) / "images"
        queries = synthetic_queries(args.calls_per_slot * max(levels), images)
        results = [measure(c, args.calls_per_slot * c, queries, images, spec) for c in levels]
    print(f"collector throughput, simulator at {CALL_LATENCY_S * 1000:.0f} ms per call ({spec.name}):")
    print(f"{'concurrency':>11} {'calls':>6} {'wall_s':>8} {'traces/s':>9} {'ideal':>7} {'speed-up':>9}")
    base = results[0]["traces_per_s"]
    for r in results:
        print(f"{r['concurrency']:>11} {r['calls']:>6} {r['wall_s']:>8.2f} {r['traces_per_s']:>9.2f} "
              f"{r['concurrency'] / CALL_LATENCY_S:>7.1f} {r['traces_per_s'] / base:>8.2f}x")
    by_c = {r["concurrency"]: r["traces_per_s"] for r in results}
    if 1 in by_c and 8 in by_c:
        ratio = by_c[8] / by_c[1]
        print(f"ratio concurrency 8 / 1: {ratio:.2f}x (target >= 6x: {'met' if ratio >= 6 else 'NOT met'})")


if __name__ == "__main__":
    main()
