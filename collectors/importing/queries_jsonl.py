"""Own query set importer (`import_custom_queries`): a JSONL of questions plus an image folder, no traces.

Format: one object per line ``{id, image, question, answer, answer_kind, dataset, task_group}`` (optional
``task``, ``official_split``; other fields go to ``source_meta["columns"]``) with ``image`` relative to the
image folder. The result holds queries only; the Ollama collector produces the traces later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.common import (
    SPLIT_ALIASES,
    ImportResult,
    answer_kind_expr,
    check_task_groups,
    checked_image,
    hash_images,
    log_cells,
    queries_frame,
    query_id_for,
    source_meta,
    task_group_for,
    text_col,
)
from collectors.importing.validation import (
    ROW,
    ImportLimits,
    ImportValidationError,
    IssueLog,
    blank,
    raise_on_duplicates,
    read_jsonl,
    refuse_no_rows,
)
from warehouse.schemas import MODELS, TRACES
from warehouse.vocabulary import ANSWER_KINDS, TASK_GROUPS

_KNOWN = {"id", "image", "question", "answer", "answer_kind", "dataset", "task_group", "task", "official_split",
          ROW}


def _row_checks(df: pl.DataFrame, name: str, benchmark: str,
                log: IssueLog) -> tuple[pl.DataFrame, np.ndarray, pl.Series | None]:
    """(frame with text ids and a dataset, rows to skip, normalised official split or None)."""
    for col in ("id", "question", "answer"):
        if col not in df.columns:
            log.fatal(name, None, col, f"required field missing; have {[c for c in df.columns if c != ROW]}")
    df = df.with_columns(text_col(df, c).alias(c) for c in ("id", "question", "answer"))
    raise_on_duplicates(df["id"], df[ROW], name, "id")
    bad = np.zeros(df.height, dtype=bool)
    for col, why in (("id", "empty id"), ("question", "empty question")):
        m = blank(df[col])
        log_cells(log, df, name, col, m, why, show=False)
        bad |= m.to_numpy()
    m = df["answer"].is_null()
    log_cells(log, df, name, "answer", m, "missing answer (needed to score model answers)", show=False)
    bad |= m.to_numpy()
    if "dataset" not in df.columns:
        df = df.with_columns(pl.lit(benchmark).alias("dataset"))
    df = df.with_columns(text_col(df, "dataset").fill_null(benchmark).alias("dataset"))
    for col, allowed in (("task_group", TASK_GROUPS), ("answer_kind", ANSWER_KINDS)):
        if col in df.columns:
            s = df[col].cast(pl.String)
            m = (s.is_not_null() & ~s.is_in(list(allowed))).fill_null(False)
            log_cells(log, df, name, col, m, f"must be one of {allowed}, got")
            bad |= m.to_numpy()
    split = None
    if "official_split" in df.columns:
        s = df["official_split"].cast(pl.String).str.to_lowercase()
        split = s.replace_strict({**SPLIT_ALIASES, "": ""}, default=None, return_dtype=pl.String)
        m = (s.is_not_null() & split.is_null()).fill_null(False)
        log_cells(log, df, name, "official_split", m, f"must be one of {sorted(SPLIT_ALIASES)}, got")
        bad |= m.to_numpy()
    return df, bad, split


def _find_images(df: pl.DataFrame, name: str, image_folder: Path | str | None, log: IssueLog,
                 bad: np.ndarray, limits: ImportLimits) -> list[Path | None]:
    """``image`` resolved inside the image folder per usable row; no ``image`` means a text-only row."""
    image_paths: list[Path | None] = [None] * df.height
    if "image" not in df.columns:
        return image_paths
    rels = df["image"].cast(pl.String).to_list()
    rows = df[ROW].to_list()
    if image_folder is None and any(r and r.strip() for r in rels):
        log.fatal(name, None, "image", "rows reference images but no image folder was given")
    for i, rel in enumerate(rels):
        if bad[i] or rel is None or not rel.strip():
            continue
        p, why = checked_image(Path(image_folder), rel, limits)
        if p is None:
            log.add(name, rows[i], "image", why)
            bad[i] = True
        image_paths[i] = p
    return image_paths


def _queries(dk: pl.DataFrame, benchmark: str, groups: Mapping[str, str], img_names: list[str],
             img_shas: list[str], extras: list[str], split: pl.Series | None) -> pl.DataFrame:
    """QUERIES rows of the kept lines; a given task_group / answer_kind / task wins over the inferred one."""
    tg_default = pl.col("dataset").replace_strict(groups, return_dtype=pl.String)
    return dk.select(
        pl.Series("query_id", [query_id_for(benchmark, s) for s in dk["id"].to_list()]),
        pl.lit(benchmark).alias("benchmark"),
        pl.col("dataset"),
        (pl.col("task_group").cast(pl.String).fill_null(tg_default) if "task_group" in dk.columns
         else tg_default).alias("task_group"),
        (pl.col("task").cast(pl.String).fill_null(pl.col("dataset")) if "task" in dk.columns
         else pl.col("dataset")).alias("task"),
        pl.col("question"),
        pl.col("answer"),
        (pl.col("answer_kind").cast(pl.String).fill_null(answer_kind_expr(pl.col("answer")))
         if "answer_kind" in dk.columns else answer_kind_expr(pl.col("answer"))).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        source_meta(pl.col("id"), extras).alias("source_meta"),
        (split.fill_null("") if split is not None else pl.lit("")).alias("official_split"),
    )


def import_custom_queries(jsonl_path: Path | str, images: Path | str | None = None, *,
                          benchmark: str = "custom", copy_to: Path | str | None = None,
                          task_groups: Mapping[str, str] | None = None,
                          on_error: str = "skip", limits: ImportLimits | None = None) -> ImportResult:
    """Import our own JSONL query set ``{id, image, question, answer, answer_kind, dataset, task_group}``.

    ``image`` is relative to ``images``; a row without ``image`` is text-only. With ``copy_to``
    the images are copied there (content-addressed) once validation passed; otherwise call
    ``result.copy_images(copy_to)``. No traces: the collector produces them later.
    """
    path = Path(jsonl_path)
    name = str(path)
    log = IssueLog(on_error)
    overrides = check_task_groups(task_groups)
    limits = limits or ImportLimits()
    df = read_jsonl(path, log, limits)
    if df.height == 0 and log.issues:  # every line was broken: say why, not "no data rows"
        raise ImportValidationError(log.issues, f"import refused: none of the {len(log.issues)} line(s) of "
                                                f"{name} could be read")
    refuse_no_rows(df, name)
    df, bad, split = _row_checks(df, name, benchmark, log)
    image_paths = _find_images(df, name, images, log, bad, limits)
    log.raise_if_failing()

    keep = ~bad
    img_names, img_shas, files = hash_images([p for p, k in zip(image_paths, keep, strict=True) if k])
    dk = df.filter(pl.Series(keep))
    groups = {d: task_group_for(d, overrides) for d in dk["dataset"].unique().to_list()}
    extras = [c for c in df.columns if c not in _KNOWN]
    kept_split = None if split is None else split.filter(pl.Series(keep))
    queries = _queries(dk, benchmark, groups, img_names, img_shas, extras, kept_split)
    result = ImportResult(
        benchmark=benchmark, source=name, queries=queries_frame(queries),
        models=pl.DataFrame(schema=MODELS), traces=pl.DataFrame(schema=TRACES), skipped=log.frame(),
        text_only=not any(img_names), embeddings=None, image_files=files, cost_bounds=None,
        notes=[] if any(img_names) else ["no images: text-only query set"], limits=limits,
    )
    if copy_to is not None:
        n = result.copy_images(copy_to)
        result.notes.append(f"{n} image(s) copied into {copy_to}")
    return result
