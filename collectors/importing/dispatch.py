"""`import_benchmark`: pick the importer from a format name or from the shape of the path.

Why separate: the CLI and the `benchmark_queries` asset take a kind and a path; only this module needs to
know every format module.
"""

from __future__ import annotations

from pathlib import Path

from collectors.importing.common import ImportResult
from collectors.importing.long_format import find_long_file, import_long_dir
from collectors.importing.mmr_bench import import_mmr_bench
from collectors.importing.queries_jsonl import import_custom_queries
from collectors.importing.vl_routerbench import import_vl_routerbench

FORMATS = ("mmr-bench", "vl-routerbench", "long", "custom")


def detect_format(path: Path) -> str:
    """A folder with Y.npz -> vl-routerbench, a folder with traces.* -> long, *.csv -> mmr-bench,
    *.jsonl -> custom."""
    if path.is_dir() and (path / "Y.npz").exists():
        return "vl-routerbench"
    if path.is_dir() and find_long_file(path, "traces") is not None:
        return "long"
    if path.suffix.lower() == ".csv":
        return "mmr-bench"
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "custom"
    raise ValueError(f"{path}: cannot tell the format; pass fmt= one of mmr-bench, vl-routerbench, long, custom")


def import_benchmark(path: Path | str, fmt: str | None = None, **kwargs) -> ImportResult:
    """Pick the importer from ``fmt`` (mmr-bench | vl-routerbench | long | custom) or from the path's shape
    (see `detect_format`). Keyword arguments go to the importer."""
    path = Path(path)
    fmt = detect_format(path) if fmt is None else fmt
    if fmt == "mmr-bench":
        return import_mmr_bench(path, **kwargs)
    if fmt == "vl-routerbench":
        return import_vl_routerbench(path, **kwargs)
    if fmt == "long":
        return import_long_dir(path, **kwargs)
    if fmt == "custom":
        return import_custom_queries(path, **kwargs)
    raise ValueError(f"unknown format {fmt!r}; expected mmr-bench, vl-routerbench, long or custom")
