"""Collection throughput of the cluster profile: traces/s with 1 vs 2 Celery workers against the simulator;
with ``--evaluate``, also the evaluation's time with its fits spread over 1 vs 2 workers.

Each configuration gets a fresh PostgreSQL database, bucket prefix, daemon and workers (one task at a time
each), builds the benchmark with a setup run, then queues one collection run per model at once and times
them from submission to the last run's end (wall) and from the first step's start to the last step's end
(steps). Needs PostgreSQL, Redis and an S3 server: `make services` (or .ci/run) exports their URLs.

    eval "$(deploy/services.sh start)" && .venv/bin/python bench/cluster.py [--queries 200 --models 4] [--evaluate]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(n_workers: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    import boto3
    import dagster as dg

    from collectors.registry import default_entries, save_registry
    from pipelines.deployment import stop_automation, submit_runs, wait_for_runs
    from pipelines.runner import RunOptions, run_stage
    from tests.cluster.cluster_harness import create_database, drop_database, make_cluster

    s3 = os.environ["LROUTER_TEST_S3_ENDPOINT"]
    aws = {"AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3}
    bucket = f"lrouter-bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3, aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1").create_bucket(Bucket=bucket)
    db = create_database(os.environ["LROUTER_TEST_PG_URL"])
    c = make_cluster(root / f"w{n_workers}", db, os.environ["LROUTER_TEST_REDIS_URL"], f"s3://{bucket}/wh",
                     extra_env=aws)
    save_registry(root / f"w{n_workers}" / "models.yaml", default_entries(include_local=False)[: args.models])
    from dagster._core.instance.ref import InstanceRef

    # this process only submits and watches runs: the cluster's instance with the values its dagster.yaml reads
    # from the workers' environment passed as overrides, not set in this process's environment
    logs = {"base_dir": c.env["LROUTER_DAGSTER_DIR"]}
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(c.env["DAGSTER_HOME"], overrides={
        "storage": {"postgres": {"postgres_url": c.env["DAGSTER_PG_URL"]}},
        "local_artifact_storage": {"module": "dagster._core.storage.root", "class": "LocalArtifactStorage",
                                   "config": logs},
        "compute_logs": {"module": "dagster._core.storage.local_compute_log_manager",
                         "class": "LocalComputeLogManager", "config": logs}}))
    try:
        stop_automation(instance)
        c.start_daemon()
        for i in range(n_workers):
            c.start_worker(f"worker-{i}")
        c.wait_for_workers(n_workers)
        instance.event_log_storage.set_concurrency_slots("model_calls", args.models)
        run_stage("setup", instance, RunOptions(n_queries=args.queries, seed=0), log=lambda _: None,
                  profile="cluster")
        models = instance.get_dynamic_partitions("models")
        config = {"resources": {"ollama": {"config": {"sim_time_scale": args.time_scale, "concurrency": 4}}}}
        t0 = time.time()
        run_ids = submit_runs(instance, "collect_traces_job", [(m, {"lrouter/stage": "collect"}) for m in models],
                              config)
        statuses = wait_for_runs(instance, run_ids, timeout_s=1800, poll_s=0.5)
        wall = time.time() - t0
        assert set(statuses.values()) == {dg.DagsterRunStatus.SUCCESS}, statuses
        starts, ends = [], []
        for run_id in run_ids:
            for rec in instance.get_records_for_run(run_id, limit=1000).records:
                ev = rec.event_log_entry.dagster_event
                if ev is not None and ev.step_key == "outcome_traces":
                    if ev.event_type == dg.DagsterEventType.STEP_START:
                        starts.append(rec.event_log_entry.timestamp)
                    elif ev.event_type == dg.DagsterEventType.STEP_SUCCESS:
                        ends.append(rec.event_log_entry.timestamp)
        n = args.queries * len(models)
        steps = max(ends) - min(starts)
        out = {"workers": n_workers, "traces": n, "wall_s": wall, "steps_s": steps,
               "traces_per_s_wall": n / wall, "traces_per_s_steps": n / steps}
        if args.evaluate:
            out.update(measure_evaluation(instance, n_workers, args))
        return out
    finally:
        c.stop()
        instance.dispose()
        drop_database(db)


def measure_evaluation(instance, n_workers: int, args: argparse.Namespace) -> dict[str, float]:
    """Features, then one evaluate_job run whose fits are dealt into one chunk per worker (evaluation_fits),
    timed from submission to its end."""
    import dagster as dg

    from pipelines.deployment import submit_runs, wait_for_runs
    from pipelines.runner import RunOptions, run_stage

    run_stage("features", instance, RunOptions(), log=lambda _: None, profile="cluster")
    ev = {"preset": args.eval_preset, "seeds": [0], "n_splits": args.eval_splits, "experiments": ["main_table"],
          "workers": 1}
    config = {"ops": {"evaluation_fits": {"config": {**ev, "chunks": n_workers}},
                      "evaluation_report": {"config": ev}}}
    t0 = time.time()
    run_ids = submit_runs(instance, "evaluate_job", [(None, {"lrouter/stage": "evaluate"})], config,
                          [dg.AssetKey(n) for n in ("evaluation_fits", "evaluation_report", "eval_results",
                                                    "routing_decisions")])
    statuses = wait_for_runs(instance, run_ids, timeout_s=3600, poll_s=0.5)
    assert set(statuses.values()) == {dg.DagsterRunStatus.SUCCESS}, statuses
    return {"eval_wall_s": time.time() - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--time-scale", type=float, default=0.05, help="fraction of the simulated latency waited")
    ap.add_argument("--evaluate", action="store_true",
                    help="also time the evaluation (its fits dealt into one evaluation_fits chunk per worker)")
    ap.add_argument("--eval-preset", default="quick")
    ap.add_argument("--eval-splits", type=int, default=3)
    args = ap.parse_args()
    missing = [v for v in ("LROUTER_TEST_PG_URL", "LROUTER_TEST_REDIS_URL", "LROUTER_TEST_S3_ENDPOINT")
               if not os.environ.get(v)]
    if missing:
        print(f"(cluster bench not run: {', '.join(missing)} unset; eval \"$(deploy/services.sh start)\" first)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="lrouter-bench-cluster-") as tmp:
        for n in (1, 2):
            rows.append(measure(n, args, Path(tmp)))
            print(f"{n} worker(s): {rows[-1]['traces']} traces of {args.models} models in "
                  f"{rows[-1]['wall_s']:.1f}s wall ({rows[-1]['traces_per_s_wall']:.1f} traces/s), "
                  f"{rows[-1]['steps_s']:.1f}s first step start to last step end "
                  f"({rows[-1]['traces_per_s_steps']:.1f} traces/s)", flush=True)
    print(f"speed-up 2 vs 1 worker: {rows[1]['traces_per_s_wall'] / rows[0]['traces_per_s_wall']:.2f}x wall, "
          f"{rows[1]['traces_per_s_steps'] / rows[0]['traces_per_s_steps']:.2f}x steps")
    if args.evaluate:
        for r in rows:
            print(f"evaluation on {r['workers']} worker(s): {r['eval_wall_s']:.1f}s")
        print(f"evaluation time 2 vs 1 worker: {rows[1]['eval_wall_s'] / rows[0]['eval_wall_s']:.2f}x "
              "(target <= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
