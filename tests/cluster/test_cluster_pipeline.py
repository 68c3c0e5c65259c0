"""The cluster profile end to end: PostgreSQL instance, queued runs started by the daemon, steps on two
Celery workers, the warehouse on the S3 server; the tables equal a local run's, and a worker killed in the
middle of a collection loses nothing."""

from __future__ import annotations

import contextlib
import os
import time

import dagster as dg
import polars as pl
import pytest

from tests.cluster.cluster_harness import create_database, drop_database, make_cluster
from tests.cluster.conftest import S3_KEYS

pytestmark = pytest.mark.integration

N_QUERIES = 60
N_MODELS = 3
SEED = 3
SMALL_ROUTER = {"epochs": 3, "hidden": 32, "n_capsules": 4, "patience": 3, "batch_size": 64}  # test_lifecycle
TRAIN_ASSETS = ["latent_router", "current_pool_routing"]
# a small evaluation: 2 splits x 1 seed, main table and outcome prediction (its extra LatentRouter fits)
EVAL = {"preset": "quick", "seeds": [0], "n_splits": 2, "experiments": ["main_table", "outcome_prediction"],
        "workers": 1}
# columns that differ between any two runs by design (who collected it, when, how long the call took)
VOLATILE = ["run_id", "collected_at", "latency_ms"]


@pytest.fixture(scope="module")
def cluster(pg_url, redis_url, s3_endpoint, tmp_path_factory):
    from collectors.registry import default_entries, save_registry

    boto3 = pytest.importorskip("boto3", reason="boto3 is in the `cluster` extra")
    root = tmp_path_factory.mktemp("cluster")
    aws = {**S3_KEYS, "AWS_ENDPOINT_URL": s3_endpoint}
    bucket = f"lrouter-cluster-{os.getpid()}-{int(time.time())}"
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
                 region_name=aws["AWS_DEFAULT_REGION"]).create_bucket(Bucket=bucket)
    db = create_database(pg_url)
    # a short visibility timeout so a task of a killed worker is redelivered within the test
    c = make_cluster(root, db, redis_url, f"s3://{bucket}/wh", visibility_timeout_s=40, extra_env=aws)
    save_registry(root / "models.yaml", default_entries(include_local=False)[:N_MODELS])
    mp = pytest.MonkeyPatch()
    for k, v in c.env.items():
        mp.setenv(k, v)
    mp.setenv("LROUTER_HOME", str(c.home("client")))
    instance = dg.DagsterInstance.get()
    from pipelines.deployment import stop_automation

    stop_automation(instance)  # the test launches the runs; the model-pool sensor must not add its own
    c.start_daemon()
    c.start_worker("worker-a")
    c.start_worker("worker-b")
    try:
        c.wait_for_workers(2)
        instance.event_log_storage.set_concurrency_slots("model_calls", N_MODELS)  # collect all models at once
        yield c, instance
    finally:
        c.stop()
        instance.dispose()
        mp.undo()
        drop_database(db)


def _workers_of(instance: dg.DagsterInstance, run_id: str, step_contains: str = "") -> set[str]:
    """The Celery workers that executed steps of a run (from the executor's engine events), or only the steps
    whose key contains ``step_contains``."""
    names = set()
    for rec in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=500).records:
        if step_contains not in (rec.event_log_entry.step_key or ""):
            continue
        data = rec.event_log_entry.dagster_event.engine_event_data
        worker = (data.metadata or {}).get("Celery worker") if data else None
        if worker is not None:
            names.add(str(getattr(worker, "value", worker)).split("@")[0])
    return names


@contextlib.contextmanager
def _local_profile(home):
    """The local profile (in-process runs, the warehouse on local disk) in ``home``, for this block."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LROUTER_DEPLOYMENT", "local")
    mp.delenv("LROUTER_WAREHOUSE")
    mp.setenv("LROUTER_HOME", str(home))
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def local_home(cluster, tmp_path_factory):
    """The same graph, same seed, in-process on local disk (the local profile): its home."""
    from pipelines.definitions import materialize, resources

    home = tmp_path_factory.mktemp("local")
    with _local_profile(home):
        instance = dg.DagsterInstance.ephemeral()

        def mat(names, **kw):
            assert materialize(names, instance=instance, resources=resources(), **kw).success, names

        mat(["benchmark_queries", "candidate_models", "data_splits"],
            run_config={"ops": {"benchmark_queries": {"config": {"n_queries": N_QUERIES, "seed": SEED}}}})
        for m in instance.get_dynamic_partitions("models"):
            mat(["outcome_traces"], partition_key=m)
        mat(["warehouse_views", "query_features", "capability_profiles", *TRAIN_ASSETS],
            run_config={"ops": {"latent_router": {"config": SMALL_ROUTER}}})
    return home


def _tables(wh) -> dict[str, pl.DataFrame]:
    traces = wh.read_traces().drop(VOLATILE).sort("model_id", "query_id")
    out = {"traces": traces}
    for name, key in (("queries", "query_id"), ("splits", "query_id"), ("models", "model_id"),
                      ("profiles", "model_id"), ("features", "query_id")):
        df = wh.read_table(name)
        out[name] = df.drop([c for c in ("added_at", "built_from") if c in df.columns]).sort(key)
    return out


def test_cluster_graph_on_postgres_celery_and_s3_equals_the_local_run(cluster, local_home):
    from pipelines.deployment import submit_runs, wait_for_runs
    from pipelines.runner import RunOptions, run_stage
    from warehouse.catalog import run_query
    from warehouse.store import Warehouse

    c, instance = cluster
    quiet = []
    run_stage("setup", instance, RunOptions(n_queries=N_QUERIES, seed=SEED), log=quiet.append)
    models = instance.get_dynamic_partitions("models")
    assert len(models) == N_MODELS

    collect = run_stage("collect", instance, RunOptions(), log=quiet.append)  # 3 runs queued at once
    assert sorted(r.partition for r in collect) == sorted(models)
    runs = [instance.get_run_by_id(r.run_id) for r in collect]
    assert all(r.tags["lrouter/queue"] == "collect" and r.tags["dagster/partition"] for r in runs)
    used = set().union(*(_workers_of(instance, r.run_id) for r in collect))
    # every step ran on a Celery worker (which of the two takes a step depends on the box's load; the
    # killed-worker test below shows the second one taking over)
    assert used and used <= {"worker-a", "worker-b"}, f"collection steps ran on {used}"
    # the runs overlapped: all were started before the last one ended
    stats = [instance.get_run_stats(r.run_id) for r in collect]
    assert max(s.start_time for s in stats) < max(s.end_time for s in stats)

    run_stage("features", instance, RunOptions(), log=quiet.append)
    train = submit_runs(instance, "train_job", [(None, {"lrouter/stage": "train"})],
                        {"ops": {"latent_router": {"config": SMALL_ROUTER}}},
                        [dg.AssetKey(n) for n in TRAIN_ASSETS])
    assert set(wait_for_runs(instance, train, timeout_s=600).values()) == {dg.DagsterRunStatus.SUCCESS}

    wh = Warehouse()
    assert wh.remote and wh.location == c.env["LROUTER_WAREHOUSE"]
    cluster_tables = _tables(wh)
    assert cluster_tables["traces"].height == N_QUERIES * N_MODELS
    assert run_query(wh, "select count(*) n, count(distinct (query_id, model_id)) k from traces").row(0) == (
        N_QUERIES * N_MODELS, N_QUERIES * N_MODELS)
    assert wh.fs.list_parquet("traces") and wh.fs.fs.exists(wh.fs.key("artifacts/_index.json")), \
        "checkpoints were published to the bucket"

    local_tables = _tables(Warehouse(local_home / "warehouse"))
    for name, local in local_tables.items():
        got = cluster_tables[name]
        assert got.columns == local.columns, name
        assert got.equals(local), f"table {name!r} differs between the cluster and the local run"


def _stable(frame: pl.DataFrame) -> pl.DataFrame:
    """eval_results without wall-clock figures and the run id, in a fixed order."""
    return frame.filter(~pl.col("metric").str.contains("latency|seconds")).drop("run_id").sort(
        "experiment", "router", "setting", "metric", "split", "seed", "pool", "task_group")


def test_the_evaluation_fits_fan_out_over_both_workers_with_the_local_tables(cluster, local_home):
    from pipelines.definitions import materialize, resources
    from pipelines.deployment import submit_runs, wait_for_runs
    from warehouse.store import Warehouse

    c, instance = cluster
    fits = {**EVAL, "chunks": 2, "workers": 1}
    [run_id] = submit_runs(instance, "evaluate_job", [(None, {"lrouter/stage": "evaluate"})],
                           {"ops": {"evaluation_fits": {"config": fits}, "evaluation_report": {"config": EVAL}}},
                           [dg.AssetKey(n) for n in ("evaluation_fits", "evaluation_report", "eval_results",
                                                     "routing_decisions")])
    assert set(wait_for_runs(instance, [run_id], timeout_s=900).values()) == {dg.DagsterRunStatus.SUCCESS}
    chunk_workers = _workers_of(instance, run_id, step_contains="eval_fit_chunk")
    assert chunk_workers == {"worker-a", "worker-b"}, f"the two chunks of fits ran on {chunk_workers}"
    report = instance.get_latest_materialization_event(dg.AssetKey("evaluation_report")).asset_materialization
    assert report.metadata["fit_units_run"].value == 0, "evaluation_report refitted what the chunks stored"
    cluster_rows = Warehouse().read_table("eval_results").filter(pl.col("run_id") == run_id)

    # the same evaluation in-process on the local profile's copy of the data, fitted on 2 local processes
    with _local_profile(local_home):
        local = materialize(["evaluation_report"], instance=dg.DagsterInstance.ephemeral(), resources=resources(),
                            run_config={"ops": {"evaluation_report": {"config": {**EVAL, "workers": 2}}}})
        assert local.success
        local_rows = Warehouse(local_home / "warehouse").read_table("eval_results").filter(
            pl.col("run_id") == local.run_id)
    assert cluster_rows.height == local_rows.height > 0
    assert _stable(cluster_rows).equals(_stable(local_rows)), "the cluster's evaluation differs from the local one"


def test_a_worker_killed_mid_collection_loses_nothing(cluster):
    from pipelines.deployment import submit_runs, wait_for_runs
    from warehouse.store import Warehouse, partition_file_name

    c, instance = cluster
    wh = Warehouse()
    model = sorted(instance.get_dynamic_partitions("models"))[0]
    before = wh.read_trace_partition(model)
    wh.delete_trace_partition(model)
    slow = {"resources": {"ollama": {"config": {"sim_time_scale": 0.4, "concurrency": 2, "checkpoint_rows": 4}}}}
    [run_id] = submit_runs(instance, "collect_traces_job", [(model, {"lrouter/trigger": "kill-test"})], slow)

    staging = "traces/_staging/" + partition_file_name(model).removesuffix(".parquet")
    deadline = time.monotonic() + 180
    while not wh.fs.list_parts(staging):  # the collection is running and has flushed rows
        assert time.monotonic() < deadline, "the collection never staged any rows"
        time.sleep(0.3)
    [victim] = _workers_of(instance, run_id)
    c.kill(victim)
    survivor = ({"worker-a", "worker-b"} - {victim}).pop()

    statuses = wait_for_runs(instance, [run_id], timeout_s=300)
    assert set(statuses.values()) == {dg.DagsterRunStatus.SUCCESS}
    assert survivor in _workers_of(instance, run_id) | _workers_of_retries(instance, run_id)
    after = wh.read_trace_partition(model)
    assert after.height == N_QUERIES and after["query_id"].n_unique() == N_QUERIES, "no duplicates, none lost"
    assert (after["status"] == "ok").all()
    cols = [c for c in before.columns if c not in (*VOLATILE, "attempt")]
    assert after.select(cols).sort("query_id").equals(before.select(cols).sort("query_id"))
    mat = instance.fetch_materializations(dg.AssetKey("outcome_traces"), limit=1).records[0]
    assert mat.asset_materialization.partition == model
    assert mat.asset_materialization.metadata["resumed_rows"].value > 0, "the second worker resumed"
    assert not wh.fs.list_parts(staging)


def _workers_of_retries(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    retries = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    return set().union(set(), *(_workers_of(instance, r.run_id) for r in retries))
