"""Helpers shared by the importer tests: schema checks, hashes, skipped-row keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

AT = "2026-01-01T00:00:00+00:00"


def assert_conforms(df: pl.DataFrame, schema: dict) -> None:
    assert df.columns[: len(schema)] == list(schema)
    for col, dtype in schema.items():
        assert df.schema[col] == dtype, col


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def skips(res) -> set[tuple[str, int | None, str | None]]:
    return {(Path(f).name, r, c) for f, r, c, _ in res.skipped.iter_rows()}


def image_bytes(fmt: str, seed: int, size: tuple[int, int] = (4, 3)) -> bytes:
    """A tiny real image (importers decode image headers), distinct per ``seed``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 200)).save(buf, format=fmt)
    return buf.getvalue()


PNG_A = image_bytes("PNG", 1)
JPEG_B = image_bytes("JPEG", 2)


def small_warehouse(home: Path) -> tuple[object, Path, pl.DataFrame]:
    """A warehouse with 3 collected queries and traces for 2 registered models (one sim, one Ollama).

    Returns (warehouse, registry path, all traces) so a test can check an import kept or dropped them.
    """
    from collectors.importing.common import trace_defaults
    from collectors.registry import ModelEntry, save_registry
    from warehouse.schemas import QUERIES, conform
    from warehouse.store import Warehouse

    wh = Warehouse(home / "warehouse").ensure()
    ids = ["c1", "c2", "c3"]
    wh.write_table("queries", conform(pl.DataFrame({
        "query_id": ids, "benchmark": ["builtin"] * 3, "dataset": ["charts"] * 3, "task_group": ["chart"] * 3,
        "task": ["bar"] * 3, "question": ["q1?", "q2?", "q3?"], "answer": ["1", "2", "3"],
        "answer_kind": ["numeric"] * 3, "image_path": [""] * 3, "image_sha256": [""] * 3,
        "source_meta": ["{}"] * 3, "official_split": [""] * 3}), QUERIES, "queries"))
    registry = home / "models.yaml"
    save_registry(registry, [ModelEntry(model_id="sim-a", backend="sim", simulated=True),
                             ModelEntry(model_id="llava:7b", backend="ollama")])
    frames = []
    for m in ("sim-a", "llava:7b"):
        t = trace_defaults(pl.DataFrame({"query_id": ids, "model_id": [m] * 3, "quality": [1.0, 0.0, 0.5],
                                         "cost_usd": [1e-4, 2e-4, 3e-4]}), "collect-1", AT)
        wh.write_trace_partition(m, t)
        frames.append(t)
    return wh, registry, pl.concat(frames)
