"""Every environment variable the pipeline layer honours, read in one place: :meth:`Settings.from_env`.

The CLI, ``make demo`` and the Dagster code location read the environment here, once per process, and pass
the values on as arguments and resources; nothing below ``pipelines/`` is steered by a variable that is not
listed in :data:`VARIABLES` (``docs/environment.md`` is the same table, checked by a test). Library code
that reads a variable at call time does so for a key (a model's ``api_key_env`` names the variable holding
its bearer token, which must never be stored) or as the documented fallback of a resource left unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str
    read_by: str


VARIABLES: tuple[Variable, ...] = (
    Variable("LROUTER_HOME", "./data", "the home: warehouse/, models.yaml, artifacts (every command's --home)",
             "pipelines.settings; assets.resources.WarehouseResource when its home is unset"),
    Variable("LROUTER_REGISTRY", "<home>/models.yaml", "the model registry file", "collectors.registry"),
    Variable("LROUTER_WAREHOUSE", "<home>/warehouse", "the warehouse location: a folder or s3://bucket/prefix",
             "pipelines.settings; assets.resources; warehouse.store"),
    Variable("LROUTER_DEPLOYMENT", "local", "deployment profile: local (in-process) or cluster (Celery)",
             "pipelines.deployment"),
    Variable("LROUTER_CELERY_CONFIG", "deploy/celery.yaml", "the Celery executor's config file",
             "pipelines.deployment"),
    Variable("LROUTER_RETRAIN_MIN_NEW_TRACES", "2000", "new traces since training before the schedule retrains",
             "pipelines.automation"),
    Variable("LROUTER_RECALIBRATE_CRON", "0 3 * * 1", "cron of the recalibration schedule (weekly)",
             "pipelines.automation"),
    Variable("LROUTER_RECALIBRATE_MIN_LABELS", "50", "production feedback labels before a recalibration",
             "pipelines.production"),
    Variable("LROUTER_DEMO_QUERIES", "1000", "queries of `make demo`'s built-in benchmark", "pipelines.demo"),
    Variable("LROUTER_DEBUG", "", "1: an unexpected CLI failure prints its traceback", "pipelines.cli"),
    Variable("LROUTER_LOCAL_POOL", "1", "0: the default pool leaves out the real local model", "collectors.registry"),
    Variable("LROUTER_LOCAL_SUBSET", "", "how many queries the local model answers (default: its stated subset)",
             "collectors.local.subset"),
    Variable("LROUTER_SIM_TIME_SCALE", "0.002", "share of the simulator's latency actually waited in pipelines",
             "assets.resources"),
    Variable("LROUTER_RUNTIME", "auto", "encoder runtime when serving: auto | torch | onnx",
             "pipelines.settings (passed to router.serving.service)"),
    Variable("LROUTER_SERVING_DTYPE", "the features' dtype", "serving precision: float32 | bfloat16 | int8",
             "pipelines.settings (passed to router.serving.service)"),
    Variable("LROUTER_ENCODE_LANES", "min(2, cores)", "concurrent encoder runs per routing batch when serving",
             "pipelines.settings (passed to router.serving.service)"),
    Variable("LROUTER_DAGSTER_DIR", "", "cluster profile: the shared folder of run artifacts and compute logs "
             "(deploy/cluster/dagster.yaml)", "the Dagster instance"),
    Variable("DAGSTER_HOME", "the project folder", "the Dagster instance (runs, materializations)",
             "pipelines.cli.common"),
    Variable("OLLAMA_HOST", "http://127.0.0.1:11434", "the Ollama server of backend=ollama models",
             "assets.resources; router.serving.gateway"),
    Variable("AWS_ENDPOINT_URL_S3", "", "an S3-compatible endpoint for an s3:// warehouse", "warehouse.filesystem"),
    Variable("LROUTER_BENCH_THREADS", "1", "torch threads of the research benches' fits",
             "bench/real_data.py, bench/learning_curve.py, bench/latent_oof.py"),
    Variable("LROUTER_BENCH_VERBOSE", "", "1: bench scripts print each fit", "bench/"),
    Variable("LROUTER_BENCH_OPENAI_KEY", "", "the fake bearer key bench/faults.py --protocol openai greps for",
             "bench/faults.py"),
)
"""Name, default, meaning and reader of every variable (``docs/environment.md`` lists the same)."""


@dataclass(frozen=True)
class Settings:
    """What the environment says, as values the CLI and the definitions pass on."""

    home: Path
    warehouse: str  # a folder or s3://bucket/prefix; empty: <home>/warehouse
    registry: str  # empty: <home>/models.yaml
    demo_queries: str
    debug: bool
    serving_runtime: str = "auto"
    serving_dtype: str = ""
    encode_lanes: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(home=Path(env.get("LROUTER_HOME", "") or "./data").resolve(),
                   warehouse=env.get("LROUTER_WAREHOUSE", "").strip(),
                   registry=env.get("LROUTER_REGISTRY", "").strip(),
                   demo_queries=env.get("LROUTER_DEMO_QUERIES", "1000"),
                   debug=bool(env.get("LROUTER_DEBUG")),
                   serving_runtime=env.get("LROUTER_RUNTIME", "") or "auto",
                   serving_dtype=env.get("LROUTER_SERVING_DTYPE", ""),
                   encode_lanes=env.get("LROUTER_ENCODE_LANES", "").strip())

    def with_home(self, home: Path | str | None) -> Settings:
        """These settings for ``home`` (``--home``): that home's own warehouse folder."""
        if not home:
            return self
        return replace(self, home=Path(home).resolve(), warehouse="")

    def serving(self):  # -> router.serving.service.ServingOptions
        """How served requests' encoders run (``lrouter route``, ``serve``, ``gateway``, ``calibrate``)."""
        from router.serving.service import ServingOptions

        lanes = None
        if self.encode_lanes:
            try:
                lanes = int(self.encode_lanes)
            except ValueError:
                raise ValueError(f"LROUTER_ENCODE_LANES must be a whole number, got {self.encode_lanes!r}") from None
        return ServingOptions(runtime=self.serving_runtime, dtype=self.serving_dtype, lanes=lanes)
