"""Shared fixtures. Everything runs offline, on CPU, with small data."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin on a 2-core box
# pipeline tests use the 8-model simulated default pool; tests of the real local model opt in explicitly
os.environ.setdefault("LROUTER_LOCAL_POOL", "0")


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models train faster on one thread on a 2-core box, and leave the other core to the suite."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_QUERIES = 96
# the fixture materializes no deployed_router: its checkpoint serves the LatentRouter the serving tests are
# about; tests/router/evaluation/test_deploy_selection.py decides deployments
TINY_ROUTER = {"epochs": 3, "hidden": 32, "n_capsules": 4, "patience": 3, "batch_size": 64}


def build_tiny_pipeline(home):
    """Materialize the graph up to a trained router in ``home`` (the simulated pool, 96 queries, a 3-epoch
    router) on an ephemeral instance; returns (instance, defs). Callers set LROUTER_HOME to ``home`` first."""
    import dagster as dg

    from pipelines.definitions import defs, materialize

    instance = dg.DagsterInstance.ephemeral()

    def mat(names, **kw):
        r = materialize(names, instance=instance, resources=defs.resources, **kw)
        assert r.success, names

    mat(["benchmark_queries", "candidate_models", "data_splits"],
        run_config={"ops": {"benchmark_queries": {"config": {"n_queries": TINY_QUERIES, "seed": 3}}}})
    for m in instance.get_dynamic_partitions("models"):
        mat(["outcome_traces"], partition_key=m)
    mat(["warehouse_views", "query_features", "capability_profiles", "latent_router", "current_pool_routing"],
        run_config={"ops": {"latent_router": {"config": TINY_ROUTER}}})
    return instance, defs


def home_env(home: Path) -> pytest.MonkeyPatch:
    """LROUTER_HOME = ``home``, no registry or Ollama host from the environment; ``.undo()`` restores them."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LROUTER_HOME", str(home))
    mp.delenv("LROUTER_REGISTRY", raising=False)
    mp.delenv("OLLAMA_HOST", raising=False)
    return mp


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """(home, instance, defs) of a small trained warehouse, shared by the tests of one module."""
    home = tmp_path_factory.mktemp("pipeline")
    mp = home_env(home)
    instance, defs = build_tiny_pipeline(home)
    yield home, instance, defs
    mp.undo()
