"""Importers: published routing data and user query sets -> our QUERIES / MODELS / TRACES tables.

Why: routers are trained and compared on outcome matrices other people already collected (MMR-Bench,
VL-RouterBench) and on our own exports; users also bring their own image+question sets to run the Ollama
collector on. Every importer is a pure function (it reads files, writes nothing) returning an `ImportResult`
whose frames conform to `warehouse.schemas`; the caller writes them only when the import succeeded. The one
exception is `import_custom_queries(images_dir=...)`, which copies images after validation passed.

Formats
-------
1. **MMR-Bench CSV** (`import_mmr_bench`): one row per query; `dataset_idx` (``<Dataset>_<n>``), `question`,
   `answer`, and per model M `M_correct` (0/1, true/false or a quality in [0, 1]) and `M_cost` (USD); optional
   `M_token` (read as the answer's completion tokens) and `M_prediction`. Optional `answer_kind`, `task`
   columns are used; every other column is kept in ``source_meta["columns"]`` (as text), and the ones named in
   ``side_features`` are listed in ``source_meta["side_features"]`` (categorical side features).
   Images (when ``image_root`` is given) are ``<root>/<Dataset>/<n>.jpg`` (``.jpeg/.png/.webp`` also tried;
   ``SEEDBench2_Plus`` lives in ``SEEDBenchv2Plus/`` as published; ``image_dirs`` adds aliases).
2. **VL-RouterBench folder** (`import_vl_routerbench`): ``Y.npz`` (key ``Y``, N x K), ``C.npy`` (N x K USD),
   ``meta.parquet`` (``sample_id``, ``dataset``; optional ``split``, ``task``, ``question``, ``answer``,
   ``answer_kind``, ``image_path``; other columns -> ``source_meta["columns"]``), ``models.json`` (a list of
   names, or of objects ``{"name", "price_in_per_mtok", "price_out_per_mtok", "params_b"}``) or
   ``model_index.json`` (``{name: column}``), optional ``cost_bounds.json``, ``SPLITS/{train,dev,test}.jsonl``
   and ``EMBEDDINGS/{text,vision}/<encoder>.parquet``. ``cost_bounds.json`` may be
   ``{"cmin": a, "cmax": b}`` (whole benchmark), ``{"cmin": {ds: a}, "cmax": {ds: b}}`` or
   ``{ds: {"cmin": a, "cmax": b}}`` (per dataset; the key ``"*"`` is the whole benchmark); it is returned as
   ``ImportResult.cost_bounds`` = ``{key: {"cmin", "cmax"}}`` with 0 < cmin < cmax (the Rank Score takes
   log2 of both). Without the file it is computed as DESIGN.md defines it: min / max over models of each
   model's mean cost per query, key ``"*"``.
3. **Long format** (`import_long`, `export_long`): a traces file (Parquet / CSV / JSONL) with one row per
   query x model (x attempt) and a queries file (Parquet / JSONL / CSV) with QUERIES columns. Columns that
   are present are kept as they are (so an export re-imports to identical tables); missing optional ones get
   the defaults below. JSON has no NaN, so a JSONL export writes unknown (NaN) prices as null; the models
   file importer maps null prices back to NaN, which keeps the JSONL round trip identical too.
4. **Own query set** (`import_custom_queries`): JSONL of ``{id, image, question, answer, answer_kind, dataset,
   task_group}`` plus the image folder -> queries only (traces come later from the Ollama collector).

Common decisions
----------------
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
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.validation import (
    NOT_FOUND,
    ROW,
    ImportValidationError,
    Issue,
    IssueLog,
    blank,
    flagged_rows,
    numeric_column,
    raise_on_duplicates,
    read_csv_strings,
    read_jsonl,
    read_table,
    resolve_inside,
    sha256_file,
    unsafe_path_reason,
)
from warehouse.schemas import MODELS, QUERIES, TRACES, conform
from warehouse.store import atomic_write_bytes
from warehouse.vocabulary import TRACE_STATUSES

__all__ = [
    "ANSWER_KINDS",
    "TASK_GROUPS",
    "ImportResult",
    "ImportValidationError",
    "copy_images",
    "export_long",
    "import_benchmark",
    "import_custom_queries",
    "import_long",
    "import_long_dir",
    "import_mmr_bench",
    "import_vl_routerbench",
    "infer_answer_kind",
    "query_id_for",
    "task_group_for",
]

TASK_GROUPS = ("ocr", "chart", "math", "general")
ANSWER_KINDS = ("exact", "numeric", "choice", "text")
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

# dataset_idx prefix -> image folder name, where the published MMR-Bench layout differs from the prefix.
MMR_IMAGE_DIRS: dict[str, str] = {"SEEDBench2_Plus": "SEEDBenchv2Plus"}


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


def _answer_kind_expr(answer: pl.Expr) -> pl.Expr:
    a = answer.cast(pl.String).fill_null("").str.strip_chars()
    return (
        pl.when(a.str.contains(_CHOICE)).then(pl.lit("choice"))
        .when(a.str.contains(_NUMERIC)).then(pl.lit("numeric"))
        .when(a.str.count_matches(r"\S+") > 8).then(pl.lit("text"))
        .otherwise(pl.lit("exact"))
    )


def infer_answer_kind(answer: str) -> str:
    """choice (a single option letter), numeric, text (more than 8 words) or exact (short string)."""
    return pl.select(_answer_kind_expr(pl.lit(answer))).item()


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _check_task_groups(overrides: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(overrides or {})
    for k, v in out.items():
        if v not in TASK_GROUPS:
            raise ValueError(f"task_groups override {k!r} -> {v!r}: expected one of {TASK_GROUPS}")
    return out


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

    @property
    def official_splits(self) -> pl.DataFrame:
        """query_id, split (train | val | test) for the queries that have an official split."""
        q = self.queries
        return q.filter(pl.col("official_split").fill_null("") != "").select(
            "query_id", pl.col("official_split").alias("split")
        )

    def copy_images(self, images_dir: Path | str) -> int:
        return copy_images(self.image_files, images_dir)

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
        if self.skipped.height:
            out += ["", f"## Skipped ({self.skipped.height})", "", "| file | row | column | reason |",
                    "|---|---:|---|---|"]
            for f, r, c, why in self.skipped.head(20).iter_rows():
                out.append(f"| {Path(f).name} | {'' if r is None else r} | {c or ''} | {why} |")
            if self.skipped.height > 20:
                out.append(f"| ... | | | {self.skipped.height - 20} more |")
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def copy_images(image_files: Mapping[str, Path], images_dir: Path | str) -> int:
    """Copy content-addressed images into ``images_dir`` (atomic, skips names already there); returns copies.

    The bytes are re-hashed while copying so a file that changed since the import is refused, not stored
    under a name that no longer matches its content.
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    copied = 0
    for name, src in sorted(image_files.items()):
        dest = images_dir / name
        if dest.exists():
            continue
        data = Path(src).read_bytes()
        if hashlib.sha256(data).hexdigest() != name.split(".", 1)[0]:
            raise ImportValidationError([Issue(str(src), None, None, "image changed since it was imported "
                                                                     "(sha256 no longer matches)")])
        atomic_write_bytes(data, dest)
        copied += 1
    return copied


# ---------------------------------------------------------------------------------------- builders


def _trace_defaults(df: pl.DataFrame, run_id: str, collected_at: str) -> pl.DataFrame:
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


def _wide_traces(query_ids: pl.Series, model_ids: Sequence[str], quality: np.ndarray, cost: np.ndarray,
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
    return _trace_defaults(pl.concat(frames, how="diagonal"), run_id, collected_at)


def _models_frame(model_ids: Sequence[str], *, benchmark: str, source: str, added_at: str,
                  prices: Mapping[str, Mapping[str, float | None]] | None = None) -> pl.DataFrame:
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


def _source_meta(source_id: pl.Expr, extras: Sequence[str], side_features: Sequence[str] = ()) -> pl.Expr:
    """JSON ``{"source_id", "columns": {extra columns}, "side_features": [names]}``, built column-wise."""
    fields = [source_id.cast(pl.String).alias("source_id")]
    if extras:
        fields.append(pl.struct([pl.col(c) for c in extras]).alias("columns"))
    enc = pl.struct(fields).struct.json_encode()
    if side_features:
        enc = enc.str.strip_suffix("}") + pl.lit(',"side_features":' + json.dumps(list(side_features)) + "}")
    return enc


def _queries_frame(df: pl.DataFrame) -> pl.DataFrame:
    return conform(df, QUERIES, "queries")


def _log_cells(log: IssueLog, df: pl.DataFrame, name: str, col: str, mask: pl.Series, reason: str,
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


def _image_of(root: Path, candidates: Sequence[str]) -> tuple[Path | None, str | None]:
    """The first candidate that resolves inside ``root``; a refusal (escape) wins over 'not found'."""
    first_missing = None
    for rel in candidates:
        path, why = resolve_inside(root, rel)
        if path is not None:
            return path, None
        if why is not None and not why.startswith(NOT_FOUND):
            return None, why
        first_missing = first_missing or why
    return None, first_missing


def _hash_images(paths: Sequence[Path | None]) -> tuple[list[str], list[str], dict[str, Path]]:
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


# --------------------------------------------------------------------------------- 1. MMR-Bench CSV

_MODEL_SUFFIXES = ("_correct", "_cost", "_token", "_prediction")


def import_mmr_bench(csv_path: Path | str, *, image_root: Path | str | None = None,
                     benchmark: str = "mmr-bench", task_groups: Mapping[str, str] | None = None,
                     image_dirs: Mapping[str, str] | None = None, side_features: Sequence[str] = (),
                     on_error: str = "skip", run_id: str = "import",
                     collected_at: str | None = None) -> ImportResult:
    """Import an MMR-Bench style wide CSV (one row per query, ``<M>_correct`` / ``<M>_cost`` per model)."""
    path = Path(csv_path)
    name = str(path)
    log = IssueLog(on_error)
    overrides = _check_task_groups(task_groups)
    collected_at = collected_at or _now_iso()
    df = read_csv_strings(path, log)
    for col in ("dataset_idx", "question"):
        if col not in df.columns:
            log.fatal(name, None, col, f"required column missing; have {[c for c in df.columns if c != ROW]}")
    models = [c[: -len("_correct")] for c in df.columns if c.endswith("_correct") and len(c) > len("_correct")]
    missing_cost = [Issue(name, None, f"{m}_correct", f"model {m!r} has '{m}_correct' but no '{m}_cost' column")
                    for m in models if f"{m}_cost" not in df.columns]
    if missing_cost:
        raise ImportValidationError(missing_cost, "import refused: model column(s) missing")
    if not models:
        log.fatal(name, None, None, "no '<model>_correct' columns found: nothing to import")
    model_cols = {f"{m}{s}" for m in models for s in _MODEL_SUFFIXES}
    notes = [f"column {c!r} ends in '_cost' but has no '_correct' partner; kept as a plain column"
             for c in df.columns if c.endswith("_cost") and c not in model_cols]
    known = {"dataset_idx", "question", "answer", "answer_kind", "task", ROW}
    extras = [c for c in df.columns if c not in known and c not in model_cols]
    for sf in side_features:
        if sf not in extras:
            log.fatal(name, None, sf, f"declared side feature is not a free column of the file; free: {extras}")

    n = df.height
    row_bad = np.zeros(n, dtype=bool)
    idx = df["dataset_idx"].str.strip_chars()
    df = df.with_columns(idx.alias("dataset_idx"))
    raise_on_duplicates(idx, df[ROW], name, "dataset_idx")
    m = blank(idx)
    _log_cells(log, df, name, "dataset_idx", m, "empty dataset_idx", show=False)
    row_bad |= m.to_numpy()
    parts = df.select(pl.col("dataset_idx").str.extract_groups(r"^(.+)_([^_]+)$").alias("p")).to_series()
    dataset = parts.struct.field("1")
    number = parts.struct.field("2")
    m = ~blank(idx) & dataset.is_null()
    _log_cells(log, df, name, "dataset_idx", m, "expected '<Dataset>_<n>', got")
    row_bad |= m.to_numpy()
    m = blank(df["question"])
    _log_cells(log, df, name, "question", m, "empty question", show=False)
    row_bad |= m.to_numpy()
    if "answer_kind" in df.columns:
        m = (df["answer_kind"].is_not_null() & ~df["answer_kind"].is_in(list(ANSWER_KINDS))).fill_null(False)
        _log_cells(log, df, name, "answer_kind", m, f"answer_kind must be one of {ANSWER_KINDS}, got")
        row_bad |= m.to_numpy()

    k_n = len(models)
    quality = np.full((n, k_n), np.nan)
    cost = np.full((n, k_n), np.nan)
    tokens = np.full((n, k_n), np.nan) if any(f"{mm}_token" in df.columns for mm in models) else None
    cell_bad = np.zeros((n, k_n), dtype=bool)
    for k, mm in enumerate(models):
        qc, cc, tc = f"{mm}_correct", f"{mm}_cost", f"{mm}_token"
        qv, qbad = numeric_column(df, qc, booleans=True)
        _log_cells(log, df, name, qc, qbad, "non-numeric quality")
        out = (qv.is_not_null() & ((qv < 0) | (qv > 1))).fill_null(False)
        _log_cells(log, df, name, qc, out, "quality outside [0, 1]:")
        miss = qv.is_null() & ~qbad
        _log_cells(log, df, name, qc, miss, "missing value (no outcome for this model)", show=False)
        cv, cbad = numeric_column(df, cc)
        _log_cells(log, df, name, cc, cbad, "non-numeric cost")
        neg = (cv.is_not_null() & (cv < 0)).fill_null(False)
        _log_cells(log, df, name, cc, neg, "negative cost")
        cmiss = cv.is_null() & ~cbad
        _log_cells(log, df, name, cc, cmiss, "missing value (no cost for this model)", show=False)
        bad = qbad | out | miss | cbad | neg | cmiss
        if tokens is not None and tc in df.columns:
            tv, tbad = numeric_column(df, tc)
            _log_cells(log, df, name, tc, tbad, "non-numeric token count")
            tneg = (tv.is_not_null() & (tv < 0)).fill_null(False)
            _log_cells(log, df, name, tc, tneg, "negative token count")
            bad = bad | tbad | tneg
            tokens[:, k] = tv.fill_null(float("nan")).to_numpy()
        quality[:, k] = qv.fill_null(float("nan")).to_numpy()
        cost[:, k] = cv.fill_null(float("nan")).to_numpy()
        cell_bad[:, k] = bad.to_numpy()

    image_paths: list[Path | None] = [None] * n
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            log.fatal(str(root), None, None, "image root is not a directory")
        aliases = {**MMR_IMAGE_DIRS, **dict(image_dirs or {})}
        ds_l, num_l, rows_l = dataset.to_list(), number.to_list(), df[ROW].to_list()
        for i in np.flatnonzero(~row_bad):
            ds, num = ds_l[i], num_l[i]
            folders = list(dict.fromkeys([aliases.get(ds, ds), ds]))
            cands = [f"{f}/{num}{ext}" for f in folders for ext in IMAGE_EXTS]
            p, why = _image_of(root, cands)
            if p is None:
                log.add(name, rows_l[i], "dataset_idx", why if not why.startswith(NOT_FOUND)
                        else f"{NOT_FOUND}: {root / folders[0] / f'{num}.jpg'} (row skipped)")
                row_bad[i] = True
            image_paths[i] = p
    log.raise_if_failing()

    keep = ~row_bad
    img_names, img_shas, files = _hash_images([p for p, k in zip(image_paths, keep, strict=True) if k])
    dfk = df.with_columns(dataset.alias("__dataset")).filter(pl.Series(keep))
    ds_unique = dfk["__dataset"].unique().to_list()
    groups = {d: task_group_for(d, overrides) for d in ds_unique}
    qids = pl.Series("query_id", [query_id_for(benchmark, s) for s in dfk["dataset_idx"].to_list()])
    queries = dfk.select(
        qids,
        pl.lit(benchmark).alias("benchmark"),
        pl.col("__dataset").alias("dataset"),
        pl.col("__dataset").replace_strict(groups, return_dtype=pl.String).alias("task_group"),
        (pl.col("task") if "task" in dfk.columns else pl.col("__dataset")).alias("task"),
        pl.col("question"),
        (pl.col("answer").fill_null("") if "answer" in dfk.columns else pl.lit("")).alias("answer"),
        (pl.col("answer_kind").fill_null(_answer_kind_expr(pl.col("answer")))
         if "answer_kind" in dfk.columns else
         _answer_kind_expr(pl.col("answer") if "answer" in dfk.columns else pl.lit(""))).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        _source_meta(pl.col("dataset_idx"), extras, side_features).alias("source_meta"),
        pl.lit("").alias("official_split"),
    )
    preds = [dfk[f"{mm}_prediction"] if f"{mm}_prediction" in dfk.columns else None for mm in models]
    traces = _wide_traces(
        qids, models, quality[keep], cost[keep], ~cell_bad[keep], run_id=run_id, collected_at=collected_at,
        completion_tokens=None if tokens is None else tokens[keep], predictions=preds,
    )
    text_only = image_root is None
    if text_only:
        notes.append("no image root given: imported text-only (image_path = image_sha256 = '')")
    if tokens is not None:
        notes.append("'<model>_token' columns read as completion (output) tokens")
    return ImportResult(
        benchmark=benchmark, source=name, queries=_queries_frame(queries),
        models=_models_frame(models, benchmark=benchmark, source=name, added_at=collected_at),
        traces=traces, skipped=log.frame(), text_only=text_only, embeddings=None, image_files=files,
        cost_bounds=None, notes=notes,
    )


# ----------------------------------------------------------------------------- 2. VL-RouterBench


def _load_json(path: Path, log: IssueLog):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        log.fatal(str(path), None, None, f"not valid UTF-8 (byte {exc.start})")
    except json.JSONDecodeError as exc:
        log.fatal(str(path), None, None, f"invalid JSON ({exc.msg}, line {exc.lineno})")


def _read_model_index(folder: Path, log: IssueLog) -> tuple[list[str], dict[str, dict]]:
    """Model names in matrix-column order, and any prices given per model."""
    lst_path, idx_path = folder / "models.json", folder / "model_index.json"
    names: list[str] | None = None
    prices: dict[str, dict] = {}
    if lst_path.exists():
        raw = _load_json(lst_path, log)
        if not isinstance(raw, list):
            log.fatal(str(lst_path), None, None, "expected a JSON list of model names")
        names = []
        for i, item in enumerate(raw, start=1):
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, dict) and isinstance(item.get("name", item.get("model_id")), str):
                nm = item.get("name", item.get("model_id"))
                names.append(nm)
                prices[nm] = {k: item.get(k) for k in ("price_in_per_mtok", "price_out_per_mtok", "params_b")}
            else:
                log.fatal(str(lst_path), i, None, f"entry {item!r} is neither a name nor an object with 'name'")
    if idx_path.exists():
        raw = _load_json(idx_path, log)
        if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
            log.fatal(str(idx_path), None, None, "expected a JSON object {model name: column index}")
        cols = sorted(raw.values())
        if cols != list(range(len(raw))):
            log.fatal(str(idx_path), None, None, f"column indices must be 0..{len(raw) - 1}, each once; got "
                                                 f"{cols}")
        by_idx = sorted(raw, key=raw.__getitem__)
        if names is not None and names != by_idx:
            log.fatal(str(idx_path), None, None, f"disagrees with models.json ({by_idx} vs {names})")
        names = by_idx
    if names is None:
        log.fatal(str(folder), None, None, "no model index: expected models.json or model_index.json")
    seen: dict[str, int] = {}
    for i, nm in enumerate(names, start=1):
        if nm in seen:
            log.fatal(str(lst_path if lst_path.exists() else idx_path), i, None,
                      f"duplicate model name {nm!r} (also entry {seen[nm]})")
        seen[nm] = i
    return names, prices


def _parse_cost_bounds(obj, path: Path, datasets: set[str], log: IssueLog) -> dict[str, dict[str, float]]:
    name = str(path)

    def num(v, key: str, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            log.fatal(name, None, key, f"{what} must be a finite number, got {v!r}")
        return float(v)

    if not isinstance(obj, dict):
        log.fatal(name, None, None, "expected a JSON object")
    if "cmin" in obj and "cmax" in obj:
        lo, hi = obj["cmin"], obj["cmax"]
        if isinstance(lo, dict) and isinstance(hi, dict):
            if set(lo) != set(hi):
                log.fatal(name, None, "cmin", f"cmin and cmax name different datasets: {sorted(lo)} vs "
                                              f"{sorted(hi)}")
            bounds = {k: {"cmin": num(lo[k], k, "cmin"), "cmax": num(hi[k], k, "cmax")} for k in lo}
        else:
            bounds = {"*": {"cmin": num(lo, "cmin", "cmin"), "cmax": num(hi, "cmax", "cmax")}}
    else:
        bounds = {}
        for k, v in obj.items():
            if not isinstance(v, dict) or "cmin" not in v or "cmax" not in v:
                log.fatal(name, None, k, "expected {\"cmin\": .., \"cmax\": ..} for this dataset")
            bounds[k] = {"cmin": num(v["cmin"], k, "cmin"), "cmax": num(v["cmax"], k, "cmax")}
    for k, b in bounds.items():
        if k != "*" and k not in datasets:
            log.fatal(name, None, k, f"dataset {k!r} does not occur in meta.parquet ({sorted(datasets)})")
        if not 0 < b["cmin"] < b["cmax"]:
            log.fatal(name, None, k, f"need 0 < cmin < cmax (log2 of both is taken), got {b}")
    return bounds


def _read_splits(folder: Path, meta: pl.DataFrame, log: IssueLog, notes: list[str]) -> pl.Series | None:
    """Official split per meta row from SPLITS/*.jsonl ('' where none); None when there is no SPLITS folder."""
    sdir = folder / "SPLITS"
    if not sdir.is_dir():
        return None
    names = {"train.jsonl": "train", "dev.jsonl": "val", "val.jsonl": "val", "valid.jsonl": "val",
             "validation.jsonl": "val", "test.jsonl": "test"}
    frames = []
    for p in sorted(sdir.iterdir()):
        if p.name not in names:
            notes.append(f"SPLITS/{p.name} is not a recognised split file (train/dev/val/test .jsonl); ignored")
            continue
        t = read_jsonl(p, log)
        if t.height == 0:
            continue
        if "sample_id" not in t.columns:
            log.fatal(str(p), None, "sample_id", "column missing")
        frames.append(t.select(pl.col("sample_id").cast(pl.String).alias("sid"), pl.col(ROW).alias("row"),
                               pl.lit(names[p.name]).alias("split"), pl.lit(str(p)).alias("file")))
    if not frames:
        return pl.Series("official_split", [""] * meta.height)
    s = pl.concat(frames)
    dup = s.filter(pl.col("sid").is_duplicated())
    if dup.height:
        issues = []
        for sid, grp in dup.group_by("sid", maintain_order=True):
            where = [f"{Path(f).name} row {r}" for f, r in grp.select("file", "row").iter_rows()]
            f0, r0 = grp.row(0)[3], grp.row(0)[1]
            issues.append(Issue(f0, r0, "sample_id", f"sample_id {sid[0]!r} listed more than once: "
                                                     + ", ".join(where)))
        raise ImportValidationError(issues, "import refused: a sample is in more than one split row")
    unknown = s.join(meta.select(pl.col("sample_id").alias("sid")), on="sid", how="anti")
    for sid, row, _split, f in unknown.iter_rows():
        log.add(f, row, "sample_id", f"sample_id {sid!r} is not in meta.parquet")
    joined = meta.select(pl.col("sample_id").alias("sid")).join(
        s.select("sid", "split"), on="sid", how="left", maintain_order="left")
    return joined["split"].fill_null("").alias("official_split")


def _embedding_matrix(e: pl.DataFrame, path: Path, log: IssueLog) -> tuple[np.ndarray, np.ndarray]:
    """[M, D] float32 matrix of one embedding file and a row-usable mask."""
    name = str(path)
    if "embedding" in e.columns:
        s = e["embedding"]
        if not isinstance(s.dtype, (pl.List, pl.Array)) or not s.dtype.inner.is_numeric():
            log.fatal(name, None, "embedding", f"expected a list of floats, got {s.dtype}")
        if isinstance(s.dtype, pl.Array):
            s = s.arr.to_list()
        lens = s.list.len()
        mode = lens.drop_nulls().mode().sort()
        if not mode.len():
            log.fatal(name, None, "embedding", "no embedding rows")
        dim = int(mode[0])
        ok = (lens == dim).fill_null(False)
        for r, ln in zip(flagged_rows(e, ~ok), lens.filter(~ok).to_list(), strict=True):
            log.add(name, r, "embedding", f"embedding has {ln} values, the others have {dim}")
        filled = pl.select(pl.when(ok).then(s).otherwise(pl.lit([0.0] * dim))).to_series()
        mat = filled.cast(pl.List(pl.Float32)).list.to_array(dim).to_numpy().astype(np.float32, copy=False)
    else:
        dims = [c for c in e.columns if c not in ("sample_id", ROW)]
        bad = [c for c in dims if not e[c].dtype.is_numeric()]
        if bad or not dims:
            log.fatal(name, None, bad[0] if bad else None,
                      "expected 'sample_id' plus an 'embedding' list column or one numeric column per dim")
        mat = e.select(dims).to_numpy().astype(np.float32)
        ok = pl.Series([True] * e.height)
    finite = np.isfinite(mat).all(axis=1)
    for r in flagged_rows(e, ~finite & ok.to_numpy()):
        log.add(name, r, "embedding", "embedding has null or non-finite values")
    return mat, ok.to_numpy() & finite


def _read_embeddings(folder: Path, meta: pl.DataFrame, log: IssueLog,
                     notes: list[str]) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
    """Precomputed embeddings aligned to meta rows, and the meta rows that lack a usable one."""
    edir = folder / "EMBEDDINGS"
    missing = np.zeros(meta.height, dtype=bool)
    if not edir.is_dir():
        return None, missing
    out: dict[str, np.ndarray] = {}
    for modality in ("text", "vision"):
        mdir = edir / modality
        if not mdir.is_dir():
            continue
        for p in sorted(mdir.glob("*.parquet")):
            e = read_table(p, log)
            if "sample_id" not in e.columns:
                log.fatal(str(p), None, "sample_id", "column missing")
            e = e.with_columns(pl.col("sample_id").cast(pl.String))
            raise_on_duplicates(e["sample_id"], e[ROW], str(p), "sample_id")
            mat, usable = _embedding_matrix(e, p, log)
            pos = pl.DataFrame({"sample_id": e["sample_id"], "pos": np.arange(e.height)}).filter(
                pl.Series(usable))
            joined = meta.select("sample_id", ROW).join(pos, on="sample_id", how="left", maintain_order="left")
            absent = joined["pos"].is_null()
            if absent.any():
                rel = p.relative_to(folder)
                rows = flagged_rows(joined, absent)
                log.add_rows(str(folder / "meta.parquet"), rows, "sample_id",
                             [f"sample {s!r} has no usable embedding in {rel}"
                              for s in joined["sample_id"].filter(absent).to_list()])
                missing |= absent.to_numpy()
            extra = e.height - pos.join(meta.select("sample_id"), on="sample_id", how="semi").height
            if extra > 0:
                notes.append(f"{p.relative_to(folder)}: {extra} row(s) for samples not in meta.parquet ignored")
            take = joined["pos"].fill_null(0).to_numpy()
            out[f"{modality}:{p.stem}"] = mat[take] if mat.shape[0] else np.zeros((meta.height, 0), np.float32)
    return (out or None), missing


def import_vl_routerbench(folder: Path | str, *, benchmark: str = "vl-routerbench",
                          image_root: Path | str | None = None, load_images: bool = True,
                          task_groups: Mapping[str, str] | None = None, on_error: str = "skip",
                          run_id: str = "import", collected_at: str | None = None) -> ImportResult:
    """Import a VL-RouterBench style folder of matrices (vectorised: no loop over the N x K pairs).

    ``image_root`` (default: the folder) is where ``meta.image_path`` is resolved; ``load_images=False``
    ignores image paths (text-only, e.g. when only precomputed vision embeddings are shipped).
    """
    folder = Path(folder)
    log = IssueLog(on_error)
    overrides = _check_task_groups(task_groups)
    collected_at = collected_at or _now_iso()
    notes: list[str] = []
    y_path, c_path, m_path = folder / "Y.npz", folder / "C.npy", folder / "meta.parquet"
    for p in (y_path, c_path, m_path):
        if not p.exists():
            log.fatal(str(p), None, None, "required file missing")
    models, prices = _read_model_index(folder, log)
    try:
        with np.load(y_path, allow_pickle=False) as z:
            if "Y" not in z.files:
                log.fatal(str(y_path), None, "Y", f"array 'Y' missing; the archive holds {z.files}")
            y = z["Y"]
        c = np.load(c_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.fatal(str(y_path), None, None, f"cannot read the matrices ({exc})")
    meta = read_table(m_path, log)
    name_m = str(m_path)
    for col in ("sample_id", "dataset"):
        if col not in meta.columns:
            log.fatal(name_m, None, col, f"required column missing; have {[x for x in meta.columns if x != ROW]}")
    if y.ndim != 2 or c.shape != y.shape:
        log.fatal(str(c_path), None, None, f"C has shape {c.shape} but Y has {y.shape}; both must be N x K")
    if y.shape[0] != meta.height:
        log.fatal(str(y_path), None, None, f"Y has {y.shape[0]} rows but meta.parquet has {meta.height}")
    if y.shape[1] != len(models):
        log.fatal(str(y_path), None, None, f"Y has {y.shape[1]} columns but the model index names {len(models)}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or not np.issubdtype(c.dtype, np.number):
        log.fatal(str(y_path), None, None, f"Y and C must be numeric, got {y.dtype} and {c.dtype}")

    meta = meta.with_columns(pl.col("sample_id").cast(pl.String), pl.col("dataset").cast(pl.String))
    n = meta.height
    row_bad = np.zeros(n, dtype=bool)
    raise_on_duplicates(meta["sample_id"], meta[ROW], name_m, "sample_id")
    for col, why in (("sample_id", "empty sample_id"), ("dataset", "empty dataset")):
        m = blank(meta[col])
        _log_cells(log, meta, name_m, col, m, why, show=False)
        row_bad |= m.to_numpy()
    if "question" in meta.columns:
        m = blank(meta["question"])
        _log_cells(log, meta, name_m, "question", m, "empty question", show=False)
        row_bad |= m.to_numpy()
    else:
        notes.append("meta.parquet has no 'question' column: questions imported as ''")

    # outcome cells, vectorised over the whole matrix
    yf = y.astype(np.float64)
    cf = c.astype(np.float64)
    q_bad = ~np.isfinite(yf) | (yf < 0) | (yf > 1)
    c_nonnum = ~np.isfinite(cf)
    c_neg = np.isfinite(cf) & (cf < 0)
    sids = meta["sample_id"].to_list()
    for arr, fpath, why in ((q_bad, y_path, "quality outside [0, 1]:"), (c_nonnum, c_path, "non-numeric cost:"),
                            (c_neg, c_path, "negative cost:")):
        rr, kk = np.nonzero(arr)
        vals = (yf if fpath == y_path else cf)[rr, kk]
        for r, k, v in zip(rr.tolist(), kk.tolist(), vals.tolist(), strict=True):
            log.add(str(fpath), r + 1, models[k], f"{why} {v!r} (sample_id={sids[r]!r})")
    cell_bad = q_bad | c_nonnum | c_neg

    # official split: SPLITS/ wins over meta.split
    split = _read_splits(folder, meta, log, notes)
    if "split" in meta.columns:
        raw = meta["split"].cast(pl.String).str.strip_chars().str.to_lowercase()
        norm = raw.replace_strict(SPLIT_ALIASES, default=None, return_dtype=pl.String)
        if split is None:
            bad = raw.is_not_null() & (raw != "") & norm.is_null()
            _log_cells(log, meta, name_m, "split", bad, f"split must be one of {sorted(SPLIT_ALIASES)}, got")
            row_bad |= bad.to_numpy()
            split = norm.fill_null("").alias("official_split")
        else:
            differ = int(((norm.fill_null("") != split) & (split != "")).sum())
            if differ:
                notes.append(f"meta.parquet 'split' disagrees with SPLITS/ for {differ} sample(s); SPLITS/ used")
    if split is None:
        split = pl.Series("official_split", [""] * n)
        notes.append("no official split (no SPLITS/ folder and no 'split' column)")

    embeddings, no_emb = _read_embeddings(folder, meta, log, notes)
    row_bad |= no_emb

    image_paths: list[Path | None] = [None] * n
    has_img_col = "image_path" in meta.columns and load_images
    if has_img_col:
        root = Path(image_root) if image_root is not None else folder
        rels = meta["image_path"].cast(pl.String).to_list()
        rows = meta[ROW].to_list()
        for i in np.flatnonzero(~row_bad):
            rel = rels[i]
            if rel is None or not rel.strip():
                continue  # a text-only sample inside the benchmark
            p, why = resolve_inside(root, rel)
            if p is None:
                log.add(name_m, rows[i], "image_path", why)
                row_bad[i] = True
            image_paths[i] = p
    elif "image_path" in meta.columns:
        notes.append("load_images=False: meta.image_path ignored, imported text-only")
    log.raise_if_failing()

    keep = ~row_bad
    kidx = np.flatnonzero(keep)
    img_names, img_shas, files = _hash_images([image_paths[i] for i in kidx])
    mk = meta.with_columns(split).filter(pl.Series(keep))
    groups = {d: task_group_for(d, overrides) for d in mk["dataset"].unique().to_list()}
    qids = pl.Series("query_id", [query_id_for(benchmark, s) for s in mk["sample_id"].to_list()])
    known = {"sample_id", "dataset", "split", "task", "question", "answer", "answer_kind", "image_path", ROW}
    extras = [col for col in meta.columns if col not in known]
    answer = pl.col("answer").cast(pl.String).fill_null("") if "answer" in mk.columns else pl.lit("")
    queries = mk.select(
        qids,
        pl.lit(benchmark).alias("benchmark"),
        pl.col("dataset"),
        pl.col("dataset").replace_strict(groups, return_dtype=pl.String).alias("task_group"),
        (pl.col("task").cast(pl.String) if "task" in mk.columns else pl.col("dataset")).alias("task"),
        (pl.col("question").cast(pl.String) if "question" in mk.columns else pl.lit("")).alias("question"),
        answer.alias("answer"),
        (pl.col("answer_kind").cast(pl.String).fill_null(_answer_kind_expr(answer))
         if "answer_kind" in mk.columns else _answer_kind_expr(answer)).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        _source_meta(pl.col("sample_id"), extras).alias("source_meta"),
        pl.col("official_split"),
    )
    traces = _wide_traces(qids, models, yf[kidx], cf[kidx], ~cell_bad[kidx], run_id=run_id,
                          collected_at=collected_at)
    if embeddings is not None:
        embeddings = {k: v[kidx] for k, v in embeddings.items()}
    bounds_path = folder / "cost_bounds.json"
    if bounds_path.exists():
        bounds = _parse_cost_bounds(_load_json(bounds_path, log), bounds_path, set(meta["dataset"].to_list()), log)
    else:
        ck = np.where(cell_bad[kidx], np.nan, cf[kidx])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column -> NaN mean, dropped below
            means = np.nanmean(ck, axis=0) if ck.size else np.array([])
        means = means[np.isfinite(means) & (means > 0)]
        bounds = {"*": {"cmin": float(means.min()), "cmax": float(means.max())}} if means.size else None
        notes.append("no cost_bounds.json: cmin/cmax computed as min/max over models of mean cost per query")
    text_only = not any(img_names)
    return ImportResult(
        benchmark=benchmark, source=str(folder), queries=_queries_frame(queries),
        models=_models_frame(models, benchmark=benchmark, source=str(folder), added_at=collected_at,
                             prices=prices),
        traces=traces, skipped=log.frame(), text_only=text_only, embeddings=embeddings, image_files=files,
        cost_bounds=bounds, notes=notes,
    )


# ------------------------------------------------------------------------------------ 3. long format

_LONG_FILES = {"queries": "queries", "traces": "traces", "models": "models"}
_EXPORT_FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}


def export_long(queries: pl.DataFrame, traces: pl.DataFrame, out_dir: Path | str, *,
                models: pl.DataFrame | None = None, fmt: str = "parquet") -> dict[str, Path]:
    """Write ``queries``, ``traces`` (and ``models``) as conformed files that `import_long_dir` reads back
    to identical tables. ``fmt`` is ``parquet`` (exact, default) or ``jsonl``."""
    if fmt not in _EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_EXPORT_FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"queries": conform(queries, QUERIES, "queries"), "traces": conform(traces, TRACES, "traces")}
    if models is not None:
        tables["models"] = conform(models, MODELS, "models")
    written = {}
    for name, df in tables.items():
        path = out_dir / f"{_LONG_FILES[name]}{_EXPORT_FORMATS[fmt]}"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=out_dir)
        os.close(fd)
        try:
            if fmt == "parquet":
                df.write_parquet(tmp, compression="zstd")
            else:
                df.write_ndjson(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written[name] = path
    return written


def _find_long_file(folder: Path, stem: str) -> Path | None:
    for ext in (".parquet", ".jsonl", ".ndjson", ".csv"):
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    return None


def import_long_dir(folder: Path | str, **kwargs) -> ImportResult:
    """`import_long` on a folder written by `export_long` (queries.*, traces.*, optional models.*)."""
    folder = Path(folder)
    q, t = _find_long_file(folder, "queries"), _find_long_file(folder, "traces")
    if q is None or t is None:
        raise ImportValidationError([Issue(str(folder), None, None,
                                           "expected queries.<parquet|jsonl|csv> and traces.<...> files")])
    return import_long(t, q, models_path=_find_long_file(folder, "models"), **kwargs)


def _text_col(df: pl.DataFrame, col: str) -> pl.Expr:
    return pl.col(col) if df.schema[col] == pl.String else pl.col(col).cast(pl.String)


def _long_queries(q: pl.DataFrame, name: str, benchmark: str, overrides: dict[str, str],
                  images_dir: Path | None, log: IssueLog) -> tuple[pl.DataFrame, np.ndarray]:
    for col in ("query_id", "question"):
        if col not in q.columns:
            log.fatal(name, None, col, f"required column missing; have {[c for c in q.columns if c != ROW]}")
    q = q.with_columns(_text_col(q, "query_id").alias("query_id"), _text_col(q, "question").alias("question"))
    raise_on_duplicates(q["query_id"], q[ROW], name, "query_id")
    bad = np.zeros(q.height, dtype=bool)
    for col, why in (("query_id", "empty query_id"), ("question", "empty question")):
        m = blank(q[col])
        _log_cells(log, q, name, col, m, why, show=False)
        bad |= m.to_numpy()
    add = []
    if "benchmark" not in q.columns:
        add.append(pl.lit(benchmark).alias("benchmark"))
    if "dataset" not in q.columns:
        add.append(pl.lit("").alias("dataset"))
    q = q.with_columns(add) if add else q
    add = []
    if "task_group" not in q.columns:
        ds = q["dataset"].cast(pl.String).fill_null("").unique().to_list()
        groups = {d: task_group_for(d, overrides) for d in ds}
        add.append(pl.col("dataset").cast(pl.String).fill_null("")
                   .replace_strict(groups, return_dtype=pl.String).alias("task_group"))
    if "task" not in q.columns:
        add.append(pl.col("dataset").alias("task"))
    if "answer" not in q.columns:
        add.append(pl.lit("").alias("answer"))
    q = q.with_columns(add) if add else q
    defaults = {"answer_kind": _answer_kind_expr(pl.col("answer")), "image_path": pl.lit(""),
                "image_sha256": pl.lit(""), "source_meta": pl.lit("{}"), "official_split": pl.lit("")}
    add = [e.alias(c) for c, e in defaults.items() if c not in q.columns]
    q = q.with_columns(add) if add else q
    checks = (("task_group", TASK_GROUPS), ("answer_kind", ANSWER_KINDS))
    for col, allowed in checks:
        s = q[col].cast(pl.String)
        m = (s.is_not_null() & ~s.is_in(list(allowed))).fill_null(False)
        _log_cells(log, q, name, col, m, f"must be one of {allowed}, got")
        bad |= m.to_numpy()
    s = q["official_split"].cast(pl.String)
    norm = s.str.to_lowercase().replace_strict({**SPLIT_ALIASES, "": ""}, default=None, return_dtype=pl.String)
    m = (s.is_not_null() & norm.is_null()).fill_null(False)
    _log_cells(log, q, name, "official_split", m, f"must be one of {sorted(SPLIT_ALIASES)} or '', got")
    bad |= m.to_numpy()
    if (norm.fill_null("") != s.fill_null("")).any():  # only rewrite when an alias (e.g. dev) was used
        q = q.with_columns(pl.when(pl.Series(m)).then(s).otherwise(norm).alias("official_split"))
    metas = q["source_meta"].cast(pl.String).to_list()
    for i, txt in enumerate(metas):
        if txt is None:
            continue
        try:
            json.loads(txt)
        except json.JSONDecodeError as exc:
            log.add(name, q[ROW][i], "source_meta", f"not valid JSON ({exc.msg})")
            bad[i] = True
    paths = q["image_path"].cast(pl.String).fill_null("").to_list()
    shas = q["image_sha256"].cast(pl.String).fill_null("").to_list()
    rows = q[ROW].to_list()
    for i, rel in enumerate(paths):
        if not rel or bad[i]:
            continue
        if images_dir is None:
            why = unsafe_path_reason(rel)
            if why:
                log.add(name, rows[i], "image_path", why)
                bad[i] = True
            continue
        p, why = resolve_inside(images_dir, rel)
        if p is None:
            log.add(name, rows[i], "image_path", why)
            bad[i] = True
        elif shas[i] and sha256_file(p) != shas[i]:
            log.add(name, rows[i], "image_sha256", f"does not match the sha256 of {p.name}")
            bad[i] = True
    return q, bad


# numeric trace columns and their lower bound (quality is also capped at 1)
_LONG_NUMERIC = {"quality": 0.0, "cost_usd": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0,
                 "image_tokens": 0.0, "latency_ms": 0.0, "attempt": 0.0}


def _long_traces(t: pl.DataFrame, name: str, log: IssueLog) -> tuple[pl.DataFrame, np.ndarray]:
    for col in ("query_id", "model_id", "quality", "cost_usd"):
        if col not in t.columns:
            log.fatal(name, None, col, f"required column missing; have {[c for c in t.columns if c != ROW]}")
    t = t.with_columns(_text_col(t, "query_id").alias("query_id"), _text_col(t, "model_id").alias("model_id"))
    bad = np.zeros(t.height, dtype=bool)
    for col in ("query_id", "model_id"):
        m = blank(t[col])
        _log_cells(log, t, name, col, m, f"empty {col}", show=False)
        bad |= m.to_numpy()
    status = t["status"].cast(pl.String) if "status" in t.columns else pl.Series(["ok"] * t.height)
    if "status" in t.columns:
        m = (~status.is_in(list(TRACE_STATUSES))).fill_null(True)
        _log_cells(log, t, name, "status", m, f"status must be one of {TRACE_STATUSES}, got")
        bad |= m.to_numpy()
    is_ok = (status == "ok").fill_null(False)
    repl = []
    for col, lo in _LONG_NUMERIC.items():
        if col not in t.columns:
            continue
        v, nb = numeric_column(t, col, booleans=col == "quality")
        what = "quality" if col == "quality" else "cost" if col == "cost_usd" else "value"
        _log_cells(log, t, name, col, nb, f"non-numeric {what}")
        if col == "quality":
            out = (v.is_not_null() & ((v < 0) | (v > 1))).fill_null(False)
            _log_cells(log, t, name, col, out, "quality outside [0, 1]:")
        else:
            out = (v.is_not_null() & (v < lo)).fill_null(False)
            _log_cells(log, t, name, col, out, f"negative {what}" if lo == 0 else f"{col} below {lo:g}:")
        m = nb | out
        if col in ("quality", "cost_usd"):
            miss = v.is_null() & ~nb & is_ok
            _log_cells(log, t, name, col, miss, f"missing {col} for an ok trace", show=False)
            m = m | miss
        bad |= m.to_numpy()
        if t.schema[col] == pl.String:
            repl.append(v.alias(col))
    if "correct" in t.columns and t.schema["correct"] != pl.Boolean:
        s = t["correct"].cast(pl.String).str.strip_chars().str.to_lowercase()
        val = s.replace_strict({"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False},
                               default=None, return_dtype=pl.Boolean)
        m = (s.is_not_null() & (s != "") & val.is_null()).fill_null(False)
        _log_cells(log, t, name, "correct", m, "correct must be true/false, got")
        bad |= m.to_numpy()
        repl.append(val.alias("correct"))
    t = t.with_columns(repl) if repl else t
    key = ["query_id", "model_id"] + (["attempt"] if "attempt" in t.columns else [])
    dup = t.select(*key, ROW).filter(pl.struct(key).is_duplicated())
    if dup.height:
        issues = []
        for _k, grp in dup.group_by(key, maintain_order=True):
            rws = sorted(grp[ROW].to_list())
            for later in rws[1:]:
                issues.append(Issue(name, later, "query_id", f"duplicate trace {tuple(grp.row(0)[:-1])!r}: also "
                                                              f"at row {rws[0]}"))
        raise ImportValidationError(issues, f"import refused: duplicate traces in {name}")
    return t, bad


def import_long(traces_path: Path | str, queries_path: Path | str, *, models_path: Path | str | None = None,
                benchmark: str = "import", images_dir: Path | str | None = None,
                task_groups: Mapping[str, str] | None = None, on_error: str = "skip", run_id: str = "import",
                collected_at: str | None = None) -> ImportResult:
    """Import long-format traces + queries (+ models). Present columns are kept verbatim, missing ones
    defaulted, so `export_long` -> `import_long` gives identical tables.

    ``images_dir`` (the warehouse images dir the ``image_path`` values are relative to) turns on the image
    checks: file present inside it, sha256 equal to ``image_sha256``. Without it only unsafe paths are refused.
    """
    tpath, qpath = Path(traces_path), Path(queries_path)
    log = IssueLog(on_error)
    overrides = _check_task_groups(task_groups)
    collected_at = collected_at or _now_iso()
    notes: list[str] = []
    q, q_bad = _long_queries(read_table(qpath, log), str(qpath), benchmark, overrides,
                             None if images_dir is None else Path(images_dir), log)
    t, t_bad = _long_traces(read_table(tpath, log), str(tpath), log)

    model_ids_known: list[str] | None = None
    models_df = None
    if models_path is not None:
        mpath = Path(models_path)
        mdf = read_table(mpath, log)
        if "model_id" not in mdf.columns:
            log.fatal(str(mpath), None, "model_id", "required column missing")
        mdf = mdf.with_columns(_text_col(mdf, "model_id").alias("model_id"))
        raise_on_duplicates(mdf["model_id"], mdf[ROW], str(mpath), "model_id")
        defaults = {"backend": pl.lit("import"), "endpoint": pl.lit(""),
                    "price_in_per_mtok": pl.lit(float("nan")), "price_out_per_mtok": pl.lit(float("nan")),
                    "params_b": pl.lit(None, dtype=pl.Float64), "added_at": pl.lit(collected_at),
                    "active": pl.lit(True), "simulated": pl.lit(False),
                    "description": pl.lit(f"imported from {benchmark} ({mpath.name})")}
        add = [e.alias(c) for c, e in defaults.items() if c not in mdf.columns]
        models_df = mdf.with_columns(add) if add else mdf
        # an unknown price is NaN by contract; JSON cannot hold NaN and writes null, so map it back
        models_df = models_df.with_columns(pl.col(c).cast(pl.Float64, strict=False).fill_null(float("nan"))
                                           for c in ("price_in_per_mtok", "price_out_per_mtok"))
        model_ids_known = models_df["model_id"].to_list()

    qrows = q.select("query_id", ROW)
    good_q = qrows.filter(pl.Series(~q_bad))["query_id"]
    skipped_q = dict(qrows.filter(pl.Series(q_bad)).iter_rows())
    orphan = (~t["query_id"].is_in(good_q.implode()) & ~pl.Series(t_bad)).fill_null(False)
    for qid, row in t.filter(orphan).select("query_id", ROW).iter_rows():  # only the orphaned rows
        if qid in skipped_q:
            log.add(str(tpath), row, "query_id", f"query {qid!r} was skipped ({qpath.name} row {skipped_q[qid]})")
        else:
            log.add(str(tpath), row, "query_id", f"query_id {qid!r} is not in {qpath.name}")
    t_bad |= orphan.to_numpy()
    if model_ids_known is not None:
        m = ~t["model_id"].is_in(model_ids_known) & ~pl.Series(t_bad)
        _log_cells(log, t, str(tpath), "model_id", m.fill_null(False), "model_id not in the models file:")
        t_bad |= m.fill_null(False).to_numpy()
    log.raise_if_failing()

    queries = q.filter(pl.Series(~q_bad)).drop(ROW)
    traces = _trace_defaults(t.filter(pl.Series(~t_bad)).drop(ROW), run_id, collected_at)
    if models_df is None:
        ids = traces["model_id"].unique(maintain_order=True).to_list()
        models = _models_frame(ids, benchmark=benchmark, source=str(tpath), added_at=collected_at)
        notes.append("no models file: models derived from traces.model_id, token prices unknown (NaN)")
    else:
        models = conform(models_df.drop(ROW), MODELS, "models")
    paths = queries["image_path"].cast(pl.String).fill_null("")
    text_only = bool((paths == "").all())
    files: dict[str, Path] = {}
    if images_dir is not None:
        files = {p: Path(images_dir) / p for p in paths.to_list() if p}
    return ImportResult(
        benchmark=benchmark, source=str(tpath), queries=_queries_frame(queries), models=models, traces=traces,
        skipped=log.frame(), text_only=text_only, embeddings=None, image_files=files, cost_bounds=None,
        notes=notes,
    )


# ------------------------------------------------------------------------------- 4. own query set


def import_custom_queries(jsonl_path: Path | str, image_folder: Path | str | None = None, *,
                          benchmark: str = "custom", images_dir: Path | str | None = None,
                          task_groups: Mapping[str, str] | None = None,
                          on_error: str = "skip") -> ImportResult:
    """Import our own JSONL query set ``{id, image, question, answer, answer_kind, dataset, task_group}``.

    ``image`` is relative to ``image_folder``; a row without ``image`` is text-only. With ``images_dir``
    the images are copied there (content-addressed) once validation passed; otherwise call
    ``result.copy_images(images_dir)``. No traces: the collector produces them later.
    """
    path = Path(jsonl_path)
    name = str(path)
    log = IssueLog(on_error)
    overrides = _check_task_groups(task_groups)
    df = read_jsonl(path, log)
    for col in ("id", "question", "answer"):
        if col not in df.columns:
            log.fatal(name, None, col, f"required field missing; have {[c for c in df.columns if c != ROW]}")
    df = df.with_columns(_text_col(df, c).alias(c) for c in ("id", "question", "answer"))
    raise_on_duplicates(df["id"], df[ROW], name, "id")
    bad = np.zeros(df.height, dtype=bool)
    for col, why in (("id", "empty id"), ("question", "empty question")):
        m = blank(df[col])
        _log_cells(log, df, name, col, m, why, show=False)
        bad |= m.to_numpy()
    m = df["answer"].is_null()
    _log_cells(log, df, name, "answer", m, "missing answer (needed to score model answers)", show=False)
    bad |= m.to_numpy()
    if "dataset" not in df.columns:
        df = df.with_columns(pl.lit(benchmark).alias("dataset"))
    df = df.with_columns(_text_col(df, "dataset").fill_null(benchmark).alias("dataset"))
    for col, allowed in (("task_group", TASK_GROUPS), ("answer_kind", ANSWER_KINDS)):
        if col in df.columns:
            s = df[col].cast(pl.String)
            m = (s.is_not_null() & ~s.is_in(list(allowed))).fill_null(False)
            _log_cells(log, df, name, col, m, f"must be one of {allowed}, got")
            bad |= m.to_numpy()
    split = None
    if "official_split" in df.columns:
        s = df["official_split"].cast(pl.String).str.to_lowercase()
        split = s.replace_strict({**SPLIT_ALIASES, "": ""}, default=None, return_dtype=pl.String)
        m = (s.is_not_null() & split.is_null()).fill_null(False)
        _log_cells(log, df, name, "official_split", m, f"must be one of {sorted(SPLIT_ALIASES)}, got")
        bad |= m.to_numpy()

    image_paths: list[Path | None] = [None] * df.height
    if "image" in df.columns:
        rels = df["image"].cast(pl.String).to_list()
        rows = df[ROW].to_list()
        if image_folder is None and any(r and r.strip() for r in rels):
            log.fatal(name, None, "image", "rows reference images but no image folder was given")
        for i, rel in enumerate(rels):
            if bad[i] or rel is None or not rel.strip():
                continue
            p, why = resolve_inside(Path(image_folder), rel)
            if p is None:
                log.add(name, rows[i], "image", why)
                bad[i] = True
            image_paths[i] = p
    log.raise_if_failing()

    keep = ~bad
    img_names, img_shas, files = _hash_images([p for p, k in zip(image_paths, keep, strict=True) if k])
    dk = df.filter(pl.Series(keep))
    groups = {d: task_group_for(d, overrides) for d in dk["dataset"].unique().to_list()}
    known = {"id", "image", "question", "answer", "answer_kind", "dataset", "task_group", "task",
             "official_split", ROW}
    extras = [c for c in df.columns if c not in known]
    tg_default = pl.col("dataset").replace_strict(groups, return_dtype=pl.String)
    queries = dk.select(
        pl.Series("query_id", [query_id_for(benchmark, s) for s in dk["id"].to_list()]),
        pl.lit(benchmark).alias("benchmark"),
        pl.col("dataset"),
        (pl.col("task_group").cast(pl.String).fill_null(tg_default) if "task_group" in dk.columns
         else tg_default).alias("task_group"),
        (pl.col("task").cast(pl.String).fill_null(pl.col("dataset")) if "task" in dk.columns
         else pl.col("dataset")).alias("task"),
        pl.col("question"),
        pl.col("answer"),
        (pl.col("answer_kind").cast(pl.String).fill_null(_answer_kind_expr(pl.col("answer")))
         if "answer_kind" in dk.columns else _answer_kind_expr(pl.col("answer"))).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        _source_meta(pl.col("id"), extras).alias("source_meta"),
        (split.filter(pl.Series(keep)).fill_null("") if split is not None
         else pl.lit("")).alias("official_split"),
    )
    result = ImportResult(
        benchmark=benchmark, source=name, queries=_queries_frame(queries),
        models=pl.DataFrame(schema=MODELS), traces=pl.DataFrame(schema=TRACES), skipped=log.frame(),
        text_only=not any(img_names), embeddings=None, image_files=files, cost_bounds=None,
        notes=[] if any(img_names) else ["no images: text-only query set"],
    )
    if images_dir is not None:
        n = result.copy_images(images_dir)
        result.notes.append(f"{n} image(s) copied into {images_dir}")
    return result


# ----------------------------------------------------------------------------------------- dispatch


def import_benchmark(path: Path | str, fmt: str | None = None, **kwargs) -> ImportResult:
    """Pick the importer from ``fmt`` (mmr-bench | vl-routerbench | long | custom) or from the path's shape:
    a folder with Y.npz -> vl-routerbench, a folder with traces.* -> long, *.csv -> mmr-bench,
    *.jsonl -> custom. Keyword arguments go to the importer."""
    path = Path(path)
    if fmt is None:
        if path.is_dir() and (path / "Y.npz").exists():
            fmt = "vl-routerbench"
        elif path.is_dir() and _find_long_file(path, "traces") is not None:
            fmt = "long"
        elif path.suffix.lower() == ".csv":
            fmt = "mmr-bench"
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            fmt = "custom"
        else:
            raise ValueError(f"{path}: cannot tell the format; pass fmt= one of mmr-bench, vl-routerbench, "
                             "long, custom")
    if fmt == "mmr-bench":
        return import_mmr_bench(path, **kwargs)
    if fmt == "vl-routerbench":
        return import_vl_routerbench(path, **kwargs)
    if fmt == "long":
        return import_long_dir(path, **kwargs)
    if fmt == "custom":
        return import_custom_queries(path, **kwargs)
    raise ValueError(f"unknown format {fmt!r}; expected mmr-bench, vl-routerbench, long or custom")

