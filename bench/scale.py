"""Benchmark: how each pipeline stage grows with the number of queries N, as a user runs the stages.

For each size N it generates a seeded VL-RouterBench-shaped folder (``Y.npz``, ``C.npy``, ``meta.parquet``,
``models.json``, ``SPLITS/``, one small distinct PNG per query under ``images/``; K models, 14 datasets),
then runs the stages a user runs on it, each as its own ``lrouter`` process on a fresh home (its own
Dagster instance under ``<home>/dagster``):

    import    lrouter import vl-routerbench FOLDER --images FOLDER
    setup     lrouter run setup                      (candidate models and splits of the imported queries)
    features  lrouter run features                   (frozen-encoder features, profiles, views)
    train     lrouter run train --preset quick
    evaluate  lrouter run evaluate --preset quick
    render    lrouter run setup --queries N          (optional: renders the built-in benchmark, another home)

and prints, per stage and size, the wall time and the peak RSS (``ru_maxrss`` of the stage's process and of
the processes it waited for, from ``wait4``; plus the peak of the summed RSS of its process tree, sampled
every 0.5 s, which also sees worker processes running side by side), then the growth of each stage between
consecutive sizes: (time ratio) / (size ratio), so 1.0 is linear and 2.0 at a 4x size step is quadratic.
Generation time is printed apart; it is not a stage. No assertions: it prints figures.

    .venv/bin/python bench/scale.py [--sizes 1000,5000,20000] [--models 17] [--seed 0]
        [--stages import,setup,features,train,evaluate] [--home-root DIR] [--image-px 96]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["MMBench", "MMStar", "MMMU", "RealWorldQA", "ScienceQA", "HallusionBench", "MathVista",
            "MathVision", "MathVerse", "AI2D", "ChartQA", "DocVQA", "TextVQA", "OCRBench"]
WORDS = ("what", "is", "the", "value", "of", "largest", "bar", "in", "chart", "read", "text", "shown", "image",
         "how", "many", "objects", "are", "there", "solve", "for", "x", "total", "difference", "between", "blue",
         "angle", "triangle", "area", "which", "option", "correct", "left", "right", "top", "label", "number")
JOB_SECONDS = re.compile(r" in (\d+)s \(run [0-9a-f]+\)")
DEFAULT_STAGES = ("import", "setup", "features", "train", "evaluate")
ALL_STAGES = (*DEFAULT_STAGES, "render")
# what `make` exports for every command (offline encoders, no tokenizer threads fighting torch's)
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
             "OMP_WAIT_POLICY": "PASSIVE"}


# ----------------------------------------------------------------------------------------- the data


def _image(rng: np.random.Generator, px: int, dataset_index: int) -> tuple[Image.Image, float]:
    """A small distinct picture (bars or text lines); returns it and its 'clutter' (what some models mind)."""
    w, h = px, int(px * 3 / 4)
    bg = tuple(int(c) for c in rng.integers(200, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    n = int(rng.integers(2, 12))
    if dataset_index % 2 == 0:
        for j in range(n):
            top = int(rng.integers(4, h - 4))
            x0 = 2 + j * (w - 4) // n
            d.rectangle([x0, top, x0 + max(1, (w - 4) // n - 2), h - 2],
                        fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
    else:
        for line in range(n):
            d.text((2, 2 + 6 * line), " ".join(rng.choice(WORDS, size=3)), fill=(0, 0, 0))
    return img, n / 12


def generate(folder: Path, n: int, k: int, seed: int, px: int) -> None:
    """A seeded folder in VL-RouterBench format (the shape of ../shared/realdata) with ``n`` queries x ``k``
    models; the outcomes depend on the model, the dataset and the image, so routers have something to learn."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    ds_idx = rng.integers(0, len(DATASETS), size=n)
    clutter = np.zeros(n)
    paths = []
    for i in range(n):
        img, clutter[i] = _image(rng, px, int(ds_idx[i]))
        rel = f"images/{DATASETS[ds_idx[i]]}/{i:06d}.png"
        (folder / rel).parent.mkdir(exist_ok=True)
        img.save(folder / rel, optimize=False)
        paths.append(rel)
    skill = rng.normal(0.0, 0.6, size=k)
    by_ds = rng.normal(0.0, 0.8, size=(len(DATASETS), k))
    mind_clutter = rng.normal(0.0, 1.5, size=k)
    hard = rng.normal(0.0, 1.0, size=n)
    logit = skill[None, :] + by_ds[ds_idx] - mind_clutter[None, :] * clutter[:, None] - hard[:, None]
    y = (rng.random((n, k)) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    price = np.exp(rng.uniform(np.log(2e-5), np.log(4e-3), size=k))
    c = (price[None, :] * rng.lognormal(0.0, 0.3, size=(n, k))).astype(np.float32)
    np.savez_compressed(folder / "Y.npz", Y=y)
    np.save(folder / "C.npy", c)
    (folder / "models.json").write_text(json.dumps([f"scale-vlm-{j:02d}" for j in range(k)]))
    ids = [f"scale-{i:06d}" for i in range(n)]
    split = rng.choice(["train", "dev", "test"], size=n, p=[0.7, 0.1, 0.2])
    questions = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 20)))) + f" (item {i})?" for i in range(n)]
    pl.DataFrame({
        "sample_id": ids,
        "dataset": [DATASETS[j] for j in ds_idx],
        "split": split,
        "task": [f"{DATASETS[j]}/t{int(t)}" for j, t in zip(ds_idx, rng.integers(0, 3, size=n), strict=True)],
        "question": questions,
        "answer": rng.choice(["A", "B", "C", "D", "42", "yes"], size=n),
        "image_path": paths,
    }).write_parquet(folder / "meta.parquet")
    (folder / "SPLITS").mkdir(exist_ok=True)
    for name in ("train", "dev", "test"):
        rows = "".join(json.dumps({"sample_id": ids[i]}) + "\n" for i in np.flatnonzero(split == name))
        (folder / "SPLITS" / f"{name}.jsonl").write_text(rows)
    (folder / ".complete").write_text(json.dumps({"n": n, "k": k, "seed": seed, "px": px}))


def ensure_folder(root: Path, n: int, k: int, seed: int, px: int) -> tuple[Path, float | None]:
    """The generated folder for (n, k, seed, px), reused when a previous run left it complete."""
    folder = root / f"vlrb-n{n}-k{k}-s{seed}-px{px}"
    if (folder / ".complete").exists():
        return folder, None
    t0 = time.perf_counter()
    generate(folder, n, k, seed, px)
    return folder, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ timing


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss_kib(pid: int) -> int:
    """Summed RSS of a process and its descendants (shared pages count once per process)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_kib(p)
        todo += _children(p)
    return total


@dataclass
class StageResult:
    seconds: float
    cpu_s: float  # user + system CPU time of the stage's process and its waited-for children
    maxrss_mib: float
    tree_mib: float
    ok: bool
    last_line: str = ""
    extra: dict = field(default_factory=dict)


def run_stage(argv: list[str], log: Path, env: dict[str, str]) -> StageResult:
    """Run one stage as a child process; wall time, its ru_maxrss (via wait4) and its sampled tree RSS."""
    peak = [0]
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], _tree_rss_kib(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    job_s = sum(float(x) for x in JOB_SECONDS.findall(text))  # what the runner says its Dagster runs took
    return StageResult(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, max(peak[0], usage.ru_maxrss) / 1024,
                       proc.returncode == 0, lines[-1] if lines else "", {"job_s": job_s})


def stage_argv(stage: str, home: Path, folder: Path, n: int, seed: int) -> list[str]:
    cli = [sys.executable, "-m", "pipelines.cli", "--home", str(home)]
    return {
        "import": [*cli, "import", "vl-routerbench", str(folder), "--images", str(folder)],
        "setup": [*cli, "run", "setup"],
        "features": [*cli, "run", "features"],
        "train": [*cli, "run", "train", "--preset", "quick"],
        "evaluate": [*cli, "run", "evaluate", "--preset", "quick"],
        "render": [*cli, "run", "setup", "--queries", str(n), "--seed", str(seed)],
    }[stage]


# ------------------------------------------------------------------------------------------ report


def print_table(sizes: list[int], stages: list[str], res: dict[tuple[str, int], StageResult]) -> None:
    print("\nper stage: wall s / CPU s (user+sys) / peak RSS of its process MiB / peak summed RSS of its tree MiB")
    print(f"{'stage':<10}" + "".join(f"{f'N={n:,}':>32}" for n in sizes))
    for st in stages:
        cells = []
        for n in sizes:
            r = res.get((st, n))
            cells.append("-" if r is None else (f"{r.seconds:7.1f} /{r.cpu_s:7.1f} /{r.maxrss_mib:6.0f} /{r.tree_mib:6.0f}"
                                                 + ("" if r.ok else " FAILED")))
        print(f"{st:<10}" + "".join(f"{c:>32}" for c in cells))
    wall = [sum(r.seconds for (s, m), r in res.items() if m == n and s != "render") for n in sizes]
    cpu = [sum(r.cpu_s for (s, m), r in res.items() if m == n and s != "render") for n in sizes]
    print(f"{'total':<10}" + "".join(f"{f'{w:7.1f} /{c:7.1f}':>32}" for w, c in zip(wall, cpu, strict=True))
          + "   (render excluded)")
    if len(sizes) < 2:
        return
    print("\ngrowth between sizes: (time ratio) / (size ratio), wall and CPU; 1.0 = linear, > 1 = faster than linear")
    pairs = list(zip(sizes, sizes[1:], strict=False))
    print(f"{'stage':<10}" + "".join(f"{f'{a:,} -> {b:,} (x{b / a:g})':>26}" for a, b in pairs))
    for st in [*stages, "total"]:
        cells = []
        for a, b in pairs:
            if st == "total":
                wa, wb, ca, cb = wall[sizes.index(a)], wall[sizes.index(b)], cpu[sizes.index(a)], cpu[sizes.index(b)]
            else:
                ra, rb = res.get((st, a)), res.get((st, b))
                if ra is None or rb is None or not (ra.ok and rb.ok):
                    cells.append("-")
                    continue
                wa, wb, ca, cb = ra.seconds, rb.seconds, ra.cpu_s, rb.cpu_s
            cells.append(f"wall {wb / max(wa, 1e-9) / (b / a):.2f}, CPU {cb / max(ca, 1e-9) / (b / a):.2f}")
        print(f"{st:<10}" + "".join(f"{c:>26}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,5000,20000", help="comma-separated query counts N")
    ap.add_argument("--models", type=int, default=17, help="models K (VL-RouterBench has 17)")
    ap.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                    help=f"comma-separated, in order, from {', '.join(ALL_STAGES)} (render: the built-in "
                         "benchmark's image rendering, in a home of its own)")
    ap.add_argument("--home-root", type=Path, default=None,
                    help="keep the generated folders, homes and stage logs here (default: a temporary folder, "
                         "removed at the end); generated folders found there are reused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-px", type=int, default=96, help="width of the generated images in pixels")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown or not sizes:
        ap.error(f"unknown stage(s) {unknown}; expected some of {', '.join(ALL_STAGES)}" if unknown
                 else "--sizes names no size")
    env = {**os.environ, **CHILD_ENV}
    env.pop("DAGSTER_HOME", None)  # each home gets its own instance (<home>/dagster), not the project's
    env.pop("LROUTER_HOME", None)
    env.pop("LROUTER_WAREHOUSE", None)
    tmp = None
    if args.home_root is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrouter-scale-")
        root = Path(tmp.name)
    else:
        root = args.home_root.resolve()
        root.mkdir(parents=True, exist_ok=True)
    print(f"scale bench: sizes {sizes}, K = {args.models} models, seed {args.seed}, {args.image_px}-px images; "
          f"stages {', '.join(stages)}; {os.cpu_count()} CPUs; homes under {root}")
    res: dict[tuple[str, int], StageResult] = {}
    try:
        for n in sizes:
            folder, gen_s = ensure_folder(root / "data", n, args.models, args.seed, args.image_px)
            print(f"[N={n:,}] folder {folder.name}: " + ("reused" if gen_s is None else f"generated in {gen_s:.1f} s"))
            stamp = time.strftime("%Y%m%d-%H%M%S")
            home = root / f"home-n{n}-{stamp}"
            failed = False
            for st in stages:
                if failed and st != "render":
                    continue
                h = home.with_name(home.name + "-render") if st == "render" else home
                h.mkdir(parents=True, exist_ok=True)
                r = run_stage(stage_argv(st, h, folder, n, args.seed), h / f"{st}.log", env)
                res[(st, n)] = r
                job = f", Dagster run {r.extra['job_s']:.0f} s" if r.extra.get("job_s") else ""
                print(f"[N={n:,}] {st}: {r.seconds:.1f} s ({r.cpu_s:.1f} s CPU{job}), peak RSS {r.maxrss_mib:.0f} MiB (tree {r.tree_mib:.0f} "
                      f"MiB){'' if r.ok else ' FAILED'} | {r.last_line[:150]}", flush=True)
                if not r.ok:
                    print(f"[N={n:,}] {st} failed: see {h / f'{st}.log'}" + (" (kept: --home-root)" if tmp is None
                                                                                else ""))
                    failed = st != "render"
        print_table(sizes, stages, res)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
