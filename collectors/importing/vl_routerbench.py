"""VL-RouterBench folder importer (`import_vl_routerbench`): outcome matrices plus per-sample metadata.

Format: ``Y.npz`` (key ``Y``, N x K), ``C.npy`` (N x K USD), ``meta.parquet`` (``sample_id``, ``dataset``;
optional ``split``, ``task``, ``question``, ``answer``, ``answer_kind``, ``image_path``; other columns ->
``source_meta["columns"]``), ``models.json`` (a list of names, or of objects ``{"name", "price_in_per_mtok",
"price_out_per_mtok", "params_b"}``) or ``model_index.json`` (``{name: column}``), optional
``cost_bounds.json``, ``SPLITS/{train,dev,test}.jsonl`` and ``EMBEDDINGS/{text,vision}/<encoder>.parquet``.
``cost_bounds.json`` may be ``{"cmin": a, "cmax": b}`` (whole benchmark), ``{"cmin": {ds: a}, "cmax": {ds: b}}``
or ``{ds: {"cmin": a, "cmax": b}}`` (per dataset; the key ``"*"`` is the whole benchmark); it is returned as
``ImportResult.cost_bounds`` = ``{key: {"cmin", "cmax"}}`` with 0 < cmin < cmax (the Rank Score takes log2 of
both; an optional ``"beta"`` next to whole-benchmark bounds is kept). Without the file nothing is stored and the
evaluation computes min / max of the per-sample cost matrix, as DESIGN.md defines it. Everything is vectorised: there is no loop over the N x K pairs.
"""

from __future__ import annotations

import json
import math
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
    models_frame,
    now_iso,
    queries_frame,
    query_id_for,
    source_meta,
    task_group_for,
    wide_traces,
)
from collectors.importing.validation import (
    ROW,
    ImportLimits,
    ImportValidationError,
    Issue,
    IssueLog,
    blank,
    flagged_rows,
    raise_on_duplicates,
    read_jsonl,
    read_table,
    refuse_no_rows,
)


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
            if "beta" in obj:  # the Rank Score's beta, when the benchmark ships its own
                bounds["*"]["beta"] = num(obj["beta"], "beta", "beta")
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


def _read_embeddings(folder: Path, meta: pl.DataFrame, log: IssueLog, notes: list[str],
                     limits: ImportLimits) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
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
            e = read_table(p, log, limits)
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


def _load_matrices(folder: Path, log: IssueLog) -> tuple[np.ndarray, np.ndarray]:
    """Y and C, read without pickles (a benchmark folder is untrusted input)."""
    y_path, c_path = folder / "Y.npz", folder / "C.npy"
    try:
        with np.load(y_path, allow_pickle=False) as z:
            if "Y" not in z.files:
                log.fatal(str(y_path), None, "Y", f"array 'Y' missing; the archive holds {z.files}")
            y = z["Y"]
        c = np.load(c_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.fatal(str(y_path), None, None, f"cannot read the matrices ({exc})")
    return y, c


def _check_shapes(folder: Path, y: np.ndarray, c: np.ndarray, meta: pl.DataFrame, models: list[str],
                  log: IssueLog) -> None:
    """Structural checks: required meta columns and matrices that line up with meta and the model index."""
    y_path, c_path, name_m = str(folder / "Y.npz"), str(folder / "C.npy"), str(folder / "meta.parquet")
    for col in ("sample_id", "dataset"):
        if col not in meta.columns:
            log.fatal(name_m, None, col, f"required column missing; have {[x for x in meta.columns if x != ROW]}")
    if y.ndim != 2 or c.shape != y.shape:
        log.fatal(c_path, None, None, f"C has shape {c.shape} but Y has {y.shape}; both must be N x K")
    if y.shape[0] != meta.height:
        log.fatal(y_path, None, None, f"Y has {y.shape[0]} rows but meta.parquet has {meta.height}")
    if y.shape[1] != len(models):
        log.fatal(y_path, None, None, f"Y has {y.shape[1]} columns but the model index names {len(models)}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or not np.issubdtype(c.dtype, np.number):
        log.fatal(y_path, None, None, f"Y and C must be numeric, got {y.dtype} and {c.dtype}")


def _meta_row_checks(meta: pl.DataFrame, name_m: str, log: IssueLog, notes: list[str]) -> np.ndarray:
    """Rows of meta.parquet that cannot be imported (empty id, dataset or question)."""
    row_bad = np.zeros(meta.height, dtype=bool)
    raise_on_duplicates(meta["sample_id"], meta[ROW], name_m, "sample_id")
    for col, why in (("sample_id", "empty sample_id"), ("dataset", "empty dataset")):
        m = blank(meta[col])
        log_cells(log, meta, name_m, col, m, why, show=False)
        row_bad |= m.to_numpy()
    if "question" in meta.columns:
        m = blank(meta["question"])
        log_cells(log, meta, name_m, "question", m, "empty question", show=False)
        row_bad |= m.to_numpy()
    else:
        notes.append("meta.parquet has no 'question' column: questions imported as ''")
    return row_bad


def _cell_checks(folder: Path, y: np.ndarray, c: np.ndarray, sids: list[str], models: list[str],
                 log: IssueLog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quality, cost, bad cell) over the whole matrix at once; each bad cell names its sample and model."""
    y_path, c_path = folder / "Y.npz", folder / "C.npy"
    yf = y.astype(np.float64)
    cf = c.astype(np.float64)
    q_bad = ~np.isfinite(yf) | (yf < 0) | (yf > 1)
    c_nonnum = ~np.isfinite(cf)
    c_neg = np.isfinite(cf) & (cf < 0)
    for arr, fpath, why in ((q_bad, y_path, "quality outside [0, 1]:"), (c_nonnum, c_path, "non-numeric cost:"),
                            (c_neg, c_path, "negative cost:")):
        rr, kk = np.nonzero(arr)
        vals = (yf if fpath == y_path else cf)[rr, kk]
        for r, k, v in zip(rr.tolist(), kk.tolist(), vals.tolist(), strict=True):
            log.add(str(fpath), r + 1, models[k], f"{why} {v!r} (sample_id={sids[r]!r})")
    return yf, cf, q_bad | c_nonnum | c_neg


def _official_split(folder: Path, meta: pl.DataFrame, name_m: str, log: IssueLog, notes: list[str],
                    row_bad: np.ndarray) -> pl.Series:
    """The official split per meta row: SPLITS/ wins over meta.split; '' where there is none."""
    split = _read_splits(folder, meta, log, notes)
    if "split" in meta.columns:
        raw = meta["split"].cast(pl.String).str.strip_chars().str.to_lowercase()
        norm = raw.replace_strict(SPLIT_ALIASES, default=None, return_dtype=pl.String)
        if split is None:
            bad = raw.is_not_null() & (raw != "") & norm.is_null()
            log_cells(log, meta, name_m, "split", bad, f"split must be one of {sorted(SPLIT_ALIASES)}, got")
            row_bad |= bad.to_numpy()
            split = norm.fill_null("").alias("official_split")
        else:
            differ = int(((norm.fill_null("") != split) & (split != "")).sum())
            if differ:
                notes.append(f"meta.parquet 'split' disagrees with SPLITS/ for {differ} sample(s); SPLITS/ used")
    if split is None:
        split = pl.Series("official_split", [""] * meta.height)
        notes.append("no official split (no SPLITS/ folder and no 'split' column)")
    return split


def _find_images(meta: pl.DataFrame, name_m: str, root: Path, log: IssueLog, row_bad: np.ndarray,
                 limits: ImportLimits) -> list[Path | None]:
    """``meta.image_path`` resolved inside ``root`` per usable row; an empty path is a text-only sample."""
    image_paths: list[Path | None] = [None] * meta.height
    rels = meta["image_path"].cast(pl.String).to_list()
    rows = meta[ROW].to_list()
    for i in np.flatnonzero(~row_bad):
        rel = rels[i]
        if rel is None or not rel.strip():
            continue  # a text-only sample inside the benchmark
        p, why = checked_image(root, rel, limits)
        if p is None:
            log.add(name_m, rows[i], "image_path", why)
            row_bad[i] = True
        image_paths[i] = p
    return image_paths


def _queries(mk: pl.DataFrame, qids: pl.Series, benchmark: str, groups: Mapping[str, str],
             img_names: list[str], img_shas: list[str], extras: list[str]) -> pl.DataFrame:
    """QUERIES rows of the kept meta rows (``official_split`` already attached)."""
    answer = pl.col("answer").cast(pl.String).fill_null("") if "answer" in mk.columns else pl.lit("")
    return mk.select(
        qids,
        pl.lit(benchmark).alias("benchmark"),
        pl.col("dataset"),
        pl.col("dataset").replace_strict(groups, return_dtype=pl.String).alias("task_group"),
        (pl.col("task").cast(pl.String) if "task" in mk.columns else pl.col("dataset")).alias("task"),
        (pl.col("question").cast(pl.String) if "question" in mk.columns else pl.lit("")).alias("question"),
        answer.alias("answer"),
        (pl.col("answer_kind").cast(pl.String).fill_null(answer_kind_expr(answer))
         if "answer_kind" in mk.columns else answer_kind_expr(answer)).alias("answer_kind"),
        pl.Series("image_path", img_names, dtype=pl.String),
        pl.Series("image_sha256", img_shas, dtype=pl.String),
        source_meta(pl.col("sample_id"), extras).alias("source_meta"),
        pl.col("official_split"),
    )


def _cost_bounds(folder: Path, meta: pl.DataFrame, cost: np.ndarray, cell_bad: np.ndarray, log: IssueLog,
                 notes: list[str]) -> dict[str, dict[str, float]] | None:
    """cost_bounds.json when shipped, else None (the evaluation computes them from the cost matrix)."""
    bounds_path = folder / "cost_bounds.json"
    if bounds_path.exists():
        return _parse_cost_bounds(_load_json(bounds_path, log), bounds_path, set(meta["dataset"].to_list()), log)
    # nothing shipped: nothing stored, so the warehouse's cost_bounds.json only ever holds a benchmark's own
    # bounds; the evaluation then takes min / max of the per-sample cost matrix (DESIGN.md, Metrics)
    notes.append("no cost_bounds.json: the evaluation computes cmin/cmax from the per-sample cost matrix")
    return None


def import_vl_routerbench(folder: Path | str, *, benchmark: str = "vl-routerbench",
                          images: Path | str | None = None, load_images: bool = True,
                          task_groups: Mapping[str, str] | None = None, on_error: str = "skip",
                          run_id: str = "import", collected_at: str | None = None,
                          limits: ImportLimits | None = None) -> ImportResult:
    """Import a VL-RouterBench style folder of matrices (vectorised: no loop over the N x K pairs).

    ``images`` (default: the folder) is where ``meta.image_path`` is resolved; ``load_images=False``
    ignores image paths (text-only, e.g. when only precomputed vision embeddings are shipped).
    """
    folder = Path(folder)
    log = IssueLog(on_error)
    overrides = check_task_groups(task_groups)
    collected_at = collected_at or now_iso()
    notes: list[str] = []
    limits = limits or ImportLimits()
    m_path = folder / "meta.parquet"
    for p in (folder / "Y.npz", folder / "C.npy", m_path):
        if not p.exists():
            log.fatal(str(p), None, None, "required file missing")
    models, prices = _read_model_index(folder, log)
    y, c = _load_matrices(folder, log)
    meta = read_table(m_path, log, limits)
    name_m = str(m_path)
    refuse_no_rows(meta, name_m)
    _check_shapes(folder, y, c, meta, models, log)
    meta = meta.with_columns(pl.col("sample_id").cast(pl.String), pl.col("dataset").cast(pl.String))
    row_bad = _meta_row_checks(meta, name_m, log, notes)
    yf, cf, cell_bad = _cell_checks(folder, y, c, meta["sample_id"].to_list(), models, log)
    split = _official_split(folder, meta, name_m, log, notes, row_bad)
    embeddings, no_emb = _read_embeddings(folder, meta, log, notes, limits)
    row_bad |= no_emb
    image_paths: list[Path | None] = [None] * meta.height
    if "image_path" in meta.columns and load_images:
        root = Path(images) if images is not None else folder
        image_paths = _find_images(meta, name_m, root, log, row_bad, limits)
    elif "image_path" in meta.columns:
        notes.append("load_images=False: meta.image_path ignored, imported text-only")
    log.raise_if_failing()

    kidx = np.flatnonzero(~row_bad)
    img_names, img_shas, files = hash_images([image_paths[i] for i in kidx])
    mk = meta.with_columns(split).filter(pl.Series(~row_bad))
    groups = {d: task_group_for(d, overrides) for d in mk["dataset"].unique().to_list()}
    qids = pl.Series("query_id", [query_id_for(benchmark, s) for s in mk["sample_id"].to_list()])
    known = {"sample_id", "dataset", "split", "task", "question", "answer", "answer_kind", "image_path", ROW}
    extras = [col for col in meta.columns if col not in known]
    queries = _queries(mk, qids, benchmark, groups, img_names, img_shas, extras)
    traces = wide_traces(qids, models, yf[kidx], cf[kidx], ~cell_bad[kidx], run_id=run_id,
                         collected_at=collected_at)
    if embeddings is not None:
        embeddings = {k: v[kidx] for k, v in embeddings.items()}
    bounds = _cost_bounds(folder, meta, cf[kidx], cell_bad[kidx], log, notes)
    return ImportResult(
        benchmark=benchmark, source=str(folder), queries=queries_frame(queries),
        models=models_frame(models, benchmark=benchmark, source=str(folder), added_at=collected_at,
                            prices=prices),
        traces=traces, skipped=log.frame(), text_only=not any(img_names), embeddings=embeddings,
        image_files=files, cost_bounds=bounds, notes=notes, limits=limits,
    )
