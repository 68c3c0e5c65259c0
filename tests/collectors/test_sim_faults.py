"""The simulator's fault injection and run-time changes (models added or removed, answer-key swaps,
serve_forever)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import socket
import threading

import httpx
import ollama
import polars as pl
import pytest

from collectors.simulator import behaviour, specs
from collectors.simulator.answer_key import AnswerKey
from collectors.simulator.faults import FAULT_KINDS, FaultConfig
from collectors.simulator.server import SimServer, serve_forever
from tests.collectors.sim_support import _png, _row

# ------------------------------------------------------------------------------------------------ faults


def _fire(url: str, image: bytes, n: int, timeout: float = 5.0) -> list[str]:
    """Send ``n`` distinct chats concurrently; classify what the client saw."""

    async def one(client: ollama.AsyncClient, i: int) -> str:
        try:
            r = await client.chat(
                model="simvl-lite:3b",
                stream=False,
                messages=[{"role": "user", "content": f"request {i}", "images": [image]}],
            )
        except ollama.ResponseError as e:
            return f"http_{e.status_code}"
        except httpx.TimeoutException:
            return "timeout"
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
            return "dropped"
        except json.JSONDecodeError:
            return "malformed"
        extra = r.total_duration - (
            r.load_duration + r.prompt_eval_duration + r.eval_duration + behaviour.OVERHEAD_NS
        )
        return "slow" if extra > 0 else "ok"

    async def run() -> list[str]:
        client = ollama.AsyncClient(host=url, timeout=timeout)
        return await asyncio.gather(*[one(client, i) for i in range(n)])

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("kind", "seen_as", "extra"),
    [
        ("http_500", "http_500", {}),
        ("http_503", "http_503", {}),
        ("malformed_json", "malformed", {}),
        ("dropped_connection", "dropped", {}),
        ("slow", "slow", {"slow_extra_s": 0.05}),
        ("timeout", "timeout", {"timeout_s": 5.0}),
    ],
)
def test_each_fault_kind_is_injected_at_its_rate_and_counted(key, kind, seen_as, extra):
    df, imgs = key
    n, rate = 80, 0.3
    with SimServer(df, time_scale=0.0, faults=FaultConfig(**{kind: rate}, **extra)) as srv:
        outcomes = _fire(srv.url, imgs["ocr"], n, timeout=1.5 if kind == "timeout" else 10.0)
        st = srv.stats
    injected = outcomes.count(seen_as)
    assert set(outcomes) <= {"ok", seen_as}
    assert st["faults"][kind] == injected == st["models"]["simvl-lite:3b"]["faults"][kind]
    assert sum(st["faults"].values()) == injected
    assert abs(injected / n - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
    assert st["models"]["simvl-lite:3b"]["calls"] == n


def test_faults_are_deterministic_and_retries_can_succeed(key):
    df, imgs = key
    msgs = [{"role": "user", "content": "What word is printed?", "images": [imgs["ocr"]]}]

    def attempts(srv: SimServer) -> list[str]:
        client = ollama.Client(host=srv.url)
        seen = []
        for _ in range(12):
            try:
                client.chat(model="simdoc-ocr:4b", messages=msgs)
                seen.append("ok")
            except ollama.ResponseError as e:
                seen.append(str(e.status_code))
        return seen

    cfg = FaultConfig(http_500=0.3, http_503=0.3)
    with SimServer(df, time_scale=0.0, faults=cfg) as a, SimServer(df, time_scale=0.0, faults=cfg) as b:
        first, second = attempts(a), attempts(b)
    assert first == second  # same requests, same attempts -> same faults
    assert "ok" in first and {"500", "503"} & set(first)  # failed attempts are followed by successes


def test_malformed_stream_and_timeout_then_drop(key):
    df, imgs = key
    msgs = [{"role": "user", "content": "What word is printed?", "images": [imgs["ocr"]]}]
    with SimServer(df, time_scale=0.0, faults=FaultConfig(malformed_json=1.0)) as srv:
        client = ollama.Client(host=srv.url)
        with pytest.raises(json.JSONDecodeError):
            list(client.chat(model="simvl-pro:13b", messages=msgs, stream=True))
        with pytest.raises(json.JSONDecodeError):
            client.generate(model="simvl-pro:13b", prompt="What word is printed?", images=[imgs["ocr"]])
        assert srv.stats["faults"]["malformed_json"] == 2
    with SimServer(
        df, time_scale=0.0, faults=FaultConfig(timeout=1.0, timeout_s=0.0, timeout_then="drop")
    ) as srv:
        with pytest.raises(httpx.RemoteProtocolError):
            ollama.Client(host=srv.url).chat(model="simvl-pro:13b", messages=msgs)
        assert srv.stats["faults"]["timeout"] == 1


def test_vanish_after_and_down_models(key):
    df, imgs = key
    msgs = [{"role": "user", "content": "What word is printed?", "images": [imgs["ocr"]]}]
    cfg = FaultConfig(vanish_after={"simvl-nano:1b": 2}, down_models={"simscan-vl:11b"})
    with SimServer(df, time_scale=0.0, faults=cfg) as srv:
        client = ollama.Client(host=srv.url)
        for _ in range(2):
            assert client.chat(model="simvl-nano:1b", messages=msgs).done
        with pytest.raises(ollama.ResponseError) as exc:
            client.chat(model="simvl-nano:1b", messages=msgs)
        assert exc.value.status_code == 404
        assert "simvl-nano:1b" not in {m.model for m in client.list().models}
        with pytest.raises(ollama.ResponseError) as exc:
            client.chat(model="simscan-vl:11b", messages=msgs)
        assert exc.value.status_code == 503
        assert "simscan-vl:11b" in {m.model for m in client.list().models}
        srv.set_faults(FaultConfig(down_models={"simscan-vl:11b"}, down_mode="drop"))
        with pytest.raises(httpx.RemoteProtocolError):
            client.chat(model="simscan-vl:11b", messages=msgs)
        assert client.chat(model="simvl-nano:1b", messages=msgs).done  # vanish lifted with the new config
        st = srv.stats
    assert st["faults"]["vanished"] == 1 and st["faults"]["down"] == 2
    assert st["models"]["simvl-nano:1b"]["ok"] == 3 and st["models"]["simvl-nano:1b"]["not_found"] == 1
    with pytest.raises(ValueError, match="sum"):
        FaultConfig(http_500=0.6, http_503=0.6)
    with pytest.raises(ValueError, match="timeout"):
        FaultConfig(timeout=1.5)


# ----------------------------------------------------------------------------------- run-time changes


def test_held_out_model_added_and_removed_at_run_time(key):
    df, imgs = key
    row = _row(df, "q-ocr")
    msgs = [{"role": "user", "content": row["question"], "images": [imgs["ocr"]]}]
    with SimServer(df, time_scale=0.0) as srv:
        client = ollama.Client(host=srv.url)
        with pytest.raises(ollama.ResponseError):
            client.chat(model=specs.HELD_OUT.name, messages=msgs)
        srv.add_model(specs.HELD_OUT)
        assert specs.HELD_OUT.name in {m.model for m in client.list().models}
        r = client.chat(model=specs.HELD_OUT.name, messages=msgs)
        assert r.message.content == behaviour.answer_for(specs.HELD_OUT, row, seed=0).text
        srv.remove_model(specs.HELD_OUT.name)
        with pytest.raises(ollama.ResponseError) as exc:
            client.show(specs.HELD_OUT.name)
        assert exc.value.status_code == 404
        with pytest.raises(KeyError):
            srv.remove_model(specs.HELD_OUT.name)


def test_answer_key_swap_and_validation(key, tmp_path):
    df, imgs = key
    stranger = _png("new query", 123)
    new_row = {**_row(df, "q-ocr"), "query_id": "q-new", "image_sha256": hashlib.sha256(stranger).hexdigest()}
    msgs = [{"role": "user", "content": "What word is printed?", "images": [stranger]}]
    path = tmp_path / "queries.parquet"
    pl.concat([df, pl.DataFrame([new_row])]).write_parquet(path)
    with SimServer(None, time_scale=0.0) as srv:
        client = ollama.Client(host=srv.url)
        client.chat(model="simvl-pro:13b", messages=msgs)
        assert srv.stats["unknown_queries"] == 1
        srv.set_answer_key(path)
        r = client.chat(model="simvl-pro:13b", messages=msgs)
        assert srv.stats["unknown_queries"] == 1
        assert r.message.content == behaviour.answer_for(specs.get_spec("simvl-pro:13b"), new_row, seed=0).text
    with pytest.raises(ValueError, match="missing column"):
        AnswerKey.load(df.drop("answer_kind"))
    bad = df.with_columns(
        task_group=pl.when(pl.col("query_id") == "q-math")
        .then(pl.lit("poetry"))
        .otherwise(pl.col("task_group"))
    )
    with pytest.raises(ValueError, match=r"row 2 \(query_id='q-math'\).*task_group"):
        AnswerKey.load(bad)
    bad = df.with_columns(source_meta=pl.lit('{"visual": {"noise": 3}}'))
    with pytest.raises(ValueError, match="noise"):
        AnswerKey.load(bad)
    with pytest.raises(FileNotFoundError):
        AnswerKey.load(tmp_path / "missing.parquet")


def test_serve_forever_runs_until_stopped(tmp_path, key):
    df, _ = key
    df.write_parquet(tmp_path / "q.parquet")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = threading.Event()
    t = threading.Thread(
        target=serve_forever,
        kwargs=dict(
            port=port,
            answer_key=tmp_path / "q.parquet",
            time_scale=0.0,
            include_held_out=True,
            stop_event=stop,
        ),
        daemon=True,
    )
    t.start()
    try:
        for _ in range(200):
            try:
                names = {m.model for m in ollama.Client(host=f"http://127.0.0.1:{port}").list().models}
                break
            except ConnectionError:
                stop.wait(0.02)
        assert specs.HELD_OUT.name in names and len(names) == 9
    finally:
        stop.set()
        t.join(timeout=5)
    assert not t.is_alive()
    assert set(FAULT_KINDS) == {
        "timeout",
        "http_500",
        "http_503",
        "malformed_json",
        "slow",
        "dropped_connection",
    }
