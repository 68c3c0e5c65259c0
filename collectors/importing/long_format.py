"""Long-format importer and exporter (`import_long`, `import_long_dir`, `export_long`).

Format: a traces file (Parquet / CSV / JSONL) with one row per query x model (x attempt) and a queries file
(Parquet / JSONL / CSV) with QUERIES columns, optionally a models file. Columns that are present are kept as
they are (so an export re-imports to identical tables); missing optional ones get the defaults of
`collectors.importing.common`. JSON has no NaN, so a JSONL export writes unknown (NaN) prices as null; the
models file importer maps null prices back to NaN, which keeps the JSONL round trip identical too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.common import (
    SPLIT_ALIASES,
    ImportResult,
    answer_kind_expr,
    check_task_groups,
    image_problem,
    log_cells,
    models_frame,
    now_iso,
    queries_frame,
    task_group_for,
    text_col,
    trace_defaults,
)
from collectors.importing.validation import (
    ROW,
    ImportLimits,
    ImportValidationError,
    Issue,
    IssueLog,
    blank,
    numeric_column,
    raise_on_duplicates,
    read_table,
    refuse_no_rows,
    resolve_inside,
    sha256_file,
    unsafe_path_reason,
)
from warehouse.schemas import MODELS, QUERIES, TRACES, conform
from warehouse.vocabulary import ANSWER_KINDS, TASK_GROUPS, TRACE_STATUSES

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


def find_long_file(folder: Path, stem: str) -> Path | None:
    for ext in (".parquet", ".jsonl", ".ndjson", ".csv"):
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    return None


def import_long_dir(folder: Path | str, **kwargs) -> ImportResult:
    """`import_long` on a folder written by `export_long` (queries.*, traces.*, optional models.*)."""
    folder = Path(folder)
    q, t = find_long_file(folder, "queries"), find_long_file(folder, "traces")
    if q is None or t is None:
        raise ImportValidationError([Issue(str(folder), None, None,
                                           "expected queries.<parquet|jsonl|csv> and traces.<...> files")])
    return import_long(t, q, models_path=find_long_file(folder, "models"), **kwargs)




def _query_defaults(q: pl.DataFrame, benchmark: str, overrides: dict[str, str]) -> pl.DataFrame:
    """Add the QUERIES columns a long queries file may omit; present ones are kept verbatim."""
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
    defaults = {"answer_kind": answer_kind_expr(pl.col("answer")), "image_path": pl.lit(""),
                "image_sha256": pl.lit(""), "source_meta": pl.lit("{}"), "official_split": pl.lit("")}
    add = [e.alias(c) for c, e in defaults.items() if c not in q.columns]
    return q.with_columns(add) if add else q


def _query_value_checks(q: pl.DataFrame, name: str, log: IssueLog, bad: np.ndarray) -> pl.DataFrame:
    """Vocabulary, split and source_meta checks; split aliases (dev, valid) are normalised."""
    for col, allowed in (("task_group", TASK_GROUPS), ("answer_kind", ANSWER_KINDS)):
        s = q[col].cast(pl.String)
        m = (s.is_not_null() & ~s.is_in(list(allowed))).fill_null(False)
        log_cells(log, q, name, col, m, f"must be one of {allowed}, got")
        bad |= m.to_numpy()
    s = q["official_split"].cast(pl.String)
    norm = s.str.to_lowercase().replace_strict({**SPLIT_ALIASES, "": ""}, default=None, return_dtype=pl.String)
    m = (s.is_not_null() & norm.is_null()).fill_null(False)
    log_cells(log, q, name, "official_split", m, f"must be one of {sorted(SPLIT_ALIASES)} or '', got")
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
    return q


def _check_query_images(q: pl.DataFrame, name: str, images_dir: Path | None, log: IssueLog,
                        bad: np.ndarray, limits: ImportLimits) -> None:
    """Without ``images_dir`` only unsafe paths are refused; with it the file must exist and match its sha."""
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
        why = why if p is None else image_problem(p, limits)
        if why is not None:
            log.add(name, rows[i], "image_path", why)
            bad[i] = True
        elif shas[i] and sha256_file(p) != shas[i]:
            log.add(name, rows[i], "image_sha256", f"does not match the sha256 of {p.name}")
            bad[i] = True


def _long_queries(q: pl.DataFrame, name: str, benchmark: str, overrides: dict[str, str],
                  images_dir: Path | None, log: IssueLog, limits: ImportLimits) -> tuple[pl.DataFrame, np.ndarray]:
    """The queries file checked and defaulted, and the rows to skip."""
    for col in ("query_id", "question"):
        if col not in q.columns:
            log.fatal(name, None, col, f"required column missing; have {[c for c in q.columns if c != ROW]}")
    q = q.with_columns(text_col(q, "query_id").alias("query_id"), text_col(q, "question").alias("question"))
    raise_on_duplicates(q["query_id"], q[ROW], name, "query_id")
    bad = np.zeros(q.height, dtype=bool)
    for col, why in (("query_id", "empty query_id"), ("question", "empty question")):
        m = blank(q[col])
        log_cells(log, q, name, col, m, why, show=False)
        bad |= m.to_numpy()
    q = _query_value_checks(_query_defaults(q, benchmark, overrides), name, log, bad)
    _check_query_images(q, name, images_dir, log, bad, limits)
    return q, bad

# numeric trace columns and their lower bound (quality is also capped at 1)
_LONG_NUMERIC = {"quality": 0.0, "cost_usd": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0,
                 "image_tokens": 0.0, "latency_ms": 0.0, "attempt": 0.0}


def _long_traces(t: pl.DataFrame, name: str, log: IssueLog) -> tuple[pl.DataFrame, np.ndarray]:
    for col in ("query_id", "model_id", "quality", "cost_usd"):
        if col not in t.columns:
            log.fatal(name, None, col, f"required column missing; have {[c for c in t.columns if c != ROW]}")
    t = t.with_columns(text_col(t, "query_id").alias("query_id"), text_col(t, "model_id").alias("model_id"))
    bad = np.zeros(t.height, dtype=bool)
    for col in ("query_id", "model_id"):
        m = blank(t[col])
        log_cells(log, t, name, col, m, f"empty {col}", show=False)
        bad |= m.to_numpy()
    status = t["status"].cast(pl.String) if "status" in t.columns else pl.Series(["ok"] * t.height, dtype=pl.String)
    if "status" in t.columns:
        m = (~status.is_in(list(TRACE_STATUSES))).fill_null(True)
        log_cells(log, t, name, "status", m, f"status must be one of {TRACE_STATUSES}, got")
        bad |= m.to_numpy()
    is_ok = (status == "ok").fill_null(False)
    repl = []
    for col, lo in _LONG_NUMERIC.items():
        if col not in t.columns:
            continue
        v, nb = numeric_column(t, col, booleans=col == "quality")
        what = "quality" if col == "quality" else "cost" if col == "cost_usd" else "value"
        log_cells(log, t, name, col, nb, f"non-numeric {what}")
        if col == "quality":
            out = (v.is_not_null() & ((v < 0) | (v > 1))).fill_null(False)
            log_cells(log, t, name, col, out, "quality outside [0, 1]:")
        else:
            out = (v.is_not_null() & (v < lo)).fill_null(False)
            log_cells(log, t, name, col, out, f"negative {what}" if lo == 0 else f"{col} below {lo:g}:")
        m = nb | out
        if col in ("quality", "cost_usd"):
            miss = v.is_null() & ~nb & is_ok
            log_cells(log, t, name, col, miss, f"missing {col} for an ok trace", show=False)
            m = m | miss
        bad |= m.to_numpy()
        if t.schema[col] == pl.String:
            repl.append(v.alias(col))
    if "correct" in t.columns and t.schema["correct"] != pl.Boolean:
        s = t["correct"].cast(pl.String).str.strip_chars().str.to_lowercase()
        val = s.replace_strict({"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False},
                               default=None, return_dtype=pl.Boolean)
        m = (s.is_not_null() & (s != "") & val.is_null()).fill_null(False)
        log_cells(log, t, name, "correct", m, "correct must be true/false, got")
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




def _read_models(mpath: Path, benchmark: str, collected_at: str, log: IssueLog,
                 limits: ImportLimits) -> pl.DataFrame:
    """The optional models file, defaulted; keeps ``ROW`` for the caller's messages."""
    mdf = read_table(mpath, log, limits)
    if "model_id" not in mdf.columns:
        log.fatal(str(mpath), None, "model_id", "required column missing")
    mdf = mdf.with_columns(text_col(mdf, "model_id").alias("model_id"))
    raise_on_duplicates(mdf["model_id"], mdf[ROW], str(mpath), "model_id")
    defaults = {"backend": pl.lit("import"), "endpoint": pl.lit(""),
                "price_in_per_mtok": pl.lit(float("nan")), "price_out_per_mtok": pl.lit(float("nan")),
                "params_b": pl.lit(None, dtype=pl.Float64), "added_at": pl.lit(collected_at),
                "active": pl.lit(True), "simulated": pl.lit(False),
                "description": pl.lit(f"imported from {benchmark} ({mpath.name})")}
    add = [e.alias(c) for c, e in defaults.items() if c not in mdf.columns]
    models_df = mdf.with_columns(add) if add else mdf
    # an unknown price is NaN by contract; JSON cannot hold NaN and writes null, so map it back
    return models_df.with_columns(pl.col(c).cast(pl.Float64, strict=False).fill_null(float("nan"))
                                  for c in ("price_in_per_mtok", "price_out_per_mtok"))


def _orphan_traces(t: pl.DataFrame, t_bad: np.ndarray, q: pl.DataFrame, q_bad: np.ndarray, tpath: Path,
                   qpath: Path, model_ids_known: list[str] | None, log: IssueLog) -> None:
    """Flag traces whose query was skipped or is absent, or whose model is not in the models file."""
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
        m = (~t["model_id"].is_in(model_ids_known) & ~pl.Series(t_bad)).fill_null(False)
        log_cells(log, t, str(tpath), "model_id", m, "model_id not in the models file:")
        t_bad |= m.to_numpy()


def import_long(traces_path: Path | str, queries_path: Path | str, *, models_path: Path | str | None = None,
                benchmark: str = "import", images: Path | str | None = None,
                task_groups: Mapping[str, str] | None = None, on_error: str = "skip", run_id: str = "import",
                collected_at: str | None = None, limits: ImportLimits | None = None) -> ImportResult:
    """Import long-format traces + queries (+ models). Present columns are kept verbatim, missing ones
    defaulted, so `export_long` -> `import_long` gives identical tables.

    ``images`` (the images folder the ``image_path`` values are relative to) turns on the image
    checks: file present inside it, sha256 equal to ``image_sha256``. Without it only unsafe paths are refused.
    """
    tpath, qpath = Path(traces_path), Path(queries_path)
    log = IssueLog(on_error)
    overrides = check_task_groups(task_groups)
    collected_at = collected_at or now_iso()
    notes: list[str] = []
    limits = limits or ImportLimits()
    q = read_table(qpath, log, limits)
    refuse_no_rows(q, str(qpath))
    q, q_bad = _long_queries(q, str(qpath), benchmark, overrides,
                             None if images is None else Path(images), log, limits)
    t, t_bad = _long_traces(read_table(tpath, log, limits), str(tpath), log)
    models_df = (None if models_path is None
                 else _read_models(Path(models_path), benchmark, collected_at, log, limits))
    known = None if models_df is None else models_df["model_id"].to_list()
    _orphan_traces(t, t_bad, q, q_bad, tpath, qpath, known, log)
    log.raise_if_failing()

    queries = q.filter(pl.Series(~q_bad)).drop(ROW)
    traces = trace_defaults(t.filter(pl.Series(~t_bad)).drop(ROW), run_id, collected_at)
    if models_df is None:
        ids = traces["model_id"].unique(maintain_order=True).to_list()
        models = models_frame(ids, benchmark=benchmark, source=str(tpath), added_at=collected_at)
        notes.append("no models file: models derived from traces.model_id, token prices unknown (NaN)")
    else:
        models = conform(models_df.drop(ROW), MODELS, "models")
    paths = queries["image_path"].cast(pl.String).fill_null("")
    files: dict[str, Path] = {}
    if images is not None:
        files = {p: Path(images) / p for p in paths.to_list() if p}
    return ImportResult(
        benchmark=benchmark, source=str(tpath), queries=queries_frame(queries), models=models, traces=traces,
        skipped=log.frame(), text_only=bool((paths == "").all()), embeddings=None, image_files=files,
        cost_bounds=None, notes=notes, limits=limits,
    )
