"""MMR-Bench CSV importer (`import_mmr_bench`): one wide row per query, two columns per model.

Format: ``dataset_idx`` (``<Dataset>_<n>``), ``question``, ``answer``, and per model M ``M_correct`` (0/1,
true/false or a quality in [0, 1]) and ``M_cost`` (USD); optional ``M_token`` (read as the answer's completion
tokens) and ``M_prediction``. Optional ``answer_kind``, ``task`` columns are used; every other column is kept
in ``source_meta["columns"]`` (as text), and the ones named in ``side_features`` are listed in
``source_meta["side_features"]`` (categorical side features). Images (when ``images`` is given) are
``<root>/<Dataset>/<n>.jpg`` (``.jpeg/.png/.webp`` also tried; ``SEEDBench2_Plus`` lives in
``SEEDBenchv2Plus/`` as published; ``image_dirs`` adds aliases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.common import (
    IMAGE_EXTS,
    ImportResult,
    answer_kind_expr,
    check_task_groups,
    hash_images,
    image_of,
    log_cells,
    models_frame,
    now_iso,
    queries_frame,
    query_id_for,
    source_meta,
    task_group_for,
    wide_traces,
)
from collectors.importing.validation import (
    NOT_FOUND,
    ROW,
    ImportLimits,
    ImportValidationError,
    Issue,
    IssueLog,
    blank,
    numeric_column,
    raise_on_duplicates,
    read_csv_strings,
    refuse_no_rows,
)
from warehouse.vocabulary import ANSWER_KINDS

# dataset_idx prefix -> image folder name, where the published MMR-Bench layout differs from the prefix.
MMR_IMAGE_DIRS: dict[str, str] = {"SEEDBench2_Plus": "SEEDBenchv2Plus"}

_MODEL_SUFFIXES = ("_correct", "_cost", "_token", "_prediction")


def _model_columns(df: pl.DataFrame, name: str, log: IssueLog,
                   side_features: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(models, free columns kept in source_meta, notes); structural problems refuse the import."""
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
    return models, extras, notes


def _row_checks(df: pl.DataFrame, name: str,
                log: IssueLog) -> tuple[pl.DataFrame, pl.Series, pl.Series, np.ndarray]:
    """Split ``dataset_idx`` into (dataset, number) and flag the rows that cannot be imported at all."""
    row_bad = np.zeros(df.height, dtype=bool)
    idx = df["dataset_idx"].str.strip_chars()
    df = df.with_columns(idx.alias("dataset_idx"))
    raise_on_duplicates(idx, df[ROW], name, "dataset_idx")
    m = blank(idx)
    log_cells(log, df, name, "dataset_idx", m, "empty dataset_idx", show=False)
    row_bad |= m.to_numpy()
    parts = df.select(pl.col("dataset_idx").str.extract_groups(r"^(.+)_([^_]+)$").alias("p")).to_series()
    dataset = parts.struct.field("1")
    number = parts.struct.field("2")
    m = ~blank(idx) & dataset.is_null()
    log_cells(log, df, name, "dataset_idx", m, "expected '<Dataset>_<n>', got")
    row_bad |= m.to_numpy()
    m = blank(df["question"])
    log_cells(log, df, name, "question", m, "empty question", show=False)
    row_bad |= m.to_numpy()
    if "answer_kind" in df.columns:
        m = (df["answer_kind"].is_not_null() & ~df["answer_kind"].is_in(list(ANSWER_KINDS))).fill_null(False)
        log_cells(log, df, name, "answer_kind", m, f"answer_kind must be one of {ANSWER_KINDS}, got")
        row_bad |= m.to_numpy()
    return df, dataset, number, row_bad


def _model_cells(df: pl.DataFrame, name: str, log: IssueLog, mm: str,
                 with_tokens: bool) -> tuple[pl.Series, pl.Series, pl.Series | None, pl.Series]:
    """One model's (quality, cost, tokens, bad cell) columns; a bad cell drops that one trace."""
    qc, cc, tc = f"{mm}_correct", f"{mm}_cost", f"{mm}_token"
    qv, qbad = numeric_column(df, qc, booleans=True)
    log_cells(log, df, name, qc, qbad, "non-numeric quality")
    out = (qv.is_not_null() & ((qv < 0) | (qv > 1))).fill_null(False)
    log_cells(log, df, name, qc, out, "quality outside [0, 1]:")
    miss = qv.is_null() & ~qbad
    log_cells(log, df, name, qc, miss, "missing value (no outcome for this model)", show=False)
    cv, cbad = numeric_column(df, cc)
    log_cells(log, df, name, cc, cbad, "non-numeric cost")
    neg = (cv.is_not_null() & (cv < 0)).fill_null(False)
    log_cells(log, df, name, cc, neg, "negative cost")
    cmiss = cv.is_null() & ~cbad
    log_cells(log, df, name, cc, cmiss, "missing value (no cost for this model)", show=False)
    bad = qbad | out | miss | cbad | neg | cmiss
    tv = None
    if with_tokens and tc in df.columns:
        tv, tbad = numeric_column(df, tc)
        log_cells(log, df, name, tc, tbad, "non-numeric token count")
        tneg = (tv.is_not_null() & (tv < 0)).fill_null(False)
        log_cells(log, df, name, tc, tneg, "negative token count")
        bad = bad | tbad | tneg
    return qv, cv, tv, bad


def _outcome_matrices(df: pl.DataFrame, name: str, log: IssueLog,
                      models: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """[N, K] quality, cost, completion tokens (None without any ``_token`` column) and bad-cell mask."""
    n, k_n = df.height, len(models)
    quality = np.full((n, k_n), np.nan)
    cost = np.full((n, k_n), np.nan)
    tokens = np.full((n, k_n), np.nan) if any(f"{mm}_token" in df.columns for mm in models) else None
    cell_bad = np.zeros((n, k_n), dtype=bool)
    for k, mm in enumerate(models):
        qv, cv, tv, bad = _model_cells(df, name, log, mm, tokens is not None)
        if tv is not None:
            tokens[:, k] = tv.fill_null(float("nan")).to_numpy()
        quality[:, k] = qv.fill_null(float("nan")).to_numpy()
        cost[:, k] = cv.fill_null(float("nan")).to_numpy()
        cell_bad[:, k] = bad.to_numpy()
    return quality, cost, tokens, cell_bad


def _find_images(df: pl.DataFrame, name: str, log: IssueLog, root: Path, aliases: Mapping[str, str],
                 dataset: pl.Series, number: pl.Series, row_bad: np.ndarray,
                 limits: ImportLimits) -> list[Path | None]:
    """``<root>/<Dataset>/<n>.<ext>`` per usable row; a missing, refused or bad image skips the row."""
    if not root.is_dir():
        log.fatal(str(root), None, None, "image root is not a directory")
    image_paths: list[Path | None] = [None] * df.height
    ds_l, num_l, rows_l = dataset.to_list(), number.to_list(), df[ROW].to_list()
    for i in np.flatnonzero(~row_bad):
        ds, num = ds_l[i], num_l[i]
        folders = list(dict.fromkeys([aliases.get(ds, ds), ds]))
        cands = [f"{f}/{num}{ext}" for f in folders for ext in IMAGE_EXTS]
        p, why = image_of(root, cands, limits)
        if p is None:
            log.add(name, rows_l[i], "dataset_idx", why if not why.startswith(NOT_FOUND)
                    else f"{NOT_FOUND}: {root / folders[0] / f'{num}.jpg'} (row skipped)")
            row_bad[i] = True
        image_paths[i] = p
    return image_paths


def _queries(dfk: pl.DataFrame, qids: pl.Series, benchmark: str, groups: Mapping[str, str],
             img_names: list[str], img_shas: list[str], extras: list[str],
             side_features: Sequence[str]) -> pl.DataFrame:
    """QUERIES rows of the kept CSV rows (``__dataset`` holds the dataset part of ``dataset_idx``)."""
    has_answer = "answer" in dfk.columns
    return dfk.select(
        qids,
        pl.lit(benchmark).alias("benchmark"),
        pl.col("__dataset").alias("dataset"),
        pl.col("__dataset").replace_strict(groups, return_dtype=pl.String).alias("task_group"),
        (pl.col("task") if "task" in dfk.columns else pl.col("__dataset")).alias("task"),
        pl.col("question"),
        (pl.col("answer").fill_null("") if has_answer else pl.lit("")).alias("answer"),
        (pl.col("answer_kind").fill_null(answer_kind_expr(pl.col("answer")))
         if "answer_kind" in dfk.columns else
         answer_kind_expr(pl.col("answer") if has_answer else pl.lit(""))).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        source_meta(pl.col("dataset_idx"), extras, side_features).alias("source_meta"),
        pl.lit("").alias("official_split"),
    )


def import_mmr_bench(csv_path: Path | str, *, images: Path | str | None = None,
                     benchmark: str = "mmr-bench", task_groups: Mapping[str, str] | None = None,
                     image_dirs: Mapping[str, str] | None = None, side_features: Sequence[str] = (),
                     on_error: str = "skip", run_id: str = "import", collected_at: str | None = None,
                     limits: ImportLimits | None = None) -> ImportResult:
    """Import an MMR-Bench style wide CSV (one row per query, ``<M>_correct`` / ``<M>_cost`` per model).

    The CSV is streamed and refused above ``limits.max_table_bytes``; each image is checked (`image_problem`).
    """
    path = Path(csv_path)
    name = str(path)
    log = IssueLog(on_error)
    overrides = check_task_groups(task_groups)
    collected_at = collected_at or now_iso()
    limits = limits or ImportLimits()
    df = read_csv_strings(path, log, limits)
    refuse_no_rows(df, name)
    models, extras, notes = _model_columns(df, name, log, side_features)
    df, dataset, number, row_bad = _row_checks(df, name, log)
    quality, cost, tokens, cell_bad = _outcome_matrices(df, name, log, models)
    image_paths: list[Path | None] = [None] * df.height
    if images is not None:
        aliases = {**MMR_IMAGE_DIRS, **dict(image_dirs or {})}
        image_paths = _find_images(df, name, log, Path(images), aliases, dataset, number, row_bad, limits)
    log.raise_if_failing()

    keep = ~row_bad
    img_names, img_shas, files = hash_images([p for p, k in zip(image_paths, keep, strict=True) if k])
    dfk = df.with_columns(dataset.alias("__dataset")).filter(pl.Series(keep))
    groups = {d: task_group_for(d, overrides) for d in dfk["__dataset"].unique().to_list()}
    qids = pl.Series("query_id", [query_id_for(benchmark, s) for s in dfk["dataset_idx"].to_list()])
    queries = _queries(dfk, qids, benchmark, groups, img_names, img_shas, extras, side_features)
    preds = [dfk[f"{mm}_prediction"] if f"{mm}_prediction" in dfk.columns else None for mm in models]
    traces = wide_traces(
        qids, models, quality[keep], cost[keep], ~cell_bad[keep], run_id=run_id, collected_at=collected_at,
        completion_tokens=None if tokens is None else tokens[keep], predictions=preds,
    )
    text_only = images is None
    if text_only:
        notes.append("no image root given: imported text-only (image_path = image_sha256 = '')")
    if tokens is not None:
        notes.append("'<model>_token' columns read as completion (output) tokens")
    return ImportResult(
        benchmark=benchmark, source=name, queries=queries_frame(queries),
        models=models_frame(models, benchmark=benchmark, source=name, added_at=collected_at),
        traces=traces, skipped=log.frame(), text_only=text_only, embeddings=None, image_files=files,
        cost_bounds=None, notes=notes, limits=limits,
    )
