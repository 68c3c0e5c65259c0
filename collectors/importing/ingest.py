"""Write an import into the warehouse: queries, models (into the registry), traces, embeddings, report.

Importers validate everything first and return frames; only a successful import reaches this module, so a
failed import writes nothing, and an empty one (no queries) is refused here before anything is written.

An import **merges** by default, because a warehouse holds work that cannot be redone cheaply (collected
traces, models the user registered): queries are added (an imported query replaces the stored one with the
same id), the import's models are added or updated and active, every other model stays as it was, and each
imported trace replaces the stored row for the same (query_id, model_id) pair -- one row per pair still
holds -- while all other traces are kept. ``replace=True`` is the old "the import is the whole benchmark":
other queries and trace partitions are dropped and other models deactivated (not deleted; ``lrouter models
add`` re-enables them); `replace_plan` names what that drops before anything happens.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.common import ImportResult
from collectors.importing.validation import ImportValidationError, Issue
from collectors.registry import ModelEntry, ensure_registry, load_registry, save_registry
from warehouse.schemas import QUERIES, TRACES, conform
from warehouse.store import Warehouse, atomic_write_bytes

IMPORTED_EMBEDDINGS = "imported_embeddings.npz"
COST_BOUNDS = "cost_bounds.json"


def imported_embeddings_path(wh: Warehouse) -> Path:
    return wh.features_dir / IMPORTED_EMBEDDINGS


def load_imported_embeddings(wh: Warehouse) -> tuple[list[str], dict[str, np.ndarray]] | None:
    path = imported_embeddings_path(wh)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        ids = [str(x) for x in z["query_id"]]
        return ids, {k.replace("__", ":"): z[k] for k in z.files if k != "query_id"}


def _nan_to_zero(x: float | None) -> float:
    return 0.0 if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ------------------------------------------------------------------------------------- replace plan


@dataclass(frozen=True)
class ReplacePlan:
    """What ``replace=True`` drops: stored queries, trace partitions and active models not in the import."""

    queries: int
    partitions: list[str]
    traces: int
    models: list[str]

    def line(self) -> str:
        if not (self.queries or self.partitions or self.models):
            return "import --replace: nothing outside the import to drop"
        parts = [f"{self.queries} queries",
                 f"{len(self.partitions)} trace partitions ({self.traces} traces"
                 + (f": {_names(self.partitions)})" if self.partitions else ")"),
                 f"{len(self.models)} active models deactivated"
                 + (f" ({_names(self.models)})" if self.models else "")]
        return "import --replace: dropping " + ", ".join(parts)


def replace_plan(wh: Warehouse, result: ImportResult, registry_path: Path) -> ReplacePlan:
    """Count what a replacing import would drop, reading only (nothing is changed)."""
    ids = set(result.models["model_id"].to_list())
    n_queries = 0
    if wh.has_table("queries"):
        stored = wh.read_table("queries")["query_id"]
        n_queries = int((~stored.is_in(result.queries["query_id"].implode())).sum())
    partitions = [m for m in wh.trace_partitions() if m not in ids]
    traces = sum(wh.read_trace_partition(m).height for m in partitions)
    entries = load_registry(registry_path) if Path(registry_path).exists() else []
    models = [e.model_id for e in entries if e.active and e.model_id not in ids]
    return ReplacePlan(queries=n_queries, partitions=partitions, traces=traces, models=models)


def refuse_empty(result: ImportResult) -> None:
    """An import without queries would only drop or change things; refuse it, naming the source."""
    if result.queries.height == 0:
        raise ImportValidationError(
            [Issue(result.source, None, None, "the import holds no queries (empty file, header only, or every "
                                              "row skipped); nothing was written")],
            "import refused: nothing to import")


# ------------------------------------------------------------------------------------------ writers


def _write_queries(wh: Warehouse, queries: pl.DataFrame, replace: bool) -> None:
    if replace or not wh.has_table("queries"):
        wh.write_table("queries", queries)
        return
    stored = conform(wh.read_table("queries"), QUERIES, "queries")
    kept = stored.filter(~pl.col("query_id").is_in(queries["query_id"].implode()))
    wh.write_table("queries", pl.concat([kept, conform(queries, QUERIES, "queries")], how="diagonal_relaxed"))


def _imported_entry(row: dict, benchmark: str, stamp: str) -> ModelEntry:
    params = row.get("params_b")
    return ModelEntry(
        model_id=row["model_id"], backend="import", endpoint="",
        price_in_per_mtok=_nan_to_zero(row.get("price_in_per_mtok")),
        price_out_per_mtok=_nan_to_zero(row.get("price_out_per_mtok")),
        params_b=params if params and params > 0 else None,
        added_at=stamp, active=True, simulated=False, description=f"imported from {benchmark}",
    )


def _write_registry(registry_path: Path, result: ImportResult, replace: bool, stamp: str) -> None:
    """Imported models added/updated and active; others untouched (merge) or deactivated (replace).

    An imported id that is registered with another backend (e.g. an Ollama model whose traces were exported
    and re-imported) keeps its entry, so collection still calls it; it is only made active.

    A home without a registry yet starts from the imported models, not from the simulated default pool:
    an import into a fresh home makes its models the pool, as it always did.
    """
    ids = result.models["model_id"].to_list()
    if not ids and not replace:
        return
    fresh = not Path(registry_path).exists()
    entries = [] if fresh and ids else ensure_registry(registry_path)
    if replace:
        entries = [e if e.model_id in ids else e.model_copy(update={"active": False}) for e in entries]
    new = {row["model_id"]: _imported_entry(row, result.benchmark, stamp)
           for row in result.models.iter_rows(named=True)}
    out = []
    for e in entries:
        if e.model_id in new and e.backend != "import":  # a model the user serves: keep how it is called
            new.pop(e.model_id)
            e = e.model_copy(update={"active": True})
        out.append(new.pop(e.model_id, e))
    save_registry(registry_path, out + list(new.values()))


def _write_traces(wh: Warehouse, traces: pl.DataFrame, ids: list[str], replace: bool) -> None:
    """One partition per imported model; merged rows keep one row per (query_id, model_id), import wins."""
    if replace:
        for m in wh.trace_partitions():
            if m not in ids:
                wh.delete_trace_partition(m)
    for m in ids:
        new = traces.filter(pl.col("model_id") == m)
        old = wh.read_trace_partition(m) if not replace else pl.DataFrame(schema=TRACES)
        if old.height:
            old = conform(old, TRACES, "traces").filter(~pl.col("query_id").is_in(new["query_id"].implode()))
            new = pl.concat([old, conform(new, TRACES, "traces")], how="diagonal_relaxed")
        wh.write_trace_partition(m, new)


def _embedding_arrays(wh: Warehouse, result: ImportResult, replace: bool,
                      notes: list[str]) -> dict[str, np.ndarray] | None:
    """What imported_embeddings.npz holds after the import (None: no file), computed before any write.

    Replace: the import's. Merge: the import's rows plus the stored rows of other queries, for the encoder
    keys both have; a width that differs refuses the merge.
    """
    qids = result.queries["query_id"].to_list()
    new = {k: np.asarray(v, dtype=np.float32) for k, v in (result.embeddings or {}).items()}
    stored = None if replace else load_imported_embeddings(wh)
    if stored is None:
        return {"query_id": np.array(qids), **new} if new else None
    old_ids, old = stored
    dropped = sorted(set(old) ^ set(new))
    if dropped:
        notes.append(f"imported embeddings {dropped} are not in both the stored file and the import; dropped")
    incoming = set(qids)
    keep = [i for i, q in enumerate(old_ids) if q not in incoming]
    out = {"query_id": np.array([old_ids[i] for i in keep] + qids)}
    for k in sorted(set(new) & set(old)):
        if old[k].shape[1] != new[k].shape[1]:
            raise ImportValidationError([Issue(result.source, None, k, "embedding width differs from the stored "
                                                                       "imported embeddings; use --replace")])
        out[k] = np.concatenate([old[k][keep], new[k]]).astype(np.float32)
    return out


def _write_embeddings(wh: Warehouse, arrays: dict[str, np.ndarray] | None) -> None:
    path = imported_embeddings_path(wh)
    if arrays is None:
        path.unlink(missing_ok=True)
        return
    buf = io.BytesIO()
    np.savez(buf, **{k.replace(":", "__"): v for k, v in arrays.items()})
    atomic_write_bytes(buf.getvalue(), path)


def _write_cost_bounds(wh: Warehouse, result: ImportResult, replace: bool) -> None:
    """Merge: the import's keys are added/updated, others kept. Replace: exactly the import's bounds."""
    path = wh.root / COST_BOUNDS
    if replace and not result.cost_bounds:
        path.unlink(missing_ok=True)
        return
    if not result.cost_bounds:
        return
    bounds = dict(result.cost_bounds)
    if not replace and path.exists():
        bounds = {**json.loads(path.read_text()), **bounds}
    atomic_write_bytes(json.dumps(bounds, indent=2).encode(), path)


def apply_import(wh: Warehouse, result: ImportResult, registry_path: Path, *, replace: bool = False,
                 announce: Callable[[str], None] | None = None) -> dict:
    """Write ``result`` (merge by default, see the module docstring); returns a summary for the caller.

    ``announce`` receives the one line naming what ``replace=True`` drops, before anything is changed.
    """
    refuse_empty(result)
    notes: list[str] = []
    touch_embeddings = replace or bool(result.embeddings)  # a merge without embeddings leaves the file alone
    embeddings = _embedding_arrays(wh, result, replace, notes) if touch_embeddings else None
    if not touch_embeddings and imported_embeddings_path(wh).exists():
        notes.append("the warehouse holds imported embeddings and this import has none: its queries have no "
                     "precomputed embedding (set use_imported_embeddings=false on query_features if needed)")
    plan = replace_plan(wh, result, registry_path) if replace else None
    if plan is not None and announce is not None:
        announce(plan.line())
    wh.ensure()
    n_images = result.copy_images(wh.images_dir)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ids = result.models["model_id"].to_list()
    if touch_embeddings:
        _write_embeddings(wh, embeddings)
    _write_queries(wh, result.queries, replace)
    _write_registry(Path(registry_path), result, replace, stamp)
    _write_traces(wh, result.traces, ids, replace)
    _write_cost_bounds(wh, result, replace)
    wh.write_table("import_skipped", result.skipped)
    report_path = wh.reports_dir / "imports" / f"{result.benchmark}-{stamp.replace(':', '')}.md"
    atomic_write_bytes(result.report_markdown().encode(), report_path)
    return {
        "mode": "replace" if replace else "merge",
        "queries": result.queries.height,
        "models": len(ids),
        "traces": result.traces.height,
        "skipped": result.skipped.height,
        "images": n_images,
        "text_only": result.text_only,
        "dropped": None if plan is None else plan.line(),
        "notes": notes,
        "report": str(report_path),
    }
