"""Run the pipeline without the UI: `lrouter run STAGE` and `make demo` launch the project's named jobs
in-process against the persistent Dagster instance, so every run appears in the UI with its job name and
tags (stage, model, trigger), exactly like a run launched from the Launchpad.

Stages, on whatever the warehouse holds (the built-in benchmark or an import):
- ``setup``: benchmark queries (built-in only when asked with ``queries``, or when there are none yet),
  the registry mirror and the splits;
- ``collect``: one ``collect_traces_job`` run per model partition (calibration rows first);
- ``features``: features, capability profiles and the DuckDB views;
- ``train``: LatentRouter and the current-pool routing decisions;
- ``evaluate``: the evaluation report;
- ``all``: the five in that order.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from pipelines.deployment import deployment, submit_runs, wait_for_runs
from pipelines.progress import StageProgress
from pipelines.recovery import reap_dead_runs

STAGES = ("setup", "collect", "features", "train", "evaluate")
STAGE_JOBS = {"setup": "setup_job", "collect": "collect_traces_job", "features": "features_job",
              "train": "train_job", "evaluate": "evaluate_job"}


@dataclass(frozen=True)
class StageRun:
    stage: str
    job: str
    run_id: str
    partition: str | None
    seconds: float


class StageFailed(RuntimeError):
    """A stage's run failed; the message names the run, so the UI shows why."""


@dataclass
class RunOptions:
    """What a command line or the demo asks of a pipeline run."""

    n_queries: int | None = None  # regenerate the built-in benchmark with this many queries (None: keep)
    seed: int = 0
    models: tuple[str, ...] = ()  # collect only these partitions (empty: every active model)
    preset: str | None = None  # evaluation preset (quick | demo | paper); None = the asset's default
    trigger: str = "cli"


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # events still go to the instance
QUICK_ROUTER = {"epochs": 5, "patience": 2}  # --preset quick trains LatentRouter briefly too
QUICK_HYBRID = {"seeds": [0]}  # ... and fits the hybrid section's probes and routers at one seed
QUICK_NOTE = ("[quick] a smoke run, not results: LatentRouter 5 epochs, small baselines, 1 split x 2 seeds, "
              "2 tuning trials per router, hybrid probes at 1 seed (use --preset demo or paper for numbers to read)")


def _run_config(stage: str, opts: RunOptions) -> dict:
    if stage == "setup" and opts.n_queries is not None:
        return {**QUIET, "ops": {"benchmark_queries": {"config": {"source": "builtin", "n_queries": opts.n_queries,
                                                                  "seed": opts.seed}}}}
    if stage == "evaluate" and opts.preset:
        preset = {"config": {"preset": opts.preset}}
        return {**QUIET, "ops": {"evaluation_fits": preset, "evaluation_report": preset}}
    if stage == "train" and opts.preset:  # the deployment's fits are the evaluation's: the same preset
        ops: dict = {"deployed_router": {"config": {"preset": opts.preset}}}
        if opts.preset == "quick":
            ops["latent_router"] = {"config": QUICK_ROUTER}
            ops["hybrid_routing"] = {"config": QUICK_HYBRID}
        return {**QUIET, "ops": ops}
    return QUIET


def _setup_selection(opts: RunOptions, defs: dg.Definitions) -> list[str] | None:
    """Keep imported or earlier queries unless new built-in ones are asked for."""
    if opts.n_queries is None and defs.resources["warehouse"].warehouse().has_table("queries"):
        return ["candidate_models", "data_splits"]
    return None


# what one console line says of each asset a run materialized (the first key it has), besides its row count
SUMMARY_KEYS = (("attempted_this_run", "calls"), ("parameters", "params"), ("test_quality_lambda0", "test quality"),
                ("eval_rows", "result rows"))


def run_summary(result: dg.ExecuteInProcessResult) -> str:
    """Counts for the one line a run gets on the console: rows per asset, calls, checks passed."""
    parts = []
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        md = {k: v.value for k, v in mat.metadata.items()}
        name = mat.asset_key.to_user_string()
        bits = [f"{md['dagster/row_count']:,} rows"] if isinstance(md.get("dagster/row_count"), int) else []
        for key, label in SUMMARY_KEYS:
            value = md.get(key)
            if isinstance(value, float):
                bits.append(f"{label} {value:.3f}")
            elif isinstance(value, int):
                bits.append(f"{value:,} {label}")
        parts.append(f"{name} {', '.join(bits)}" if bits else name)
    checks = result.get_asset_check_evaluations()
    if checks:
        passed = sum(1 for c in checks if c.passed)
        parts.append(f"checks {passed}/{len(checks)} passed")
    return "; ".join(parts) or "nothing materialized"


def _collectable_models(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[str]:
    """Active models of THIS home's registry that have a partition: the instance's partition list also holds
    models of other homes that used the same Dagster instance (e.g. an import into another home)."""
    from collectors.registry import ensure_registry

    partitions = set(instance.get_dynamic_partitions("models"))
    registry = defs.resources["warehouse"].registry()
    return [e.model_id for e in ensure_registry(registry) if e.active and e.model_id in partitions]


def quiet_progress_bars() -> None:
    """No progress bars in a log file: the encoders' and the local model's libraries (transformers' "Loading
    weights", its GGUF conversion, huggingface_hub) draw theirs unless told not to."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    except ImportError:  # neither is needed by every stage
        pass


def run_stage(stage: str, instance: dg.DagsterInstance, opts: RunOptions | None = None,
              log: Callable[[str], None] = print, home: Path | None = None,
              profile: str | None = None) -> list[StageRun]:
    """Launch one stage's job(s) in-process, on ``home`` (default: the home the environment names), or queue
    them for the cluster's workers when ``profile`` (default: LROUTER_DEPLOYMENT) is ``cluster``; raises
    :class:`StageFailed` naming the failed run."""
    if not sys.stderr.isatty():
        quiet_progress_bars()
    from pipelines.definitions import build_defs

    opts = opts or RunOptions()
    if opts.preset == "quick" and stage == "train":  # once per `run all` too (it runs train once)
        log(QUICK_NOTE)
    if stage == "all":
        return [r for s in STAGES for r in run_stage(s, instance, opts, log, home, profile)]
    if stage not in STAGE_JOBS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join((*STAGES, 'all'))}")
    defs = build_defs(home)
    reap_dead_runs(instance)
    job = defs.resolve_job_def(STAGE_JOBS[stage])
    partitions: list[str | None] = [None]
    if stage == "collect":
        known = _collectable_models(instance, defs)
        partitions = list(opts.models) or known
        unknown = [m for m in partitions if m not in known]
        if unknown:
            raise ValueError(f"no trace partition for {unknown}; registered active models: {known}")
    selection = _setup_selection(opts, defs) if stage == "setup" else None
    if (profile or deployment()) == "cluster":  # queue the runs (all partitions at once) for the daemon and Celery
        return _submit_stage(stage, job.name, partitions, opts, selection, instance, log)
    runs: list[StageRun] = []
    for key in partitions:
        tags = {"lrouter/stage": stage, "lrouter/trigger": opts.trigger, **({"lrouter/model": key} if key else {}),
                **({"lrouter/home": str(home)} if home is not None else {})}
        t0 = time.perf_counter()
        if stage in ("features", "train", "evaluate"):  # minutes of work: say it started, not only when done
            log(f"[{stage}] {job.name}: running ...")
        run_id = str(uuid.uuid4())
        with StageProgress(stage, instance, run_id, log):  # what the run's steps are doing, while they do it
            result = job.execute_in_process(run_config=_run_config(stage, opts), instance=instance,
                                            partition_key=key, tags=tags, raise_on_error=False, run_id=run_id,
                                            asset_selection=[dg.AssetKey(n) for n in selection] if selection else None)
        if not result.success:
            raise StageFailed(f"stage {stage!r}{f' ({key})' if key else ''}: run {result.run_id} of {job.name} "
                              "failed; open it in the UI (`make dev`) for the step that failed")
        runs.append(StageRun(stage, job.name, result.run_id, key, time.perf_counter() - t0))
        log(f"[{stage}] {job.name}{f' {key}' if key else ''}: {run_summary(result)} in {runs[-1].seconds:.0f}s "
            f"(run {result.run_id[:8]})")
    return runs


def _submit_stage(stage: str, job_name: str, partitions: list[str | None], opts: RunOptions,
                  selection: list[str] | None, instance: dg.DagsterInstance,
                  log: Callable[[str], None]) -> list[StageRun]:
    """The cluster profile's stage: one queued run per partition, submitted together, then awaited."""
    t0 = time.perf_counter()
    tags = {"lrouter/stage": stage, "lrouter/trigger": opts.trigger}
    requests = [(key, {**tags, **({"lrouter/model": key} if key else {})}) for key in partitions]
    run_ids = submit_runs(instance, job_name, requests, _run_config(stage, opts),
                          [dg.AssetKey(n) for n in selection] if selection else None)
    log(f"[{stage}] {job_name}: {len(run_ids)} run(s) queued")
    statuses = wait_for_runs(instance, run_ids)
    failed = [r for r, s in statuses.items() if s != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise StageFailed(f"stage {stage!r}: run(s) {', '.join(failed)} of {job_name} did not succeed; "
                          "open them in the UI for the step that failed")
    seconds = time.perf_counter() - t0
    log(f"[{stage}] {job_name}: {len(run_ids)} run(s) done in {seconds:.0f}s")
    return [StageRun(stage, job_name, r, k, seconds) for r, k in zip(run_ids, partitions, strict=True)]
