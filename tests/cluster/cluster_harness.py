"""A one-machine cluster for tests and bench/cluster.py: a fresh PostgreSQL database, a Dagster daemon on
the cluster instance and N Celery workers, each process with its own LROUTER_HOME (so nothing but the
bucket, Postgres and Redis is shared, as between machines)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", "") or REPO / ".venv") / "bin"


def create_database(pg_url: str) -> str:
    """A new, empty database next to the one ``pg_url`` names; returns its URL."""
    import psycopg2

    name = f"lrouter_{uuid.uuid4().hex[:10]}"
    con = psycopg2.connect(pg_url.replace("postgresql+psycopg2://", "postgresql://"))
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    con.close()
    return pg_url.rsplit("/", 1)[0] + "/" + name


def drop_database(url: str) -> None:
    import psycopg2

    base, name = url.rsplit("/", 1)
    con = psycopg2.connect(base.replace("postgresql+psycopg2://", "postgresql://") + "/postgres")
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    con.close()


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    queue: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def home(self, name: str) -> Path:
        p = self.root / "homes" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        env = {**self.env, "LROUTER_HOME": str(self.home(name))}
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_daemon(self) -> None:
        self._spawn("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(REPO / "deploy/workspace.yaml")])

    def start_worker(self, name: str, concurrency: int = 1) -> None:
        self._spawn(name, [str(VENV_BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
                           "-y", self.env["LROUTER_CELERY_CONFIG"], "-q", self.queue, "-n", name,
                           "-i", "pipelines.definitions", "--", "--concurrency", str(concurrency),
                           "--without-gossip", "--without-mingle"])

    def wait_for_workers(self, n: int, timeout_s: float = 180) -> None:
        """Until ``n`` workers answer a ping (they import the code location first: seconds)."""
        from celery import Celery

        app = Celery(broker=self.env["LROUTER_CELERY_BROKER"], backend=self.env["LROUTER_CELERY_BACKEND"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if len(replies) >= n:
                return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.root / f'{name}.log').read_text()[-3000:]}")
            time.sleep(1.0)
        raise TimeoutError(f"fewer than {n} Celery workers answered within {timeout_s:.0f}s")

    def kill(self, name: str) -> None:
        """SIGKILL a process and everything it started (a worker machine lost mid-run)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill(name)
            self.procs.pop(name, None)


def make_cluster(root: Path, pg_url: str, redis_url: str, warehouse: str, *, visibility_timeout_s: int = 3600,
                 extra_env: dict[str, str] | None = None) -> Cluster:
    """Write a DAGSTER_HOME and a Celery config under ``root`` and return the environment of the cluster
    (nothing started yet). ``pg_url`` must name a database of its own (see create_database)."""
    root.mkdir(parents=True, exist_ok=True)
    dagster_home = root / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy/cluster/dagster.yaml", dagster_home / "dagster.yaml")
    queue = f"lrouter-{uuid.uuid4().hex[:8]}"  # a queue of its own: stale tasks of other clusters stay out
    celery = yaml.safe_load((REPO / "deploy/celery.yaml").read_text())
    source = celery["execution"]["config"]["config_source"]
    source["task_default_queue"] = queue
    source["broker_transport_options"]["visibility_timeout"] = visibility_timeout_s
    (root / "celery.yaml").write_text(yaml.safe_dump(celery))
    redis = redis_url.rstrip("/")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LROUTER_", "DAGSTER_"))},
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery runs `celery`
        "LROUTER_DEPLOYMENT": "cluster",
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_URL": pg_url,
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "LROUTER_CELERY_BROKER": f"{redis}/0",
        "LROUTER_CELERY_BACKEND": f"{redis}/1",
        "LROUTER_CELERY_CONFIG": str(root / "celery.yaml"),
        "LROUTER_DAGSTER_DIR": str(root / "dagster_artifacts"),
        "LROUTER_WAREHOUSE": warehouse,
        "LROUTER_REGISTRY": str(root / "models.yaml"),
        "LROUTER_LOCAL_POOL": "0",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    return Cluster(root=root, env=env, queue=queue)
