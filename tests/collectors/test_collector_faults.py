"""Fault matrix: the collector against every fault the simulator can inject.

For each fault kind the run must finish with exactly one row per query, transient faults retried (and
counted: the client's transient failures equal the faults the server injected), permanent faults not
retried, and a dead model cut off by the circuit breaker instead of being hammered. Credentials passed as
headers must never reach a trace row. Small query counts and millisecond backoff keep the file fast.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from collectors.collection.client import CollectConfig, collect_model
from collectors.collection.resume import TraceCheckpoint, collect_partition
from collectors.registry import ModelEntry
from collectors.simulator.faults import FaultConfig
from collectors.simulator.handler import SimHandler
from collectors.simulator.server import SimServer
from collectors.simulator.specs import DEFAULT_POOL, SimModelSpec
from warehouse.schemas import QUERIES, conform
from warehouse.store import Warehouse

SPEC: SimModelSpec = next(s for s in DEFAULT_POOL if s.name == "simvl-lite:3b")
FAILING_KINDS = ("timeout", "http_500", "http_503", "malformed_json", "dropped_connection")
N = 24
CIRCUIT_RE = re.compile(r"^circuit open: (\d+) consecutive transient failures, last: \w+")


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    im = Image.new("RGB", (64, 32), "white")
    d = ImageDraw.Draw(im)
    d.text((2, 2), f"#{i}", fill="black")
    for _ in range(15):
        d.point((int(rng.integers(64)), int(rng.integers(32))), fill="gray")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, pl.DataFrame]:
    wh = Warehouse(tmp_path_factory.mktemp("faults") / "wh").ensure()
    rows = []
    for i in range(N):
        data = _png(i)
        sha = hashlib.sha256(data).hexdigest()
        (wh.images_dir / f"{sha}.png").write_bytes(data)
        group = ("ocr", "chart", "math", "general")[i % 4]
        rows.append({
            "query_id": f"f{i:03d}", "benchmark": "custom", "dataset": "faults", "task_group": group,
            "task": group, "question": f"Question {i}: what is the value shown?", "answer": str(10 + i),
            "answer_kind": "numeric", "image_path": f"{sha}.png", "image_sha256": sha,
            "source_meta": json.dumps({"visual": {"noise": 0.2, "density": 0.1}, "distractors": [str(20 + i)]}),
            "official_split": "",
        })
    return wh, conform(pl.DataFrame(rows, schema=QUERIES), QUERIES, "queries")


def entry(model_id: str = SPEC.name) -> ModelEntry:
    return ModelEntry(model_id=model_id, backend="sim", price_in_per_mtok=SPEC.price_in_per_mtok,
                      price_out_per_mtok=SPEC.price_out_per_mtok)


def cfg(**kw) -> CollectConfig:
    base = dict(concurrency=8, timeout_s=5.0, max_retries=3, backoff_base_s=0.005, backoff_max_s=0.02,
                breaker_threshold=12, progress=False)
    return CollectConfig(**{**base, **kw})


def server_for(queries: pl.DataFrame, faults: FaultConfig, seed: int = 3) -> SimServer:
    return SimServer(queries, models=[SPEC], seed=seed, time_scale=0.001, faults=faults)


def assert_one_row_each(df: pl.DataFrame, queries: pl.DataFrame) -> None:
    assert df["query_id"].to_list() == queries["query_id"].to_list()
    assert df["query_id"].n_unique() == queries.height
    assert df.filter(pl.col("status") == "ok")["quality"].null_count() == 0


# --------------------------------------------------------------------------------- transient, recovered

TRANSIENT_CASES = {
    "timeout": (FaultConfig(timeout=0.3, timeout_s=3.0), dict(timeout_s=0.4), "timeout"),
    "http_500": (FaultConfig(http_500=0.3), {}, "500"),
    "http_503": (FaultConfig(http_503=0.3), {}, "503"),
    "malformed_json": (FaultConfig(malformed_json=0.3), {}, "JSONDecodeError"),
    "dropped_connection": (FaultConfig(dropped_connection=0.3), {}, "Error"),
    "mixed_20pct": (
        FaultConfig(timeout=0.03, http_500=0.05, http_503=0.04, malformed_json=0.03, dropped_connection=0.03,
                    slow=0.02, timeout_s=3.0, slow_extra_s=0.05),
        dict(timeout_s=0.4),
        "",
    ),
}


@pytest.mark.parametrize("kind", list(TRANSIENT_CASES))
def test_transient_faults_are_retried_and_recovered(setup, kind: str) -> None:
    wh, queries = setup
    faults, overrides, err_hint = TRANSIENT_CASES[kind]
    with server_for(queries, faults) as server:
        df, stats = collect_model(entry(), queries, wh.images_dir, server.url, cfg(**overrides))
        s = server.stats
    injected = sum(s["faults"][k] for k in FAILING_KINDS)
    assert_one_row_each(df, queries)
    assert injected > 0, f"no {kind} fault fired; the case tests nothing"
    # every injected failure was seen as a transient failure, and each one not at the last attempt was retried
    assert stats.transient_failures == injected and stats.permanent_failures == 0
    failed = df.filter(pl.col("status") != "ok")
    assert stats.retries == injected - failed.height
    assert stats.calls == s["models"][SPEC.name]["calls"] == df["attempt"].sum()
    assert df.filter(pl.col("attempt") > 1).height > 0  # some query needed a retry and got it
    # the retry budget recovers nearly everything at a 30% fault rate
    assert df.filter(pl.col("status") == "ok").height >= N - 2
    for r in failed.iter_rows(named=True):
        assert r["attempt"] == 4 and r["error"] and err_hint in r["error"]
        assert r["status"] == ("timeout" if "Timeout" in r["error"] else "error")
    assert not stats.breaker_opened


def test_every_attempt_timing_out_gives_timeout_rows(setup) -> None:
    wh, queries = setup
    q = queries.head(8)
    with server_for(queries, FaultConfig(timeout=1.0, timeout_s=3.0)) as server:
        df, stats = collect_model(entry(), q, wh.images_dir, server.url,
                                  cfg(timeout_s=0.25, max_retries=1, breaker_threshold=1000))
        injected = server.stats["faults"]["timeout"]
    assert_one_row_each(df, q)
    assert set(df["status"]) == {"timeout"} and df["attempt"].to_list() == [2] * 8
    assert all("Timeout" in e for e in df["error"]) and df["quality"].null_count() == 8
    assert stats.retries == 8 and stats.calls == injected == 16


@pytest.mark.parametrize("mode", ["reply", "drop"])
def test_timeout_fault_modes_both_recover(setup, mode: str) -> None:
    wh, queries = setup
    q = queries.head(10)
    with server_for(queries, FaultConfig(timeout=0.4, timeout_s=3.0, timeout_then=mode), seed=11) as server:
        # 1 s: far below the 3 s stall, far above a normal reply on a loaded 2-core box (0.3 s was not)
        df, stats = collect_model(entry(), q, wh.images_dir, server.url, cfg(timeout_s=1.0))
        injected = server.stats["faults"]["timeout"]
    assert_one_row_each(df, q)
    assert injected > 0 and stats.transient_failures == injected
    assert df.filter(pl.col("status") == "ok").height >= 9


def test_slow_replies_are_not_retried_and_latency_shows_the_delay(setup) -> None:
    wh, queries = setup
    with server_for(queries, FaultConfig()) as server:
        base, _ = collect_model(entry(), queries, wh.images_dir, server.url, cfg())
    with server_for(queries, FaultConfig(slow=0.5, slow_extra_s=0.15)) as server:
        df, stats = collect_model(entry(), queries, wh.images_dir, server.url, cfg(timeout_s=5.0))
        slow = server.stats["faults"]["slow"]
    assert_one_row_each(df, queries)
    assert set(df["status"]) == {"ok"} and stats.retries == 0 and stats.calls == N
    assert df["prediction"].to_list() == base["prediction"].to_list()
    extra = df["latency_ms"] - base["latency_ms"]
    assert 0 < slow < N
    assert int(((extra - 150.0).abs() < 1.0).sum()) == slow  # the slow ones carry the extra 150 ms
    assert int((extra.abs() < 1e-6).sum()) == N - slow  # the others are unchanged


# --------------------------------------------------------------------------------- permanent faults


def test_model_vanishing_mid_run_gives_not_found_errors_without_retries(setup) -> None:
    wh, queries = setup
    with server_for(queries, FaultConfig(vanish_after={SPEC.name: 10})) as server:
        df, stats = collect_model(entry(), queries, wh.images_dir, server.url, cfg())
        s = server.stats
    assert_one_row_each(df, queries)
    assert df.filter(pl.col("status") == "ok").height == 10
    gone = df.filter(pl.col("status") == "error")
    assert gone.height == N - 10 and all("not found" in e for e in gone["error"])
    assert stats.retries == 0 and stats.permanent_failures == N - 10 and stats.calls == N
    assert s["faults"]["vanished"] == N - 10 and not stats.breaker_opened


@pytest.mark.parametrize("down_mode", ["503", "drop"])
def test_down_model_opens_the_circuit_and_stops_calling(setup, down_mode: str) -> None:
    wh, queries = setup
    threshold, conc = 5, 4
    with server_for(queries, FaultConfig(down_models={SPEC.name}, down_mode=down_mode)) as server:
        df, stats = collect_model(entry(), queries, wh.images_dir, server.url,
                                  cfg(concurrency=conc, breaker_threshold=threshold))
        calls = server.stats["models"][SPEC.name]["calls"]
    assert_one_row_each(df, queries)
    assert set(df["status"]) == {"error"} and stats.breaker_opened
    circuit = df.filter(pl.col("error").str.contains("circuit open"))
    # only the calls in flight when the breaker opened finish with their own error; the rest are cut off
    assert circuit.height >= N - conc
    counts = [int(m.group(1)) for m in map(CIRCUIT_RE.search, circuit["error"]) if m]
    assert len(counts) == circuit.height and min(counts) >= threshold  # the message says why it opened
    assert calls == stats.calls <= threshold + conc - 1  # the dead server is not hammered


def test_breaker_is_per_model(setup) -> None:
    wh, queries = setup
    other = next(s for s in DEFAULT_POOL if s.name == "simvl-nano:1b")
    faults = FaultConfig(down_models={SPEC.name})
    with SimServer(queries, models=[SPEC, other], seed=3, time_scale=0.001, faults=faults) as server:
        dead, dstats = collect_model(entry(), queries, wh.images_dir, server.url, cfg(breaker_threshold=4))
        alive, astats = collect_model(entry(other.name), queries, wh.images_dir, server.url,
                                      cfg(breaker_threshold=4))
    assert dstats.breaker_opened and set(dead["status"]) == {"error"}
    assert not astats.breaker_opened and set(alive["status"]) == {"ok"}


# ---------------------------------------------------------------------------- partition under faults


def test_partition_under_mixed_faults_then_resume_has_no_duplicates(setup, tmp_path: Path) -> None:
    _, queries = setup
    src = setup[0]
    wh = Warehouse(tmp_path / "wh").ensure()
    for p in src.images_dir.iterdir():
        (wh.images_dir / p.name).write_bytes(p.read_bytes())
    faults = FaultConfig(http_500=0.25, dropped_connection=0.1, malformed_json=0.1)
    with server_for(queries, faults) as server:
        r1 = collect_partition(wh, entry(), queries, server.url, cfg(max_retries=0, breaker_threshold=1000),
                               run_id="r1")
        failed = r1.traces.filter(pl.col("status") != "ok")
        assert failed.height > 0  # no retries: some pairs fail
        server.set_faults(None)
        r2 = collect_partition(wh, entry(), queries, server.url, cfg(), run_id="r2")
    assert r2.attempted == failed.height  # only the failed pairs are redone
    part = wh.read_trace_partition(SPEC.name)
    assert_one_row_each(part, queries)
    assert set(part["status"]) == {"ok"}
    assert set(part.filter(pl.col("run_id") == "r2")["query_id"]) == set(failed["query_id"])
    assert TraceCheckpoint(wh, SPEC.name).staged().height == 0


# ------------------------------------------------------------------------------------------ secrets


def test_api_key_in_headers_never_reaches_trace_rows(setup, tmp_path: Path, monkeypatch) -> None:
    _, queries = setup
    src = setup[0]
    wh = Warehouse(tmp_path / "wh").ensure()
    for p in src.images_dir.iterdir():
        (wh.images_dir / p.name).write_bytes(p.read_bytes())
    received: list[str] = []
    original = SimHandler.do_POST

    def spy(self: SimHandler) -> None:
        received.append(self.headers.get("authorization") or "")
        original(self)

    monkeypatch.setattr(SimHandler, "do_POST", spy)
    secret = "SECRET123"
    headers = {"authorization": f"Bearer {secret}"}
    faults = FaultConfig(http_500=0.2, http_503=0.1, malformed_json=0.1, dropped_connection=0.1,
                         vanish_after={SPEC.name: 16})
    with server_for(queries, faults) as server:
        r = collect_partition(wh, entry(), queries, server.url, cfg(max_retries=1), headers=headers)
        ghost, _ = collect_model(entry("ghost-vl:1b"), queries.head(3), wh.images_dir, server.url,
                                 cfg(), headers=headers)
    assert received and all(h == f"Bearer {secret}" for h in received)  # the key really was sent
    rows = pl.concat([r.traces, ghost])
    assert set(rows["status"]) >= {"ok", "error"}  # errors with messages exist to leak through
    for row in rows.iter_rows():
        assert all(secret not in str(v) for v in row)
    for f in wh.root.rglob("*.parquet"):
        assert secret.encode() not in f.read_bytes()
