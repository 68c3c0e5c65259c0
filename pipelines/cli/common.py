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


PROJECT = Path(__file__).resolve().parents[2]  # pipelines/cli/common.py -> the project root


def ensure_dagster_home(home: Path | None = None) -> Path:
    """The Dagster instance the CLI uses: $DAGSTER_HOME when set (an instance the user chose; `make` sets the
    project's), else the home's own ``<home>/dagster``, so two homes never share runs, partitions or lineage.

    A home's instance folder gets a dagster.yaml written from the project's (the same concurrency pools and
    run monitoring) with its storage under that folder: ``DAGSTER_HOME=<home>/dagster dagster dev`` shows it.
    For the default home (``./data``) that storage is the one the project's dagster.yaml names."""
    import os

    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    if home is None:
        return PROJECT if (PROJECT / "dagster.yaml").exists() else Path.cwd()
    folder = Path(home).resolve() / "dagster"
    if not (folder / "dagster.yaml").exists():
        _write_home_instance_yaml(folder)
    return folder


def _write_home_instance_yaml(folder: Path) -> None:
    """The project's dagster.yaml with every storage folder inside ``folder`` (absolute paths)."""
    import yaml

    src = PROJECT / "dagster.yaml"
    cfg = (yaml.safe_load(src.read_text()) or {}) if src.exists() else {}
    cfg["storage"] = {"sqlite": {"base_dir": str(folder / "storage")}}
    for key, sub in (("local_artifact_storage", ""), ("compute_logs", "compute_logs")):
        section = cfg.get(key) or {}
        if section:
            section.setdefault("config", {})["base_dir"] = str(folder / sub) if sub else str(folder)
            cfg[key] = section
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text("# This home's own Dagster instance (written by lrouter from the project's "
                                         "dagster.yaml)\n" + yaml.safe_dump(cfg, sort_keys=False))


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


def project_instance(home: Path | None = None):
    """The Dagster instance of ``home`` (``ensure_dagster_home``), whatever the working directory."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    home = ensure_dagster_home(home)
    if not home.is_dir():
        raise CliError(f"DAGSTER_HOME={home} is not a folder; create it or unset DAGSTER_HOME", code=1)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), overrides={**_rebased_storage(home),
                                                                                  **_progress_logs(home)}))


def _progress_logs(home: Path) -> dict:
    """The progress logger captured into each run's event log (what `lrouter run` prints while a run runs),
    also for an instance whose dagster.yaml predates that setting; an instance's own ``python_logs`` wins."""
    import yaml

    from pipelines.progress import MANAGED_LOGS

    path = home / "dagster.yaml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    return {} if cfg.get("python_logs") else {"python_logs": dict(MANAGED_LOGS)}


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
