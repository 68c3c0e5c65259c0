"""`lrouter models add --backend openai` and `lrouter run collect` against the simulator's OpenAI-compatible
endpoint on loopback, as a user runs them (in-process, on a persistent Dagster instance in a temporary
DAGSTER_HOME).

What must hold: the server is checked before anything is written and a problem is one line; the collected
traces score exactly like the same simulated model collected over Ollama's protocol, with usage-based costs;
the gateway derives an OpenAI upstream for the model; and the API key reaches the server but no file under
the home or the Dagster instance, and no output line.
"""

from __future__ import annotations

import asyncio

import httpx
import polars as pl
import pytest

from collectors.simulator.faults import FaultConfig
from collectors.simulator.handler import SimHandler
from collectors.simulator.server import SimServer
from collectors.simulator.specs import ALL_MODELS
from pipelines import cli
from warehouse.store import Warehouse

pytestmark = pytest.mark.slow  # Dagster runs of the pipeline's jobs

KEY_ENV = "LROUTER_TEST_OPENAI_KEY"
SECRET = "sk-test-LROUTER-0b1c2d3e4f5a6978"
SERVED = "simvl-lite:3b"  # the server's name; registered as LITE
LITE = "lite-over-openai"
PRICE_IN, PRICE_OUT = 0.2, 0.6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai-cli")
    (root / "dagster").mkdir()
    (root / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("LROUTER_HOME", str(root / "home"))
    mp.setenv("DAGSTER_HOME", str(root / "dagster"))
    mp.setenv("LROUTER_SIM_TIME_SCALE", "0")
    mp.delenv("LROUTER_REGISTRY", raising=False)
    mp.delenv("OLLAMA_HOST", raising=False)
    mp.delenv(KEY_ENV, raising=False)
    assert cli.main(["run", "setup", "--queries", "24"]) == 0
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def server(env):
    queries = Warehouse(env / "home" / "warehouse").read_table("queries")
    faults = FaultConfig(unauthorized_models={"simvl-nano:1b"})  # this one refuses every key
    with SimServer(queries, models=list(ALL_MODELS.values()), seed=0, time_scale=0.0, faults=faults) as srv:
        yield srv


def add(url: str, name: str, *extra: str) -> int:
    return cli.main(["models", "add", name, "--backend", "openai", "--endpoint", url, *extra])


def test_models_add_checks_the_server_before_writing(env, server, capsys):
    registry = env / "home" / "models.yaml"
    before = registry.read_bytes()
    v1 = server.url + "/v1"
    cases = [
        (("http://127.0.0.1:9/v1", "x"), "is unreachable"),
        ((v1, "x", "--server-model", "no-such:1b"), "does not serve model 'no-such:1b'; it lists: simvl-nano:1b"),
        ((v1, "x", "--api-key-env", KEY_ENV), f"environment variable {KEY_ENV} (--api-key-env) is not set"),
        ((server.url + "/v1", "x", "--api-key-env", "sk-live-abc"), "NAME of an environment variable"),
        ((v1, "x", "--server-model", SERVED, "--price-in", "-1"), "price_in_per_mtok"),
        (("", "x"), "backend 'openai' needs endpoint"),
    ]
    for args, msg in cases:
        assert add(*args) == 2, args
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert registry.read_bytes() == before


def test_add_then_collect_scores_like_the_ollama_protocol(env, server, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    received: list[str] = []
    original = SimHandler.do_POST

    def spy(self: SimHandler) -> None:
        if self.path.startswith("/v1/"):
            received.append(self.headers.get("authorization") or "")
        original(self)

    monkeypatch.setattr(SimHandler, "do_POST", spy)
    v1 = server.url + "/v1"
    assert add(v1, LITE, "--server-model", SERVED, "--api-key-env", KEY_ENV, "--price-in", str(PRICE_IN),
               "--price-out", str(PRICE_OUT), "--price-per-image", "0.0001", "--max-concurrency", "3",
               "--rpm", "6000") == 0
    # a model whose server refuses the key: collected anyway (--no-check), every row names the 401
    assert add(v1, "refused-over-openai", "--server-model", "simvl-nano:1b", "--api-key-env", KEY_ENV,
               "--no-check") == 0
    assert cli.main(["run", "collect", "--model", LITE, "--model", SERVED, "--model", "refused-over-openai"]) == 0
    out = capsys.readouterr()
    wh = Warehouse(env / "home" / "warehouse")
    a, b = wh.read_trace_partition(LITE), wh.read_trace_partition(SERVED)
    n = wh.read_table("queries").height
    assert a.height == b.height == n and a["status"].to_list() == ["ok"] * n
    both = a.join(b, on="query_id", suffix="_ollama")
    assert both["quality"].to_list() == both["quality_ollama"].to_list()
    assert both["prompt_tokens"].to_list() == both["prompt_tokens_ollama"].to_list()
    expected = (pl.col("prompt_tokens") * PRICE_IN + pl.col("completion_tokens") * PRICE_OUT) / 1e6 \
        + pl.when(pl.col("image_tokens") > 0).then(0.0001).otherwise(0.0)
    diff = a.select((pl.col("cost_usd") - expected).abs().max()).item()
    assert diff < 1e-15
    refused = wh.read_trace_partition("refused-over-openai")
    assert refused["status"].to_list() == ["error"] * n
    assert refused["error"].str.starts_with("HTTP 401: Incorrect API key provided.").all()
    assert received and all(h == f"Bearer {SECRET}" for h in received)  # the key really was sent

    # the gateway's upstream for the model comes from the same registry (via the models table)
    from router.serving.gateway.config import upstreams_from_models

    up = upstreams_from_models(wh.read_table("models")).get(LITE)
    assert up is not None and up.protocol == "openai" and up.base_url == v1 and up.api_key_env == KEY_ENV
    assert up.served_name == SERVED
    answer = asyncio.run(_forward(up))  # the gateway's own upstream call, over HTTP to the simulator
    assert answer["model"] == SERVED and answer["choices"][0]["message"]["content"]  # asked by its server name
    assert received[-1] == f"Bearer {SECRET}"

    # the key is nowhere on disk: not in the home (tables, staging, registry, logs) nor the Dagster instance
    leaks = [f for d in (env / "home", env / "dagster") for f in d.rglob("*")
             if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert not leaks
    assert SECRET not in out.out and SECRET not in out.err


async def _forward(up) -> dict:
    from router.serving.gateway.config import GatewayConfig
    from router.serving.gateway.upstream import complete

    async with httpx.AsyncClient() as client:
        return await complete(client, up, {"model": LITE, "messages": [{"role": "user", "content": "Hello?"}]},
                              GatewayConfig())
