"""The deployment files at config level: both instance profiles, the Celery config, the Helm values and
`dagster definitions validate` for each profile. Needs no service (PostgreSQL is only parsed, not reached)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", "") or REPO / ".venv") / "bin"

pytestmark = pytest.mark.integration


def test_cluster_instance_config_is_valid_and_keeps_the_pools(tmp_path) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((DEPLOY / "cluster/dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert "postgres" in config["storage"] and config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"]  # the same pools, same limits
    limits = {(lim["key"], str(lim.get("value"))): lim["limit"] for lim in config["concurrency"]["runs"]["tag_concurrency_limits"]}
    assert limits[("dagster/partition", "{'applyLimitPerUniqueValue': True}")] == 1
    assert limits[("lrouter/queue", "recalibrate")] == 1
    assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]


def test_celery_config_validates_against_the_executor_schema(monkeypatch) -> None:
    pytest.importorskip("dagster_celery", reason="dagster-celery is in the `cluster` extra")
    from dagster_celery.cli import get_validated_config

    monkeypatch.setenv("LROUTER_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LROUTER_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    config = get_validated_config(str(DEPLOY / "celery.yaml"))
    assert config["broker"].startswith("redis://") and config["config_source"]["task_acks_late"]
    assert config["config_source"]["task_reject_on_worker_lost"]


def test_executor_follows_the_profile(monkeypatch) -> None:
    pytest.importorskip("dagster_celery", reason="dagster-celery is in the `cluster` extra")
    from pipelines.deployment import deployment, executor

    monkeypatch.delenv("LROUTER_DEPLOYMENT", raising=False)
    assert deployment() == "local" and executor() is None
    monkeypatch.setenv("LROUTER_DEPLOYMENT", "cluster")
    assert executor().name == "lrouter_celery_executor"
    monkeypatch.setenv("LROUTER_DEPLOYMENT", "k8s")
    with pytest.raises(ValueError, match="expected one of"):
        deployment()


def test_helm_values_name_what_the_chart_reads() -> None:
    """The chart's values.schema.json is not available offline: check the keys this profile relies on
    (names from the dagster/dagster chart 1.13) and their types."""
    values = yaml.safe_load((DEPLOY / "helm/values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "pipelines.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["LROUTER_DEPLOYMENT"] == "cluster" and env["LROUTER_WAREHOUSE"].startswith("s3://")
    assert not any("SECRET" in k or "PASSWORD" in k for k in env), "secrets belong in envSecrets"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    coord = values["dagsterDaemon"]["runCoordinator"]
    assert coord["type"] == "QueuedRunCoordinator"
    limits = coord["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {lim["key"] for lim in limits} == {"dagster/partition", "lrouter/queue"}
    assert all(isinstance(lim["limit"], int) for lim in limits)
    assert values["postgresql"]["enabled"] and values["global"]["postgresqlSecretName"]


def test_k8s_run_launcher_config_validates() -> None:
    """The run launcher config the values produce, checked against dagster-k8s's own schema."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the `cluster` extra")
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    values = yaml.safe_load((DEPLOY / "helm/values.yaml").read_text())
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    cfg = {"instance_config_map": "lrouter-instance", "service_account_name": "lrouter", "job_namespace": "lrouter",
           "env_secrets": [s["name"] for s in k8s["envSecrets"]], "run_k8s_config": {
               "container_config": k8s["runK8sConfig"]["containerConfig"]}}
    result = process_config(K8sRunLauncher.config_type(), cfg)
    assert result.success, result.errors


@pytest.mark.parametrize("profile", ["local", "cluster"])
def test_definitions_validate(profile: str, tmp_path) -> None:
    if profile == "cluster":
        pytest.importorskip("dagster_celery", reason="dagster-celery is in the `cluster` extra")
    env = {**os.environ, "LROUTER_DEPLOYMENT": profile, "LROUTER_HOME": str(tmp_path),
           "DAGSTER_HOME": str(REPO if profile == "local" else tmp_path)}
    if profile == "cluster":
        (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # validate needs no Postgres
        env.update(LROUTER_CELERY_BROKER="redis://127.0.0.1:6379/0", LROUTER_CELERY_BACKEND="redis://127.0.0.1:6379/1")
    args = [str(VENV_BIN / "dagster"), "definitions", "validate", "-w", str(DEPLOY / "workspace.yaml")]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation successful" in proc.stderr + proc.stdout
