"""Validation primitives for the importers: problems that name FILE, ROW and COLUMN, and the skip|fail policy.

Why a separate module: every importer (MMR-Bench CSV, VL-RouterBench matrices, long traces, our own JSONL)
needs the same guarantees -- a bad row is either skipped *and listed* or the whole import is refused before
anything is written, an image path can never escape its folder, and text that is not UTF-8 is reported at the
row that holds it. Keeping these rules in one place keeps the messages uniform.

Row numbers: ``row`` is the 1-based record number inside ``file`` -- the first data record of a CSV (the line
after the header) is row 1, the first line of a JSONL file is row 1, and matrix row ``i`` of ``Y.npz``/``C.npy``
or Parquet row ``i`` is row ``i + 1``. ``row`` is None for problems about a whole file or column.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NoReturn

import numpy as np
import polars as pl

ON_ERROR = ("skip", "fail")
ROW = "__import_row"  # 1-based record number carried through every frame a reader returns
SKIPPED_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String,
    "row": pl.Int64,
    "column": pl.String,
    "reason": pl.String,
}
MAX_LISTED = 25  # problems spelled out in an exception message; the rest are counted


@dataclass(frozen=True)
class ImportLimits:
    """Upper bounds on what an import reads, checked before reading (a user folder is untrusted input).

    A file over ``max_table_bytes`` (CSV / JSONL / Parquet) refuses the import; an image over
    ``max_image_bytes`` (checked with stat, so it is never read) or ``max_image_pixels`` (from its header)
    is a bad row: skipped and listed, or refusing the import under ``on_error="fail"``.
    """

    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 50 * 2**20
    max_table_bytes: int = 2**30


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_table_size(path: Path, log: IssueLog, limits: ImportLimits | None) -> None:
    """Refuse a table file over ``limits.max_table_bytes`` before opening it."""
    limit = (limits or ImportLimits()).max_table_bytes
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        log.fatal(str(path), None, None, f"cannot read file ({exc})")
    if size > limit:
        log.fatal(str(path), None, None, f"file is {human_bytes(size)}, over the import limit of "
                                         f"{human_bytes(limit)} (ImportLimits.max_table_bytes); not read")


@dataclass(frozen=True)
class Issue:
    """One problem in the input, located as precisely as the format allows."""

    file: str
    row: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f": row {self.row}"
        if self.column is not None:
            where += f"{',' if self.row is not None else ':'} column {self.column!r}"
        return f"{where}: {self.reason}"


class ImportValidationError(ValueError):
    """The input was refused; ``issues`` lists every problem found (file, row, column, reason)."""

    def __init__(self, issues: Sequence[Issue], header: str | None = None):
        self.issues = list(issues)
        head = header or f"import refused: {len(self.issues)} problem(s) in the input"
        lines = [str(i) for i in self.issues[:MAX_LISTED]]
        more = len(self.issues) - len(lines)
        body = "\n  ".join(lines) + (f"\n  ... and {more} more" if more > 0 else "")
        super().__init__(f"{head}\n  {body}" if lines else head)


# The brief calls the policy exception ``ImportError_``; this alias keeps that name importable too.
ImportError_ = ImportValidationError


class IssueLog:
    """Collects row-level problems under a policy: ``skip`` lists them, ``fail`` refuses the import."""

    def __init__(self, on_error: str = "skip"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.issues: list[Issue] = []

    def add(self, file: str, row: int | None, column: str | None, reason: str) -> None:
        self.issues.append(Issue(file, None if row is None else int(row), column, reason))

    def add_rows(self, file: str, rows: Iterable[int], column: str | None, reasons: Iterable[str] | str) -> None:
        """Record one problem per row (``reasons`` is one string for all rows or one per row)."""
        rows = list(rows)
        reasons = [reasons] * len(rows) if isinstance(reasons, str) else list(reasons)
        self.issues.extend(Issue(file, int(r), column, why) for r, why in zip(rows, reasons, strict=True))

    def fatal(self, file: str, row: int | None, column: str | None, reason: str) -> NoReturn:
        """A structural problem (missing column, duplicate id, shape mismatch): refused under any policy."""
        raise ImportValidationError([Issue(file, row, column, reason)])

    def raise_if_failing(self) -> None:
        if self.on_error == "fail" and self.issues:
            raise ImportValidationError(self.issues, f"import refused (on_error='fail'): {len(self.issues)} "
                                                     "problem(s) in the input")

    def frame(self) -> pl.DataFrame:
        if not self.issues:
            return pl.DataFrame(schema=SKIPPED_SCHEMA)
        return pl.DataFrame(
            {
                "file": [i.file for i in self.issues],
                "row": [i.row for i in self.issues],
                "column": [i.column for i in self.issues],
                "reason": [i.reason for i in self.issues],
            },
            schema=SKIPPED_SCHEMA,
        )


def refuse_no_rows(df: pl.DataFrame, file: str) -> None:
    """A file with no data rows (empty, header only) is an import of nothing: refuse it, naming the file."""
    if df.height == 0:
        raise ImportValidationError([Issue(file, None, None, "no data rows (empty file or header only): "
                                                             "nothing to import")], "import refused: empty input")


def raise_on_duplicates(ids: pl.Series, rows: pl.Series, file: str, column: str) -> None:
    """Duplicate ids are always an error (no policy can pick the right copy); name both rows of each pair."""
    df = pl.DataFrame({"id": ids, "row": rows}).filter(pl.col("id").is_not_null())
    dup = df.filter(pl.col("id").is_duplicated())
    if not dup.height:
        return
    first = dup.group_by("id", maintain_order=True).agg(pl.col("row").sort())
    issues = []
    for ident, rws in first.iter_rows():
        for later in rws[1:]:
            issues.append(Issue(file, later, column, f"duplicate id {ident!r}: also at row {rws[0]}"))
    raise ImportValidationError(issues, f"import refused: {len(issues)} duplicate id(s) in {file}")


# --------------------------------------------------------------------------------------------- paths


NOT_FOUND = "image file not found"


def unsafe_path_reason(rel: str | None) -> str | None:
    """Why ``rel`` may not be used as a path relative to a folder (None when it may)."""
    if rel is None or not str(rel).strip():
        return "empty image path"
    rel = str(rel)
    if "\x00" in rel:
        return "image path contains a NUL byte; refused"
    if rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive or PurePosixPath(rel).is_absolute():
        return f"absolute image path {rel!r} refused (must be relative to the image folder)"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return f"image path {rel!r} contains '..' and would escape the image folder; refused"
    return None


def resolve_inside(root: Path, rel: str | None) -> tuple[Path | None, str | None]:
    """Resolve ``rel`` under ``root`` or say why not: absolute, '..', symlink escape, missing file.

    The file must stay inside ``root`` after every symlink is followed, so a user folder can never make us
    read (and later copy into the warehouse) a file from elsewhere on the machine.
    """
    why = unsafe_path_reason(rel)
    if why is not None:
        return None, why
    base = Path(os.path.realpath(root))
    cand = base.joinpath(*PurePosixPath(str(rel).replace("\\", "/")).parts)
    real = Path(os.path.realpath(cand))
    if not real.is_relative_to(base):
        return None, f"image path {rel!r} is a symlink pointing outside the image folder ({real}); refused"
    if not real.is_file():
        return None, f"{NOT_FOUND}: {cand}"
    return real, None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- readers

_SURROGATE = re.compile("[\udc80-\udcff]")


def _bad_bytes(text: str) -> str:
    """Render the undecodable bytes that surrogateescape kept, for the message."""
    found = _SURROGATE.findall(text)[:4]
    return " ".join(f"0x{ord(c) - 0xDC00:02x}" for c in found)


def _with_rows(df: pl.DataFrame, rows: Sequence[int] | None = None) -> pl.DataFrame:
    if ROW in df.columns:
        raise ValueError(f"input has a column named {ROW!r}, which the importer reserves")
    values = np.arange(1, df.height + 1) if rows is None else np.asarray(rows, dtype=np.int64)
    return df.with_columns(pl.Series(ROW, values, dtype=pl.Int64))


def read_csv_strings(path: Path, log: IssueLog, limits: ImportLimits | None = None) -> pl.DataFrame:
    """Read a CSV with every column as String plus ``ROW``; rows with bad bytes or wrong width are logged.

    The file is streamed record by record (never read whole, and refused above ``max_table_bytes``). The
    stdlib csv reader walks the text decoded with ``surrogateescape``, so an invalid byte is attributed to
    the exact record and column, and a short or long record is reported instead of being padded.
    """
    name = str(path)
    check_table_size(path, log, limits)
    try:
        fh = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")  # noqa: SIM115
    except OSError as exc:
        log.fatal(name, None, None, f"cannot read file ({exc})")
    with fh:
        header, records, rows = _csv_records(csv.reader(fh), name, log)
    cols = {h: [r[j] if r[j] != "" else None for r in records] for j, h in enumerate(header)}
    df = pl.DataFrame(cols, schema={h: pl.String for h in header})
    return _with_rows(df, rows)


def _csv_records(reader, name: str, log: IssueLog) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, good records, their 1-based record numbers) from a csv reader; bad records are logged."""
    records: list[list[str]] = []
    rows: list[int] = []
    try:
        header = next(reader, [])
        if not header:
            log.fatal(name, None, None, "file is empty or its first line (the header) is blank")
        for j, col in enumerate(header):
            if _SURROGATE.search(col):
                log.fatal(name, None, f"#{j + 1}", f"header is not valid UTF-8 (bytes {_bad_bytes(col)})")
            if col in header[:j]:
                log.fatal(name, None, col, "column name appears twice in the header")
        for i, rec in enumerate(reader, start=1):
            if not rec:
                continue
            if len(rec) != len(header):
                log.add(name, i, None, f"record has {len(rec)} fields but the header has {len(header)}")
                continue
            if _SURROGATE.search("".join(rec)):  # per-cell checks only for a record with bad bytes
                bad = [j for j, v in enumerate(rec) if _SURROGATE.search(v)]
                log.add(name, i, header[bad[0]], f"text is not valid UTF-8 (bytes {_bad_bytes(rec[bad[0]])}); "
                                                 "row cannot be decoded")
                continue
            records.append(rec)
            rows.append(i)
    except csv.Error as exc:
        log.fatal(name, None, None, f"malformed CSV near line {reader.line_num} ({exc})")
    return header, records, rows


def _json_value(v):
    """Nested objects/arrays in a JSONL cell become JSON text (source_meta may arrive as an object)."""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return v


def read_jsonl(path: Path, log: IssueLog, limits: ImportLimits | None = None) -> pl.DataFrame:
    """Read JSONL objects into a frame plus ``ROW`` (the 1-based line number); bad lines are logged."""
    name = str(path)
    check_table_size(path, log, limits)
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.fatal(name, None, None, f"cannot read file ({exc})")
    data = data.removeprefix(codecs.BOM_UTF8)
    lines = data.split(b"\n")
    if lines and not lines[-1].strip():
        lines = lines[:-1]
    if lines and all(ln.strip() for ln in lines):
        try:
            data.decode("utf-8")
            df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
            if df.height == len(lines):
                df = df.with_columns(
                    [pl.col(c).struct.json_encode() for c, t in df.schema.items() if isinstance(t, pl.Struct)]
                )
                return _with_rows(df)
        except (UnicodeDecodeError, pl.exceptions.PolarsError, ValueError):
            pass
    records: list[dict] = []
    rows: list[int] = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", errors="surrogateescape")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            log.add(name, i, None, f"invalid JSON ({exc.msg} at char {exc.pos})")
            continue
        if not isinstance(obj, dict):
            log.add(name, i, None, f"expected a JSON object per line, got {type(obj).__name__}")
            continue
        bad = [k for k, v in obj.items() if isinstance(v, str) and _SURROGATE.search(v)]
        if bad or _SURROGATE.search(text):
            col = bad[0] if bad else None
            log.add(name, i, col, f"text is not valid UTF-8 (bytes {_bad_bytes(text)}); row cannot be decoded")
            continue
        records.append({k: _json_value(v) for k, v in obj.items()})
        rows.append(i)
    keys: list[str] = []
    seen: set[str] = set()
    for r in records:
        for k in r:
            if k not in seen:
                seen.add(k)
                keys.append(k)
    cols = [pl.Series(k, [r.get(k) for r in records], strict=False) for k in keys]
    return _with_rows(pl.DataFrame(cols) if cols else pl.DataFrame(), rows)


def read_table(path: Path, log: IssueLog, limits: ImportLimits | None = None) -> pl.DataFrame:
    """Read Parquet, CSV (all String) or JSONL by suffix, always with ``ROW``; refused above the size limit."""
    suffix = path.suffix.lower()
    if not path.exists():
        log.fatal(str(path), None, None, "file not found")
    if suffix == ".parquet":
        check_table_size(path, log, limits)
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars/arrow raise several types for corrupt or non-UTF-8 files
            log.fatal(str(path), None, None, f"not a readable Parquet file ({exc})")
        return _with_rows(df)
    if suffix == ".csv":
        return read_csv_strings(path, log, limits)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path, log, limits)
    log.fatal(str(path), None, None, f"unsupported file type {suffix!r} (use .parquet, .csv or .jsonl)")


# ------------------------------------------------------------------------------------------- columns

_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}


def numeric_column(df: pl.DataFrame, col: str, *, booleans: bool = False) -> tuple[pl.Series, pl.Series]:
    """Parse ``col`` as Float64; returns (values, bad) where ``bad`` marks present-but-unparsable cells.

    Empty strings and nulls are *missing* (null values, not bad); NaN/inf text counts as bad so that a
    cost or quality can never silently be non-finite. ``booleans`` also accepts true/false (quality).
    """
    s = df[col]
    if s.dtype == pl.Boolean:
        return s.cast(pl.Float64), pl.Series(col, [False] * s.len())
    if s.dtype.is_numeric():
        v = s.cast(pl.Float64)
        return v, v.is_not_null() & ~v.is_finite()
    txt = s.cast(pl.String).str.strip_chars()
    txt = pl.select(pl.when(txt == "").then(None).otherwise(txt)).to_series()
    v = txt.cast(pl.Float64, strict=False)
    if booleans:
        low = txt.str.to_lowercase()
        v = pl.select(
            pl.when(low.is_in(list(_TRUE))).then(1.0).when(low.is_in(list(_FALSE))).then(0.0).otherwise(v)
        ).to_series()
    bad = (txt.is_not_null() & v.is_null()) | (v.is_not_null() & ~v.is_finite())
    return v.alias(col), bad.fill_null(False).alias(col)


def flagged_rows(df: pl.DataFrame, mask: pl.Series | np.ndarray) -> list[int]:
    """The ``ROW`` numbers where ``mask`` is true."""
    m = mask.to_numpy() if isinstance(mask, pl.Series) else np.asarray(mask)
    return df[ROW].to_numpy()[m.astype(bool)].tolist()


def blank(s: pl.Series) -> pl.Series:
    """True where a text cell is null or only whitespace."""
    return (s.is_null() | (s.cast(pl.String).str.strip_chars() == "")).fill_null(True)
