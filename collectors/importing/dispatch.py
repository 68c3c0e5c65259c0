"""`import_benchmark(source, fmt, images, options)`: the one entry point of every importer.

Why separate: the CLI (`lrouter import FORMAT PATH`) and the `benchmark_queries` asset name a format and a
path; only this module knows every format module and how each spells its inputs. The format names are the
CLI's: ``mmr-bench``, ``vl-routerbench``, ``long``, ``queries``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collectors.importing.common import ImportResult
from collectors.importing.long_format import find_long_file, import_long, import_long_dir
from collectors.importing.mmr_bench import import_mmr_bench
from collectors.importing.queries_jsonl import import_custom_queries
from collectors.importing.vl_routerbench import import_vl_routerbench

FORMATS = ("mmr-bench", "vl-routerbench", "long", "queries")


@dataclass(frozen=True)
class ImportOptions:
    """What an import may be told besides its source and images (each format reads the ones it knows)."""

    on_error: str = "fail"  # fail: refuse the whole import on a bad row; skip: import the good rows, list the bad
    benchmark: str = ""  # the benchmark label (empty: the format's default)
    side_features: tuple[str, ...] = ()  # mmr-bench: extra columns used as categorical side features
    queries: str = ""  # long: a separate queries file next to a traces file


def detect_format(path: Path) -> str:
    """A folder with Y.npz -> vl-routerbench, a folder with traces.* -> long, *.csv -> mmr-bench,
    *.jsonl -> queries."""
    if path.is_dir() and (path / "Y.npz").exists():
        return "vl-routerbench"
    if path.is_dir() and find_long_file(path, "traces") is not None:
        return "long"
    if path.suffix.lower() == ".csv":
        return "mmr-bench"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "queries"
    raise ValueError(f"{path}: cannot tell the format; name one of {', '.join(FORMATS)}")


def import_benchmark(source: Path | str, fmt: str | None = None, images: Path | str | None = None,
                     options: ImportOptions | None = None) -> ImportResult:
    """Import ``source`` in format ``fmt`` (default: from the path's shape, see `detect_format`), with images
    resolved under ``images``. Reads files only; `ingest.apply_import` writes the result."""
    source, opts = Path(source), options or ImportOptions()
    fmt = detect_format(source) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; expected one of {', '.join(FORMATS)}")
    kw: dict = {"on_error": opts.on_error, "images": images or None}
    if opts.benchmark:
        kw["benchmark"] = opts.benchmark
    if fmt == "mmr-bench":
        return import_mmr_bench(source, side_features=list(opts.side_features), **kw)
    if fmt == "vl-routerbench":
        return import_vl_routerbench(source, **kw)
    if fmt == "long":
        return import_long(source, opts.queries, **kw) if opts.queries else import_long_dir(source, **kw)
    return import_custom_queries(source, **kw)
