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
concurrency 1 against a 200 ms upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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


def serve_gateway(home: Path, upstream: str, log_root: Path, port_file: Path, timeout_s: float) -> None:
    from router.serving.gateway.app import make_gateway_app, make_gateway_server
    from router.serving.gateway.config import GatewayConfig, upstreams_from_models
    from router.serving.limits import run_server
    from router.serving.service import load_router

    service = load_router(home)
    service.warm_up()
    app = make_gateway_app(service, lambda m: upstreams_from_models(m, upstream), home=home, log_root=log_root,
                           cfg=GatewayConfig(first_byte_timeout_s=timeout_s, max_fallbacks=2))
    run_server(make_gateway_server(app, port=0), lambda port: port_file.write_text(str(port)))


def _spawn(args: list[str], port_file: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, __file__, *args, "--port-file", str(port_file)], env=env,
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
    a = p.parse_args()
    home = Path(a.home).resolve()
    if a.sim:
        serve_sim(home, a.latency, a.faults, Path(a.port_file))
        return 0
    if a.gateway:
        serve_gateway(home, a.gateway, Path(a.log_root), Path(a.port_file), 1.0 if a.faults else 30.0)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    imgs = sorted((home / "warehouse" / "images").glob("*.png"))[:16]
    images = ["data:image/png;base64," + base64.b64encode(f.read_bytes()).decode() for f in imgs]
    print(f"# bench/gateway.py: upstream = simulator, {a.latency * 1e3:.0f} ms per answer; {os.cpu_count()} CPUs; "
          + "; ".join(f"{k}={os.environ.get(k, 'unset')}"
                      for k in ("OMP_WAIT_POLICY", "LROUTER_SERVING_DTYPE", "LROUTER_ENCODE_LANES")))
    sim, sim_url = _spawn(["--sim", "--home", str(home), "--latency", str(a.latency)], tmp / "sim.port")
    gw, gw_url = _spawn(["--gateway", sim_url, "--home", str(home), "--log-root", str(tmp / "wh")], tmp / "gw.port")
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


def _rows(root: Path) -> int:
    from router.serving.gateway.served_log import read_served

    return read_served(root).height


if __name__ == "__main__":
    sys.exit(main())
