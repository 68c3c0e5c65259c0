"""Benchmark the OpenAI-compatible gateway against the simulator on loopback.

Three processes: the simulator (OpenAI-compatible endpoint, every answer takes ``--latency`` s), the gateway
(``make_gateway_app`` with the warehouse's router) and this load generator (httpx, asyncio). For concurrency
1, 8 and 32, with and without an image, it sends the same requests straight to the upstream and through the
gateway, and prints requests/s and p50/p99 latency of both, the added latency, the gateway's own routing
time (``x-lrouter-routing-ms``: the batch the request was routed in) and how many requests shared a routing
batch (``x-lrouter-route-batch``); at concurrency 1 also the added latency of the plain proxy (a named model,
no routing), i.e. the HTTP hop's share of the added latency. Then a fault run (upstream 20% errors/timeouts): every request must end as
an answer or an OpenAI-shaped error, no request id twice, and served_requests one row per request after the
gateway's clean shutdown.

Usage: ``python bench/gateway.py --home data`` (a warehouse with a trained router, e.g. after ``make demo``).
Targets: routing overhead p50 <= 10 ms without images; at concurrency 32 no errors and throughput >= 8x
concurrency 1 against a 200 ms upstream. ``--server-cpus 0 --client-cpus 1`` pins the gateway and this load
generator to their own cores (``taskset``); without them they share every core.

``--chaos``: the gateway (access keys required, a 1 MB upstream cap) in front of a misbehaving upstream
(tests/router/serving/gateway/hostile.py, its own process) on a copy of the warehouse, through five phases:
a model disabled and re-enabled during load, NaN usage, an upstream 401 echoing keys, an oversized answer,
then 64 and 200 clients. Each phase prints answered / lost / double / goodput; at the end the
served_requests rows written against the requests sent, and whether any key is in any file under the home.
Done when: every request answered once (2xx or a JSON error), rows = requests, 0 lost, 0 double, no key on
disk, goodput at 200 clients >= goodput at 64.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTION = "What word is written in the box?"
DIRECT_MODEL = "simdoc-ocr:4b"


# ------------------------------------------------------------------------------------ child processes


def serve_sim(home: Path, latency: float, faults: bool, port_file: Path) -> None:
    from collectors.simulator.faults import FaultConfig
    from collectors.simulator.openai_compat import set_fixed_latency
    from collectors.simulator.server import SimServer

    fc = FaultConfig(timeout=0.1, http_500=0.05, dropped_connection=0.05, timeout_s=3.0) if faults else None
    sim = SimServer(answer_key=home / "warehouse" / "tables" / "queries.parquet", faults=fc)
    set_fixed_latency(sim, latency)
    port_file.write_text(sim.start().rsplit(":", 1)[1])
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    sim.stop()


def serve_gateway(home: Path, upstream: str, log_root: Path, port_file: Path, timeout_s: float,
                  chaos: bool = False) -> None:
    from pipelines.settings import Settings
    from router.serving.gateway.app import make_gateway_app, make_gateway_server
    from router.serving.gateway.config import GatewayConfig, upstreams_from_models
    from router.serving.limits import ServeLimits, run_server
    from router.serving.service import load_router

    # the serving options the environment names (LROUTER_SERVING_DTYPE, LROUTER_RUNTIME, LROUTER_ENCODE_LANES),
    # read once as `lrouter gateway` reads them: the library itself never reads the environment
    service = load_router(home, serving=Settings.from_env().serving())
    service.warm_up()
    cfg = GatewayConfig(first_byte_timeout_s=timeout_s, max_fallbacks=2)
    if chaos:  # keys required, a small upstream cap, the models table re-read every half second
        cfg = GatewayConfig(first_byte_timeout_s=timeout_s, max_fallbacks=2, max_upstream_bytes=1024 * 1024,
                            refresh_interval_s=0.5)
    app = make_gateway_app(service, lambda m: upstreams_from_models(m, upstream), home=home, log_root=log_root,
                           cfg=cfg, limits=ServeLimits(), auth_required=chaos)
    run_server(make_gateway_server(app, port=0), lambda port: port_file.write_text(str(port)))


def serve_hostile(port_file: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "router" / "serving" / "gateway"))
    from hostile import HostileUpstream

    with HostileUpstream(huge_bytes=2 * 1024 * 1024) as h:
        port_file.write_text(h.url.rsplit(":", 1)[1].split("/")[0])
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


CPUS: dict[str, str] = {}  # role -> taskset cpu list (--server-cpus / --client-cpus)


def _spawn(args: list[str], port_file: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cpus = CPUS.get("server") if args[0] == "--gateway" else CPUS.get("client")  # upstreams share the clients'
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen([*pin, sys.executable, __file__, *args, "--port-file", str(port_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() - t0 > 300:
            raise RuntimeError(f"child {args[0]} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port_file.read_text()}"


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ------------------------------------------------------------------------------------ load


def _body(i: int, model: str, image: str | None) -> dict:
    text = f"Request {i}: {QUESTION}"
    content: object = text if image is None else [{"type": "text", "text": text},
                                                  {"type": "image_url", "image_url": {"url": image}}]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def _load(url: str, model: str, n: int, conc: int, images: list[str] | None) -> dict:
    lat, routing, batch, errors, ids = [], [], [], [], []
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                t = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/chat/completions",
                                          json=_body(i, model, images[i % len(images)] if images else None))
                    lat.append((time.perf_counter() - t) * 1e3)
                    body = r.json()
                    if r.status_code != 200:
                        assert set(body["error"]) >= {"message", "type", "param", "code"}, body
                        errors.append(f"{r.status_code}: {body['error']['message'][:80]}")
                    else:
                        assert body["choices"][0]["message"]["content"] is not None
                    if "x-lrouter-routing-ms" in r.headers:
                        routing.append(float(r.headers["x-lrouter-routing-ms"]))
                        batch.append(int(r.headers["x-lrouter-route-batch"]))
                    ids.append(r.headers.get("x-lrouter-request-id", body.get("id")))
                except Exception as exc:  # a transport error: the request did not end cleanly
                    errors.append(f"transport: {type(exc).__name__}: {exc}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return {"rps": n / wall, "lat": np.array(lat), "routing": np.array(routing), "batch": np.array(batch),
            "errors": errors, "ids": ids}


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", default="data")
    p.add_argument("--latency", type=float, default=0.2, help="upstream seconds per answer")
    p.add_argument("--per-worker", type=int, default=6, help="requests per concurrent client (min 24 per run)")
    p.add_argument("--fault-requests", type=int, default=300)
    p.add_argument("--sim", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--gateway", default="", help=argparse.SUPPRESS)
    p.add_argument("--faults", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-root", default="", help=argparse.SUPPRESS)
    p.add_argument("--port-file", default="", help=argparse.SUPPRESS)
    p.add_argument("--hostile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--chaos", action="store_true", help="the chaos run (see above) instead of the latency run")
    p.add_argument("--chaos-seconds", type=float, default=6.0, help="seconds per chaos phase")
    p.add_argument("--server-cpus", default="", help="taskset cpu list for the gateway, e.g. 0")
    p.add_argument("--client-cpus", default="", help="taskset cpu list for this load generator, e.g. 1")
    a = p.parse_args()
    home = Path(a.home).resolve()
    if a.sim:
        serve_sim(home, a.latency, a.faults, Path(a.port_file))
        return 0
    if a.hostile:
        serve_hostile(Path(a.port_file))
        return 0
    if a.gateway:
        serve_gateway(home, a.gateway, Path(a.log_root), Path(a.port_file), 1.0 if a.faults else 30.0, a.chaos)
        return 0
    CPUS.update(server=a.server_cpus, client=a.client_cpus)
    if a.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in a.client_cpus.split(",")})
    if a.chaos:
        return run_chaos(home, a.chaos_seconds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    imgs = sorted((home / "warehouse" / "images").glob("*.png"))[:16]
    images = ["data:image/png;base64," + base64.b64encode(f.read_bytes()).decode() for f in imgs]
    print(f"# bench/gateway.py: upstream = simulator, {a.latency * 1e3:.0f} ms per answer; {os.cpu_count()} CPUs"
          f" (gateway on {a.server_cpus or 'all'}, clients on {a.client_cpus or 'all'}); "
          + "; ".join(f"{k}={os.environ.get(k, 'unset')}"
                      for k in ("OMP_WAIT_POLICY", "LROUTER_SERVING_DTYPE", "LROUTER_ENCODE_LANES")))
    sim, sim_url = _spawn(["--sim", "--home", str(home), "--latency", str(a.latency)], tmp / "sim.port")
    gw, gw_url = _spawn(["--gateway", sim_url, "--home", str(home), "--log-root", str(tmp / "wh")], tmp / "gw.port")
    print(f"# gateway encoders (from its /health): {json.dumps(httpx.get(gw_url + '/health').json().get('encoders'))}")
    ok = True
    try:
        asyncio.run(_load(gw_url, "lrouter", 8, 4, None))  # warm both paths
        asyncio.run(_load(sim_url, DIRECT_MODEL, 8, 4, None))
        print(f"{'image':<6}{'conc':>5}{'n':>5} | {'direct rps':>10}{'p50':>8}{'p99':>8} | {'gateway rps':>11}{'p50':>8}"
              f"{'p99':>8} | {'added p50':>9}{'p99':>8} | {'routing p50':>11}{'p99':>7} | {'batch p50':>9}{'max':>5} | errors")
        for with_img in (False, True):
            rps1 = None
            for conc in (1, 8, 32):
                n = max(24, conc * a.per_worker)
                d = asyncio.run(_load(sim_url, DIRECT_MODEL, n, conc, images if with_img else None))
                g = asyncio.run(_load(gw_url, "lrouter", n, conc, images if with_img else None))
                rps1 = g["rps"] if conc == 1 else rps1
                print(f"{'yes' if with_img else 'no':<6}{conc:>5}{n:>5} | {d['rps']:>10.1f}{_pct(d['lat'], 50):>8.1f}"
                      f"{_pct(d['lat'], 99):>8.1f} | {g['rps']:>11.1f}{_pct(g['lat'], 50):>8.1f}{_pct(g['lat'], 99):>8.1f}"
                      f" | {_pct(g['lat'], 50) - _pct(d['lat'], 50):>9.1f}{_pct(g['lat'], 99) - _pct(d['lat'], 99):>8.1f}"
                      f" | {_pct(g['routing'], 50):>11.1f}{_pct(g['routing'], 99):>7.1f} | {_pct(g['batch'], 50):>9.0f}"
                      f"{int(g['batch'].max()) if len(g['batch']) else 0:>5} | {len(g['errors'])}")
                if conc == 1:  # the same requests to one named model: the proxy's share of the added latency
                    px = asyncio.run(_load(gw_url, DIRECT_MODEL, n, conc, images if with_img else None))
                    print(f"       plain proxy (model={DIRECT_MODEL}, no routing): added p50 "
                          f"{_pct(px['lat'], 50) - _pct(d['lat'], 50):.1f} ms; routing in the gateway's worker "
                          f"thread p50 {_pct(g['routing'], 50):.1f} ms (batch {_pct(g['batch'], 50):.0f})")
                if conc == 32:
                    print(f"       concurrency 32 / 1 throughput: {g['rps'] / rps1:.1f}x (target >= 8x), "
                          f"errors {len(g['errors'])} (target 0)")
                    ok &= not g["errors"]
    finally:
        _stop(gw)
        _stop(sim)
    n_bench_rows = _rows(tmp / "wh")
    print(f"served_requests rows after the runs: {n_bench_rows}")

    # ---- fault run: 20% of upstream calls fail (10% stall past the 1 s deadline, 5% HTTP 500, 5% dropped)
    sim, sim_url = _spawn(["--sim", "--home", str(home), "--latency", "0.05", "--faults"], tmp / "sim2.port")
    gw, gw_url = _spawn(["--gateway", sim_url, "--home", str(home), "--log-root", str(tmp / "wh2"), "--faults"],
                        tmp / "gw2.port")
    try:
        r = asyncio.run(_load(gw_url, "lrouter", a.fault_requests, 16, None))
    finally:
        _stop(gw)
        _stop(sim)
    import polars as pl

    from router.serving.gateway.served_log import read_served

    rows = read_served(tmp / "wh2")
    transport = [e for e in r["errors"] if e.startswith("transport")]
    unique = len(set(r["ids"])) == len(r["ids"]) == a.fault_requests
    one_row = rows.height == a.fault_requests and set(rows["request_id"].to_list()) == set(r["ids"])
    fb = rows["fallbacks"].sum()
    print(f"fault run: {a.fault_requests} requests at concurrency 16, upstream 20% faults: "
          f"{a.fault_requests - len(r['errors'])} answered ({rows.filter(pl.col('fallbacks') > 0).height} after "
          f"{fb} fallback(s)), {len(r['errors']) - len(transport)} clear errors, {len(transport)} transport errors; "
          f"request ids unique: {unique}; served_requests rows: {rows.height} (one per request: {one_row})")
    statuses = dict(rows.group_by("status").len().iter_rows())
    print(f"  statuses: {json.dumps(statuses)}")
    ok &= unique and one_row and not transport
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------ chaos


class Tally:
    """What the clients saw in one phase: every request must end as a 2xx or a JSON error, exactly once."""

    def __init__(self, name: str):
        self.name, self.sent, self.ok, self.json_errors, self.lost = name, 0, 0, 0, 0
        self.ok_in_window = 0  # 2xx answers that completed within the phase's seconds (goodput)
        self.window = 0.0
        self.ids: list[str] = []
        self.codes: dict[int, int] = {}
        self.wall = 0.0
        self.lost_examples: list[str] = []

    @classmethod
    def merged(cls, name: str, parts: list[Tally]) -> Tally:
        out = cls(name)
        for t in parts:
            out.ok_in_window += t.ok_in_window
            out.window += t.window
        return out

    @property
    def double(self) -> int:
        return len(self.ids) - len(set(self.ids))

    def line(self) -> str:
        return (f"{self.name:<34} sent {self.sent:>5}  answered {self.ok + self.json_errors:>5} (2xx {self.ok}, "
                f"JSON errors {self.json_errors}: {json.dumps(dict(sorted(self.codes.items())))})  lost {self.lost}  "
                f"double {self.double}  goodput {self.goodput:.1f} ok/s")

    @property
    def goodput(self) -> float:
        """2xx answers per second completed within the phase (requests still in flight at its end are
        answered and counted above, but their drain time is not the server's steady state)."""
        return self.ok_in_window / self.window if self.window else 0.0


async def _chaos_load(url: str, key: str, tally: Tally, conc: int, seconds: float, model: str = "lrouter",
                      during: object = None) -> Tally:
    """``conc`` closed-loop clients for ``seconds``; a 429/503 is waited out for its Retry-After (as the
    OpenAI SDK does); ``during`` (a coroutine) runs alongside (e.g. disabling a model)."""
    headers = {"authorization": f"Bearer {key}"}
    stop = time.perf_counter() + seconds
    # one connection pool per 16 clients: httpcore's pool costs O(connections) per request, so one pool of
    # 200 connections would make this load generator, not the gateway, the bottleneck
    pools = [httpx.AsyncClient(timeout=120, headers=headers,
                               limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
             for _ in range(0, conc, 16)]
    async with contextlib.AsyncExitStack() as stack:
        for c in pools:
            await stack.enter_async_context(c)

        async def worker(w: int) -> None:
            client = pools[w // 16]
            i = 0
            while time.perf_counter() < stop:
                i += 1
                tally.sent += 1
                try:
                    r = await client.post(url + "/v1/chat/completions", json=_body(w * 100000 + i, model, None))
                    body = r.json()
                    tally.codes[r.status_code] = tally.codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        assert body["choices"][0]["message"]["content"] is not None
                        tally.ok += 1
                        tally.ok_in_window += time.perf_counter() <= stop
                    else:
                        assert set(body["error"]) >= {"message", "type", "param", "code"}, body
                        tally.json_errors += 1
                    tally.ids.append(r.headers["x-lrouter-request-id"])
                    if r.status_code in (429, 503):
                        await asyncio.sleep(min(float(r.headers.get("retry-after", "1")), 2.0))
                except Exception as exc:  # no answer, or not JSON: the request was lost
                    tally.lost += 1
                    if len(tally.lost_examples) < 3:
                        tally.lost_examples.append(f"{type(exc).__name__}: {str(exc)[:160]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conc)), *([during] if during is not None else []))
        tally.wall, tally.window = time.perf_counter() - t0, stop - t0
    return tally


def _set_active(home: Path, model: str, active: bool) -> None:
    import polars as pl

    from warehouse.store import Warehouse

    wh = Warehouse(home / "warehouse")
    models = wh.read_table("models")
    wh.write_table("models", models.with_columns(
        pl.when(pl.col("model_id") == model).then(pl.lit(active)).otherwise(pl.col("active")).alias("active")))


def _control(url: str, **body: object) -> None:
    httpx.post(url + "/control", json=body, timeout=10).raise_for_status()


def run_chaos(src_home: Path, seconds: float) -> int:
    """The chaos run (module docstring): prints one line per phase and the verdict."""
    import shutil

    from router.serving.keys import KeyStore
    from warehouse.store import Warehouse

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-chaos-"))
    home = tmp / "home"
    shutil.copytree(src_home / "warehouse", home / "warehouse",
                    ignore=shutil.ignore_patterns("images", "*.duckdb", "*.duckdb.*", "served_*", "s3-cache"))
    _, key = KeyStore.in_home(home).add("chaos-bench")
    models = Warehouse(home / "warehouse").read_table("models")
    pool = [m for m, active in models.select("model_id", "active").iter_rows() if active]
    print(f"# bench/gateway.py --chaos: {os.cpu_count()} CPUs; {seconds:g} s per phase; home copy {home}; "
          f"pool {pool}")
    hostile, hostile_url = _spawn(["--hostile"], tmp / "hostile.port")
    gw, gw_url = _spawn(["--gateway", hostile_url, "--chaos", "--home", str(home), "--log-root",
                         str(home / "warehouse")], tmp / "gw.port")
    tallies: list[Tally] = []
    try:
        _control(hostile_url, modes={}, latency_s=0.05)
        asyncio.run(_chaos_load(gw_url, key, Tally("warm-up"), 4, 1.0))

        async def toggle() -> None:  # disable / re-enable one routable model every 0.7 s
            for i in range(int(seconds / 0.7)):
                await asyncio.sleep(0.7)
                await asyncio.to_thread(_set_active, home, pool[0], i % 2 == 1)
            await asyncio.to_thread(_set_active, home, pool[0], True)

        tallies.append(asyncio.run(_chaos_load(gw_url, key, Tally("1 disable/enable during load (32)"), 32,
                                               seconds, during=toggle())))
        _control(hostile_url, modes={m: "nan_usage" for m in pool}, latency_s=0.05)
        tallies.append(asyncio.run(_chaos_load(gw_url, key, Tally("2 NaN / string usage (32)"), 32, seconds)))
        _control(hostile_url, modes={pool[0]: "auth", pool[1]: "auth"}, latency_s=0.05)
        tallies.append(asyncio.run(_chaos_load(gw_url, key, Tally("3 upstream 401 echoing keys (32)"), 32, seconds)))
        tallies.append(asyncio.run(_chaos_load(gw_url, key, Tally("3b 401, plain proxy (8)"), 8, seconds / 2,
                                               model=pool[0])))
        _control(hostile_url, modes={pool[0]: "huge"}, latency_s=0.05)
        tallies.append(asyncio.run(_chaos_load(gw_url, key, Tally("4 2 MB answers, 1 MB cap (8)"), 8, seconds / 2,
                                               model=pool[0])))
        _control(hostile_url, modes={}, latency_s=0.2)
        # 64, 200, 200, 64 (ABBA): a load drift on a shared box does not favour either level
        runs = {64: [], 200: []}
        for conc in (64, 200, 200, 64):
            t = asyncio.run(_chaos_load(gw_url, key, Tally(f"5 {conc} clients, 200 ms upstream"), conc, seconds))
            runs[conc].append(t)
            tallies.append(t)
        c64, c200 = (Tally.merged(f"5 {c} clients (both runs)", runs[c]) for c in (64, 200))
    finally:
        _stop(gw)
        _stop(hostile)
    from router.serving.gateway.served_log import read_served

    rows = read_served(home / "warehouse")
    sent = sum(t.sent for t in tallies) + 0
    warm = rows.height - sent  # the warm-up's requests are rows too
    for t in tallies:
        print(t.line())
        for ex in t.lost_examples:
            print(f"    lost: {ex}")
    ids = [i for t in tallies for i in t.ids]
    from tests.router.serving.gateway.hostile import LEAKED_KEY

    leaks = [str(f.relative_to(home)) for f in home.rglob("*") if f.is_file() and
             any(s.encode() in f.read_bytes() for s in (key, LEAKED_KEY))]
    lost, double = sum(t.lost for t in tallies), len(ids) - len(set(ids))
    logged = set(rows["request_id"].to_list())
    missing = len(set(ids) - logged)
    print(f"served_requests rows written: {rows.height} for {sent} requests (+ warm-up {warm}); requests without "
          f"a row: {missing}; statuses {json.dumps(dict(rows.group_by('status').len().iter_rows()))}")
    print(f"keys in files under the home: {len(leaks)} {leaks[:5]}")
    print(f"goodput: 64 clients {c64.goodput:.1f} ok/s, 200 clients {c200.goodput:.1f} ok/s (target: 200 >= 64)")
    ok = lost == 0 and double == 0 and missing == 0 and not leaks and c200.goodput >= c64.goodput \
        and all(t.ok + t.json_errors == t.sent for t in tallies)
    print("chaos: all checks passed" if ok else "chaos: SOME CHECKS FAILED")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


def _rows(root: Path) -> int:
    from router.serving.gateway.served_log import read_served

    return read_served(root).height


if __name__ == "__main__":
    sys.exit(main())
