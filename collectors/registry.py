"""The model registry: ``models.yaml`` is the source of truth, the ``models`` table mirrors it.

Validation happens before anything is written, so a bad entry (unknown backend, negative price,
duplicate name, unreachable endpoint) changes nothing and the error names the file, entry and field.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from warehouse.schemas import MODELS, conform
from warehouse.store import atomic_write_bytes
from warehouse.vocabulary import BACKENDS


class RegistryError(ValueError):
    """A registry file or command that cannot be applied; nothing was changed."""


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=200)
    backend: str = "ollama"
    endpoint: str = ""  # "" = the pipeline's configured Ollama host (or the embedded simulator for sim)
    api_key_env: str = ""  # environment variable with this model's bearer token ("" = none for an own endpoint)
    price_in_per_mtok: float = Field(default=0.0, ge=0.0)
    price_out_per_mtok: float = Field(default=0.0, ge=0.0)
    params_b: float | None = Field(default=None, gt=0.0)
    added_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    active: bool = True
    simulated: bool = False
    description: str = ""
    # backend=local: USD per second of measured compute (the reply's total_duration), added to token prices
    price_per_compute_s: float | None = Field(default=None, ge=0.0)
    # backend=openai (any OpenAI-compatible server); endpoint is its base URL, e.g. http://127.0.0.1:8000/v1
    server_model: str = Field(default="", max_length=200)  # the model's name at the server ("" = model_id)
    price_per_image_usd: float | None = Field(default=None, ge=0.0)  # added per image sent, if the API bills so
    max_concurrency: int | None = Field(default=None, ge=1)  # in-flight calls to this model (None: run's setting)
    requests_per_minute: float | None = Field(default=None, gt=0.0)  # client-side rate limit (None: none)

    @property
    def served_name(self) -> str:
        """The name the server knows this model by."""
        return self.server_model or self.model_id

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r}; expected one of {', '.join(BACKENDS)}")
        return v

    @field_validator("model_id")
    @classmethod
    def _clean_id(cls, v: str) -> str:
        if v != v.strip() or any(ch in v for ch in "\n\r\t"):
            raise ValueError("model_id must not contain surrounding spaces or control characters")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint_scheme(cls, v: str) -> str:
        if v and not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError(f"endpoint {v!r} must start with http:// or https://")
        if "@" in v.split("://", 1)[-1].split("/", 1)[0]:  # user:secret@host would put a credential on disk
            raise ValueError("endpoint must not carry credentials (user:password@host); name the environment "
                             "variable holding the key with api_key_env")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if v and not v.replace("_", "a").isalnum():  # a pasted key instead of a variable name never lands on disk
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, _), "
                             "not the key itself")
        return v

    @model_validator(mode="after")
    def _openai_needs_endpoint(self) -> ModelEntry:
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("backend 'openai' needs endpoint: the server's base URL, e.g. "
                             "http://127.0.0.1:8000/v1")
        return self


def default_registry_path(home: Path | None = None) -> Path:
    """$LROUTER_REGISTRY if set, else ``<home>/models.yaml`` (home defaults to $LROUTER_HOME or ./data)."""
    from warehouse.store import lrouter_home

    if os.environ.get("LROUTER_REGISTRY"):
        return Path(os.environ["LROUTER_REGISTRY"])
    return Path(home if home is not None else lrouter_home()) / "models.yaml"


def local_pool_enabled() -> bool:
    """Whether the default registry lists the real local model(s): on unless $LROUTER_LOCAL_POOL is 0 (the
    test suite turns it off so its pipeline tests keep the 8-model simulated pool)."""
    return os.environ.get("LROUTER_LOCAL_POOL", "1").strip().lower() not in ("0", "false", "no", "off")


def default_entries(include_held_out: bool = False, include_local: bool | None = None) -> list[ModelEntry]:
    """The default pool: 8 simulated models (the held-out 9th only when asked) and, unless disabled (see
    `local_pool_enabled`), the real local pipeline of `collectors.local`."""
    from collectors.simulator.specs import DEFAULT_POOL, HELD_OUT

    specs = list(DEFAULT_POOL) + ([HELD_OUT] if include_held_out else [])
    stamp = "2026-01-01T00:00:00+00:00"  # fixed so the default registry is reproducible
    local: list[ModelEntry] = []
    if local_pool_enabled() if include_local is None else include_local:
        from collectors.local.specs import LOCAL_MODELS

        local = [ModelEntry(model_id=m.name, backend="local", price_per_compute_s=m.usd_per_compute_s,
                            params_b=m.params_b, added_at=stamp, simulated=False,
                            description=f"REAL, LOCAL: {m.description}") for m in LOCAL_MODELS]
    sims = [
        ModelEntry(
            model_id=s.name,
            backend="sim",
            price_in_per_mtok=s.price_in_per_mtok,
            price_out_per_mtok=s.price_out_per_mtok,
            params_b=s.params_b,
            added_at=stamp,
            simulated=True,
            description=f"SIMULATED: {s.description}",
        )
        for s in specs
    ]
    return sims + local


def load_registry(path: Path) -> list[ModelEntry]:
    path = Path(path)
    if not path.exists():
        raise RegistryError(f"{path}: registry file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from exc
    items = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise RegistryError(f"{path}: expected a top-level 'models:' list")
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RegistryError(f"{path}: models[{i}] is not a mapping")
        try:
            entry = ModelEntry(**item)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "?"
            raise RegistryError(f"{path}: models[{i}] ({item.get('model_id', '?')}): field {field!r}: {err['msg']}") from exc
        if entry.model_id in seen:
            raise RegistryError(
                f"{path}: models[{i}]: duplicate model_id {entry.model_id!r} (first at models[{seen[entry.model_id]}])"
            )
        seen[entry.model_id] = i
        entries.append(entry)
    return entries


def save_registry(path: Path, entries: list[ModelEntry]) -> None:
    ids = [e.model_id for e in entries]
    dupes = sorted({m for m in ids if ids.count(m) > 1})
    if dupes:
        raise RegistryError(f"{path}: duplicate model_id(s) {dupes}")
    body = {"models": [{k: v for k, v in e.model_dump(exclude_none=True).items()
                        if not (k == "server_model" and v == "")} for e in entries]}
    text = "# Candidate model registry (lrouter models add / disable keep this in sync with the models table)\n"
    text += yaml.safe_dump(body, sort_keys=False)
    atomic_write_bytes(text.encode("utf-8"), Path(path))


def ensure_registry(path: Path) -> list[ModelEntry]:
    """Load the registry, creating it with the simulated default pool on first use."""
    path = Path(path)
    if not path.exists():
        save_registry(path, default_entries())
    return load_registry(path)


def add_model(
    path: Path,
    entry: ModelEntry,
    check_endpoint: Callable[[ModelEntry], None] | None = None,
) -> list[ModelEntry]:
    """Add a model or re-enable a disabled one; refuses duplicates of an active model."""
    entries = ensure_registry(path)
    existing = {e.model_id: e for e in entries}
    if entry.model_id in existing and existing[entry.model_id].active:
        raise RegistryError(f"{path}: model {entry.model_id!r} is already registered and active")
    if check_endpoint is not None:
        check_endpoint(entry)  # raises RegistryError when unreachable; nothing written yet
    if entry.model_id in existing:
        old = existing[entry.model_id]
        entries = [
            e if e.model_id != entry.model_id else entry.model_copy(update={"added_at": old.added_at})
            for e in entries
        ]
    else:
        entries.append(entry)
    save_registry(path, entries)
    return entries


def disable_model(path: Path, model_id: str) -> list[ModelEntry]:
    entries = ensure_registry(path)
    if model_id not in {e.model_id for e in entries}:
        raise RegistryError(f"{path}: no model named {model_id!r}; known: {[e.model_id for e in entries]}")
    entries = [e.model_copy(update={"active": False}) if e.model_id == model_id else e for e in entries]
    save_registry(path, entries)
    return entries


# registry fields beyond the MODELS schema, typed so an all-null column keeps its type in the table
EXTRA_COLUMNS: dict[str, pl.DataType] = {
    "api_key_env": pl.String(), "price_per_compute_s": pl.Float64(), "server_model": pl.String(),
    "price_per_image_usd": pl.Float64(), "max_concurrency": pl.Int64(), "requests_per_minute": pl.Float64(),
}


def models_table(entries: list[ModelEntry]) -> pl.DataFrame:
    rows = [e.model_dump() for e in entries]
    types = {**EXTRA_COLUMNS, **MODELS}
    df = pl.DataFrame(rows, schema_overrides={k: v for k, v in types.items() if k in ModelEntry.model_fields})
    return conform(df, MODELS, "models")
