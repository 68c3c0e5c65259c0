"""Benchmark: import a VL-RouterBench-shaped folder at the published size (30,540 x 17 = 519,180 pairs).

Generates a seeded folder (Y.npz, C.npy, meta.parquet, models.json, cost_bounds.json, SPLITS/, a 64-d text
embedding under EMBEDDINGS/text/), then imports it in a fresh child process so the memory figures belong to
the import alone, and prints query x model pairs per second and peak memory (tracemalloc peak of the
Python/numpy heap, and the growth of ru_maxrss, which also sees polars' native allocations).

    .venv/bin/python bench/import.py [--n 30540] [--k 17] [--dim 64] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["MMBench", "MMStar", "MMMU", "RealWorldQA", "ScienceQA", "HallusionBench", "MathVista",
            "MathVision", "MathVerse", "AI2D", "ChartQA", "DocVQA", "TextVQA", "OCRBench"]


def generate(folder: Path, n: int, k: int, dim: int, seed: int = 0) -> None:
    """A seeded folder shaped like the published VL-RouterBench release."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    skill = rng.uniform(0.3, 0.85, size=k)
    hard = rng.uniform(-0.2, 0.2, size=n)
    y = (rng.random((n, k)) < np.clip(skill[None, :] - hard[:, None], 0, 1)).astype(np.int8)
    price = np.exp(rng.uniform(np.log(1e-5), np.log(5e-3), size=k))
    c = (price[None, :] * rng.lognormal(0.0, 0.4, size=(n, k))).astype(np.float32)
    np.savez_compressed(folder / "Y.npz", Y=y)
    np.save(folder / "C.npy", c)
    models = [f"vlm-{j:02d}" for j in range(k)]
    (folder / "models.json").write_text(json.dumps(models))
    means = c.mean(axis=0)
    (folder / "cost_bounds.json").write_text(json.dumps({"cmin": float(means.min()), "cmax": float(means.max())}))
    ids = [f"vlrb-{i:06d}" for i in range(n)]
    split = rng.choice(["train", "dev", "test"], size=n, p=[0.7, 0.1, 0.2])
    ds = rng.choice(DATASETS, size=n)
    pl.DataFrame({
        "sample_id": ids,
        "dataset": ds,
        "split": split,
        "task": ds,
        "question": [f"Question {i} about the image?" for i in range(n)],
        "answer": rng.choice(["A", "B", "C", "D", "42", "yes"], size=n),
    }).write_parquet(folder / "meta.parquet")
    sdir = folder / "SPLITS"
    sdir.mkdir(exist_ok=True)
    for name in ("train", "dev", "test"):
        rows = "".join(json.dumps({"sample_id": ids[i]}) + "\n" for i in np.flatnonzero(split == name))
        (sdir / f"{name}.jsonl").write_text(rows)
    edir = folder / "EMBEDDINGS" / "text"
    edir.mkdir(parents=True, exist_ok=True)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    order = rng.permutation(n)  # stored shuffled: the importer must align by sample_id
    pl.DataFrame({"sample_id": [ids[i] for i in order],
                  "embedding": pl.Series(emb[order]).cast(pl.List(pl.Float32))}).write_parquet(
        edir / "bench-64.parquet")


def measure(folder: Path, repeats: int) -> dict:
    """Import ``repeats`` times (time each), then once more under tracemalloc; runs in a child process."""
    sys.path.insert(0, str(ROOT))
    from collectors.importing import import_vl_routerbench

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    res = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = import_vl_routerbench(folder, collected_at="2026-01-01T00:00:00+00:00", run_id="bench")
        times.append(time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    import_vl_routerbench(folder, collected_at="2026-01-01T00:00:00+00:00", run_id="bench")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    pairs = res.traces.height
    return {
        "queries": res.queries.height, "models": res.models.height, "pairs": pairs,
        "skipped": res.skipped.height, "embeddings": {k: list(v.shape) for k, v in res.embeddings.items()},
        "seconds": times, "best_s": min(times), "median_s": float(np.median(times)),
        "pairs_per_s_best": pairs / min(times), "pairs_per_s_median": pairs / float(np.median(times)),
        "tracemalloc_peak_mib": peak / 2**20, "maxrss_baseline_mib": rss0 / 1024,
        "maxrss_after_mib": rss1 / 1024, "maxrss_growth_mib": (rss1 - rss0) / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=30_540)
    ap.add_argument("--k", type=int, default=17)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="generate into this folder and keep it")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child-process mode
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "vlrb"
        t0 = time.perf_counter()
        generate(folder, args.n, args.k, args.dim, args.seed)
        gen_s = time.perf_counter() - t0
        out = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--repeats", str(args.repeats)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"VL-RouterBench-shaped import: {args.n} queries x {args.k} models, {args.dim}-d text embedding "
          f"(seed {args.seed}; generated in {gen_s:.1f} s)")
    print(f"  imported: {r['queries']} queries, {r['models']} models, {r['pairs']} traces, "
          f"{r['skipped']} skipped, embeddings {r['embeddings']}")
    print(f"  wall time per import: best {r['best_s']:.3f} s, median {r['median_s']:.3f} s "
          f"(runs: {', '.join(f'{s:.3f}' for s in r['seconds'])})")
    print(f"  throughput: {r['pairs_per_s_best']:,.0f} pairs/s (best), {r['pairs_per_s_median']:,.0f} pairs/s "
          "(median)")
    print(f"  peak memory: tracemalloc {r['tracemalloc_peak_mib']:.1f} MiB (Python + numpy heap); "
          f"ru_maxrss {r['maxrss_after_mib']:.0f} MiB after imports, +{r['maxrss_growth_mib']:.0f} MiB over "
          f"the {r['maxrss_baseline_mib']:.0f} MiB after loading the libraries")


if __name__ == "__main__":
    main()
