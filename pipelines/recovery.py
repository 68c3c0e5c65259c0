"""Runs whose process died: mark them failed and give their concurrency slots back.

A run that is SIGKILLed (or whose machine lost power) never reports its end, so Dagster keeps it STARTED
and keeps the `model_calls` slot it claimed: with a pool limit of 1 every later collection then waits
"blocked by limit for pool model_calls" forever. Dagster's run monitoring cannot see this for the local
run launcher (it has no worker health check), so this module does: a run's worker process id is in its
engine events ("... in process (pid: N)"), and on a local deployment a run whose worker no longer exists
(or whose pid now belongs to a younger process) is dead. The data side needs nothing: collection resumes
from its staged rows. Called before every run the CLI and the demo start, and by `dead_run_sensor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

LIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    job_name: str
    pid: int | None
    reason: str


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_started_at(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid`` from /proc; None when unknown or gone."""
    boot = _boot_time()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if boot is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, since: float) -> bool:
    """Whether ``pid`` is a process that already existed at ``since`` (a reused pid is a younger process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    started = process_started_at(pid)
    return started is None or started <= since + 1.0


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid in the run's latest engine event that names one, with that event's time."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, ascending=False,
                                           limit=50).records
    for rec in records:
        data = rec.event_log_entry.dagster_event.engine_event_data if rec.event_log_entry.dagster_event else None
        pid = (data.metadata or {}).get("pid") if data else None
        if pid is not None:
            try:
                return int(pid.value if hasattr(pid, "value") else pid), rec.event_log_entry.timestamp
            except (TypeError, ValueError):
                continue
    return None


def local_runs_only(instance: dg.DagsterInstance) -> bool:
    """Process ids mean something only where runs execute on this machine (the local profile)."""
    return type(instance.run_launcher).__name__ == "DefaultRunLauncher"


def reap_dead_runs(instance: dg.DagsterInstance) -> list[ReapedRun]:
    """Fail every live-looking run whose worker process is gone and free the slots it held; also free slots
    still claimed by runs that already ended. Returns what was done (empty when nothing was wrong)."""
    reaped: list[ReapedRun] = []
    if local_runs_only(instance):
        for run in instance.get_runs(dg.RunsFilter(statuses=LIVE_STATUSES)):
            worker = run_worker_pid(instance, run.run_id)
            if worker is None or pid_alive(*worker):
                continue
            reason = f"run worker (pid {worker[0]}) is gone: the process was killed"
            instance.report_run_failed(run, reason)
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            reaped.append(ReapedRun(run.run_id, run.job_name, worker[0], reason))
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return reaped
    holders = {slot.run_id for key in storage.get_concurrency_keys()
               for slot in storage.get_concurrency_info(key).claimed_slots}
    for run_id in sorted(holders - {r.run_id for r in reaped}):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            reaped.append(ReapedRun(run_id, run.job_name if run else "?", None, "slots held after the run ended"))
    return reaped


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Fails runs whose process was killed and frees the concurrency slots they held, so a "
                       "killed collection never blocks the model_calls pool.")
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    reaped = reap_dead_runs(context.instance)
    for r in reaped:
        context.log.warning(f"run {r.run_id} ({r.job_name}): {r.reason}; marked failed, slots freed")
    return dg.SkipReason(f"{len(reaped)} dead run(s) cleaned up" if reaped else "no dead runs")
