"""The simulated candidate pool: the skill model and the Ollama-compatible server.

The server is exercised with the real ``ollama`` client, exactly as the collector uses it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re

import httpx
import numpy as np
import ollama
import pytest

from collectors.simulator import behaviour, specs
from collectors.simulator.server import SimServer
from tests.collectors.sim_support import CLEAN, _final, _png, _row
from warehouse.schemas import MODELS
from warehouse.vocabulary import TASK_GROUPS

# ------------------------------------------------------------------------------------------ the pool


def test_pool_is_documented_and_distinct():
    names = [s.name for s in specs.DEFAULT_POOL]
    assert len(names) == 8 and len(set(names)) == 8
    assert specs.HELD_OUT.name not in names and specs.HELD_OUT.name in specs.ALL_MODELS
    assert all(re.fullmatch(r"[a-z0-9-]+:\d+b", n) for n in [*names, specs.HELD_OUT.name])
    assert len({s.digest for s in specs.ALL_MODELS.values()}) == 9
    assert len({(s.price_in_per_mtok, s.params_b) for s in specs.DEFAULT_POOL}) == 8
    rows = specs.model_table_rows()
    assert [r["model_id"] for r in rows] == names
    assert all(
        r["backend"] == "sim" and r["simulated"] and r["description"].startswith("SIMULATED") for r in rows
    )
    assert set(rows[0]) <= set(MODELS)
    assert [r["model_id"] for r in specs.model_table_rows([specs.HELD_OUT])] == [specs.HELD_OUT.name]
    with pytest.raises(ValueError, match="group_skill"):
        specs.SimModelSpec(**{**specs.DEFAULT_POOL[0].__dict__, "group_skill": {"ocr": 1.0}, "digest": ""})


def test_p_correct_follows_the_logistic_formula():
    spec = specs.get_spec("simvl-ultra:72b")
    vis = {"small_text": 0.2, "noise": 0.4, "rotation": 0.9, "density": 0.1, "low_contrast": 0.5}
    z = (
        spec.base
        + spec.group_skill["chart"]
        - sum(spec.sensitivity[f] * vis[f] for f in specs.VISUAL_FACTORS)
        + 0.3
    )
    assert behaviour.p_correct(spec, "chart", vis, 0.3) == pytest.approx(1 / (1 + math.exp(-z)))
    for f in specs.VISUAL_FACTORS:  # every factor hurts
        assert behaviour.p_correct(spec, "ocr", {**CLEAN, f: 1.0}) < behaviour.p_correct(spec, "ocr", CLEAN)
    assert behaviour.p_correct(spec, "ocr", {}) == behaviour.p_correct(spec, "ocr", behaviour.NEUTRAL_VISUAL)
    with pytest.raises(ValueError, match="rotation"):
        behaviour.p_correct(spec, "ocr", {"rotation": 1.5})
    with pytest.raises(ValueError, match="task_group"):
        behaviour.p_correct(spec, "poetry", CLEAN)


def test_best_model_reverses_across_queries():
    levels = (0.0, 0.5, 1.0)
    best_by_point: dict[tuple, str] = {}
    for g in TASK_GROUPS:
        for vals in itertools.product(levels, repeat=len(specs.VISUAL_FACTORS)):
            vis = dict(zip(specs.VISUAL_FACTORS, vals, strict=True))
            p = {s.name: behaviour.p_correct(s, g, vis) for s in specs.DEFAULT_POOL}
            best_by_point[(g, vals)] = max(p, key=p.get)
    winners = set(best_by_point.values())
    assert len(winners) >= 4, winners  # several models are each best somewhere
    best_clean = {g: best_by_point[(g, (0.0,) * 5)] for g in TASK_GROUPS}
    best_mid = {g: best_by_point[(g, (0.5,) * 5)] for g in TASK_GROUPS}
    assert len(set(best_mid.values())) >= 2, best_mid  # the best model depends on the task group
    # the biggest model is best on clean general queries but not on rotated text
    ultra, ocr = specs.get_spec("simvl-ultra:72b"), specs.get_spec("simdoc-ocr:4b")
    assert best_clean["general"] == ultra.name
    rotated = {**CLEAN, "rotation": 1.0}
    assert behaviour.p_correct(ocr, "ocr", rotated) > behaviour.p_correct(ultra, "ocr", rotated)
    # Proposition B.1: this pair swaps order between two queries, so no additive score ranks both right
    assert behaviour.p_correct(ultra, "general", CLEAN) > behaviour.p_correct(ocr, "general", CLEAN)
    # the cheap model is close to the best on easy general queries
    nano = specs.get_spec("simvl-nano:1b")
    assert behaviour.p_correct(nano, "general", CLEAN) > 0.9 and behaviour.p_correct(nano, "math", CLEAN) < 0.6


def test_realistic_mix_has_a_large_oracle_gap():
    rng = np.random.default_rng(0)
    n = 1200
    rows = []
    for i in range(n):
        vis = dict(zip(specs.VISUAL_FACTORS, rng.beta(1.3, 2.5, size=5).round(3).tolist(), strict=True))
        rows.append(
            {
                "query_id": f"mix-{i}",
                "task_group": TASK_GROUPS[i % 4],
                "question": "q",
                "answer": "7",
                "answer_kind": "numeric",
                "image_sha256": f"{i:064x}",
                "source_meta": {"visual": vis},
            }
        )
    y = np.array([[behaviour.answer_for(s, r, seed=0).correct for s in specs.DEFAULT_POOL] for r in rows], dtype=float)
    acc = y.mean(axis=0)
    assert 0.55 <= acc.max() <= 0.8, acc
    assert y.max(axis=1).mean() > 0.85
    assert y.max(axis=1).mean() - acc.max() > 0.15
    assert specs.DEFAULT_POOL[int(acc.argmax())].name == "simvl-ultra:72b"
    per_group_best = {
        g: int(y[[i for i in range(n) if i % 4 == k]].mean(axis=0).argmax())
        for k, g in enumerate(TASK_GROUPS)
    }
    assert len(set(per_group_best.values())) >= 2, per_group_best


def test_answer_for_is_deterministic_and_plausible(key):
    df, _ = key
    seen_wrong: dict[str, set[str]] = {}
    n_correct = n_total = 0
    p_sum = 0.0
    for spec in specs.DEFAULT_POOL:
        for row in df.iter_rows(named=True):
            for seed in range(25):
                a = behaviour.answer_for(spec, row, seed)
                assert a == behaviour.answer_for(spec, row, seed)
                assert a.text and a.prompt_tokens > 0 and a.completion_tokens == behaviour.count_tokens(a.text)
                assert a.load_duration_ns > 0 and a.prompt_eval_duration_ns > 0 and a.eval_duration_ns > 0
                n_total += 1
                n_correct += a.correct
                p_sum += a.p_correct
                got = _final(a.text)
                if a.correct:
                    assert got == row["answer"], (a.text, row["answer"])
                elif a.style != "refusal":
                    assert got.casefold() != row["answer"].casefold(), a.text
                    if row["answer_kind"] == "numeric" and re.fullmatch(r"-?\d+(\.\d+)?", got):
                        assert abs(float(got) - float(row["answer"])) > 0.06 * abs(float(row["answer"]))
                    seen_wrong.setdefault(row["query_id"], set()).add(got)
    # correctness is drawn with the stated probability
    assert abs(n_correct - p_sum) < 4 * math.sqrt(p_sum * (1 - p_sum / n_total))
    assert {"HELL0", "JELLO"} & seen_wrong["q-ocr"]  # distractors are used
    assert seen_wrong["q-chart"] <= {"A", "C", "apples", "plums"}
    assert len(seen_wrong["q-math"] - {"24", "40"}) >= 1  # and numbers are also perturbed
    # a different seed changes some answers
    r0 = _row(df, "q-gen")
    assert len({behaviour.answer_for(specs.DEFAULT_POOL[1], r0, s).text for s in range(20)}) > 1


def test_replies_are_bare_or_wrapped_and_verbosity_differs(key):
    df, _ = key
    rows = list(df.iter_rows(named=True))
    tokens = {}
    for spec in specs.DEFAULT_POOL:
        answers = [behaviour.answer_for(spec, r, s) for r in rows for s in range(30)]
        tokens[spec.name] = np.mean([a.completion_tokens for a in answers])
        styles = {a.style for a in answers}
        assert "bare" in styles and ({"short", "verbose"} & styles)
    assert tokens["simmath-vl:8b"] > 3 * tokens["simvl-nano:1b"]
    for sentences in behaviour._FILLER.values():  # filler cannot be mistaken for an answer
        for s in sentences:
            assert not re.search(r"\d|\b[A-Za-z]\b", s), s


def test_long_replies_never_repeat_a_sentence_and_stay_deterministic(key):
    df, _ = key
    rows = list(df.iter_rows(named=True))
    longest = 0
    for spec in specs.DEFAULT_POOL:
        for r in rows:
            for s in range(40):
                a = behaviour.answer_for(spec, r, s)
                sentences = re.split(r"(?<=\.)\s+", a.text)
                assert len(sentences) == len(set(sentences)), a.text  # no loop over the same filler
                longest = max(longest, len(sentences))
                assert behaviour.answer_for(spec, r, s).text == a.text  # deterministic per seed
    assert longest > len(behaviour._FILLER["math"]) + 5  # long replies go past the filler without repeating
    rng = np.random.default_rng(0)
    for group in TASK_GROUPS:  # every step sentence is distinct and cannot be mistaken for an answer
        steps = list(behaviour._steps(group, rng))
        assert len(steps) == len(set(steps)) >= 60
        assert all(not re.search(r"\d|\b[A-Za-z]\b", s) for s in steps)
        assert all(a.split()[0] != b.split()[0] for a, b in itertools.pairwise(steps))


# ------------------------------------------------------------------------------------------ the server


def test_version_tags_show(server):
    assert httpx.get(f"{server.url}/api/version").json()["version"]
    assert httpx.get(server.url).text == "Ollama is running"
    client = ollama.Client(host=server.url)
    listed = client.list()
    assert isinstance(listed, ollama.ListResponse)
    assert [m.model for m in listed.models] == [s.name for s in specs.DEFAULT_POOL]
    assert specs.HELD_OUT.name not in {m.model for m in listed.models}
    assert listed.models[0].digest == specs.DEFAULT_POOL[0].digest and listed.models[0].size > 0
    shown = client.show("simchart-vl:7b")
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.details.parameter_size == "7.0B" and "vision" in shown.capabilities
    assert shown.modelinfo["general.parameter_count"] == 7_000_000_000
    assert shown.modelinfo["lrouter.simulated"] is True
    with pytest.raises(ollama.ResponseError) as exc:
        client.show("llama9:70b")
    assert exc.value.status_code == 404 and exc.value.error == "model 'llama9:70b' not found"


def test_chat_matches_answer_for_and_parses(server, key):
    df, imgs = key
    client = ollama.Client(host=server.url)
    for spec in specs.DEFAULT_POOL:
        for qid, img in (("q-ocr", "ocr"), ("q-chart", "chart"), ("q-math", "math")):
            row = _row(df, qid)
            r = client.chat(
                model=spec.name,
                messages=[{"role": "user", "content": row["question"], "images": [imgs[img]]}],
            )
            expect = behaviour.answer_for(spec, row, seed=3, prompt_text=row["question"], n_images=1)
            assert isinstance(r, ollama.ChatResponse)
            assert (
                r.model == spec.name and r.done and r.done_reason == "stop" and r.message.role == "assistant"
            )
            assert r.message.content == expect.text
            assert r.prompt_eval_count == expect.prompt_tokens >= spec.image_tokens
            assert r.eval_count == expect.completion_tokens
            assert r.load_duration == expect.load_duration_ns
            assert r.prompt_eval_duration == expect.prompt_eval_duration_ns
            assert r.eval_duration == expect.eval_duration_ns
            assert r.total_duration == expect.total_duration_ns
            assert r.created_at
    st = server.stats
    assert st["models"]["simvl-nano:1b"]["ok"] >= 3 and st["endpoints"]["/api/chat"] >= 24


def test_streaming_generate_and_determinism(server, key):
    df, imgs = key
    client = ollama.Client(host=server.url)
    row = _row(df, "q-math")
    msgs = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": row["question"], "images": [imgs["math"]]},
    ]
    for spec in (specs.get_spec("simmath-vl:8b"), specs.get_spec("simvl-lite:3b")):
        once = client.chat(model=spec.name, messages=msgs)
        again = client.chat(model=spec.name, messages=msgs)
        assert once.message.content == again.message.content and once.total_duration == again.total_duration
        parts = list(client.chat(model=spec.name, messages=msgs, stream=True))
        assert all(isinstance(p, ollama.ChatResponse) for p in parts)
        assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
        assert "".join(p.message.content for p in parts) == once.message.content
        assert (
            parts[-1].eval_count == once.eval_count and parts[-1].prompt_eval_count == once.prompt_eval_count
        )
        # the answer depends on the query, not on the endpoint or on extra prompt text
        g = client.generate(model=spec.name, prompt=row["question"], images=[imgs["math"]])
        assert isinstance(g, ollama.GenerateResponse) and g.response == once.message.content and g.done
        gs = list(
            client.generate(model=spec.name, prompt=row["question"], images=[imgs["math"]], stream=True)
        )
        assert "".join(p.response for p in gs) == g.response and gs[-1].eval_count == g.eval_count
        assert once.prompt_eval_count > g.prompt_eval_count  # the system prompt costs tokens
    cut = client.chat(model="simmath-vl:8b", messages=msgs, options={"num_predict": 3})
    full = client.chat(model="simmath-vl:8b", messages=msgs)
    assert full.eval_count > 3 and full.done_reason == "stop"
    assert (
        cut.done_reason == "length"
        and cut.eval_count == 3
        and full.message.content.startswith(cut.message.content)
    )
    assert cut.eval_duration < full.eval_duration


def test_lookup_by_question_shared_image_and_unknown(server, key):
    df, imgs = key
    client = ollama.Client(host=server.url)
    spec = specs.get_spec("simvl-pro:13b")
    before = server.stats["unknown_queries"]
    # text-only query found by its question, also inside a longer prompt
    text_row = _row(df, "q-text")
    expect = behaviour.answer_for(spec, text_row, seed=3).text
    for prompt in (text_row["question"], f"Answer with a number.\nQuestion: {text_row['question']}\nAnswer:"):
        assert client.generate(model=spec.name, prompt=prompt).response == expect
    # two queries on one image are told apart by their question
    for qid in ("q-shared-1", "q-shared-2"):
        row = _row(df, qid)
        r = client.chat(
            model=spec.name,
            messages=[
                {"role": "user", "content": f"Look closely. {row['question']}", "images": [imgs["shared"]]}
            ],
        )
        assert r.message.content == behaviour.answer_for(spec, row, seed=3).text
    assert server.stats["unknown_queries"] == before
    # an image outside the key still gets a plausible, deterministic reply
    stranger = _png("stranger", 99)
    a = client.chat(
        model=spec.name, messages=[{"role": "user", "content": "How many cats?", "images": [stranger]}]
    )
    b = client.chat(
        model=spec.name, messages=[{"role": "user", "content": "How many cats?", "images": [stranger]}]
    )
    assert a.message.content and a.message.content == b.message.content
    assert re.search(r"\d", a.message.content)
    assert server.stats["unknown_queries"] == before + 2
    # a text-only question outside the key gets a text answer (never "the image shows ..."), and every reply
    # says it is simulated
    for q in ("What is the capital of France?", "Name a colour.", "Who wrote Hamlet?", "Say hello."):
        r = client.chat(model=spec.name, messages=[{"role": "user", "content": q}])
        assert not re.search(r"\b(image|picture|chart|visible)\b", r.message.content, re.I), r.message.content
    import httpx

    raw = httpx.post(f"{server.url}/api/chat", json={"model": spec.name, "stream": False,
                                                     "messages": [{"role": "user", "content": "Say hello."}]})
    assert raw.json()["simulated"] is True  # the ollama client drops unknown fields; the wire has it


def test_unknown_model_and_bad_requests(server):
    client = ollama.Client(host=server.url)
    with pytest.raises(ollama.ResponseError) as exc:
        client.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.status_code == 404 and exc.value.error == "model 'nope:1b' not found"
    with pytest.raises(ollama.ResponseError) as exc:
        client.generate(model="nope:1b", prompt="hi")
    assert exc.value.status_code == 404
    r = httpx.post(
        f"{server.url}/api/chat",
        json={
            "model": "simvl-nano:1b",
            "stream": False,
            "messages": [{"role": "user", "content": "x", "images": ["%%%"]}],
        },
    )
    assert r.status_code == 400 and "base64" in r.json()["error"]
    r = httpx.post(
        f"{server.url}/api/chat", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    load = client.chat(model="simvl-nano:1b", messages=[])
    assert load.done and load.done_reason == "load"


def test_async_client_concurrent_requests_are_deterministic(server, key):
    df, imgs = key
    jobs = [
        (s.name, q, i)
        for s in specs.DEFAULT_POOL
        for q, i in (("q-ocr", "ocr"), ("q-gen", "general"), ("q-ocr2", "ocr2"))
    ]

    async def run() -> list[str]:
        client = ollama.AsyncClient(host=server.url)
        rs = await asyncio.gather(
            *[
                client.chat(
                    model=m,
                    messages=[{"role": "user", "content": _row(df, q)["question"], "images": [imgs[i]]}],
                )
                for m, q, i in jobs
            ]
        )
        return [r.message.content for r in rs]

    got = asyncio.run(run())
    assert got == [behaviour.answer_for(specs.get_spec(m), _row(df, q), seed=3).text for m, q, _ in jobs]


class _RecordingServer(SimServer):
    """Records every simulated wait instead of timing it (no wall-clock assertions)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.waits: list[float] = []

    def _wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        super()._wait(seconds)


def test_time_scale_shortens_waits_but_not_reported_durations(key):
    df, imgs = key
    row = _row(df, "q-ocr")
    msgs = [{"role": "user", "content": row["question"], "images": [imgs["ocr"]]}]
    reported, waited = {}, {}
    for scale in (1e-4, 1e-2):
        with _RecordingServer(df, time_scale=scale, seed=3) as srv:
            client = ollama.Client(host=srv.url)
            r = client.chat(model="simvl-ultra:72b", messages=msgs)
            reported[scale] = r.total_duration
            waited[scale] = sum(srv.waits)
            srv.waits.clear()
            parts = list(client.chat(model="simvl-ultra:72b", messages=msgs, stream=True))
            assert sum(srv.waits) == pytest.approx(
                (r.total_duration - behaviour.OVERHEAD_NS) / 1e9 * scale, rel=1e-6
            )
            assert parts[-1].total_duration == r.total_duration
    assert reported[1e-4] == reported[1e-2] > 200_000_000  # realistic, unscaled nanoseconds
    assert waited[1e-2] == pytest.approx(reported[1e-2] / 1e9 * 1e-2)
    assert waited[1e-4] == pytest.approx(waited[1e-2] / 100)
