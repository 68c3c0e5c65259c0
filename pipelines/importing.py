"""``lrouter import FORMAT PATH``: validate, then write the import into the warehouse and registry."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from warehouse.catalog import refresh_catalog
from warehouse.store import Warehouse


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
    from collectors.importing import ImportOptions, import_benchmark
    from collectors.importing.ingest import apply_import
    from collectors.importing.validation import ImportValidationError
    from pipelines.cli.common import _registry_path

    side = tuple(c for c in (args.side_features or "").split(",") if c)
    options = ImportOptions(on_error=args.on_error, benchmark=args.benchmark or "", side_features=side,
                            queries=args.queries or "")
    try:
        result = import_benchmark(args.path, args.format, args.images or None, options)
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
    print(import_summary(result, summary))
    return 0


def import_summary(result, summary: dict) -> str:
    """A few human lines (the full Markdown report is in the file it names)."""
    q, t = result.queries, result.traces
    lines = [f"imported {result.benchmark} ({summary['mode']}): {summary['queries']:,} queries, "
             f"{summary['models']} models, {summary['traces']:,} traces, {summary['images']:,} images copied"
             + (", text-only" if summary["text_only"] else "")]
    if summary["skipped"]:
        lines.append(f"skipped {summary['skipped']:,} bad rows (listed in the import_skipped table)")
    if summary.get("dropped"):
        lines.append(str(summary["dropped"]))
    if t.height:
        per = t.group_by("model_id").agg(quality=pl.col("quality").mean()).sort("quality", descending=True)
        best = per.row(0, named=True)
        lines.append(f"best model on average: {best['model_id']} (quality {best['quality']:.3f}); "
                     f"task groups: {q['task_group'].n_unique()}")
    lines += [str(n) for n in summary.get("notes") or []]
    lines.append(f"report: {summary['report']}")
    lines.append("next: lrouter run all --preset quick (features, train, evaluate on this home)")
    return "\n".join(lines)
