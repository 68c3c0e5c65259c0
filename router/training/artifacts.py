"""Where trained routers live in the warehouse: ``artifacts/latent_router/<run>/`` plus a LATEST pointer.

The pointer is replaced atomically after a checkpoint is fully written, so a reader never loads half a
checkpoint, and earlier checkpoints stay for comparison.
"""

from __future__ import annotations

from pathlib import Path

from warehouse.store import Warehouse, atomic_write_bytes

ROUTER_DIR = "latent_router"


def router_root(wh: Warehouse) -> Path:
    """The folder of every LatentRouter checkpoint of this warehouse."""
    return wh.artifacts_dir / ROUTER_DIR


def new_checkpoint_dir(wh: Warehouse, run_id: str) -> Path:
    """A folder for the checkpoint of ``run_id`` (not yet the latest: :func:`publish` makes it so)."""
    path = router_root(wh) / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def publish(wh: Warehouse, ckpt_dir: Path) -> None:
    """Point LATEST at a fully written checkpoint (atomic, so readers never see half of one)."""
    atomic_write_bytes(ckpt_dir.name.encode(), router_root(wh) / "LATEST")


def latest_checkpoint_dir(wh: Warehouse) -> Path | None:
    """The published checkpoint, or None before the first one (or when its folder is gone)."""
    pointer = router_root(wh) / "LATEST"
    if not pointer.exists():
        return None
    path = router_root(wh) / pointer.read_text().strip()
    return path if path.exists() else None


def latest_checkpoint_time(wh: Warehouse) -> float | None:
    """When the latest checkpoint was published (mtime of LATEST), for sensors that watch for a new one."""
    path = latest_checkpoint_dir(wh)
    return None if path is None else (router_root(wh) / "LATEST").stat().st_mtime
