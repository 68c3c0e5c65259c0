"""Write an import into the warehouse: queries, models (into the registry), traces, embeddings, report.

Importers validate everything first and return frames; only a successful import reaches this module,
so a failed import writes nothing. An import makes the imported benchmark the current one: its models are
registered (backend ``import``, active) and models without traces on it are deactivated (not deleted;
``lrouter models add`` re-enables them).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl

from collectors.importing.formats import ImportResult
from collectors.registry import ModelEntry, ensure_registry, save_registry
from warehouse.store import Warehouse, atomic_write_bytes

IMPORTED_EMBEDDINGS = "imported_embeddings.npz"


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


def apply_import(wh: Warehouse, result: ImportResult, registry_path: Path) -> dict:
    wh.ensure()
    n_images = result.copy_images(wh.images_dir)
    wh.write_table("queries", result.queries)
    # registry: imported models become the active pool
    entries = ensure_registry(registry_path)
    imported = result.models
    ids = imported["model_id"].to_list()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    by_id = {e.model_id: e for e in entries}
    out: list[ModelEntry] = []
    for e in entries:
        out.append(e if e.model_id in ids else e.model_copy(update={"active": False}))
    for row in imported.iter_rows(named=True):
        entry = ModelEntry(
            model_id=row["model_id"], backend="import", endpoint="",
            price_in_per_mtok=_nan_to_zero(row.get("price_in_per_mtok")),
            price_out_per_mtok=_nan_to_zero(row.get("price_out_per_mtok")),
            params_b=row.get("params_b") if row.get("params_b") and row.get("params_b") > 0 else None,
            added_at=stamp, active=True, simulated=False,
            description=f"imported from {result.benchmark}",
        )
        if row["model_id"] in by_id:
            out = [entry if e.model_id == row["model_id"] else e for e in out]
        else:
            out.append(entry)
    save_registry(registry_path, out)
    # traces: replace every partition with the imported ones
    for m in wh.trace_partitions():
        if m not in ids:
            wh.delete_trace_partition(m)
    for m in ids:
        wh.write_trace_partition(m, result.traces.filter(pl.col("model_id") == m))
    # precomputed embeddings, aligned with the queries rows
    emb_path = imported_embeddings_path(wh)
    if result.embeddings:
        import io

        buf = io.BytesIO()
        np.savez(buf, query_id=np.array(result.queries["query_id"].to_list()),
                 **{k.replace(":", "__"): v.astype(np.float32) for k, v in result.embeddings.items()})
        atomic_write_bytes(buf.getvalue(), emb_path)
    else:
        emb_path.unlink(missing_ok=True)
    if result.cost_bounds:
        atomic_write_bytes(json.dumps(result.cost_bounds, indent=2).encode(), wh.root / "cost_bounds.json")
    else:
        (wh.root / "cost_bounds.json").unlink(missing_ok=True)
    wh.write_table("import_skipped", result.skipped)
    report_dir = wh.reports_dir / "imports"
    report_path = report_dir / f"{result.benchmark}-{stamp.replace(':', '')}.md"
    atomic_write_bytes(result.report_markdown().encode(), report_path)
    return {
        "queries": result.queries.height,
        "models": len(ids),
        "traces": result.traces.height,
        "skipped": result.skipped.height,
        "images": n_images,
        "text_only": result.text_only,
        "report": str(report_path),
    }
