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

    location: str = Field(default="", description="s3://bucket/prefix or a folder; empty = $LROUTER_WAREHOUSE "
                          "(when home is not set) or <home>/warehouse")

    def home_dir(self) -> Path:
        return Path(self.home).resolve() if self.home else lrouter_home()

    def warehouse(self) -> Warehouse:
        location = self.location or ("" if self.home else os.environ.get("LROUTER_WAREHOUSE", "").strip())
        return Warehouse(location or self.home_dir() / "warehouse").ensure()

    def registry(self) -> Path:
        return Path(self.registry_path) if self.registry_path else default_registry_path(self.home_dir())

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """On an S3 warehouse, a step starts from the bucket's blobs (images, features, checkpoints)."""
        wh = self.warehouse()
        if wh.remote:
            wh.pull()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """...and publishes the blobs it wrote, so the next step runs on any worker."""
        wh = self.warehouse()
        if wh.remote:
            wh.push()


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
    embedded_local: bool = Field(default=True, description="serve backend=local models from an in-process "
                                 "server (real models on this machine; loading takes ~20 s)")
    local_capture_dir: str = Field(default="", description="where the local models' hidden states go; "
                                   "empty = $LROUTER_HOME/warehouse/features/hidden_states")
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3

    checkpoint_rows: int = Field(default=200, description="rows per staged checkpoint flush (what a restarted "
                                 "collection resumes from)")

    def collect_config(self, progress: bool = True) -> CollectConfig:
        return CollectConfig(concurrency=self.concurrency, timeout_s=self.timeout_s,
                             max_retries=self.max_retries, seed=self.sim_seed, progress=progress,
                             batch_size=self.checkpoint_rows)

    def headers(self, model: ModelEntry) -> dict[str, str]:
        """The bearer token for ``model``'s server only: its own ``api_key_env`` when the registry names one,
        else the default key, and that only for models served by the default host (a model with its own
        ``endpoint`` never receives the default host's key). Read at call time, so it never sits in run
        config, metadata or logs."""
        env = model.api_key_env or ("" if model.endpoint else self.api_key_env)
        key = os.environ.get(env, "") if env else ""
        return {"authorization": f"Bearer {key}"} if key else {}

    def capture_root(self) -> Path:
        """The hidden-state store of the local models (see `collectors.local.capture`)."""
        return Path(self.local_capture_dir) if self.local_capture_dir else \
            lrouter_home() / "warehouse" / "features" / "hidden_states"

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
        if model.backend == "local" and not model.endpoint and self.embedded_local:
            from collectors.local.server import build_default_server

            with build_default_server(self.capture_root()) as server:
                yield server.url, "embedded local models (REAL, 127.0.0.1)"
            return
        url = model.endpoint or self.host or os.environ.get(self.host_env, "") or "http://127.0.0.1:11434"
        yield url, f"{model.backend} server"
