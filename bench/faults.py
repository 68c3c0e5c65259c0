"""Fault-tolerance benchmark: 5,000 calls with 20% injected faults and one SIGKILL, then resume; then a
SIGKILLed Dagster collection run followed by a new one.

Why: the traces table is only trustworthy if a collection that hits flaky servers and gets killed half way
still ends with exactly one row per (query, model) pair. This script

1. writes 1,000 synthetic queries into a temporary warehouse and serves 5 simulated models from this process
   with a mix of faults (timeouts, HTTP 500 / 503, malformed JSON, dropped connections, slow replies) on
   20% of the requests;
2. runs the collection (`collect_partition` per model, one after the other) in a fresh interpreter,
   SIGKILLs it once about half the pairs are on disk (finished partitions plus staging part files),
   starts it again and lets it finish;
3. checks the warehouse (rows lost, duplicates, staging left behind) and repeats the same collection
   without faults for the wall-time comparison;
4. one level up, as a user runs it: `lrouter run collect` on an instance whose `model_calls` pool has limit 1,
   SIGKILLed once rows are staged, then a new run of the same partition (it must neither wait for the dead
   run's slot nor lose or duplicate a row).

``--protocol openai`` does the same over OpenAI's chat-completions protocol: the models are registered with
backend ``openai`` at the simulator's OpenAI-compatible endpoint, collected through the official ``openai``
client, and the fault mix includes HTTP 429 with ``Retry-After``; in step 4 the model is added with
`lrouter models add --backend openai` (a key in an environment variable) against a simulator this script
serves.

    .venv/bin/python bench/faults.py [--queries 1000] [--models 5] [--protocol ollama|openai]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from collectors.collection.client import CollectConfig
from collectors.collection.resume import collect_partition
from collectors.registry import ModelEntry
from collectors.simulator.faults import ALL_FAULT_KINDS, FAULT_KINDS, FaultConfig
from collectors.simulator.server import SimServer
from collectors.simulator.specs import DEFAULT_POOL
from warehouse.store import Warehouse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect import synthetic_queries  # noqa: E402  (sibling bench script)

TIME_SCALE = 0.005  # simulated inference takes 0.5% of the reported duration (a few ms per call)
BATCH = 50  # rows per staging part file
FAULT_MIX = dict(timeout=0.02, http_500=0.05, http_503=0.04, malformed_json=0.03, dropped_connection=0.04,
                 slow=0.02)  # 20% of requests in all
OPENAI_FAULT_MIX = dict(timeout=0.02, http_500=0.04, http_503=0.03, malformed_json=0.03, dropped_connection=0.03,
                        slow=0.02, http_429=0.03)  # 20% in all, 429s with Retry-After among them
RETRY_AFTER_S = 0.05
CHAT_PATH = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}
BENCH_KEY_ENV, BENCH_KEY = "LROUTER_BENCH_OPENAI_KEY", "sk-bench-not-a-real-key-5f1e"
CLIENT = dict(concurrency=8, timeout_s=0.5, max_retries=3, backoff_base_s=0.05, backoff_max_s=0.5,
              breaker_threshold=12, batch_size=BATCH, progress=False)


def entries(n_models: int, protocol: str = "ollama", url: str = "") -> list[ModelEntry]:
    if protocol == "openai":
        return [ModelEntry(model_id=s.name, backend="openai", endpoint=url, server_model=s.name,
                           price_in_per_mtok=s.price_in_per_mtok, price_out_per_mtok=s.price_out_per_mtok,
                           params_b=s.params_b) for s in DEFAULT_POOL[:n_models]]
    return [ModelEntry(model_id=s.name, backend="sim", price_in_per_mtok=s.price_in_per_mtok,
                       price_out_per_mtok=s.price_out_per_mtok, params_b=s.params_b, simulated=True)
            for s in DEFAULT_POOL[:n_models]]


# ----------------------------------------------------------------------------------------- child process


def child(root: str, url: str, n_models: int, log: str, protocol: str = "ollama") -> None:
    """The collection itself, as a pipeline run would do it: each model's partition brought up to date."""
    wh = Warehouse(root)
    queries = wh.read_table("queries")
    if protocol == "openai":
        url += "/v1"
    for m in entries(n_models, protocol, url):
        r = collect_partition(wh, m, queries, url, CollectConfig(**CLIENT), run_id=f"pid{os.getpid()}")
        s = r.stats
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"model": m.model_id, "attempted": r.attempted, "resumed_rows": r.resumed_rows,
                                 "calls": s.calls, "retries": s.retries, "breaker": s.breaker_opened,
                                 "rate_limited": s.rate_limited, "rate_wait_s": s.rate_wait_s}) + "\n")


def spawn(root: Path, url: str, n_models: int, log: Path, protocol: str = "ollama") -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(root), url, str(n_models), str(log),
           protocol]
    return subprocess.Popen(cmd)


# ---------------------------------------------------------------------------------------- parent process


def on_disk(wh: Warehouse, n_queries: int) -> tuple[int, int, int]:
    """(finished partitions, staging part files, approximate pairs on disk) without reading any file."""
    parts = len(list(wh.traces_dir.glob("*.parquet")))
    staged = len(list((wh.traces_dir / "_staging").glob("*/part-*.parquet")))
    return parts, staged, parts * n_queries + staged * BATCH


def run_collection(wh: Warehouse, url: str, n_models: int, n_queries: int, log: Path,
                   kill_at: float | None, protocol: str = "ollama") -> dict[str, float]:
    """Run the child to completion; with ``kill_at`` (fraction of pairs), SIGKILL it once there, then resume."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = spawn(wh.root, url, n_models, log, protocol)
    if kill_at is not None:
        target = kill_at * n_models * n_queries
        while proc.poll() is None:
            parts, staged, pairs = on_disk(wh, n_queries)
            if staged > 0 and pairs >= target:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait()
        out["killed_rc"] = proc.returncode
        out["first_wall_s"] = time.perf_counter() - t0
        out["parts_at_kill"], out["staged_files_at_kill"], _ = on_disk(wh, n_queries)
        t1 = time.perf_counter()
        proc = spawn(wh.root, url, n_models, log, protocol)
        proc.wait()
        out["resume_wall_s"] = time.perf_counter() - t1
    else:
        proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"collection child exited with {proc.returncode}")
    out["wall_s"] = time.perf_counter() - t0
    return out


def audit(wh: Warehouse, queries: pl.DataFrame, models: list[ModelEntry]) -> dict[str, object]:
    traces = wh.read_traces([m.model_id for m in models])
    expected = queries.select("query_id").join(pl.DataFrame({"model_id": [m.model_id for m in models]}),
                                               how="cross")
    present = traces.select("query_id", "model_id").unique()
    lost = expected.join(present, on=["query_id", "model_id"], how="anti").height
    return {
        "traces": traces,
        "rows": traces.height,
        "lost": lost,
        "duplicates": traces.height - present.height,
        "unexpected": present.join(expected, on=["query_id", "model_id"], how="anti").height,
        "staging_left": len(list((wh.traces_dir / "_staging").rglob("*.parquet"))),
        "status": dict(traces["status"].value_counts().sort("status").rows()),
    }


# ------------------------------------------------------------------ the same, one level up: Dagster runs


def lrouter(args: list[str], dagster_home: Path, home: Path, time_scale: float) -> subprocess.Popen:
    """`lrouter ...` as a user starts it, on a persistent instance whose model_calls pool has limit 1."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "LROUTER_HOME": str(home),
           "LROUTER_SIM_TIME_SCALE": str(time_scale), "OMP_WAIT_POLICY": "PASSIVE", BENCH_KEY_ENV: BENCH_KEY}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env=env,
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def lrouter_run(args: list[str], dagster_home: Path, home: Path, time_scale: float) -> subprocess.Popen:
    return lrouter(["run", *args], dagster_home, home, time_scale)


def kill_the_run_start_another(tmp: Path, n_queries: int, model: str = "simvl-nano:1b",
                               protocol: str = "ollama") -> dict[str, float]:
    """SIGKILL a collection *run* (it holds the pool's only slot) once rows are staged, then start a new run of
    the same partition: it must not wait for the dead run's slot, and must end with one row per query.
    openai: the model is added with `lrouter models add --backend openai` at a simulator served from here
    (with the OpenAI fault mix), and no file of the home or the instance may hold the key afterwards."""
    dagster_home, home = tmp / "dagster", tmp / "home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    if lrouter_run(["setup", "--queries", str(n_queries)], dagster_home, home, 0.0).wait() != 0:
        raise RuntimeError("lrouter run setup failed")
    server = None
    if protocol == "openai":
        faults = FaultConfig(**OPENAI_FAULT_MIX, retry_after_s=RETRY_AFTER_S, timeout_s=2.0, slow_extra_s=0.05)
        server = SimServer(Warehouse(home / "warehouse").read_table("queries"), models=list(DEFAULT_POOL), seed=0,
                           time_scale=0.2, faults=faults)
        url = server.start() + "/v1"
        name = model.split(":")[0] + "-over-openai"
        spec = next(s for s in DEFAULT_POOL if s.name == model)
        add = ["models", "add", name, "--backend", "openai", "--endpoint", url, "--server-model", model,
               "--api-key-env", BENCH_KEY_ENV, "--price-in", str(spec.price_in_per_mtok), "--price-out",
               str(spec.price_out_per_mtok)]
        if lrouter(add, dagster_home, home, 0.0).wait() != 0:
            raise RuntimeError("lrouter models add --backend openai failed")
        model = name
    try:
        staging = Warehouse(home / "warehouse").traces_dir / "_staging"
        t0 = time.perf_counter()
        proc = lrouter_run(["collect", "--model", model], dagster_home, home, 0.2)
        while proc.poll() is None and not list(staging.glob("*/part-*.parquet")):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_after = time.perf_counter() - t0
        staged = sum(pl.read_parquet(f).height for f in staging.glob("*/part-*.parquet"))
        if server is not None:
            server.time_scale = 0.0
        t1 = time.perf_counter()
        again = lrouter_run(["collect", "--model", model], dagster_home, home, 0.0)
        rc = again.wait(timeout=600)
    finally:
        if server is not None:
            server.stop()
    traces = Warehouse(home / "warehouse").read_trace_partition(model)
    leaks = [f for d in (home, dagster_home) for f in d.rglob("*") if f.is_file() and BENCH_KEY.encode() in f.read_bytes()]
    return {"killed_after_s": killed_after, "staged_rows": staged, "second_run_rc": rc,
            "second_run_s": time.perf_counter() - t1, "rows": traces.height,
            "lost": n_queries - traces["query_id"].n_unique(), "duplicates": traces.height - traces["query_id"].n_unique(),
            "key_leaks": len(leaks)}


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of pairs on disk when killed")
    ap.add_argument("--run-queries", type=int, default=600, help="queries of the kill-the-run case")
    ap.add_argument("--protocol", choices=["ollama", "openai"], default="ollama",
                    help="the wire protocol the collector speaks to the simulator")
    args = ap.parse_args()
    models = entries(args.models)
    specs = list(DEFAULT_POOL[: args.models])
    mix = OPENAI_FAULT_MIX if args.protocol == "openai" else FAULT_MIX
    chat_path = CHAT_PATH[args.protocol]
    with tempfile.TemporaryDirectory(prefix="lrouter-faults-") as tmp:
        faulty, clean = Warehouse(Path(tmp) / "faulty").ensure(), Warehouse(Path(tmp) / "clean").ensure()
        queries = synthetic_queries(args.queries, faulty.images_dir, seed=1)
        faulty.write_table("queries", queries)
        clean.write_table("queries", queries)
        for p in faulty.images_dir.iterdir():
            os.link(p, clean.images_dir / p.name)

        faults = FaultConfig(**mix, timeout_s=2.0, slow_extra_s=0.05, retry_after_s=RETRY_AFTER_S)
        with SimServer(queries, models=specs, seed=0, time_scale=TIME_SCALE, faults=faults) as server:
            log = Path(tmp) / "faulty.jsonl"
            run = run_collection(faulty, server.url, args.models, args.queries, log, kill_at=args.kill_at,
                                 protocol=args.protocol)
            sstats = server.stats
        with SimServer(queries, models=specs, seed=0, time_scale=TIME_SCALE) as server:
            base = run_collection(clean, server.url, args.models, args.queries, Path(tmp) / "clean.jsonl",
                                  kill_at=None, protocol=args.protocol)
            base_calls = server.stats["endpoints"].get(chat_path, 0)

        a, b = audit(faulty, queries, models), audit(clean, queries, models)
        t = a["traces"]
        calls = sstats["endpoints"].get(chat_path, 0)
        injected = {k: sstats["faults"][k] for k in (ALL_FAULT_KINDS if args.protocol == "openai" else FAULT_KINDS)}
        failing = sum(v for k, v in injected.items() if k != "slow")
        in_rows = int(t["attempt"].sum())
        retries_in_rows = int((t["attempt"] - 1).clip(lower_bound=0).sum())
        entries_log = read_log(log)
        resumed = [e for e in entries_log if e["resumed_rows"]]
        both_ok = t.join(b["traces"], on=["query_id", "model_id"], suffix="_clean").filter(
            (pl.col("status") == "ok") & (pl.col("status_clean") == "ok"))
        differing = both_ok.filter((pl.col("prediction") != pl.col("prediction_clean"))
                                   | (pl.col("quality") != pl.col("quality_clean"))).height
        (Path(tmp) / "runs").mkdir()
        kr = kill_the_run_start_another(Path(tmp) / "runs", args.run_queries, protocol=args.protocol)

    pairs = args.queries * args.models
    print(f"fault benchmark ({args.protocol} protocol): {args.queries} queries x {args.models} models = {pairs} "
          f"pairs, time_scale={TIME_SCALE}, concurrency={CLIENT['concurrency']}, client timeout={CLIENT['timeout_s']}s")
    print(f"  fault mix per request: {mix} (sum {sum(mix.values()):.2f})"
          + (f"; 429s ask Retry-After {RETRY_AFTER_S}s" if mix.get("http_429") else ""))
    print(f"  SIGKILL after {run['first_wall_s']:.1f}s (rc {run['killed_rc']}): "
          f"{run['parts_at_kill']:.0f} partitions done, {run['staged_files_at_kill']:.0f} staging files on disk; "
          f"resume took {run['resume_wall_s']:.1f}s; resumed partitions: "
          + ", ".join(f"{e['model']} ({e['resumed_rows']} staged rows kept, {e['attempted']} redone)"
                      for e in resumed))
    print(f"  calls made (server {chat_path}): {calls}  [fault-free run: {base_calls}]")
    print(f"  faults injected: {sum(injected.values())} ({sum(injected.values()) / calls:.1%} of calls) "
          f"by kind {injected}; failing (not slow): {failing}")
    print(f"  retries recorded in rows (sum of attempt-1): {retries_in_rows}; attempts recorded in rows: "
          f"{in_rows}; server calls less attempts in rows: {calls - in_rows} (results that died with the killed "
          "process, less attempts that failed before reaching the server, e.g. a client timeout while connecting)")
    print(f"  retries reported by the runs that finished a model: {sum(e['retries'] for e in entries_log)}"
          f" (breaker opened: {any(e['breaker'] for e in entries_log)})"
          + (f"; 429s among them: {sum(e.get('rate_limited', 0) for e in entries_log)}, time waiting out "
             f"Retry-After: {sum(e.get('rate_wait_s', 0.0) for e in entries_log):.2f}s"
             if mix.get("http_429") else ""))
    print(f"  rows written: {a['rows']} (expected {pairs}); rows lost: {a['lost']}; duplicates: "
          f"{a['duplicates']}; unexpected pairs: {a['unexpected']}; staging files left: {a['staging_left']}")
    print(f"  status counts: {a['status']}  [fault-free run: {b['status']}]")
    print(f"  ok pairs whose prediction/quality differ from the fault-free run: {differing} of {both_ok.height}")
    print(f"  wall time: {run['wall_s']:.1f}s with faults + kill + resume vs {base['wall_s']:.1f}s fault-free "
          f"({run['wall_s'] / base['wall_s']:.2f}x)")
    print(f"  kill the run, start another ({args.run_queries} queries, `lrouter run collect`, pool limit 1): "
          f"SIGKILL after {kr['killed_after_s']:.1f}s with {kr['staged_rows']} rows staged; the next run exited "
          f"{kr['second_run_rc']} after {kr['second_run_s']:.1f}s (not blocked by the dead run's slot); "
          f"rows {kr['rows']}, lost {kr['lost']}, duplicates {kr['duplicates']}"
          + (f"; files holding the API key under the home and the instance: {kr['key_leaks']}"
             if args.protocol == "openai" else ""))
    ok = (a["lost"] == 0 and a["duplicates"] == 0 and a["unexpected"] == 0 and a["rows"] == pairs
          and kr["second_run_rc"] == 0 and kr["lost"] == 0 and kr["duplicates"] == 0 and kr["key_leaks"] == 0)
    print("RESULT:", "every pair has exactly one row" if ok else "FAILED: rows lost or duplicated")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], *sys.argv[6:7])
    else:
        main()
