"""Route a new request: ``RouterService.route(image, question, pool=None, lam=0.0)``, or a batch of them
(``route_many``: one encoder pass and one router forward for all).

Uses the latest trained LatentRouter checkpoint, the same frozen encoders as the features asset, and the
CURRENT capability profiles and registry: a model added after training is scored through its capability
token, a disabled model is masked out (a long-lived service notices both before its next request). The
warehouse's routing arrays are built once per service; a request becomes one extra row through the very
normalisers those arrays were built with (train-row side statistics, calibration expected costs, the train
cost scale), so it costs an encoder pass and one router forward, not a rebuild.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from router.data.build import build_routing_data_and_normalisers, expected_cost_usd
from router.data.routing_data import RoutingData
from router.data.warehouse_inputs import FEATURES_DIR, WarehouseInputs, load_inputs
from router.evaluation.deploy import LATENT, serving_router
from router.features.config import FeatureConfig
from router.features.encoders import load_encoders
from router.features.extract import PreparedImage, encode_requests, prepare_image
from router.features.onnx_graph import GRAPH_RUNTIMES
from router.features.side import side_features
from router.models.base import Router
from router.threads import torch_threads, usable_cpus
from router.training.artifacts import latest_checkpoint_dir
from router.training.checkpoint import load_checkpoint
from router.training.trainer import predict
from warehouse.store import Warehouse, lrouter_home

REQUEST_ID = "__request__"
logger = logging.getLogger("lrouter.serving")
RETRY_FAILED_BUILD_S = 10.0  # a rebuild that failed on the same files is retried at most this often
MAX_EXP_COST_ENTRIES = 1024  # memoised (has_image, task_group) expected costs


def _vocab(side_names: list[str], prefix: str) -> list[str]:
    return [n.split("=", 1)[1] for n in side_names if n.startswith(prefix + "=") and n != f"{prefix}=other"]


def _pad(x: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((length, x.shape[1]), dtype=np.float16)
    n = min(length, x.shape[0])
    out[:n] = x[:n]
    mask = np.zeros(length, dtype=bool)
    mask[:n] = True
    return out, mask


class RouterService:
    """The deployed router of one warehouse; build once, call ``route`` per request.

    A long-lived service stays current: before each request it compares the checkpoint pointer and the
    files of the tables it was built from (every warehouse write is an atomic rename, so a change shows in
    the file's mtime/size) and rebuilds when anything moved: a retrained router, recalibrated profiles, a
    disabled or added model. ``auto_refresh=False`` pins the snapshot.
    """

    def __init__(self, wh: Warehouse, feature_cfg: FeatureConfig | None = None, auto_refresh: bool = True,
                 serving: ServingOptions | None = None):
        self.wh = wh
        self.feature_cfg = serving_feature_config(feature_cfg or FeatureConfig(), serving)
        self.auto_refresh = auto_refresh
        self.refresh_error: str | None = None  # why the last refresh failed while the held snapshot serves
        self._failed: tuple[tuple | None, float] = (None, 0.0)  # (sources, when) of the last failed rebuild
        self._build()

    def _sources(self) -> tuple:
        """What the service is built from: the checkpoint in use and (path, mtime, size) of its input files."""
        ckpt = latest_checkpoint_dir(self.wh)
        files = [self.wh.table_path(n) for n in ("models", "profiles", "splits", "queries")]
        files += sorted((self.wh.features_dir / FEATURES_DIR).glob("*"))
        stats = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
        return (str(ckpt), stats)

    def _build(self) -> None:
        """Load everything into locals, then swap it in: a failed rebuild leaves the last good state (and is
        retried on the next request, since ``sources`` still names the old files)."""
        sources = self._sources()  # taken first: a change during the build triggers another one next time
        ckpt = latest_checkpoint_dir(self.wh)
        if ckpt is None:
            raise FileNotFoundError(f"no trained router in {self.wh.artifacts_dir}; run `make demo` or "
                                    "materialize latent_router first")
        model, cfg, meta = load_checkpoint(ckpt)
        inp = load_inputs(self.wh)
        # the warehouse's rows (model tokens' features) and the normalisers they were built with
        data, norms = build_routing_data_and_normalisers(inp.queries, inp.traces, inp.splits, inp.profiles,
                                                         inp.features, inp.models)
        # the deployed router (deployed.json): a baseline that won validation, else this LatentRouter; a baseline
        # fitted on another pool than the registry's cannot score it, so the LatentRouter serves instead
        name, baseline, doc, note = serving_router(ckpt, data.model_ids)
        self.deployment: dict = {"deployed": name, "serving": LATENT if baseline is None else name,
                                 "lambda": doc.get("lambda"), "reason": doc.get("reason"), "note": note}
        if note:
            logger.warning("deployed router %s: %s", name, note)
        self.baseline = baseline
        self.checkpoint, self.model, self.cfg, self.meta = ckpt, model, cfg, meta
        self.inputs: WarehouseInputs = inp
        self.data, self.norms = data, norms
        self._exp_cost: dict[tuple[bool, str], np.ndarray] = {}
        self.sources = sources

    def encoder_settings(self) -> dict:
        """How requests are encoded here (runtime as resolved, compute dtype, lanes): what `/health` reports, so
        a benchmark or an operator sees the serving precision in use, not only the one asked for."""
        enc = load_encoders(self.feature_cfg)
        image = getattr(enc.image, "runtime", "torch")
        return {"text_runtime": getattr(enc.text, "runtime", "torch"),
                "image_runtime": "onnx" if image == "onnx_int8" else image,  # int8 weights: the text graph's only
                "dtype": str(self.feature_cfg.resolved_dtype()).removeprefix("torch."),
                "lanes": self.feature_cfg.encode_lanes}

    def refresh(self, strict: bool = True) -> bool:
        """Rebuild if the checkpoint or an input table changed since the last build; True when it did.

        A failed rebuild keeps the last good snapshot and is recorded in ``refresh_error`` (cleared by the
        next good one); ``strict=False`` returns False instead of raising, so a corrupt table degrades a
        long-lived service to its held snapshot rather than taking it down."""
        sources = None
        try:
            sources = self._sources()
            if sources == self.sources:
                self.refresh_error = None
                return False
            failed_sources, failed_at = self._failed
            recent_failure = sources == failed_sources and time.monotonic() - failed_at < RETRY_FAILED_BUILD_S
            if not recent_failure:  # the same files failed moments ago: not rebuilt on every request
                self._build()
        except Exception as exc:
            self.refresh_error = f"{type(exc).__name__}: {exc}"
            self._failed = (sources, time.monotonic())
            if strict:
                raise
            return False
        if recent_failure:
            if strict:
                raise RuntimeError(self.refresh_error)
            return False
        self.refresh_error = None
        self._failed = (None, 0.0)
        return True

    def _expected_cost(self, has_image: bool, task_group: str) -> np.ndarray:
        """Normalised [K] cost expected before answering for a request of this kind (memoised)."""
        key = (has_image, task_group)
        if key not in self._exp_cost:
            usd = expected_cost_usd(self.norms.calib, self.inputs.models, self.norms.qmeta, has_image, task_group)
            if len(self._exp_cost) >= MAX_EXP_COST_ENTRIES:  # clients name task groups: bounded, oldest out
                del self._exp_cost[next(iter(self._exp_cost))]
            self._exp_cost[key] = (usd / self.norms.cost_scale).astype(np.float32)
        return self._exp_cost[key]

    def request_data(self, image: Image.Image | None, question: str, pool: list[str] | None = None,
                     task_group: str | None = None, dataset: str | None = None) -> RoutingData:
        """The request as a one-row RoutingData (split ``test``; no outcomes), ``avail`` = the pool."""
        return self.requests_data([RouteRequest(image, question, pool, 0.0, task_group, dataset)], [image])

    def check_pool(self, pool: list[str] | None) -> None:
        unknown = [m for m in pool or [] if m not in self.data.model_ids]
        if unknown:  # before any encoder work
            raise ValueError(f"unknown or inactive model(s) in pool: {unknown}; active: {self.data.model_ids}")

    def prepare_image(self, image: bytes | Image.Image) -> PreparedImage:
        """Decode and preprocess a request's image for this service's image encoder (thread-safe: no model is
        touched), so a server can do it on its request threads; a ValueError names an unreadable image."""
        img = _decode_request(RouteRequest(image, "image"))
        assert img is not None and not isinstance(img, PreparedImage)
        return prepare_image(img, self.feature_cfg, load_encoders(self.feature_cfg))

    def encodes_ahead(self) -> bool:
        """Whether requests' features may be computed ahead of routing, per request and in small batches
        (``encode_images`` / ``encode_questions``): on the encoders' ONNX Runtime graphs, whose runs are
        thread-safe and give each input the same numbers whatever it is batched with. The eager encoders
        (bf16 serving) keep encoding inside the routing batch, as the extraction does."""
        enc = load_encoders(self.feature_cfg)
        return all(getattr(e, "runtime", "torch") in GRAPH_RUNTIMES for e in (enc.image, enc.text))

    def encode_images(self, images: Sequence[PreparedImage]) -> list[dict[str, np.ndarray]]:
        """Image features of prepared images in one encoder run, per image what ``encode_requests`` gives it
        (``img_tokens``, ``img_pooled``, ``image_wh``); thread-safe on the graph runtimes."""
        enc = load_encoders(self.feature_cfg)
        tokens, pooled = enc.image.encode(torch.stack([p.pixels for p in images]))
        return [{"img_tokens": tokens[j].astype(np.float16), "img_pooled": pooled[j].astype(np.float16),
                 "image_wh": np.asarray(p.size, dtype=np.int32)} for j, p in enumerate(images)]

    def encode_questions(self, questions: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Question features in one encoder run, per question what ``encode_requests`` gives it (``txt_tokens``,
        ``txt_pooled``)."""
        enc = load_encoders(self.feature_cfg)
        tokens, pooled = enc.text.encode(list(questions))
        return [{"txt_tokens": tokens[j].astype(np.float16), "txt_pooled": pooled[j].astype(np.float16)}
                for j in range(len(questions))]

    def requests_data(self, requests: Sequence[RouteRequest],
                      images: Sequence[Image.Image | PreparedImage | None]) -> RoutingData:
        """B requests as a B-row RoutingData (split ``test``; no outcomes), ``avail`` = each request's pool;
        ``images`` are the requests' decoded images. One encoder pass per modality for the whole batch."""
        fs, data = self.inputs.features, self.data
        models = data.model_ids
        for r in requests:
            self.check_pool(r.pool)
        encoders = load_encoders(self.feature_cfg)  # memoised; weights load on first use
        ahead = [r.encoded for r in requests]
        has = np.array([img is not None if e is None else e.get("img_tokens") is not None
                        for img, e in zip(images, ahead, strict=True)], dtype=bool)
        stored = [(fs.text_encoder_id, encoders.text.encoder_id, "question")]
        if has.any() and fs.image_encoder_id is not None:
            stored.append((fs.image_encoder_id, encoders.image.encoder_id, "image"))
        for have, got, what in stored:
            if have != got:
                raise ValueError(f"the router was trained on {what} features from {have!r} but requests are "
                                 f"encoded with {got!r}; route with the FeatureConfig the features asset used "
                                 "(imported embeddings cannot encode new requests)")
        todo = [i for i, e in enumerate(ahead) if e is None]  # requests whose features are not computed yet
        encs: list[dict[str, np.ndarray | None]] = list(ahead)  # type: ignore[arg-type]
        if todo:
            fresh = encode_requests([images[i] for i in todo], [requests[i].question for i in todo],
                                    self.feature_cfg, encoders)
            for i, e in zip(todo, fresh, strict=True):
                encs[i] = e
        n = len(requests)
        tgs = [r.task_group or "" for r in requests]
        dss = [r.dataset or "" for r in requests]
        wh_size = np.asarray([e["image_wh"] if h else (0, 0) for e, h in zip(encs, has, strict=True)])
        side, _ = side_features([r.question for r in requests], [t or "other" for t in tgs],
                                [d or "other" for d in dss], wh_size, has,
                                _vocab(fs.side_names, "task_group"), _vocab(fs.side_names, "dataset"))
        if side.shape[1] < fs.side.shape[1]:  # declared import side features: unknown for a new request
            side = np.concatenate([side, np.zeros((n, fs.side.shape[1] - side.shape[1]), np.float32)], axis=1)
        padded = [_pad(e["txt_tokens"], fs.txt_tokens.shape[1]) for e in encs]
        txt, txt_mask = np.stack([t for t, _ in padded]), np.stack([m for _, m in padded])
        img_tokens = img_mask = img_pooled = None
        if fs.img_tokens is not None:
            img_tokens = np.zeros((n, *fs.img_tokens.shape[1:]), dtype=fs.img_tokens.dtype)
            img_pooled = np.zeros((n, fs.img_pooled.shape[1]), dtype=np.float32)
            for i, e in enumerate(encs):
                if has[i]:
                    img_tokens[i], img_pooled[i] = e["img_tokens"], e["img_pooled"]
            img_mask = np.repeat(has[:, None], fs.img_tokens.shape[1], axis=1)
        txt_pooled = np.stack([e["txt_pooled"] for e in encs])
        k = data.k
        avail = np.array([[m in r.pool if r.pool else True for m in models] for r in requests], dtype=bool)
        return replace(
            data, query_ids=[REQUEST_ID] * n, img_tokens=img_tokens, img_mask=img_mask, txt_tokens=txt,
            txt_mask=txt_mask, pooled=self.norms.pooled(img_pooled, txt_pooled, side, has),
            side=self.norms.side(side), quality=np.zeros((n, k), np.float32), cost=np.zeros((n, k), np.float32),
            cost_usd=np.zeros((n, k)), avail=avail,
            exp_cost=np.stack([self._expected_cost(bool(h), t) for h, t in zip(has, tgs, strict=True)]),
            split=np.array(["test"] * n, dtype=object), task_group=np.array(tgs, dtype=object),
            dataset=np.array(dss, dtype=object), latency_ms=None)

    def predict_rows(self, data: RoutingData, rows: np.ndarray, lam: float | np.ndarray,
                     avail: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(quality, uncertainty, utility) [len(rows), K] of the DEPLOYED router (deployed.json); a baseline has
        no uncertainty (0) and ranks by its own ``scores``; unavailable models get utility -inf. ``lam`` is one
        value or one per row."""
        mask = data.avail[rows] if avail is None else np.asarray(avail, dtype=bool)
        lams = np.broadcast_to(np.asarray(lam, dtype=np.float64), (len(rows),))
        if self.baseline is None:
            return predict(self.model, data, rows, lams if np.ndim(lam) else float(lam), avail=mask)
        q, c = self.baseline.predict(data, rows)
        if type(self.baseline).scores is Router.scores:  # q - lambda * c: one prediction serves every lambda
            score = np.asarray(q, dtype=np.float64) - lams[:, None] * np.asarray(c, dtype=np.float64)
            return np.asarray(q, dtype=np.float64), np.zeros_like(score), np.where(mask, score, -np.inf)
        score = np.empty((len(rows), data.k), dtype=np.float64)
        for value in np.unique(lams):  # a baseline's scores may not be linear in lambda (one classifier per level)
            sel = np.flatnonzero(lams == value)
            score[sel] = np.asarray(self.baseline.scores(data, np.asarray(rows)[sel], float(value)), dtype=np.float64)
        score = np.where(mask, score, -np.inf)
        return np.asarray(q, dtype=np.float64), np.zeros_like(score), score

    def warm_up(self) -> None:
        """Route one synthetic image+question so the encoders' weights are loaded before real traffic."""
        self.route(Image.new("RGB", (64, 64), (128, 128, 128)), "warm up")

    def route(self, image: str | Path | bytes | Image.Image | None, question: str, pool: list[str] | None = None,
              lam: float = 0.0, task_group: str | None = None, dataset: str | None = None) -> list[dict]:
        """Ranked candidate models with predicted quality, uncertainty, expected cost and utility."""
        result = self.route_many([RouteRequest(image, question, pool, lam, task_group, dataset)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def route_many(self, requests: Sequence[RouteRequest], refresh: bool = True) -> list[list[dict] | ValueError]:
        """``route`` for a batch: one refresh check, one encoder pass per modality and one router forward for
        all of them. A request's own bad input (empty question, unreadable image, unknown pool) comes back in
        its place as the ValueError ``route`` would raise; the others are routed. ``refresh=False``: route on
        the snapshot held now (a caller that refreshed and formed the batch's pools on it, so no model can
        vanish between forming the batch and routing it)."""
        results: list[list[dict] | ValueError | None] = [None] * len(requests)
        decoded: list[tuple[int, Image.Image | PreparedImage | None]] = []
        for i, r in enumerate(requests):
            try:
                decoded.append((i, _decode_request(r)))
            except ValueError as exc:
                results[i] = exc
        if refresh and self.auto_refresh and decoded:
            self.refresh(strict=False)  # a failed re-read answers from the held snapshot (see refresh_error)
        ok: list[tuple[int, Image.Image | PreparedImage | None]] = []
        for i, img in decoded:
            try:
                self.check_pool(requests[i].pool)
                ok.append((i, img))
            except ValueError as exc:
                results[i] = exc
        if ok:
            batch = [requests[i] for i, _ in ok]
            lams = np.array([float(r.lam) for r in batch])
            rows = np.arange(len(batch))
            # one request: one thread for the eager encoders and the forward (a second costs more in sync than it
            # saves: MiniLM bf16 8.5 vs 10.3 ms, bench/router.py); a batch: all of them
            with torch_threads(1 if len(batch) == 1 else None):
                req = self.requests_data(batch, [img for _, img in ok])
                mu, sigma, score = self.predict_rows(req, rows, lams, req.avail)
            for b, (i, _) in enumerate(ok):
                results[i] = self._ranked(req, b, mu, sigma, score)
        return results  # type: ignore[return-value]

    def _ranked(self, req: RoutingData, row: int, mu: np.ndarray, sigma: np.ndarray,
                score: np.ndarray) -> list[dict]:
        out = []
        for j, m in enumerate(req.model_ids):
            if not req.avail[row, j]:
                continue
            out.append({
                "model_id": m,
                "quality": float(mu[row, j]),
                "uncertainty": float(sigma[row, j]),
                "cost_usd": float(req.exp_cost[row, j] * self.norms.cost_scale),
                "utility": float(score[row, j]),
                "simulated": bool(req.simulated[j]) if req.simulated else False,
            })
        return sorted(out, key=lambda r: -r["utility"])


@dataclass(frozen=True)
class RouteRequest:
    """One request to route, as a value: what ``route`` takes, so requests can queue and route in batches."""

    image: str | Path | bytes | Image.Image | PreparedImage | None
    question: str
    pool: list[str] | None = None
    lam: float = 0.0
    task_group: str | None = None
    dataset: str | None = None
    # the request's features computed ahead (``RouterService.encode_images`` / ``encode_questions`` merged, as
    # ``encode_requests`` returns them): routed without running an encoder; ``image`` is then not read
    encoded: dict[str, np.ndarray | None] | None = field(default=None, compare=False)


def _decode_request(r: RouteRequest) -> Image.Image | PreparedImage | None:
    """The request's image as RGB (None without one; a PreparedImage as it is); a ValueError naming the problem
    for bad input."""
    if not r.question or not r.question.strip():
        raise ValueError("question is empty")
    if r.image is None or isinstance(r.image, PreparedImage):
        return r.image
    if isinstance(r.image, Image.Image):
        img = r.image
    else:
        try:
            raw = r.image if isinstance(r.image, bytes) else Path(r.image).read_bytes()
            img = Image.open(io.BytesIO(raw))
            img.load()
        except Exception as exc:
            where = r.image if not isinstance(r.image, bytes) else "<bytes>"
            raise ValueError(f"cannot read image {where}: {exc}") from exc
    return img.convert("RGB")


@dataclass(frozen=True)
class ServingOptions:
    """How the encoders run when serving (the CLI reads them from LROUTER_RUNTIME, LROUTER_SERVING_DTYPE and
    LROUTER_ENCODE_LANES once, in ``pipelines.settings``): ``runtime`` torch | onnx | onnx_int8 | auto;
    ``dtype`` empty for the features' own, or float32 | bfloat16 | int8; ``lanes`` concurrent encoder runs per
    routing batch (None: 2, or 1 on one core)."""

    runtime: str = "auto"
    dtype: str = ""
    lanes: int | None = None


def serving_feature_config(base: FeatureConfig, options: ServingOptions | None = None) -> FeatureConfig:
    """The encoders' settings for serving: the features asset's, on the encoders' ONNX Runtime graphs where
    they can run (requests arrive one or a few at a time: 2-3x faster than eager at that size, same numbers;
    router/features/onnx_graph.py). ``options.dtype`` trades exactness for speed where the features were
    computed in bf16 (``dtype=auto`` on a CPU with native bf16), which the graphs do not run: ``float32`` serves
    from the fp32 graphs instead, so a request's features differ from the stored ones by bf16 rounding
    (bench/serving_precision.py prints how often that changes the chosen model); ``int8`` goes further: the fp32
    graphs with the text encoder's weights in int8 (runtime ``onnx_int8``: about half the time of a text request's
    encoder, cosine ~0.993 to the fp32 embedding). Empty: the features' dtype. On the graphs a routing batch runs
    on ``options.lanes`` concurrent encoder lanes (default: 2, or 1 where the process may use one core only, e.g.
    under ``taskset -c 0``; the same numbers), which took images at concurrency 32 from 8.5x to 11.5x the
    throughput of one client (bench/gateway.py, 2 cores); the gateway's encoder micro-batchers use as many."""
    opts = options or ServingOptions()
    runtime, dtype = opts.runtime or "auto", opts.dtype or base.dtype
    lanes = opts.lanes if opts.lanes is not None else min(2, usable_cpus())
    if dtype == "int8":
        if runtime not in ("auto", "onnx_int8"):
            raise ValueError(f"serving encoders: dtype int8 (LROUTER_SERVING_DTYPE) runs on the onnx_int8 runtime, "
                             f"but the runtime (LROUTER_RUNTIME) is {runtime!r}; unset one of them")
        dtype, runtime = "float32", "onnx_int8"
    try:
        return replace(base, progress=False, runtime=runtime, dtype=dtype, encode_lanes=lanes)
    except ValueError as exc:
        raise ValueError(f"serving encoders (runtime {runtime!r}, dtype {dtype!r}, lanes {lanes}): {exc}") from None


def load_router(home: Path | None = None, serving: ServingOptions | None = None) -> RouterService:
    home = Path(home) if home is not None else lrouter_home()
    return RouterService(Warehouse(home / "warehouse"), serving=serving)
