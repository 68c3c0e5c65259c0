"""The deployment profile: ``LROUTER_DEPLOYMENT=local`` (default) or ``cluster``.

- local: SQLite instance (./dagster.yaml), runs executed in-process by `lrouter run` / `make demo`, the
  warehouse on local disk. Nothing here changes it.
- cluster: the instance in deploy/cluster/dagster.yaml (PostgreSQL storage, QueuedRunCoordinator with tag
  limits, the same concurrency pools), every job's steps on Celery workers (deploy/celery.yaml), the
  warehouse wherever ``LROUTER_WAREHOUSE`` says (``s3://bucket/prefix``). `lrouter run` then *submits* one
  run per stage, or one per model partition for `collect` (all at once: the queue's limits decide how
  many start), and waits for them; the daemon (`dagster-daemon run -w deploy/workspace.yaml`) starts them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"
PROFILES = ("local", "cluster")
LOCATION_NAME = "lrouter"


def deployment() -> str:
    """The profile named by ``LROUTER_DEPLOYMENT`` (``local`` when unset)."""
    profile = os.environ.get("LROUTER_DEPLOYMENT", "local").strip().lower() or "local"
    if profile not in PROFILES:
        raise ValueError(f"LROUTER_DEPLOYMENT={profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


def celery_config_path() -> Path:
    return Path(os.environ.get("LROUTER_CELERY_CONFIG", "") or DEPLOY_DIR / "celery.yaml")


def celery_executor_config() -> dict[str, Any]:
    """The executor config from deploy/celery.yaml, the file the workers are started with."""
    return yaml.safe_load(celery_config_path().read_text())["execution"]["config"]


def executor() -> dg.ExecutorDefinition | None:
    """The jobs' executor: None (Dagster's default, as before) locally, dagster-celery on the cluster."""
    if deployment() != "cluster":
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_executor_config(), name="lrouter_celery_executor")


def _workspace_opts() -> Any:
    from dagster_shared.cli import WorkspaceOpts

    return WorkspaceOpts(workspace=(str(DEPLOY_DIR / "workspace.yaml"),))


def submit_runs(
    instance: dg.DagsterInstance,
    job_name: str,
    requests: Sequence[tuple[str | None, Mapping[str, str]]],
    run_config: Mapping[str, Any],
    asset_selection: Sequence[dg.AssetKey] | None = None,
) -> list[str]:
    """Queue one run of ``job_name`` per (partition, tags) request (the daemon starts them); returns the
    run ids.

    What `dagster job launch` does, for many partitions with one code-location load (Dagster has no
    public Python API for submitting a run to a queued coordinator)."""
    from dagster import __version__
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts
    from dagster._core.definitions.selector import JobSubsetSelector

    run_ids = []
    with get_workspace_from_cli_opts(instance, version=__version__, workspace_opts=_workspace_opts()) as workspace:
        location = workspace.get_code_location(LOCATION_NAME)
        repo = next(iter(location.get_repositories().values()))
        selector = JobSubsetSelector(location_name=location.name, repository_name=repo.name, job_name=job_name,
                                     op_selection=None,
                                     asset_selection=frozenset(asset_selection) if asset_selection else None)
        remote_job = location.get_job(selector)
        plan = location.get_execution_plan(remote_job, dict(run_config), step_keys_to_execute=None,
                                           known_state=None, instance=instance).execution_plan_snapshot
        for key, tags in requests:
            run_tags = {**remote_job.tags, **tags, **({"dagster/partition": key} if key else {})}
            run = instance.create_run(
                job_name=job_name, run_id=None, run_config=dict(run_config), resolved_op_selection=None,
                step_keys_to_execute=plan.step_keys_to_execute, op_selection=None, status=None,
                root_run_id=None, parent_run_id=None, tags=run_tags, job_snapshot=remote_job.job_snapshot,
                execution_plan_snapshot=plan, parent_job_snapshot=remote_job.parent_job_snapshot,
                remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
                asset_selection=frozenset(asset_selection) if asset_selection else None,
                asset_check_selection=None, asset_graph=repo.asset_graph,
            )
            instance.submit_run(run.run_id, workspace)
            run_ids.append(run.run_id)
    return run_ids


def wait_for_runs(instance: dg.DagsterInstance, run_ids: Sequence[str], timeout_s: float = 6 * 3600,
                  poll_s: float = 1.0) -> dict[str, dg.DagsterRunStatus]:
    """Block until every run has finished (or ``timeout_s``); returns each run's final status. A run that
    Dagster re-executed after a failure (run_retries) is followed to its retry."""
    deadline = time.monotonic() + timeout_s
    final: dict[str, dg.DagsterRunStatus] = {}
    while True:
        for run_id in run_ids:
            if run_id in final:
                continue
            run = instance.get_run_by_id(run_id)
            if run is None or not run.is_finished:
                continue
            status = run.status
            if status == dg.DagsterRunStatus.FAILURE:
                retry = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}), limit=1)
                if retry:
                    if not retry[0].is_finished:
                        continue
                    status = retry[0].status
            final[run_id] = status
        if len(final) == len(run_ids):
            return final
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(run_ids) - len(final)} run(s) still running after {timeout_s:.0f}s")
        time.sleep(poll_s)


def stop_automation(instance: dg.DagsterInstance) -> list[str]:
    """Stop every sensor and schedule of the code location on ``instance`` (tests and benchmarks drive the
    runs themselves; the model-pool sensor would otherwise launch collections of its own)."""
    from dagster import __version__
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts

    stopped = []
    with get_workspace_from_cli_opts(instance, version=__version__, workspace_opts=_workspace_opts()) as workspace:
        repo = next(iter(workspace.get_code_location(LOCATION_NAME).get_repositories().values()))
        for sensor in repo.get_sensors():
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)
            stopped.append(sensor.name)
        for schedule in repo.get_schedules():
            instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
            stopped.append(schedule.name)
    return stopped
