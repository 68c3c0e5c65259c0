"""The simulator's answer key: the benchmark's ``queries`` rows, indexed so a request is matched to its
query by the sha256 of its first image (disambiguated by the question when several queries share an
image), or, without an image, by its question text among the text-only queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from collectors.simulator.behaviour import check_visual, normalise_question, parse_source_meta, question_hash
from warehouse.vocabulary import TASK_GROUPS

KEY_COLUMNS = ("query_id", "task_group", "question", "answer", "answer_kind", "image_sha256", "source_meta")


class AnswerKey:
    """Queries indexed by image hash and by question hash, validated once when loaded."""

    def __init__(self, df: pl.DataFrame | None = None, source: str = "answer key"):
        self.rows: list[dict[str, Any]] = []
        self.by_sha: dict[str, list[dict[str, Any]]] = {}
        self.text_by_qhash: dict[str, list[dict[str, Any]]] = {}
        self.text_rows: list[tuple[str, dict[str, Any]]] = []  # (normalised question, row), no image
        if df is None:
            return
        missing = [c for c in KEY_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{source}: missing column(s) {missing}; have {df.columns}")
        for i, row in enumerate(df.select(KEY_COLUMNS).iter_rows(named=True)):
            where = f"{source}: row {i} (query_id={row['query_id']!r})"
            if row["task_group"] not in TASK_GROUPS:
                raise ValueError(
                    f"{where}: field 'task_group' = {row['task_group']!r}; expected one of {TASK_GROUPS}"
                )
            meta = parse_source_meta(row["source_meta"], f"{where}: field 'source_meta'")
            check_visual(meta.get("visual"), f"{where}: field 'source_meta.visual'")
            row = {k: ("" if v is None else v) for k, v in row.items()}
            row["source_meta"] = meta
            self.rows.append(row)
            sha = str(row["image_sha256"]).lower()
            if sha:
                self.by_sha.setdefault(sha, []).append(row)
            else:
                self.text_by_qhash.setdefault(question_hash(row["question"]), []).append(row)
                self.text_rows.append((normalise_question(row["question"]), row))

    @classmethod
    def load(cls, key: pl.DataFrame | Path | str | None) -> AnswerKey:
        if key is None:
            return cls()
        if isinstance(key, pl.DataFrame):
            return cls(key)
        path = Path(key)
        if path.is_dir():  # a warehouse root
            path = path / "tables" / "queries.parquet"
        if not path.exists():
            raise FileNotFoundError(f"answer key {path} not found")
        try:
            df = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a corrupt file
            raise ValueError(f"answer key {path}: not a readable Parquet file ({exc})") from exc
        return cls(df, source=str(path))

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, image_sha: str, prompt: str) -> dict[str, Any] | None:
        """The key row for a request: by image (then question), or by question alone when no image."""
        nprompt = normalise_question(prompt)
        if image_sha:
            rows = self.by_sha.get(image_sha)
            if not rows:
                return None
            if len(rows) == 1:
                return rows[0]
            return (
                _best_containing(((normalise_question(r["question"]), r) for r in rows), nprompt) or rows[0]
            )
        rows = self.text_by_qhash.get(question_hash(prompt))
        if rows:
            return rows[0]
        return _best_containing(self.text_rows, nprompt) if nprompt else None


def _best_containing(cands: Iterable[tuple[str, dict[str, Any]]], nprompt: str) -> dict[str, Any] | None:
    """The row whose (normalised) question is the longest one contained in the prompt."""
    best: tuple[int, dict[str, Any]] | None = None
    for q, row in cands:
        if q and q in nprompt and (best is None or len(q) > best[0]):
            best = (len(q), row)
    return None if best is None else best[1]
