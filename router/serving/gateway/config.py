"""Gateway settings and the upstream endpoint of each model.

Why here and not in the registry: `router/` never imports `collectors/`, so the gateway learns where a model
lives from the warehouse's ``models`` table (the registry's mirror) or from explicit config. A model whose
endpoint ends in ``/v1`` is spoken to in OpenAI's protocol (any OpenAI-compatible server, Ollama's own
``/v1`` included), other ``ollama`` models through Ollama's ``/api/chat``, and ``sim`` models without an
endpoint through the simulator the CLI starts on loopback (its OpenAI-compatible endpoint).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import polars as pl

PROTOCOLS = ("openai", "ollama")


@dataclass(frozen=True)
class Upstream:
    """Where and how to call one model; the key is read from ``api_key_env`` at call time, never stored."""

    model_id: str
    protocol: str  # openai | ollama
    base_url: str  # openai: the URL ending in /v1; ollama: the server root
    api_key_env: str = ""
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    simulated: bool = False
    server_model: str = ""  # the model's name at the server ("" = model_id)

    @property
    def served_name(self) -> str:
        return self.server_model or self.model_id

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"upstream {self.model_id!r}: protocol {self.protocol!r} not in {PROTOCOLS}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {self.model_id!r}: base_url must start with http:// or https://")

    def headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"authorization": f"Bearer {key}"} if key else {}

    def secrets(self) -> list[str]:
        """The key this upstream is called with (scrubbed from any text it sends back)."""
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return [key] if key else []

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_in_per_mtok + completion_tokens * self.price_out_per_mtok) / 1e6


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway does per request; ``lrouter gateway`` flags map to these fields."""

    default_lambda: float = 0.1  # the `lrouter` policy's cost weight
    max_fallbacks: int = 2  # next-ranked models tried after the first fails (before the first byte)
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 30.0  # upstream answer (non-streaming) or first streamed event
    read_timeout_s: float = 60.0  # between streamed events once streaming
    log_prompts: bool = False  # store the question text in served_requests (operator opt-in)
    flush_interval_s: float = 1.0  # served_requests part files are written at most this often
    flush_rows: int = 2000  # ... or as soon as this many rows wait
    max_upstream_connections: int = 256
    max_route_batch: int = 32  # requests that queued while the router was busy are routed together
    max_route_queue: int = 1024  # requests waiting for the router beyond this get a 503
    ollama_host: str = ""  # root URL for `ollama` models without an own endpoint
    max_upstream_bytes: int = 32 * 1024 * 1024  # an upstream answer (or stream) past this: 502, not read further
    refresh_interval_s: float = 2.0  # the models table / router are re-checked at least this often

    def __post_init__(self) -> None:
        if not (math.isfinite(self.default_lambda) and self.default_lambda >= 0):
            raise ValueError(f"default_lambda must be a finite number >= 0, got {self.default_lambda}")
        if self.max_fallbacks < 0:
            raise ValueError(f"max_fallbacks must be >= 0, got {self.max_fallbacks}")
        for name in ("connect_timeout_s", "first_byte_timeout_s", "read_timeout_s", "flush_interval_s",
                     "max_upstream_bytes", "refresh_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class UpstreamTable:
    """Model id -> `Upstream`, for the models the gateway may call."""

    by_model: dict[str, Upstream] = field(default_factory=dict)

    def get(self, model_id: str) -> Upstream | None:
        return self.by_model.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.by_model

    def ids(self) -> list[str]:
        return list(self.by_model)


def upstream_for(row: dict[str, Any], sim_url: str | None, ollama_host: str = "") -> Upstream | None:
    """The `Upstream` of one ``models`` table row (None: no way to call it, e.g. imported outcomes)."""
    endpoint = str(row.get("endpoint") or "").rstrip("/")
    backend = str(row.get("backend") or "")
    common = dict(model_id=str(row["model_id"]), api_key_env=str(row.get("api_key_env") or ""),
                  price_in_per_mtok=float(row.get("price_in_per_mtok") or 0.0),
                  price_out_per_mtok=float(row.get("price_out_per_mtok") or 0.0),
                  simulated=bool(row.get("simulated") or False), server_model=str(row.get("server_model") or ""))
    if endpoint.endswith("/v1") or (backend == "openai" and endpoint):
        return Upstream(protocol="openai", base_url=endpoint, **common)
    if backend == "sim":
        base = endpoint or sim_url
        return Upstream(protocol="openai", base_url=base.rstrip("/") + "/v1", **common) if base else None
    if backend == "import":
        return None
    host = endpoint or ollama_host or os.environ.get("OLLAMA_HOST", "") or "http://127.0.0.1:11434"
    if not host.startswith(("http://", "https://")):
        host = "http://" + host
    return Upstream(protocol="ollama", base_url=host, **common)


def upstreams_from_models(models: pl.DataFrame, sim_url: str | None = None, ollama_host: str = "",
                          include_inactive: bool = False) -> UpstreamTable:
    """Upstreams of the (active) rows of the warehouse ``models`` table."""
    out = {}
    for row in models.iter_rows(named=True):
        if not include_inactive and row.get("active") is False:
            continue
        up = upstream_for(row, sim_url, ollama_host)
        if up is not None:
            out[up.model_id] = up
    return UpstreamTable(out)
