"""Dagster resources: where the warehouse lives and how to reach the model servers.

Endpoints and API keys come from configuration or the environment (``EnvVar``) and are never written
to logs, metadata or reports: metadata names the backend ("embedded simulator" / "ollama"), not the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from collectors.collection.client import CollectConfig
from collectors.registry import ModelEntry, default_registry_path
from warehouse.store import Warehouse, lrouter_home


class WarehouseResource(dg.ConfigurableResource):
    """The Parquet + DuckDB warehouse under ``$LROUTER_HOME/warehouse`` (default ``./data``)."""

    home: str = Field(default="", description="LROUTER_HOME; empty = $LROUTER_HOME or ./data")
    registry_path: str = Field(default="", description="models.yaml; empty = $LROUTER_REGISTRY or <home>/models.yaml")

    def home_dir(self) -> Path:
        return Path(self.home).resolve() if self.home else lrouter_home()

    def warehouse(self) -> Warehouse:
        return Warehouse(self.home_dir() / "warehouse").ensure()

    def registry(self) -> Path:
        return Path(self.registry_path) if self.registry_path else default_registry_path(self.home_dir())


class OllamaResource(dg.ConfigurableResource):
    """How the collector reaches models: a real Ollama server, or the embedded simulator for ``sim`` models."""

    host: str = Field(default="", description="Ollama URL for backend=ollama models without their own endpoint; "
                      "empty = read the environment variable named by host_env")
    host_env: str = Field(default="OLLAMA_HOST", description="environment variable holding the Ollama URL")
    api_key_env: str = Field(default="OLLAMA_API_KEY",
                             description="environment variable holding a bearer token, if the server needs one")
    embedded_simulator: bool = Field(default=True, description="serve backend=sim models from an in-process simulator")
    sim_time_scale: float = Field(
        default_factory=lambda: float(os.environ.get("LROUTER_SIM_TIME_SCALE", "0.002")),
        description="fraction of the simulated latency actually waited ($LROUTER_SIM_TIME_SCALE, default 0.002)")
    sim_seed: int = 0
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3

    def collect_config(self, progress: bool = True) -> CollectConfig:
        return CollectConfig(concurrency=self.concurrency, timeout_s=self.timeout_s,
                             max_retries=self.max_retries, seed=self.sim_seed, progress=progress)

    def headers(self, model: ModelEntry) -> dict[str, str]:
        """The bearer token for ``model``'s server only: its own ``api_key_env`` when the registry names one,
        else the default key, and that only for models served by the default host (a model with its own
        ``endpoint`` never receives the default host's key). Read at call time, so it never sits in run
        config, metadata or logs."""
        env = model.api_key_env or ("" if model.endpoint else self.api_key_env)
        key = os.environ.get(env, "") if env else ""
        return {"authorization": f"Bearer {key}"} if key else {}

    @contextmanager
    def endpoint(self, model: ModelEntry, answer_key: pl.DataFrame) -> Iterator[tuple[str, str]]:
        """Yield (url, label) for the model; starts the simulator when the model is simulated."""
        if model.backend == "sim" and not model.endpoint and self.embedded_simulator:
            from collectors.simulator.server import SimServer
            from collectors.simulator.specs import ALL_MODELS

            with SimServer(answer_key=answer_key, models=list(ALL_MODELS.values()), seed=self.sim_seed,
                           time_scale=self.sim_time_scale) as server:
                yield server.url, "embedded simulator (127.0.0.1)"
            return
        url = model.endpoint or self.host or os.environ.get(self.host_env, "") or "http://127.0.0.1:11434"
        yield url, f"{model.backend} server"
