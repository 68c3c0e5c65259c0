"""Shared fixtures. Everything runs offline, on CPU, with small data."""

from __future__ import annotations

import os
import shutil
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
# a Dagster instance kept in a folder (SQLite), so a built pipeline can be copied; like an ephemeral instance it
# keeps no compute logs (the report's plots are data URIs)
INSTANCE_YAML = """\
telemetry:
  enabled: false
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
"""


def build_tiny_pipeline(home, instance=None):
    """Materialize the graph up to a trained router in ``home`` (the simulated pool, 96 queries, a 3-epoch
    router) on ``instance`` (an ephemeral one by default); returns (instance, defs). Callers set LROUTER_HOME
    to ``home`` first."""
    import dagster as dg

    from pipelines.definitions import defs, materialize

    instance = instance or dg.DagsterInstance.ephemeral()

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


def folder_instance(instance_dir: Path):
    """The Dagster instance kept in ``instance_dir`` (created with INSTANCE_YAML when new)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    instance_dir.mkdir(parents=True, exist_ok=True)
    if not (instance_dir / "dagster.yaml").exists():
        (instance_dir / "dagster.yaml").write_text(INSTANCE_YAML)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(instance_dir)))


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this pytest run that every pytest-xdist worker sees (each worker's base temp is a child of
    the run's), or the base temp without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> Path:
    """The tiny pipeline built once per test run (whichever worker asks first builds it, the others wait):
    ``<root>/home`` and its instance ``<root>/instance``. Never used in place: tiny_pipeline copies it."""
    from filelock import FileLock

    root = shared_tmp(tmp_path_factory) / "tiny-template"
    with FileLock(f"{root}.lock"):
        if not (root / "built").exists():
            shutil.rmtree(root, ignore_errors=True)
            mp = home_env(root / "home")
            try:
                instance = folder_instance(root / "instance")
                build_tiny_pipeline(root / "home", instance)
                instance.dispose()
            finally:
                mp.undo()
            (root / "built").touch()
    return root


def copy_tiny_pipeline(template: Path, dest: Path):
    """A private copy of the template in ``dest`` (home and instance): (home, instance)."""
    shutil.copytree(template / "home", dest / "home", symlinks=True)
    shutil.copytree(template / "instance", dest / "instance", symlinks=True)
    return dest / "home", folder_instance(dest / "instance")


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, tiny_template):
    """(home, instance, defs) of a small trained warehouse, shared by the tests of one module (a copy of
    the run's tiny_template: the tests may change it)."""
    from pipelines.definitions import defs

    home, instance = copy_tiny_pipeline(tiny_template, tmp_path_factory.mktemp("pipeline"))
    mp = home_env(home)
    yield home, instance, defs
    instance.dispose()
    mp.undo()
