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

``LROUTER_WAREHOUSE=s3://bucket/prefix`` puts the same layout in an S3-compatible bucket instead: tables,
trace partitions and staged rows go through :mod:`warehouse.filesystem` (object, then pointer), and the
blob folders (images, features, reports, artifacts) live in a local mirror under ``$LROUTER_HOME/s3-cache``
that :meth:`Warehouse.pull` / :meth:`Warehouse.push` keep in step with the bucket.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, unquote

import polars as pl

from warehouse.filesystem import (  # noqa: F401 - atomic_write_* are imported from here by callers
    S3FS,
    LocalFS,
    WarehouseFS,
    atomic_write_bytes,
    atomic_write_parquet,
    is_remote,
)
from warehouse.schemas import TABLES, TRACES, conform

# Folders the router code opens by local path; on S3 they are mirrored (see Warehouse.pull / push).
BLOB_DIRS = ("images", "features", "reports", "artifacts")


def lrouter_home() -> Path:
    return Path(os.environ.get("LROUTER_HOME", "./data")).resolve()


def default_root() -> Path:
    return lrouter_home() / "warehouse"


def default_location() -> str | Path:
    """``$LROUTER_WAREHOUSE`` (a folder or ``s3://bucket/prefix``) when set, else ``$LROUTER_HOME/warehouse``."""
    env = os.environ.get("LROUTER_WAREHOUSE", "").strip()
    if not env:
        return default_root()
    return env.rstrip("/") if is_remote(env) else Path(env)


def partition_file_name(key: str) -> str:
    """Url-quote a partition key (model ids hold ':' and '/') into a safe, reversible file name."""
    return quote(key, safe="") + ".parquet"


def partition_key(path: Path) -> str:
    return unquote(path.name[: -len(".parquet")])


class Warehouse:
    """Typed access to the warehouse directory; no Dagster here so the CLI and tests use it directly."""

    def __init__(self, root: Path | str | None = None):
        location = root if root is not None else default_location()
        self.fs: WarehouseFS
        if is_remote(location):
            self.fs = S3FS(str(location))
            self.location = self.fs.url()
            # blobs the router opens by path: a local mirror per machine (see pull / push)
            self.root = lrouter_home() / "s3-cache" / self.fs.base
        else:
            self.root = Path(location).resolve()
            self.location = str(self.root)
            self.fs = LocalFS(self.root)

    @property
    def remote(self) -> bool:
        return self.fs.remote

    def pull(self, dirs: tuple[str, ...] = BLOB_DIRS) -> int:
        """Bring the local mirror of the blob folders up to date with the bucket (no-op on local disk)."""
        if not isinstance(self.fs, S3FS):
            return 0
        return sum(self.fs.pull_dir(d, self.root / d) for d in dirs)

    def push(self, dirs: tuple[str, ...] = BLOB_DIRS) -> int:
        """Upload the blobs written locally since the last push (no-op on local disk)."""
        if not isinstance(self.fs, S3FS):
            return 0
        return sum(self.fs.push_dir(self.root / d, d) for d in dirs)

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
    def write_table(self, name: str, df: pl.DataFrame) -> Path | str:
        if name in TABLES:
            df = conform(df, TABLES[name], name)
        if not self.remote:
            return atomic_write_parquet(df, self.table_path(name))
        return self.fs.write_parquet(f"tables/{name}.parquet", df)

    def has_table(self, name: str) -> bool:
        return self.fs.parquet_exists(f"tables/{name}.parquet")

    def read_table(self, name: str) -> pl.DataFrame:
        df = self.fs.read_parquet(f"tables/{name}.parquet")
        if df is None:
            where = self.table_path(name) if not self.remote else self.fs.url(f"tables/{name}.parquet")
            raise FileNotFoundError(f"warehouse table {name!r} has not been written yet ({where})")
        return df

    # --- partitioned traces ------------------------------------------------------------------------
    def trace_partition_path(self, model_id: str) -> Path:
        return self.traces_dir / partition_file_name(model_id)

    def write_trace_partition(self, model_id: str, df: pl.DataFrame) -> Path | str:
        """Replace one model's traces atomically; rows for any other model are refused."""
        df = conform(df, TRACES, "traces")
        others = df.filter(pl.col("model_id") != model_id)
        if others.height:
            raise ValueError(
                f"traces partition {model_id!r}: {others.height} row(s) belong to other models "
                f"{sorted(set(others['model_id'].to_list()))[:5]}"
            )
        if not self.remote:
            return atomic_write_parquet(df, self.trace_partition_path(model_id))
        return self.fs.write_parquet(f"traces/{partition_file_name(model_id)}", df)

    def trace_partitions(self) -> list[str]:
        return sorted(partition_key(Path(name)) for name in self.fs.list_parquet("traces"))

    def read_trace_partition(self, model_id: str) -> pl.DataFrame:
        df = self.fs.read_parquet(f"traces/{partition_file_name(model_id)}")
        return pl.DataFrame(schema=TRACES) if df is None else df

    def read_traces(self, model_ids: list[str] | None = None) -> pl.DataFrame:
        ids = self.trace_partitions() if model_ids is None else model_ids
        frames = [self.read_trace_partition(m) for m in ids]
        frames = [conform(f, TRACES, "traces") for f in frames if f.height]
        if not frames:
            return pl.DataFrame(schema=TRACES)
        return pl.concat(frames, how="diagonal_relaxed")

    def delete_trace_partition(self, model_id: str) -> None:
        self.fs.delete_parquet(f"traces/{partition_file_name(model_id)}")
