"""What every importer shares: the `ImportResult`, query ids, task groups, answer kinds, frame builders, images.

Why one module: the four formats must agree on these decisions, or the same query imported two ways would
get two ids, two task groups or two image names.

* ``query_id = sha1(f"{benchmark}:{source_id}").hexdigest()[:16]`` (long format keeps the ids it is given).
* ``image_path = "<sha256>.<ext>"`` (relative to the warehouse images dir, extension kept, lower case);
  ``ImportResult.image_files`` maps those names to the source files and ``copy_images`` copies them.
  A benchmark without images gets ``image_path = image_sha256 = ""`` and ``text_only = True``.
* models: backend ``"import"``, endpoint ``""``, simulated False, ``added_at = collected_at``; prices come from
  the data when it has them (models.json objects, a long-format models file) and are **NaN** otherwise
  ("unknown", never 0 which would read as "free"); the realised per-trace ``cost_usd`` is always there.
* traces: status ``"ok"``, attempt 1, the given ``run_id`` and ``collected_at``, quality in [0, 1],
  ``correct = quality >= 0.5`` unless a ``correct`` column is given.
* Row-level problems (empty question, missing image, bad UTF-8, unknown split) skip the query with all its
  outcomes; a bad cell of one model (non-numeric / negative cost, quality outside [0, 1], missing value) skips
  that one trace. Both are listed in ``ImportResult.skipped`` under ``on_error="skip"`` and refuse the import
  under ``on_error="fail"``. Structural problems (missing columns, duplicate ids, shape mismatch) always
  refuse it. See `collectors.importing.validation` for row numbering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, UnidentifiedImageError

from collectors.importing.validation import (
    NOT_FOUND,
    ImportLimits,
    ImportValidationError,
    Issue,
    IssueLog,
    flagged_rows,
    human_bytes,
    resolve_inside,
    sha256_file,
)
from warehouse.schemas import MODELS, QUERIES, TRACES, conform
from warehouse.store import atomic_write_bytes
from warehouse.vocabulary import TASK_GROUPS

SPLIT_ALIASES = {"train": "train", "dev": "val", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def canon(name: str) -> str:
    """Lower-case alphanumerics only, so 'SEED-Bench v2 Plus', 'SEEDBench2_Plus' and 'seedbenchv2plus' meet."""
    return re.sub(r"[^a-z0-9]+", "", str(name).lower())


# Task groups by source dataset (MMR-Bench / VL-RouterBench Table 4); matched on canonical prefixes so
# 'MathVista_MINI' is math. Anything else is 'general' unless the caller overrides it.
TASK_GROUP_BY_DATASET: dict[str, str] = {
    "ocrbench": "ocr",
    "seedbenchv2plus": "ocr",
    "seedbench2plus": "ocr",
    "docvqa": "ocr",
    "textvqa": "ocr",
    "chartqa": "chart",
    "ai2d": "chart",
    "mathvista": "math",
    "mathvision": "math",
    "mathverse": "math",
}


def task_group_for(dataset: str, overrides: Mapping[str, str] | None = None) -> str:
    """ocr | chart | math | general for a source dataset name (``overrides`` wins, by exact or canonical name)."""
    if overrides:
        if dataset in overrides:
            return overrides[dataset]
        by_canon = {canon(k): v for k, v in overrides.items()}
        if canon(dataset) in by_canon:
            return by_canon[canon(dataset)]
    c = canon(dataset)
    for key in sorted(TASK_GROUP_BY_DATASET, key=len, reverse=True):
        if c.startswith(key):
            return TASK_GROUP_BY_DATASET[key]
    return "general"


def query_id_for(benchmark: str, source_id: str) -> str:
    """Stable query id: sha1 hex[:16] of ``f"{benchmark}:{source_id}"``."""
    return hashlib.sha1(f"{benchmark}:{source_id}".encode()).hexdigest()[:16]


_CHOICE = r"^\(?[A-Ja-j]\)?\.?$"
_NUMERIC = r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$"


def answer_kind_expr(answer: pl.Expr) -> pl.Expr:
    """`infer_answer_kind` as a column expression, so a whole column is classified without a Python loop."""
    a = answer.cast(pl.String).fill_null("").str.strip_chars()
    return (
        pl.when(a.str.contains(_CHOICE)).then(pl.lit("choice"))
        .when(a.str.contains(_NUMERIC)).then(pl.lit("numeric"))
        .when(a.str.count_matches(r"\S+") > 8).then(pl.lit("text"))
        .otherwise(pl.lit("exact"))
    )


def infer_answer_kind(answer: str) -> str:
    """choice (a single option letter), numeric, text (more than 8 words) or exact (short string)."""
    return pl.select(answer_kind_expr(pl.lit(answer))).item()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_task_groups(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's dataset -> task group overrides, refused when a group is not in the vocabulary."""
    out = dict(overrides or {})
    for k, v in out.items():
        if v not in TASK_GROUPS:
            raise ValueError(f"task_groups override {k!r} -> {v!r}: expected one of {TASK_GROUPS}")
    return out


def text_col(df: pl.DataFrame, col: str) -> pl.Expr:
    """``col`` as String (ids may arrive as integers from JSON or Parquet)."""
    return pl.col(col) if df.schema[col] == pl.String else pl.col(col).cast(pl.String)


# ------------------------------------------------------------------------------------------ result


@dataclass
class ImportResult:
    """What an importer returns; nothing is written until the caller writes these frames."""

    benchmark: str
    source: str
    queries: pl.DataFrame  # conforms to QUERIES
    models: pl.DataFrame  # conforms to MODELS
    traces: pl.DataFrame  # conforms to TRACES
    skipped: pl.DataFrame  # file, row, column, reason (see collectors.importing.validation)
    text_only: bool
    embeddings: dict[str, np.ndarray] | None = None  # "text:<enc>" / "vision:<enc>" -> [len(queries), D]
    image_files: dict[str, Path] = field(default_factory=dict)  # warehouse image name -> source file
    cost_bounds: dict[str, dict[str, float]] | None = None  # {"*" | dataset: {"cmin", "cmax"}}
    notes: list[str] = field(default_factory=list)
    limits: ImportLimits = field(default_factory=ImportLimits)  # the bounds the import was checked with

    @property
    def official_splits(self) -> pl.DataFrame:
        """query_id, split (train | val | test) for the queries that have an official split."""
        q = self.queries
        return q.filter(pl.col("official_split").fill_null("") != "").select(
            "query_id", pl.col("official_split").alias("split")
        )

    def copy_images(self, images_dir: Path | str) -> int:
        return copy_images(self.image_files, images_dir, self.limits)

    def report_markdown(self) -> str:
        """A short human summary: sizes, splits, groups, per-model outcomes, skipped rows and notes."""
        q, t = self.queries, self.traces
        out = [f"# Import: {self.benchmark}", "", f"source: `{self.source}`", ""]
        out += ["| queries | models | traces | skipped | text-only |", "|---:|---:|---:|---:|:---|",
                f"| {q.height} | {self.models.height} | {t.height} | {self.skipped.height} | "
                f"{'yes' if self.text_only else 'no'} |", ""]
        splits = self.official_splits
        if splits.height:
            counts = splits.group_by("split").len().sort("split")
            out.append("official split: " + ", ".join(f"{s} {n}" for s, n in counts.iter_rows()))
        else:
            out.append("official split: none")
        if q.height:
            groups = q.group_by("task_group").len().sort("task_group")
            out.append("task groups: " + ", ".join(f"{g} {n}" for g, n in groups.iter_rows()))
        out.append("")
        if t.height:
            per = (t.group_by("model_id", maintain_order=True)
                   .agg(pl.len().alias("n"), pl.col("quality").mean().alias("q"),
                        pl.col("cost_usd").mean().alias("c")))
            out += ["| model | traces | mean quality | mean cost (USD) |", "|---|---:|---:|---:|"]
            for m, n, qq, cc in per.iter_rows():
                out.append(f"| {m} | {n} | {_fmt(qq, '.4f')} | {_fmt(cc, '.3g')} |")
            out.append("")
        if self.embeddings:
            out.append("embeddings: " + ", ".join(f"{k} {v.shape[1]}-d" for k, v in self.embeddings.items()))
        if self.cost_bounds:
            out.append("cost bounds: " + ", ".join(f"{k} [{v['cmin']:.3g}, {v['cmax']:.3g}]"
                                                   for k, v in self.cost_bounds.items()))
        out += self._skipped_markdown()
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def _skipped_markdown(self) -> list[str]:
        if not self.skipped.height:
            return []
        out = ["", f"## Skipped ({self.skipped.height})", "", "| file | row | column | reason |",
               "|---|---:|---|---|"]
        for f, r, c, why in self.skipped.head(20).iter_rows():
            out.append(f"| {Path(f).name} | {'' if r is None else r} | {c or ''} | {why} |")
        if self.skipped.height > 20:
            out.append(f"| ... | | | {self.skipped.height - 20} more |")
        return out


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


# ------------------------------------------------------------------------------------------ images


def image_problem(path: Path, limits: ImportLimits | None = None) -> str | None:
    """Why the image at ``path`` may not be imported (None when it may): too big, too many pixels, corrupt.

    The byte size comes from stat, so an oversized (even sparse) file is never read; the pixel count comes
    from the header PIL decodes, so a decompression bomb is never decoded; ``verify()`` catches truncated or
    corrupt data where the format allows it.
    """
    limits = limits or ImportLimits()
    size = os.stat(path).st_size
    if size > limits.max_image_bytes:
        return (f"image {path.name} is {human_bytes(size)}, over the limit of {human_bytes(limits.max_image_bytes)} "
                "(ImportLimits.max_image_bytes); not read")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            with Image.open(path) as im:
                width, height = im.size
                if width * height > limits.max_image_pixels:
                    return (f"image {path.name} is {width}x{height} = {width * height:,} pixels, over the limit "
                            f"of {limits.max_image_pixels:,} (ImportLimits.max_image_pixels)")
                im.verify()
    except Image.DecompressionBombError as exc:
        return f"image {path.name} has too many pixels ({exc}); over the limit of {limits.max_image_pixels:,}"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"image {path.name} is corrupt or not an image ({type(exc).__name__}: {exc})"
    return None


def copy_images(image_files: Mapping[str, Path], images_dir: Path | str, limits: ImportLimits | None = None) -> int:
    """Copy content-addressed images into ``images_dir`` (atomic, skips names already there); returns copies.

    The bytes are re-hashed while copying so a file that changed since the import is refused, not stored
    under a name that no longer matches its content; a file that grew over the size limit is not read.
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    max_bytes = (limits or ImportLimits()).max_image_bytes
    copied = 0
    for name, src in sorted(image_files.items()):
        dest = images_dir / name
        if dest.exists():
            continue
        if os.stat(src).st_size > max_bytes:
            raise ImportValidationError([Issue(str(src), None, None, "image grew over the size limit since it was "
                                                                     "imported; not copied")])
        data = Path(src).read_bytes()
        if hashlib.sha256(data).hexdigest() != name.split(".", 1)[0]:
            raise ImportValidationError([Issue(str(src), None, None, "image changed since it was imported "
                                                                     "(sha256 no longer matches)")])
        atomic_write_bytes(data, dest)
        copied += 1
    return copied


def checked_image(root: Path, rel: str | None,
                  limits: ImportLimits | None = None) -> tuple[Path | None, str | None]:
    """`resolve_inside` plus `image_problem`: the file, or why the row's image may not be used."""
    path, why = resolve_inside(root, rel)
    if path is None:
        return None, why
    why = image_problem(path, limits)
    return (None, why) if why else (path, None)


def image_of(root: Path, candidates: Sequence[str],
             limits: ImportLimits | None = None) -> tuple[Path | None, str | None]:
    """The first candidate that resolves inside ``root``; a refusal (escape) wins over 'not found'.

    The found file is checked with `image_problem`; a bad image refuses the row (no other candidate is tried).
    """
    first_missing = None
    for rel in candidates:
        path, why = resolve_inside(root, rel)
        if path is not None:
            why = image_problem(path, limits)
            return (None, why) if why else (path, None)
        if why is not None and not why.startswith(NOT_FOUND):
            return None, why
        first_missing = first_missing or why
    return None, first_missing


def hash_images(paths: Sequence[Path | None]) -> tuple[list[str], list[str], dict[str, Path]]:
    """(image_path, image_sha256) per row and the files to copy; '' for rows without an image."""
    names, shas, files = [], [], {}
    for p in paths:
        if p is None:
            names.append("")
            shas.append("")
            continue
        sha = sha256_file(p)
        name = f"{sha}{p.suffix.lower()}"
        names.append(name)
        shas.append(sha)
        files[name] = p
    return names, shas, files


# ---------------------------------------------------------------------------------------- builders


def trace_defaults(df: pl.DataFrame, run_id: str, collected_at: str) -> pl.DataFrame:
    """Add the TRACES columns that are missing (present ones are kept as they are) and conform."""
    defaults: dict[str, pl.Expr] = {
        "attempt": pl.lit(1, dtype=pl.Int32),
        "prediction": pl.lit(None, dtype=pl.String),
        "correct": pl.col("quality") >= 0.5,
        "prompt_tokens": pl.lit(None, dtype=pl.Int64),
        "completion_tokens": pl.lit(None, dtype=pl.Int64),
        "image_tokens": pl.lit(None, dtype=pl.Int64),
        "latency_ms": pl.lit(None, dtype=pl.Float64),
        "status": pl.lit("ok"),
        "error": pl.lit(None, dtype=pl.String),
        "collected_at": pl.lit(collected_at),
        "model_digest": pl.lit(None, dtype=pl.String),
        "run_id": pl.lit(run_id),
    }
    add = [e.alias(c) for c, e in defaults.items() if c not in df.columns]
    return conform(df.with_columns(add) if add else df, TRACES, "traces")


def wide_traces(query_ids: pl.Series, model_ids: Sequence[str], quality: np.ndarray, cost: np.ndarray,
                cell_ok: np.ndarray, *, run_id: str, collected_at: str,
                completion_tokens: np.ndarray | None = None,
                predictions: Sequence[pl.Series | None] | None = None) -> pl.DataFrame:
    """[N, K] outcome matrices -> long traces, one column slice per model (K frames, no per-pair loop)."""
    frames = []
    for k, m in enumerate(model_ids):
        cols = [query_ids.alias("query_id"), pl.Series("quality", quality[:, k], dtype=pl.Float64),
                pl.Series("cost_usd", cost[:, k], dtype=pl.Float64)]
        if completion_tokens is not None:
            tok = pl.Series("completion_tokens", completion_tokens[:, k], dtype=pl.Float64)
            cols.append(tok.fill_nan(None).cast(pl.Int64))
        if predictions is not None and predictions[k] is not None:
            cols.append(predictions[k].cast(pl.String).alias("prediction"))
        f = pl.DataFrame(cols).with_columns(pl.lit(m, dtype=pl.String).alias("model_id"))
        ok = cell_ok[:, k]
        if not ok.all():
            f = f.filter(pl.Series(ok))
        frames.append(f)
    if not frames:
        return pl.DataFrame(schema=TRACES)
    return trace_defaults(pl.concat(frames, how="diagonal"), run_id, collected_at)


def models_frame(model_ids: Sequence[str], *, benchmark: str, source: str, added_at: str,
                 prices: Mapping[str, Mapping[str, float | None]] | None = None) -> pl.DataFrame:
    """MODELS rows for imported models; an unknown price is NaN, never 0 (which would read as free)."""
    prices = prices or {}
    rows = []
    for m in model_ids:
        p = prices.get(m, {})
        pin, pout = p.get("price_in_per_mtok"), p.get("price_out_per_mtok")
        known = pin is not None and pout is not None
        rows.append({
            "model_id": m,
            "backend": "import",
            "endpoint": "",
            "price_in_per_mtok": float("nan") if pin is None else float(pin),
            "price_out_per_mtok": float("nan") if pout is None else float(pout),
            "params_b": p.get("params_b"),
            "added_at": added_at,
            "active": True,
            "simulated": False,
            "description": f"imported from {benchmark} ({Path(source).name})"
                           + ("" if known else "; token prices unknown (NaN), realised cost_usd per trace"),
        })
    return conform(pl.DataFrame(rows, schema=MODELS), MODELS, "models")


def source_meta(source_id: pl.Expr, extras: Sequence[str], side_features: Sequence[str] = ()) -> pl.Expr:
    """JSON ``{"source_id", "columns": {extra columns}, "side_features": [names]}``, built column-wise."""
    fields = [source_id.cast(pl.String).alias("source_id")]
    if extras:
        fields.append(pl.struct([pl.col(c) for c in extras]).alias("columns"))
    enc = pl.struct(fields).struct.json_encode()
    if side_features:
        enc = enc.str.strip_suffix("}") + pl.lit(',"side_features":' + json.dumps(list(side_features)) + "}")
    return enc


def queries_frame(df: pl.DataFrame) -> pl.DataFrame:
    return conform(df, QUERIES, "queries")


def log_cells(log: IssueLog, df: pl.DataFrame, name: str, col: str, mask: pl.Series, reason: str,
              show: bool = True) -> None:
    """One issue per flagged cell; ``show`` appends the offending value to the reason."""
    if not mask.any():
        return
    rows = flagged_rows(df, mask)
    if show:
        vals = df[col].filter(mask).to_list()
        log.add_rows(name, rows, col, [f"{reason} {v!r}" for v in vals])
    else:
        log.add_rows(name, rows, col, reason)
