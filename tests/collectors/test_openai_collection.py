"""Collection over OpenAI's chat-completions protocol: the official ``openai`` client against the simulator's
OpenAI-compatible endpoint on loopback.

What must hold: the same simulated model collected over either protocol scores the same on every query and
records the server's usage and a usage-based cost; transient faults (429 with Retry-After included) are
retried, and Retry-After is waited out; replies that cannot succeed (401, 404) are one row each with the
server's message and no retry; a crashed run resumes without losing or duplicating a row; the key never
reaches a row or a staged file; reasoning is never scored.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from collectors.collection import resume as ckpt_mod
from collectors.collection.client import CollectConfig, collect_model
from collectors.collection.limits import RateLimiter
from collectors.collection.openai_protocol import check_openai_server, image_data_url, retry_after_seconds
from collectors.collection.protocol import final_answer
from collectors.collection.resume import TraceCheckpoint, collect_partition
from collectors.registry import ModelEntry
from collectors.simulator import openai_compat
from collectors.simulator.faults import FaultConfig
from collectors.simulator.handler import SimHandler
from collectors.simulator.server import SimServer
from collectors.simulator.specs import DEFAULT_POOL, SimModelSpec
from tests.collectors.test_collector import queries_frame, query_row
from warehouse.store import Warehouse

SPEC: SimModelSpec = next(s for s in DEFAULT_POOL if s.name == "simchart-vl:7b")
N = 20
SEED = 7


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, pl.DataFrame]:
    wh = Warehouse(tmp_path_factory.mktemp("openai") / "wh").ensure()
    rows = [query_row(i, wh.images_dir) for i in range(N - 1)] + [query_row(N - 1, wh.images_dir, image=False)]
    return wh, queries_frame(rows)


def served(queries: pl.DataFrame, faults: FaultConfig | None = None) -> SimServer:
    return SimServer(queries, models=[SPEC], seed=SEED, time_scale=0.0, faults=faults)


def sim_entry() -> ModelEntry:
    return ModelEntry(model_id=SPEC.name, backend="sim", price_in_per_mtok=SPEC.price_in_per_mtok,
                      price_out_per_mtok=SPEC.price_out_per_mtok)


def openai_entry(url: str, server_model: str = SPEC.name, **kw) -> ModelEntry:
    return ModelEntry(model_id="chart-over-openai", backend="openai", endpoint=url + "/v1",
                      server_model=server_model, price_in_per_mtok=0.5, price_out_per_mtok=1.5, **kw)


def cfg(**kw) -> CollectConfig:
    base = dict(concurrency=4, timeout_s=5.0, max_retries=3, backoff_base_s=0.005, backoff_max_s=0.02,
                progress=False)
    return CollectConfig(**{**base, **kw})


def openai_calls(server: SimServer) -> int:
    return server.stats["endpoints"].get("/v1/chat/completions", 0)


# ------------------------------------------------------------------------------------- same model, same score


def test_openai_protocol_scores_like_ollama_with_usage_costs(setup) -> None:
    wh, queries = setup
    with served(queries) as server:
        via_ollama, _ = collect_model(sim_entry(), queries, wh.images_dir, server.url, cfg())
        model = openai_entry(server.url, price_per_image_usd=0.001)
        via_openai, stats = collect_model(model, queries, wh.images_dir, model.endpoint, cfg())
        assert openai_calls(server) == N  # really spoken over /v1/chat/completions, one call each
    assert via_openai["status"].to_list() == ["ok"] * N and stats.retries == 0
    assert via_openai["model_id"].unique().to_list() == ["chart-over-openai"]
    assert via_openai["quality"].to_list() == via_ollama["quality"].to_list()
    assert via_openai["prediction"].to_list() == via_ollama["prediction"].to_list()
    # the server's usage, not an estimate: the simulator reports the same counts over both protocols
    assert via_openai["prompt_tokens"].to_list() == via_ollama["prompt_tokens"].to_list()
    assert via_openai["completion_tokens"].to_list() == via_ollama["completion_tokens"].to_list()
    for r in via_openai.iter_rows(named=True):
        images = 0 if r["query_id"] == f"q{N - 1:04d}" else 1
        expected = (r["prompt_tokens"] * 0.5 + r["completion_tokens"] * 1.5) / 1e6 + images * 0.001
        assert r["cost_usd"] == pytest.approx(expected, rel=1e-12)
        assert r["latency_ms"] > 0 and r["model_digest"] == f"sim-{SPEC.digest[:8]}"
        assert (r["image_tokens"] > 0) == bool(images)


# --------------------------------------------------------------------------------------------- faults


def test_transient_faults_and_429_are_retried_to_the_fault_free_answers(setup) -> None:
    wh, queries = setup
    with served(queries) as server:
        clean, _ = collect_model(openai_entry(server.url), queries, wh.images_dir, server.url + "/v1", cfg())
    faults = FaultConfig(http_429=0.15, retry_after_s=0.01, http_500=0.1, http_503=0.05, malformed_json=0.1,
                         dropped_connection=0.05, timeout=0.05, timeout_s=6.0, timeout_then="drop")
    with served(queries, faults) as server:
        df, stats = collect_model(openai_entry(server.url), queries, wh.images_dir, server.url + "/v1",
                                  cfg(max_retries=8, timeout_s=3.0))
        injected = server.stats["faults"]
        calls = openai_calls(server)
    assert df["status"].to_list() == ["ok"] * N
    assert df["prediction"].to_list() == clean["prediction"].to_list()
    assert df["quality"].to_list() == clean["quality"].to_list()
    failing = sum(injected[k] for k in ("http_429", "http_500", "http_503", "malformed_json",
                                        "dropped_connection", "timeout"))
    assert failing > 0 and injected["http_429"] > 0
    assert stats.transient_failures == failing == calls - N  # each fault seen once and retried
    assert stats.rate_limited == injected["http_429"] and stats.retries == failing
    assert int(df["attempt"].sum()) == calls


def test_retry_after_is_waited_out(setup, monkeypatch) -> None:
    """The retry of a request answered 429 comes no sooner than the server's Retry-After."""
    wh, queries = setup
    seen: dict[str, list[float]] = {}
    original = openai_compat.handle_chat

    def handle(h: SimHandler, body) -> None:
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        seen.setdefault(key, []).append(time.monotonic())
        original(h, body)

    monkeypatch.setattr(openai_compat, "handle_chat", handle)
    faults = FaultConfig(http_429=0.4, retry_after_s=0.25)
    with served(queries.head(8), faults) as server:
        df, stats = collect_model(openai_entry(server.url), queries.head(8), wh.images_dir, server.url + "/v1",
                                  cfg(max_retries=10))
        n429 = server.stats["faults"]["http_429"]
    assert df["status"].to_list() == ["ok"] * 8 and n429 > 0 and stats.rate_limited == n429
    gaps = [b - a for ts in seen.values() for a, b in zip(ts, ts[1:], strict=False)]
    assert len(gaps) == n429 and min(gaps) >= 0.25


def test_rate_limiter_spaces_calls_and_pauses_on_request() -> None:
    now = [100.0]
    slept: list[float] = []

    async def run() -> None:
        import asyncio

        lim = RateLimiter(rpm=120, clock=lambda: now[0])  # one call per 0.5 s

        async def fake_sleep(s: float) -> None:
            slept.append(s)
            now[0] += s

        real = asyncio.sleep
        asyncio.sleep = fake_sleep  # type: ignore[assignment]
        try:
            for _ in range(3):
                await lim.acquire()
            lim.pause(5.0)
            await lim.acquire()
        finally:
            asyncio.sleep = real  # type: ignore[assignment]

    import asyncio

    asyncio.run(run())
    assert slept == [0.5, 0.5, 5.0]


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize("case", ["unauthorized", "not_served"])
def test_permanent_failures_are_one_row_each_with_the_servers_message(setup, case: str) -> None:
    wh, queries = setup
    faults = FaultConfig(unauthorized_models={SPEC.name}) if case == "unauthorized" else None
    name = SPEC.name if case == "unauthorized" else "no-such-model:1b"
    with served(queries, faults) as server:
        df, stats = collect_model(openai_entry(server.url, server_model=name), queries, wh.images_dir,
                                  server.url + "/v1", cfg(breaker_threshold=3))
        calls = openai_calls(server)
    assert df["status"].to_list() == ["error"] * N and df["attempt"].to_list() == [1] * N
    assert calls == N and stats.retries == 0 and not stats.breaker_opened
    msg = df["error"][0]
    if case == "unauthorized":
        assert msg.startswith("HTTP 401: Incorrect API key provided.") and "api_key_env" in msg
    else:
        assert msg.startswith("HTTP 404: The model 'no-such-model:1b' does not exist")


def test_dead_server_opens_the_breaker(setup) -> None:
    wh, queries = setup
    with served(queries, FaultConfig(down_models={SPEC.name})) as server:
        df, stats = collect_model(openai_entry(server.url), queries, wh.images_dir, server.url + "/v1",
                                  cfg(concurrency=1, max_retries=1, breaker_threshold=4))
        calls = openai_calls(server)
    assert df["status"].to_list() == ["error"] * N and stats.breaker_opened
    assert calls == 4  # then every remaining query is recorded at once
    assert df["error"].str.starts_with("circuit open: 4 consecutive transient failures, last: HTTP 503").sum() > 0


# ------------------------------------------------------------------------------------- resume, secrets


def test_crash_mid_run_resumes_without_loss_or_duplicates(setup, tmp_path: Path, monkeypatch) -> None:
    src, queries = setup
    wh = Warehouse(tmp_path / "wh").ensure()
    for p in src.images_dir.iterdir():
        (wh.images_dir / p.name).write_bytes(p.read_bytes())
    real_append = ckpt_mod.TraceCheckpoint.append
    flushed: list[list[str]] = []

    def append(self, rows):
        flushed.append([r["query_id"] for r in rows])
        real_append(self, rows)
        if len(flushed) == 2:
            raise KeyboardInterrupt("killed after two checkpoints")

    monkeypatch.setattr(ckpt_mod.TraceCheckpoint, "append", append)
    with served(queries) as server:
        model = openai_entry(server.url)
        with pytest.raises(KeyboardInterrupt):
            collect_partition(wh, model, queries, model.endpoint, cfg(batch_size=4, concurrency=2))
        monkeypatch.undo()
        staged = TraceCheckpoint(wh, model.model_id).staged()
        before = openai_calls(server)
        r = collect_partition(wh, model, queries, model.endpoint, cfg(batch_size=4))
        redone = openai_calls(server) - before
    assert staged.height == 8 and r.resumed_rows == 8
    assert redone == N - 8 == r.attempted  # staged rows are not asked again
    t = r.traces
    assert t["query_id"].to_list() == queries["query_id"].to_list() and t["query_id"].n_unique() == N
    assert t["status"].to_list() == ["ok"] * N
    assert TraceCheckpoint(wh, model.model_id).staged().height == 0


def test_key_reaches_the_server_and_nothing_else(setup, tmp_path: Path, monkeypatch) -> None:
    src, queries = setup
    wh = Warehouse(tmp_path / "wh").ensure()
    for p in src.images_dir.iterdir():
        (wh.images_dir / p.name).write_bytes(p.read_bytes())
    received: list[str] = []
    original = SimHandler.do_POST

    def spy(self: SimHandler) -> None:
        received.append(self.headers.get("authorization") or "")
        original(self)

    monkeypatch.setattr(SimHandler, "do_POST", spy)
    secret = "sk-test-OPENAI-9f8e7d6c5b4a"
    faults = FaultConfig(http_500=0.2, http_429=0.1, retry_after_s=0.0, malformed_json=0.1,
                         dropped_connection=0.1)
    with served(queries, faults) as server:
        r = collect_partition(wh, openai_entry(server.url), queries, server.url + "/v1", cfg(max_retries=1),
                              headers={"authorization": f"Bearer {secret}"})
        denied, _ = collect_model(openai_entry(server.url, server_model="ghost:1b"), queries.head(3),
                                  wh.images_dir, server.url + "/v1", cfg(),
                                  headers={"authorization": f"Bearer {secret}"})
    assert received and all(h == f"Bearer {secret}" for h in received)
    rows = pl.concat([r.traces, denied])
    assert set(rows["status"]) >= {"ok", "error"}
    for row in rows.iter_rows():
        assert all(secret not in str(v) for v in row)
    for f in wh.root.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


# ------------------------------------------------------------------------------------------- pieces


def test_reasoning_is_not_scored() -> None:
    assert final_answer("<think>It could be 41. Or 42?</think>\nThe answer is 42.") == "The answer is 42."
    assert final_answer("reasoning without an opening tag</think> B") == "B"
    assert final_answer("<think>still thinking when the cap hit") == ""
    assert final_answer("  plain answer  ") == "  plain answer  "


def test_image_data_url_names_the_type() -> None:
    assert image_data_url(b"\x89PNG\r\n\x1a\nxx").startswith("data:image/png;base64,")
    assert image_data_url(b"\xff\xd8\xff\xe0xx").startswith("data:image/jpeg;base64,")
    assert image_data_url(b"RIFF1234WEBPxx").startswith("data:image/webp;base64,")


# ------------------------------------------------------------------------------------- the server check


def test_server_check_names_the_problem(setup, monkeypatch) -> None:
    _, queries = setup
    faults = FaultConfig(unauthorized_models={"simvl-nano:1b"})
    with SimServer(queries, models=[SPEC, *[s for s in DEFAULT_POOL if s.name == "simvl-nano:1b"]], seed=SEED,
                   time_scale=0.0, faults=faults) as server:
        v1 = server.url + "/v1"
        assert check_openai_server(v1, SPEC.name, api_key="sk-check-123") is None
        missing = check_openai_server(v1, "ghost:1b")
        assert missing == f"{v1} does not serve model 'ghost:1b'; it lists: {SPEC.name}, simvl-nano:1b"
        # a server without GET /models: a one-token call decides, and a refused key is named as such
        monkeypatch.setattr(openai_compat, "handle_models", lambda h: h._send_bytes(404, b"not here", "text/plain"))
        assert check_openai_server(v1, SPEC.name) is None
        refused = check_openai_server(v1, "simvl-nano:1b", api_key="sk-check-123")
        assert refused is not None and refused.startswith(f"{v1} rejected the API key (HTTP 401)")
        assert "sk-check-123" not in refused
        gone = check_openai_server(v1, "ghost:1b")
        assert gone is not None and gone.startswith(f"{v1} does not serve model 'ghost:1b'")
        chats = openai_calls(server)
    assert chats == 3  # only the three fallback calls reached the chat endpoint
    down = check_openai_server("http://127.0.0.1:9/v1", SPEC.name)
    assert down is not None and down.startswith("http://127.0.0.1:9/v1 is unreachable: ")


CHILD = """
import sys
from collectors.collection.client import CollectConfig
from collectors.collection.resume import collect_partition
from collectors.registry import ModelEntry
from warehouse.store import Warehouse
wh = Warehouse(sys.argv[1])
m = ModelEntry(model_id="chart-over-openai", backend="openai", endpoint=sys.argv[2], server_model=sys.argv[3])
collect_partition(wh, m, wh.read_table("queries"), sys.argv[2], CollectConfig(concurrency=2, batch_size=4,
                  progress=False))
"""


def test_sigterm_stops_an_openai_collection_with_its_rows_staged(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "wh").ensure()
    queries = queries_frame([query_row(i, wh.images_dir) for i in range(60)])
    wh.write_table("queries", queries)
    root = Path(__file__).resolve().parents[2]
    with served(queries) as server:
        openai_compat.set_fixed_latency(server, 0.15)  # 60 calls, 2 at a time: several seconds, stopped after the first flush
        url = server.url + "/v1"
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(wh.root), url, SPEC.name], cwd=root,
                                 env={**os.environ, "PYTHONPATH": str(root)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ckpt = TraceCheckpoint(wh, "chart-over-openai")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(ckpt.dir.glob("part-*.parquet")):
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        err = child.communicate(timeout=60)[1].decode()
        calls_at_stop = openai_calls(server)
        staged = ckpt.staged()
        openai_compat.set_fixed_latency(server, None)
        model = openai_entry(server.url)
        r = collect_partition(wh, model, queries, url, cfg(batch_size=4))
    assert child.returncode != 0 and "stopped by a signal" in err
    assert 0 < staged.height < 60 and set(staged["status"]) == {"ok"}  # no error row for the signal itself
    assert calls_at_stop < 60 and wh.read_trace_partition("chart-over-openai").height == 60
    assert r.resumed_rows == staged.height and r.attempted == 60 - staged.height
    t = r.traces
    assert t["query_id"].n_unique() == t.height == 60 and t["status"].to_list() == ["ok"] * 60
