"""Parquet storage of the warehouse tables, with atomic writes.

Layout under ``root`` (``$LROUTER_HOME/warehouse``)::

    tables/<name>.parquet            single-file tables (queries, models, splits, profiles, ...)
    traces/<model>.parquet           one partition per model (file name is the url-quoted model id)
    images/<sha256>.<ext>            images addressed by content hash
    features/                        encoder caches and token arrays
    reports/<run>/                   evaluation reports
    artifacts/                       router checkpoints
    warehouse.duckdb                 DuckDB catalog of views over the Parquet files

Every write goes to a temporary file in the same directory and is moved into place with ``os.replace``,
which is atomic on POSIX: a reader sees the old file or the new one, never half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote

import polars as pl

from warehouse.schemas import TABLES, TRACES, conform


def lrouter_home() -> Path:
    return Path(os.environ.get("LROUTER_HOME", "./data")).resolve()


def default_root() -> Path:
    return lrouter_home() / "warehouse"


def partition_file_name(key: str) -> str:
    """Url-quote a partition key (model ids hold ':' and '/') into a safe, reversible file name."""
    return quote(key, safe="") + ".parquet"


def partition_key(path: Path) -> str:
    return unquote(path.name[: -len(".parquet")])


def atomic_write_parquet(df: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(data: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Warehouse:
    """Typed access to the warehouse directory; no Dagster here so the CLI and tests use it directly."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).resolve() if root is not None else default_root()

    # --- locations -------------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def traces_dir(self) -> Path:
        return self.root / "traces"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def db_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    def table_path(self, name: str) -> Path:
        return self.tables_dir / f"{name}.parquet"

    def ensure(self) -> Warehouse:
        for d in (self.tables_dir, self.traces_dir, self.images_dir, self.features_dir, self.reports_dir,
                  self.artifacts_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # --- single-file tables ------------------------------------------------------------------------
    def write_table(self, name: str, df: pl.DataFrame) -> Path:
        if name in TABLES:
            df = conform(df, TABLES[name], name)
        return atomic_write_parquet(df, self.table_path(name))

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists()

    def read_table(self, name: str) -> pl.DataFrame:
        path = self.table_path(name)
        if not path.exists():
            raise FileNotFoundError(f"warehouse table {name!r} has not been written yet ({path})")
        return pl.read_parquet(path)

    # --- partitioned traces ------------------------------------------------------------------------
    def trace_partition_path(self, model_id: str) -> Path:
        return self.traces_dir / partition_file_name(model_id)

    def write_trace_partition(self, model_id: str, df: pl.DataFrame) -> Path:
        """Replace one model's traces atomically; rows for any other model are refused."""
        df = conform(df, TRACES, "traces")
        others = df.filter(pl.col("model_id") != model_id)
        if others.height:
            raise ValueError(
                f"traces partition {model_id!r}: {others.height} row(s) belong to other models "
                f"{sorted(set(others['model_id'].to_list()))[:5]}"
            )
        return atomic_write_parquet(df, self.trace_partition_path(model_id))

    def trace_partitions(self) -> list[str]:
        if not self.traces_dir.exists():
            return []
        return sorted(partition_key(p) for p in self.traces_dir.glob("*.parquet"))

    def read_trace_partition(self, model_id: str) -> pl.DataFrame:
        path = self.trace_partition_path(model_id)
        if not path.exists():
            return pl.DataFrame(schema=TRACES)
        return pl.read_parquet(path)

    def read_traces(self, model_ids: list[str] | None = None) -> pl.DataFrame:
        ids = self.trace_partitions() if model_ids is None else model_ids
        frames = [self.read_trace_partition(m) for m in ids]
        frames = [conform(f, TRACES, "traces") for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema=TRACES)
        return pl.concat(frames, how="diagonal_relaxed")

    def delete_trace_partition(self, model_id: str) -> None:
        self.trace_partition_path(model_id).unlink(missing_ok=True)
