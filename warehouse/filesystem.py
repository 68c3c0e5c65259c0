"""One filesystem layer under the warehouse: plain local files, or an S3-compatible bucket.

Every read and write of a warehouse table, trace partition, staged resume row and mirrored blob goes
through a :class:`WarehouseFS`, so the rest of ``warehouse/`` never asks where the warehouse lives.

- :class:`LocalFS` is exactly the historical layout: a file is written to a temporary name in its own
  directory and moved into place with ``os.replace`` (atomic on POSIX).
- :class:`S3FS` (``LROUTER_WAREHOUSE=s3://bucket/prefix``; endpoint and credentials from the standard AWS
  environment variables, ``AWS_ENDPOINT_URL`` included, read by botocore and never logged) cannot rename.
  A published Parquet file is therefore written once as an immutable object under ``_objects/`` and then
  a small JSON pointer ``<name>.current`` naming it is put; a reader reads the pointer, then the object, so
  it never sees a half-written table (a single PUT is atomic on S3, and old objects are kept one version
  back for readers that read the previous pointer). Staged parts and content-addressed images are
  immutable, so a plain PUT is already atomic for them.

Blobs that the router code opens by local path (images, feature arrays, checkpoints, reports) live in a
local mirror of the bucket; :meth:`S3FS.pull_dir` / :meth:`S3FS.push_dir` sync a folder through an
``_index.json`` of sha256 digests that is published after the objects it lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl

POINTER_SUFFIX = ".current"
OBJECTS_DIR = "_objects"
INDEX_NAME = "_index.json"
KEEP_VERSIONS = 2  # the current object and the one before it (a reader may still hold the old pointer)


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


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    return buf.getvalue()


def is_remote(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith("s3://")


class WarehouseFS:
    """Where the warehouse's files live; ``rel`` paths are '/'-separated, relative to the warehouse root."""

    remote: bool = False

    def url(self, rel: str = "") -> str:  # pragma: no cover - interface
        raise NotImplementedError

    # published Parquet files (tables, trace partitions): replaced atomically, read whole
    def write_parquet(self, rel: str, df: pl.DataFrame) -> str:
        raise NotImplementedError

    def read_parquet(self, rel: str) -> pl.DataFrame | None:
        raise NotImplementedError

    def parquet_exists(self, rel: str) -> bool:
        raise NotImplementedError

    def list_parquet(self, rel_dir: str) -> list[str]:
        """Names (``x.parquet``) of the published Parquet files directly in ``rel_dir``."""
        raise NotImplementedError

    def resolve(self, pattern: str) -> list[str]:
        """Physical locations DuckDB reads for a published file or a ``dir/*.parquet`` glob."""
        raise NotImplementedError

    def delete_parquet(self, rel: str) -> None:
        raise NotImplementedError

    # immutable parts (staged resume rows): written once, listed, read, removed together
    def put_part(self, rel: str, df: pl.DataFrame) -> str:
        raise NotImplementedError

    def list_parts(self, rel_dir: str, prefix: str = "part-") -> list[str]:
        raise NotImplementedError

    def read_part(self, rel: str) -> pl.DataFrame:
        raise NotImplementedError

    def delete_dir(self, rel_dir: str) -> None:
        raise NotImplementedError


class LocalFS(WarehouseFS):
    """The warehouse as plain files under ``root`` (the default; behaviour as before this layer existed)."""

    remote = False

    def __init__(self, root: Path):
        self.root = root

    def path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def url(self, rel: str = "") -> str:
        return str(self.path(rel))

    def write_parquet(self, rel: str, df: pl.DataFrame) -> str:
        return str(atomic_write_parquet(df, self.path(rel)))

    def read_parquet(self, rel: str) -> pl.DataFrame | None:
        path = self.path(rel)
        return pl.read_parquet(path) if path.exists() else None

    def parquet_exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def list_parquet(self, rel_dir: str) -> list[str]:
        d = self.path(rel_dir)
        return sorted(p.name for p in d.glob("*.parquet")) if d.exists() else []

    def resolve(self, pattern: str) -> list[str]:
        return sorted(str(p) for p in self.root.glob(pattern))

    def delete_parquet(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def put_part(self, rel: str, df: pl.DataFrame) -> str:
        return str(atomic_write_parquet(df, self.path(rel)))

    def list_parts(self, rel_dir: str, prefix: str = "part-") -> list[str]:
        d = self.path(rel_dir)
        return sorted(f"{rel_dir}/{p.name}" for p in d.glob(f"{prefix}*.parquet")) if d.exists() else []

    def read_part(self, rel: str) -> pl.DataFrame:
        return pl.read_parquet(self.path(rel))

    def delete_dir(self, rel_dir: str) -> None:
        import shutil

        shutil.rmtree(self.path(rel_dir), ignore_errors=True)


def s3_filesystem(read_only: bool = False) -> Any:
    """An s3fs filesystem configured only from the standard AWS environment (no listing cache: several
    workers write the same bucket, so a cached listing would hide their files)."""
    import s3fs

    cls = ReadOnlyS3FileSystem() if read_only else s3fs.S3FileSystem
    kwargs: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return cls(**kwargs)


_READ_ONLY_CLASS: Any = None


def ReadOnlyS3FileSystem() -> Any:  # noqa: N802 - a lazily built class (s3fs is an optional dependency)
    """An s3fs class that refuses every write: the filesystem ``lrouter query`` registers on DuckDB, so a
    statement that slipped past the SQL check still could not write, delete or copy an object."""
    global _READ_ONLY_CLASS
    if _READ_ONLY_CLASS is None:
        import s3fs

        def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise PermissionError("the warehouse is read-only on this connection")

        def open_read_only(self: Any, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
            if any(c in mode for c in "wax+"):
                raise PermissionError("the warehouse is read-only on this connection")
            return s3fs.S3FileSystem.open(self, path, mode, *args, **kwargs)

        names = ["rm", "rm_file", "_rm", "_rm_file", "mv", "_mv", "mkdir", "_mkdir", "makedirs", "_makedirs",
                 "touch", "_touch", "pipe", "pipe_file", "_pipe_file", "put", "put_file", "_put_file", "copy",
                 "cp_file", "_cp_file", "rmdir", "_rmdir"]
        attrs: dict[str, Any] = {n: refuse for n in names}
        attrs["open"] = open_read_only
        _READ_ONLY_CLASS = type("ReadOnlyS3FileSystem", (s3fs.S3FileSystem,), attrs)
    return _READ_ONLY_CLASS


class S3FS(WarehouseFS):
    """The warehouse in ``s3://bucket/prefix`` (any S3-compatible store)."""

    remote = True

    def __init__(self, location: str, fs: Any | None = None):
        if not is_remote(location):
            raise ValueError(f"not an s3:// location: {location!r}")
        self.base = location[len("s3://"):].strip("/")
        if not self.base:
            raise ValueError("LROUTER_WAREHOUSE=s3://... needs a bucket name")
        self.bucket = self.base.split("/", 1)[0]
        self.fs = fs if fs is not None else s3_filesystem()

    def key(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def url(self, rel: str = "") -> str:
        return "s3://" + self.key(rel)

    def _exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.key(rel)))

    def _ls(self, rel_dir: str) -> list[str]:
        try:
            return [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.key(rel_dir), detail=False, refresh=True)]
        except FileNotFoundError:
            return []

    def put_bytes(self, rel: str, data: bytes) -> str:
        """One PUT: the object appears whole or not at all."""
        self.fs.pipe_file(self.key(rel), data)
        return self.url(rel)

    def get_bytes(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None

    # --- published files: object first, then the pointer ------------------------------------------
    def _object_dir(self, rel: str) -> str:
        return f"{OBJECTS_DIR}/{hashlib.sha1(rel.encode()).hexdigest()[:20]}"

    def _pointer(self, rel: str) -> dict | None:
        raw = self.get_bytes(rel + POINTER_SUFFIX)
        return json.loads(raw) if raw else None

    def write_parquet(self, rel: str, df: pl.DataFrame) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
        obj = f"{self._object_dir(rel)}/{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        self.put_bytes(obj, parquet_bytes(df))
        self.put_bytes(rel + POINTER_SUFFIX, json.dumps({"object": obj, "rows": df.height, "name": rel}).encode())
        self._collect_garbage(rel, keep=obj)
        return self.url(obj)

    def _collect_garbage(self, rel: str, keep: str) -> None:
        objects = sorted(self._ls(self._object_dir(rel)))
        old = [o for o in objects[:-KEEP_VERSIONS] if f"{self._object_dir(rel)}/{o}" != keep]
        for name in old:
            try:
                self.fs.rm_file(self.key(f"{self._object_dir(rel)}/{name}"))
            except FileNotFoundError:
                pass

    def read_parquet(self, rel: str) -> pl.DataFrame | None:
        ptr = self._pointer(rel)
        if ptr is None:
            return None
        data = self.get_bytes(ptr["object"])
        if data is None:  # replaced twice while we read the pointer: read the newest one
            return self.read_parquet(rel)
        return pl.read_parquet(io.BytesIO(data))

    def parquet_exists(self, rel: str) -> bool:
        return self._exists(rel + POINTER_SUFFIX)

    def list_parquet(self, rel_dir: str) -> list[str]:
        return sorted(n[: -len(POINTER_SUFFIX)] for n in self._ls(rel_dir)
                      if n.endswith(".parquet" + POINTER_SUFFIX))

    def resolve(self, pattern: str) -> list[str]:
        rel_dir, _, name = pattern.rpartition("/")
        names = self.list_parquet(rel_dir) if name == "*.parquet" else [name]
        out = []
        for n in names:
            ptr = self._pointer(f"{rel_dir}/{n}" if rel_dir else n)
            if ptr is not None:
                out.append(self.url(ptr["object"]))
        return out

    def delete_parquet(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.key(rel + POINTER_SUFFIX))
        except FileNotFoundError:
            pass

    # --- immutable parts ----------------------------------------------------------------------------
    def put_part(self, rel: str, df: pl.DataFrame) -> str:
        return self.put_bytes(rel, parquet_bytes(df))

    def list_parts(self, rel_dir: str, prefix: str = "part-") -> list[str]:
        return sorted(f"{rel_dir}/{n}" for n in self._ls(rel_dir) if n.startswith(prefix) and n.endswith(".parquet"))

    def read_part(self, rel: str) -> pl.DataFrame:
        data = self.get_bytes(rel)
        if data is None:
            raise FileNotFoundError(self.url(rel))
        return pl.read_parquet(io.BytesIO(data))

    def delete_dir(self, rel_dir: str) -> None:
        try:
            self.fs.rm(self.key(rel_dir), recursive=True)
        except FileNotFoundError:
            pass

    # --- mirrored blob folders ----------------------------------------------------------------------
    def _index(self, rel_dir: str) -> dict[str, str]:
        raw = self.get_bytes(f"{rel_dir}/{INDEX_NAME}")
        return json.loads(raw) if raw else {}

    def pull_dir(self, rel_dir: str, local: Path) -> int:
        """Download the files of ``rel_dir`` whose local copy is missing or differs; returns how many."""
        n = 0
        for name, digest in self._index(rel_dir).items():
            dest = local / name
            if dest.exists() and _sha256(dest) == digest:
                continue
            data = self.get_bytes(f"{rel_dir}/{name}")
            if data is None:
                continue  # removed since the index was published
            atomic_write_bytes(data, dest)
            n += 1
        return n

    def push_dir(self, local: Path, rel_dir: str) -> int:
        """Upload the local files of ``rel_dir`` that changed, then publish the merged index."""
        if not local.exists():
            return 0
        index = self._index(rel_dir)
        n = 0
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            name = path.relative_to(local).as_posix()
            if name == INDEX_NAME or path.name.startswith(".") or path.name.endswith(".tmp"):
                continue
            digest = _sha256(path)
            if index.get(name) == digest:
                continue
            self.put_bytes(f"{rel_dir}/{name}", path.read_bytes())
            index[name] = digest
            n += 1
        if n:
            # merge with what other workers published meanwhile, then publish (after the objects)
            merged = {**self._index(rel_dir), **index}
            self.put_bytes(f"{rel_dir}/{INDEX_NAME}", json.dumps(merged, sort_keys=True).encode())
        return n


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
