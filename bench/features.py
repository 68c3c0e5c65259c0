"""Throughput of the default frozen encoders on CPU: images/second, questions/second, bytes per query.

Targets (2 CPU cores): >= 20 images/s and >= 200 questions/s. Run:
    .venv/bin/python bench/features.py [--images 192] [--questions 2048] [--threads 1 2] [--dtype float32]
Images are rendered charts / text pages (PNG, 640x480) like the built-in benchmark's; extraction runs end to
end (decode, resize, encode, cache write) into a fresh cache, then once more to show the cached re-run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from router.features.config import FeatureConfig  # noqa: E402
from router.features.encoders import load_encoders  # noqa: E402
from router.features.extract import extract_features  # noqa: E402

WORDS = ("what", "is", "the", "value", "of", "largest", "bar", "in", "chart", "read", "text", "shown", "image",
         "how", "many", "objects", "are", "there", "solve", "for", "x", "total", "difference", "between", "blue")


def render(i: int, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (640, 480), "white")
    d = ImageDraw.Draw(img)
    if i % 2 == 0:  # bar chart
        k = int(rng.integers(3, 10))
        for j in range(k):
            h = int(rng.integers(20, 400))
            x0 = 40 + j * (560 // k)
            d.rectangle([x0, 460 - h, x0 + 560 // k - 10, 460], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    else:  # text page
        for line in range(int(rng.integers(4, 18))):
            d.text((20, 20 + 25 * line), " ".join(rng.choice(WORDS, size=8)), fill="black")
    return img


def make_inputs(root: Path, n_images: int, n_questions: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        render(i, rng).save(root / "images" / f"{i}.png")
    qs = [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 25)))) + f" ({i})?" for i in range(n_questions)]

    def frame(ids, questions, paths):
        n = len(ids)
        return pl.DataFrame({"query_id": ids, "question": questions, "image_path": paths, "image_sha256": [""] * n,
                             "task_group": ["chart"] * n, "dataset": ["bench"] * n})

    img_q = frame([f"i{i}" for i in range(n_images)], qs[:n_images], [f"{i}.png" for i in range(n_images)])
    txt_q = frame([f"t{i}" for i in range(n_questions)], qs, [""] * n_questions)
    return img_q, txt_q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--questions", type=int, default=2048)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, cpu cores visible: {os.cpu_count()}, cuda: {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        img_q, txt_q = make_inputs(root, args.images, args.questions)
        for threads in args.threads:
            cfg = FeatureConfig(device="cpu", num_threads=threads, dtype=args.dtype, progress=False)
            enc = load_encoders(cfg)
            # warm-up (loads weights, primes kernels) outside the timings
            extract_features(img_q.head(8), root / "images", root / f"warm{threads}", cfg, enc)
            extract_features(txt_q.head(8), root / "images", root / f"warm{threads}", cfg, enc)

            cache = root / f"cache{threads}"
            t0 = time.perf_counter()
            fs_img = extract_features(img_q, root / "images", cache, cfg, enc)
            t_img = time.perf_counter() - t0
            t0 = time.perf_counter()
            fs_txt = extract_features(txt_q, root / "images", cache, cfg, enc)
            t_txt = time.perf_counter() - t0
            t0 = time.perf_counter()
            extract_features(img_q, root / "images", cache, cfg, enc)
            t_cached = time.perf_counter() - t0

            # question time inside the image run is small; subtract it for a clean image figure
            img_rate = args.images / max(1e-9, t_img - args.images / (args.questions / t_txt))
            tag = f"{threads} torch thread(s), {str(cfg.resolved_dtype()).split('.')[-1]}"
            print(f"[{tag}] images: {img_rate:6.1f} img/s end-to-end "
                  f"(decode+resize+encode+cache, {args.images} PNGs 640x480, batch {cfg.image_batch_size})")
            print(f"[{tag}] questions: {args.questions / t_txt:6.1f} q/s "
                  f"({args.questions} questions, batch {cfg.text_batch_size})")
            print(f"[{tag}] cached re-run of {args.images} image queries: {t_cached:.2f} s")
            print(f"bytes/query: image+question {fs_img.bytes_per_query:,.0f} B "
                  f"(img tokens {fs_img.img_tokens.shape[1:]} fp16, txt tokens {fs_img.txt_tokens.shape[1:]} fp16), "
                  f"text-only {fs_txt.bytes_per_query:,.0f} B; mean valid bytes/row "
                  f"{float(fs_img.row_bytes().mean()):,.0f} B")


if __name__ == "__main__":
    main()
