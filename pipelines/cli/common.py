"""What every subcommand shares: the home and its warehouse, one-line errors, the Dagster instance."""

from __future__ import annotations

from pathlib import Path


def _warehouse(args):
    from warehouse.store import Warehouse, lrouter_home

    home = Path(args.home).resolve() if getattr(args, "home", None) else lrouter_home()
    return Warehouse(home / "warehouse"), home


class CliError(Exception):
    """A failure the user can fix: ``main`` prints it as one line (no traceback) and exits with ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def no_warehouse_message(home: Path) -> str:
    return f"no warehouse under {home}; run `make demo`, pass --home or set LROUTER_HOME"


def has_warehouse(home: Path) -> bool:
    """True when ``home`` holds warehouse tables or trace partitions (not just an empty folder tree)."""
    root = home / "warehouse"
    return any((root / "tables").glob("*.parquet")) or any((root / "traces").glob("*.parquet"))


def require_warehouse(home: Path) -> None:
    """Refuse before anything is created, so a typo in --home or a run from another folder is named as such."""
    if not has_warehouse(home):
        raise CliError(no_warehouse_message(home), code=1)


def ensure_dagster_home() -> Path:
    """The Dagster instance the CLI uses: $DAGSTER_HOME, else the project's own (the folder holding its
    dagster.yaml, as `make` sets it), so `lrouter run` / `lineage` see the same runs as the UI."""
    import os

    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    project = Path(__file__).resolve().parents[2]  # pipelines/cli/common.py -> the project root
    return project if (project / "dagster.yaml").exists() else Path.cwd()


def _rebased_storage(home: Path) -> dict:
    """dagster.yaml's relative ``base_dir``s made absolute under ``home``: Dagster reads them relative to the
    working directory, so `lrouter lineage` run from another folder would open (and create) an empty
    instance there instead of the one the UI shows."""
    import yaml

    path = home / "dagster.yaml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    out: dict = {}
    sqlite = (cfg.get("storage") or {}).get("sqlite")
    if isinstance(sqlite, dict) and isinstance(sqlite.get("base_dir"), str) and not Path(sqlite["base_dir"]).is_absolute():
        out["storage"] = {**cfg["storage"], "sqlite": {**sqlite, "base_dir": str(home / sqlite["base_dir"])}}
    for key in ("local_artifact_storage", "compute_logs"):
        section = cfg.get(key)
        base = ((section or {}).get("config") or {}).get("base_dir")
        if isinstance(base, str) and not Path(base).is_absolute():
            out[key] = {**section, "config": {**section["config"], "base_dir": str(home / base)}}
    return out


def project_instance():
    """The Dagster instance `make dev` shows (``ensure_dagster_home``), whatever the working directory."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = ensure_dagster_home()
    if not home.is_dir():
        raise CliError(f"DAGSTER_HOME={home} is not a folder; create it or unset DAGSTER_HOME", code=1)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides=_rebased_storage(home)))


def _registry_path(home: Path) -> Path:
    from collectors.registry import default_registry_path

    return default_registry_path(home)


def _one_line(exc: BaseException) -> str:
    """An exception as one line: pydantic's multi-line validation errors become ``field: reason; ...``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())) or 'value'}: {e.get('msg', '')}"
                             for e in errors())
        except Exception:  # not pydantic after all
            pass
    return " ".join(str(exc).split()) or type(exc).__name__
