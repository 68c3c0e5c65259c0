"""``lrouter import KIND PATH``: validate, then write the import into the warehouse and registry."""

from __future__ import annotations

import sys
from pathlib import Path

from warehouse.catalog import refresh_catalog
from warehouse.store import Warehouse

KIND_TO_FORMAT = {"mmr-bench": "mmr-bench", "vl-routerbench": "vl-routerbench", "long": "long", "queries": "custom"}


def import_kwargs(kind: str, images: str, queries: str, benchmark: str, on_error: str,
                  side_features: list[str] | None = None) -> dict:
    kw: dict = {"on_error": on_error}
    if kind == "mmr-bench" and side_features:
        kw["side_features"] = list(side_features)
    if benchmark:
        kw["benchmark"] = benchmark
    if kind == "mmr-bench" and images:
        kw["image_root"] = images
    if kind == "vl-routerbench" and images:
        kw["image_root"] = images
    if kind == "queries" and images:
        kw["image_folder"] = images
    if kind == "long" and images:
        kw["images_dir"] = images
    return kw


def _refused(exc, on_error: str) -> int:
    """One line for one problem; a problem per line (file, row, column, reason) when there are several."""
    issues = getattr(exc, "issues", [])
    hint = " (--on-error skip imports the good rows and lists the bad ones)" if on_error == "fail" and any(
        getattr(i, "row", None) is not None for i in issues) else ""
    if len(issues) == 1:
        print(f"import refused, nothing written: {issues[0]}{hint}", file=sys.stderr)
    else:
        print(f"import refused, nothing written{hint}:\n{exc}", file=sys.stderr)
    return 2


def run_import(args, wh: Warehouse, home: Path) -> int:
    from collectors.importing import import_benchmark, import_long
    from collectors.importing.ingest import apply_import
    from collectors.importing.validation import ImportValidationError
    from pipelines.cli.common import _registry_path

    side = [c for c in (args.side_features or "").split(",") if c]
    kw = import_kwargs(args.kind, args.images, args.queries, args.benchmark, args.on_error, side)
    try:
        if args.kind == "long" and args.queries:
            result = import_long(args.path, args.queries, **kw)
        else:
            result = import_benchmark(args.path, KIND_TO_FORMAT[args.kind], **kw)
    except ImportValidationError as exc:
        return _refused(exc, args.on_error)
    except (OSError, ValueError) as exc:
        print(f"import failed, nothing written: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    try:
        summary = apply_import(wh, result, _registry_path(home), replace=getattr(args, "replace", False),
                               announce=print)
    except ImportValidationError as exc:
        return _refused(exc, args.on_error)
    refresh_catalog(wh)
    print(result.report_markdown())
    print(f"written: {summary}")
    return 0
