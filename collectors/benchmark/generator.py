"""The built-in benchmark: seeded, rendered image+question queries whose ground truth is exact.

Why it is built this way:
- every query is sampled as a JSON-serialisable *scene description* (``params``) first and rendered from
  that description alone (`render_image`), so the answer is derived from the same data that drew the pixels
  (counted shapes, table sums, bar values, rendered text) and tests can re-render and re-derive both;
- query ``i`` depends only on ``(seed, i)``: the same seed gives byte-identical PNGs and an identical table,
  and ``n=40`` is the first 40 rows of ``n=2000``;
- the five hidden difficulty factors in ``source_meta["visual"]`` (read by the simulated model pool) are
  computed from the rendering parameters (`visual_from_params`): a larger ``small_text`` means smaller
  rendered text, ``noise`` more speckle / blur, ``rotation`` a larger angle, ``density`` more elements,
  ``low_contrast`` fainter ink; so a frozen image encoder can, in principle, see them;
- charts, tables and shapes are drawn with PIL (fast), text with the TTF fonts matplotlib ships.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image, ImageFilter

from collectors.benchmark.chart import render_chart, sample_chart
from collectors.benchmark.factors import visual_from_params
from collectors.benchmark.general import render_general, sample_general
from collectors.benchmark.math_items import render_math, sample_math
from collectors.benchmark.ocr import render_ocr, sample_ocr
from collectors.benchmark.spec import DATASETS, GENERATOR_VERSION, MAX_SPECKLE, BenchmarkItem, Params
from warehouse.schemas import QUERIES, conform
from warehouse.store import atomic_write_bytes
from warehouse.vocabulary import TASK_GROUPS

_SAMPLERS: dict[str, Callable[[np.random.Generator], BenchmarkItem]] = {
    "ocr": sample_ocr,
    "chart": sample_chart,
    "math": sample_math,
    "general": sample_general,
}
_RENDERERS: dict[str, Callable[[Params], Image.Image]] = {
    "ocr": render_ocr,
    "chart": render_chart,
    "math": render_math,
    "general": render_general,
}


def render_image(params: Params) -> Image.Image:
    """Render a scene from its parameters alone (content, then rotation, wash, blur, speckle noise)."""
    g = params.get("group")
    if g not in _RENDERERS:
        raise ValueError(f"params: field 'group' = {g!r}; expected one of {', '.join(TASK_GROUPS)}")
    img = _RENDERERS[g](params)
    bg = tuple(params["bg"])
    if g != "ocr" and params["angle"]:  # OCR rotates only its text patch
        img = img.rotate(params["angle"], resample=Image.Resampling.BILINEAR, expand=True, fillcolor=bg)
    if params["wash"] > 0:
        img = Image.blend(img, Image.new("RGB", img.size, bg), float(params["wash"]))
    if params["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(float(params["blur"])))
    if params["noise"] > 0:
        rng = np.random.default_rng(params["noise_seed"])
        arr = np.array(img, dtype=np.uint8)
        flat = arr.reshape(-1, 3)
        k = int(MAX_SPECKLE * params["noise"] * flat.shape[0])
        idx = rng.integers(0, flat.shape[0], k)
        flat[idx] = (rng.integers(0, 5, k) * 63).astype(np.uint8)[:, None]
        img = Image.fromarray(arr)
    return img


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes without metadata (deterministic for identical pixels)."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _n_elements(p: Params) -> int:
    """Number of distinct things drawn (texts, bars / slices / points, table cells, shapes)."""
    g = p["group"]
    if g == "ocr":
        return 1 + len(p["others"])
    if g == "chart":
        return len(p["values"])
    if g == "math":
        return len(p["table"]) * len(p["table"][0]) if p["figure"] == "table" else 1 + len(p["extras"])
    return len(p["shapes"])


def sample_query(seed: int, index: int) -> BenchmarkItem:
    """Query ``index`` of the benchmark with ``seed`` (groups cycle ocr, chart, math, general)."""
    if index < 0:
        raise ValueError(f"sample_query: index must be >= 0, got {index}")
    group = TASK_GROUPS[index % len(TASK_GROUPS)]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index, TASK_GROUPS.index(group)])
    item = _SAMPLERS[group](rng)
    item.params["task"] = item.task
    item.params["n_elements"] = _n_elements(item.params)
    item.visual = visual_from_params(item.params)
    return item


def query_id(benchmark: str, source_id: str) -> str:
    """Stable id of a query: sha1 of "<benchmark>:<source id>", 16 hex digits."""
    return hashlib.sha1(f"{benchmark}:{source_id}".encode()).hexdigest()[:16]


def source_meta(item: BenchmarkItem, source_id: str) -> str:
    meta: dict[str, Any] = {
        "visual": item.visual,
        "params": item.params,
        "distractors": item.distractors,
        "generator_version": GENERATOR_VERSION,
        "source_id": source_id,
    }
    if item.options is not None:
        meta["options"] = item.options
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def build_row(seed: int, index: int, images_dir: Path, benchmark: str) -> dict[str, str]:
    """Sample, render, encode and store query ``index``; returns its ``queries`` row."""
    item = sample_query(seed, index)
    data = encode_png(render_image(item.params))
    sha = hashlib.sha256(data).hexdigest()
    path = images_dir / f"{sha}.png"
    if not path.exists():
        atomic_write_bytes(data, path)
    sid = f"s{seed}:{item.task}:{index:06d}"
    return {
        "query_id": query_id(benchmark, sid),
        "benchmark": benchmark,
        "dataset": DATASETS[item.task_group],
        "task_group": item.task_group,
        "task": item.task,
        "question": item.question,
        "answer": item.answer,
        "answer_kind": item.answer_kind,
        "image_path": path.name,
        "image_sha256": sha,
        "source_meta": source_meta(item, sid),
        "official_split": "",
    }


def _build_chunk(seed: int, indices: range, images_dir: str, benchmark: str) -> list[dict[str, str]]:
    return [build_row(seed, i, Path(images_dir), benchmark) for i in indices]


def generate_benchmark(
    n: int = 2000, seed: int = 0, *, images_dir: Path | str, benchmark: str = "builtin", workers: int = 1
) -> pl.DataFrame:
    """``n`` rendered queries (``queries`` table rows) with their PNGs written to ``images_dir``.

    Images are content-addressed ("<sha256>.png", the hash of the exact bytes written), so a model server
    can find the query from the bytes it receives; an existing file with that name is left alone.
    ``workers > 1`` renders in that many spawned processes (call it under ``if __name__ == "__main__":`` in
    scripts); the result does not depend on it, since query ``i`` depends only on ``(seed, i)``.
    """
    if n < 0:
        raise ValueError(f"generate_benchmark: n must be >= 0, got {n}")
    if not benchmark:
        raise ValueError("generate_benchmark: benchmark name must not be empty")
    if workers < 1:
        raise ValueError(f"generate_benchmark: workers must be >= 1, got {workers}")
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers, max(1, n // 50))
    if workers <= 1:
        rows = _build_chunk(seed, range(n), str(images_dir), benchmark)
    else:
        chunk = -(-n // (workers * 4))
        parts = [range(s, min(n, s + chunk)) for s in range(0, n, chunk)]
        ctx = multiprocessing.get_context("spawn")  # safe under threaded parents (Dagster, servers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_build_chunk, seed, part, str(images_dir), benchmark) for part in parts]
            rows = [row for fut in futures for row in fut.result()]
    df = pl.DataFrame(rows, schema={c: pl.String for c in QUERIES}) if rows else pl.DataFrame(schema=QUERIES)
    return conform(df, QUERIES, "queries")
