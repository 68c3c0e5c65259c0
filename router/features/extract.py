"""Batch feature extraction for a queries table: decode, encode what the cache lacks, assemble dense arrays.

Why: encoders never train, so their outputs are computed once and cached on disk keyed by content (image
sha256 / question hash) x encoder id x encoder version; re-running extraction computes nothing stored. Image
decoding overlaps with encoding (loader threads), and a query whose image cannot be read is reported in
``FeatureSet.skipped`` instead of failing the batch.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Container, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image
from tqdm.auto import tqdm

from router.features.cache import FeatureCache, file_digest, text_key
from router.features.config import FeatureConfig
from router.features.encoders import Encoders, ImageEncoder, TextEncoder, load_encoders, to_rgb
from router.features.feature_set import FeatureSet
from router.features.onnx_graph import GRAPH_RUNTIMES
from router.features.side import side_features
from warehouse.vocabulary import PROGRESS_LOGGER

REQUIRED_QUERY_COLUMNS = ("query_id", "question", "image_path", "image_sha256", "task_group", "dataset")


def _bar_off(progress: bool, todo: list) -> bool | None:
    """tqdm's ``disable``: off when not asked or nothing to do, else None = shown only on a terminal (a log
    file would get a wall of carriage-return updates)."""
    return True if not progress or not todo else None


class _Reported:
    """One encoding pass's progress on the progress logger (the run's event log, `lrouter run`'s progress
    line): at most every ``every`` seconds, and when the pass ends."""

    def __init__(self, what: str, total: int, every: float = 5.0):
        self.what, self.total, self.every, self.done = what, total, every, 0
        self.t0 = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.total and (now - self.last >= self.every or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            logging.getLogger(PROGRESS_LOGGER).info("%s %d/%d (%.0f%%, %.1f/s)", self.what, self.done, self.total,
                                                    100.0 * self.done / self.total, rate)


def _validate_queries(queries: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED_QUERY_COLUMNS if c not in queries.columns]
    if missing:
        raise ValueError(f"queries: missing column(s) {missing} needed for feature extraction; have {queries.columns}")
    dup = queries["query_id"].is_duplicated()
    if dup.any():
        first = queries.filter(dup)["query_id"][0]
        raise ValueError(f"queries: query_id {first!r} appears more than once")
    nulls = queries.filter(pl.col("question").is_null())
    if nulls.height:
        raise ValueError(f"queries: question is null for query_id {nulls['query_id'][0]!r}")


def _open_image(path: Path, min_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """Decoded RGB image and its original (width, height). JPEGs decode at a reduced scale that still keeps
    both sides >= ``min_side`` (much faster for large photos, no visible change at 224 px)."""
    with Image.open(path) as im:
        size = im.size
        if im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.load()
        rgb = to_rgb(im)
        return (rgb.copy() if rgb is im else rgb), size


def _load_one(path: Path, encoder: ImageEncoder, min_side: int) -> tuple[torch.Tensor | None, tuple[int, int], str]:
    try:
        img, size = _open_image(path, min_side)
        return encoder.preprocess(img), size, ""
    except FileNotFoundError:
        return None, (0, 0), f"image file not found: {path}"
    except Exception as e:  # corrupt / truncated / unsupported: reported, never crashes the batch
        return None, (0, 0), f"cannot decode image {path}: {type(e).__name__}: {e}"


def _image_features(
    items: list[tuple[str, Path]], enc: ImageEncoder, cache: FeatureCache, cfg: FeatureConfig,
) -> dict[str, str]:
    """Encode images not in the cache (decoding overlapped with encoding) into the cache, flushed every
    ``cache_flush_every`` items; returns the failure reason per key that could not be read."""
    todo = [(k, p) for k, p in items if k not in cache]
    failures: dict[str, str] = {}
    pending: dict[str, dict[str, np.ndarray]] = {}
    batches = [todo[i: i + cfg.image_batch_size] for i in range(0, len(todo), cfg.image_batch_size)]
    bar = tqdm(total=len(todo), desc="image features", unit="img", disable=_bar_off(cfg.progress, todo))
    reported = _Reported("image features", len(todo))
    with ThreadPoolExecutor(max_workers=max(1, cfg.loader_threads)) as pool:
        def submit(b: list[tuple[str, Path]]) -> list[Future]:
            return [pool.submit(_load_one, p, enc, 2 * cfg.image_size) for _, p in b]

        nxt = submit(batches[0]) if batches else []
        for bi, batch in enumerate(batches):
            cur = nxt
            nxt = submit(batches[bi + 1]) if bi + 1 < len(batches) else []
            loaded = [f.result() for f in cur]
            good = [(k, x, s) for (k, _), (x, s, err) in zip(batch, loaded, strict=True) if x is not None]
            for (k, _), (x, _, err) in zip(batch, loaded, strict=True):
                if x is None:
                    failures[k] = err
            if good:
                tokens, pooled = enc.encode(torch.stack([g[1] for g in good]))
                for j, (k, _, s) in enumerate(good):
                    pending[k] = {"tokens": tokens[j].astype(np.float16), "pooled": pooled[j].astype(np.float16),
                                  "size": np.asarray(s, dtype=np.int32)}
            if len(pending) >= cfg.cache_flush_every:
                cache.put_many(pending)
                pending = {}
            bar.update(len(batch))
            reported.update(len(batch))
    cache.put_many(pending)
    bar.close()
    return failures


def _text_features(items: list[tuple[str, str]], enc: TextEncoder, cache: FeatureCache, cfg: FeatureConfig) -> None:
    """Encode the questions not in the cache into the cache, flushed every ``cache_flush_every`` items."""
    todo = sorted(((k, q) for k, q in items if k not in cache), key=lambda kq: len(kq[1]))  # less padding
    pending: dict[str, dict[str, np.ndarray]] = {}
    bar = tqdm(total=len(todo), desc="question features", unit="q", disable=_bar_off(cfg.progress, todo))
    reported = _Reported("question features", len(todo))
    for i in range(0, len(todo), cfg.text_batch_size):
        batch = todo[i: i + cfg.text_batch_size]
        tokens, pooled = enc.encode([q for _, q in batch])
        for j, (k, _) in enumerate(batch):
            pending[k] = {"tokens": tokens[j].astype(np.float16), "pooled": pooled[j].astype(np.float16)}
        if len(pending) >= cfg.cache_flush_every:
            cache.put_many(pending)
            pending = {}
        bar.update(len(batch))
        reported.update(len(batch))
    cache.put_many(pending)
    bar.close()


def _image_key(row: dict, images_dir: Path) -> str:
    sha = (row.get("image_sha256") or "").strip()
    if sha:
        return sha
    path = images_dir / row["image_path"]
    try:
        return file_digest(path)
    except OSError:
        return "missing:" + hashlib.sha256(str(path).encode()).hexdigest()


def _encode_images(
    rows: list[dict], has_img: np.ndarray, images_dir: Path, cache_dir: Path, enc: Encoders, cfg: FeatureConfig,
) -> tuple[dict[str, str], FeatureCache | None, dict[str, str]]:
    """(content key per query with an image, the cache holding their features, failure reason per key): one
    encoding per distinct image content; the features stay in the cache until the dense arrays are filled."""
    img_key = {r["query_id"]: _image_key(r, images_dir) for r, h in zip(rows, has_img, strict=True) if h}
    img_items: dict[str, Path] = {}
    for r, h in zip(rows, has_img, strict=True):
        if h:
            img_items.setdefault(img_key[r["query_id"]], images_dir / r["image_path"])
    icache: FeatureCache | None = None
    failures: dict[str, str] = {}
    if img_items:
        icache = FeatureCache(cache_dir, enc.image.encoder_id, enc.image.version)
        failures = _image_features(list(img_items.items()), enc.image, icache, cfg)
    return img_key, icache, failures


def _readable_rows(
    rows: list[dict], has_img: np.ndarray, img_key: dict[str, str], readable: Container[str],
    failures: dict[str, str],
) -> tuple[list[int], list[dict]]:
    """(positions of the rows to keep, skipped-row records): a query whose image key is not ``readable``
    (no features) is skipped."""
    skipped = []
    keep = []
    for i, r in enumerate(rows):
        if has_img[i]:
            k = img_key[r["query_id"]]
            if k not in readable:
                reason = failures.get(k, f"image features missing for key {k}")
                skipped.append({"query_id": r["query_id"], "image_path": r["image_path"], "reason": reason})
                continue
        keep.append(i)
    return keep, skipped


def _rows_by_key(keys: Sequence[str | None]) -> dict[str, list[int]]:
    """Row positions per content key (None: the row has none), in row order."""
    out: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            out.setdefault(k, []).append(i)
    return out


def _dense_text(q_keys: list[str], cache: FeatureCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [N,Tq,Dq] f16, mask [N,Tq], pooled [N,Dq'] f16), padded at the end to the longest question.

    Filled from the cache one shard at a time: the per-item arrays are never all in memory next to the dense
    ones (at 20k queries that was twice the features' size)."""
    n = len(q_keys)
    where = _rows_by_key(q_keys)
    lengths = cache.shapes(where, "tokens")
    tq = max([lengths[k][0] for k in q_keys], default=1)
    first = next(iter(where), None)
    dq = lengths[first][1] if first is not None else 1
    dqp = cache.shapes([first], "pooled")[first][0] if first is not None else 1
    txt_tokens = np.zeros((n, tq, dq), dtype=np.float16)
    txt_mask = np.zeros((n, tq), dtype=bool)
    txt_pooled = np.zeros((n, dqp), dtype=np.float16)
    for k, f in cache.iter_many(where):
        idx, t = where[k], f["tokens"]
        txt_tokens[idx, : len(t)] = t
        txt_mask[idx, : len(t)] = True
        txt_pooled[idx] = f["pooled"]
    return txt_tokens, txt_mask, txt_pooled


def _dense_images(
    rows: list[dict], has_img: np.ndarray, img_key: dict[str, str], cache: FeatureCache | None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(tokens, mask, pooled, original width/height [N,2]); the arrays are None when no query has an image.
    Filled from the cache one shard at a time, like ``_dense_text``."""
    n = len(rows)
    img_tokens = img_mask = img_pooled = None
    wh = np.zeros((n, 2), dtype=np.float64)
    if has_img.any() and cache is not None:
        where = _rows_by_key([img_key[r["query_id"]] if h else None for r, h in zip(rows, has_img, strict=True)])
        first = img_key[rows[int(np.flatnonzero(has_img)[0])]["query_id"]]
        ti, di = cache.shapes([first], "tokens")[first]
        img_tokens = np.zeros((n, ti, di), dtype=np.float16)
        img_mask = np.zeros((n, ti), dtype=bool)
        img_pooled = np.zeros((n, cache.shapes([first], "pooled")[first][0]), dtype=np.float16)
        for k, f in cache.iter_many(where):
            idx = where[k]
            img_tokens[idx] = f["tokens"]
            img_mask[idx] = True
            img_pooled[idx] = f["pooled"]
            wh[idx] = f["size"]
    return img_tokens, img_mask, img_pooled, wh


def extract_features(
    queries: pl.DataFrame,
    images_dir: Path,
    cache_dir: Path,
    cfg: FeatureConfig | None = None,
    encoders: Encoders | None = None,
) -> FeatureSet:
    """Features for every query (cached by content); queries whose image cannot be read go to ``skipped``."""
    cfg = cfg or FeatureConfig()
    _validate_queries(queries)
    images_dir, cache_dir = Path(images_dir), Path(cache_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    enc = encoders or load_encoders(cfg)
    rows = queries.select(REQUIRED_QUERY_COLUMNS).to_dicts()
    has_img_req = np.array([bool((r["image_path"] or "").strip()) for r in rows], dtype=bool)

    img_key, icache, failures = _encode_images(rows, has_img_req, images_dir, cache_dir, enc, cfg)
    readable = {k for k in img_key.values() if icache is not None and k in icache and k not in failures}
    keep, skipped = _readable_rows(rows, has_img_req, img_key, readable, failures)
    rows = [rows[i] for i in keep]
    has_img = has_img_req[keep]

    tcache = FeatureCache(cache_dir, enc.text.encoder_id, enc.text.version)
    q_keys = [text_key(r["question"]) for r in rows]
    _text_features(list(dict.fromkeys(zip(q_keys, (r["question"] for r in rows), strict=True))), enc.text, tcache,
                   cfg)
    txt_tokens, txt_mask, txt_pooled = _dense_text(q_keys, tcache)
    img_tokens, img_mask, img_pooled, wh = _dense_images(rows, has_img, img_key, icache)

    ds_vocab = cfg.dataset_vocab if cfg.dataset_vocab is not None else sorted({r["dataset"] for r in rows})
    side, side_names = side_features(
        [r["question"] for r in rows], [r["task_group"] for r in rows], [r["dataset"] for r in rows],
        wh, has_img, cfg.task_group_vocab, ds_vocab)
    any_img = img_tokens is not None
    return FeatureSet(
        query_ids=[r["query_id"] for r in rows], img_tokens=img_tokens, img_mask=img_mask,
        txt_tokens=txt_tokens, txt_mask=txt_mask, img_pooled=img_pooled, txt_pooled=txt_pooled,
        side=side, side_names=side_names,
        image_encoder_id=enc.image.encoder_id if any_img else None, text_encoder_id=enc.text.encoder_id,
        image_encoder_version=enc.image.version if any_img else None, text_encoder_version=enc.text.version,
        skipped=skipped,
    )


@dataclass(frozen=True)
class PreparedImage:
    """A request's image decoded and preprocessed for the image encoder (what ``encode_requests`` feeds it), so
    a server can do this CPU work on its request threads while the encoder runs the previous batch."""

    pixels: torch.Tensor  # [3, H, W] as ``ImageEncoder.preprocess`` returns it
    size: tuple[int, int]  # (width, height) of the original image


def prepare_image(image: Image.Image, cfg: FeatureConfig | None = None,
                  encoders: Encoders | None = None) -> PreparedImage:
    enc = encoders or load_encoders(cfg or FeatureConfig())
    return PreparedImage(enc.image.preprocess(image), tuple(image.size))


def encode_requests(images: Sequence[Image.Image | PreparedImage | None], questions: Sequence[str],
                    cfg: FeatureConfig | None = None,
                    encoders: Encoders | None = None) -> list[dict[str, np.ndarray | None]]:
    """Features of a batch of requests at routing time (no cache): one text-encoder pass for all questions and
    one image-encoder pass for the images present, with the same encoders and preprocessing as extraction.

    Why batched: a gateway under load routes the requests that queued while the previous batch ran together;
    one forward over B short questions costs far less than B forwards."""
    if len(images) != len(questions):
        raise ValueError(f"encode_requests: {len(images)} images for {len(questions)} questions")
    cfg = cfg or FeatureConfig()
    enc = encoders or load_encoders(cfg)
    out: list[dict[str, np.ndarray | None]] = [
        {"img_tokens": None, "img_pooled": None, "image_wh": None} for _ in questions]

    def encode_images(idx: list[int]) -> None:
        prepared = [im if isinstance(im, PreparedImage) else prepare_image(im, cfg, enc)
                    for im in (images[i] for i in idx)]
        tokens, pooled = enc.image.encode(torch.stack([p.pixels for p in prepared]))
        for j, i in enumerate(idx):
            out[i].update(img_tokens=tokens[j].astype(np.float16), img_pooled=pooled[j].astype(np.float16),
                          image_wh=np.asarray(prepared[j].size, dtype=np.int32))

    def encode_texts(idx: list[int]) -> None:
        t, p = enc.text.encode([questions[i] for i in idx])
        for j, i in enumerate(idx):
            out[i].update(txt_tokens=t[j].astype(np.float16), txt_pooled=p[j].astype(np.float16))

    lanes = cfg.encode_lanes if _graph_runtime(enc) else 1
    with_img = [i for i, img in enumerate(images) if img is not None]
    jobs = [(encode_images, c) for c in _split(with_img, lanes)]
    jobs += [(encode_texts, c) for c in _split(list(range(len(questions))), lanes)]
    if lanes == 1 or len(jobs) == 1:
        for fn, idx in jobs:
            fn(idx)
    else:  # ONNX Runtime releases the GIL while a graph runs: the lanes use separate cores
        for f in [_lane_pool(lanes).submit(fn, idx) for fn, idx in jobs]:
            f.result()
    return out


def _graph_runtime(enc: Encoders) -> bool:
    """Both encoders run as ONNX Runtime graphs (whose runs are thread-safe and release the GIL)."""
    return all(getattr(e, "runtime", "torch") in GRAPH_RUNTIMES for e in (enc.image, enc.text))


def _split(idx: list[int], parts: int) -> list[list[int]]:
    """``idx`` in at most ``parts`` contiguous non-empty chunks of near-equal size."""
    if not idx:
        return []
    return [c.tolist() for c in np.array_split(np.asarray(idx), min(parts, len(idx)))]


@functools.cache
def _lane_pool(lanes: int) -> ThreadPoolExecutor:
    """One process-wide pool per lane count (a routing service keeps it for its lifetime)."""
    return ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="lrouter-encode")


def encode_single(image: Image.Image | None, question: str, cfg: FeatureConfig | None = None,
                  encoders: Encoders | None = None) -> dict[str, np.ndarray | None]:
    """Features of one request at routing time (no cache): same encoders and preprocessing as extraction."""
    return encode_requests([image], [question], cfg, encoders)[0]
