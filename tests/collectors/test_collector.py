"""The trace collector against the simulated Ollama pool, through the real ``ollama`` client.

What must hold for the traces table to be trusted: one row per query, ok rows carry the server's own
tokens / durations and a score consistent with `collectors.scoring`, bad inputs become ``skipped`` rows that
name the problem, permanent errors are not retried, and `collect_partition` replaces, resumes and
re-materialises a partition without duplicates or needless calls.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from collectors.collection import resume as ckpt_mod
from collectors.collection.client import (
    DEFAULT_PROMPT,
    MAX_QUESTION_CHARS,
    CollectConfig,
    collect_model,
    estimate_text_tokens,
)
from collectors.collection.resume import TraceCheckpoint, collect_partition
from collectors.registry import ModelEntry
from collectors.scoring import is_correct, score_answer
from collectors.simulator.behaviour import answer_for
from collectors.simulator.server import SimServer
from collectors.simulator.specs import DEFAULT_POOL, SimModelSpec
from warehouse.schemas import QUERIES, TRACES, conform
from warehouse.store import Warehouse

SPECS: dict[str, SimModelSpec] = {s.name: s for s in DEFAULT_POOL}
NANO, CHART = SPECS["simvl-nano:1b"], SPECS["simchart-vl:7b"]
FACTORS = ("small_text", "noise", "rotation", "density", "low_contrast")
SEED = 7


# ------------------------------------------------------------------------------------------- fixtures


def png_bytes(label: str, seed: int) -> bytes:
    """A small PNG with a label and seeded noise, so every query has distinct image bytes."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (96, 40), "white")
    d = ImageDraw.Draw(im)
    d.text((3, 3), label, fill="black")
    for _ in range(25):
        d.point((int(rng.integers(96)), int(rng.integers(40))), fill="gray")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def query_row(i: int, images_dir: Path, question: str | None = None, image: bool = True) -> dict:
    """One answer-key row of each task group in turn, with its PNG written under ``images_dir``."""
    rng = np.random.default_rng(1000 + i)
    group = ("ocr", "chart", "math", "general")[i % 4]
    options: list[str] = []
    if group == "ocr":
        q, a, kind, distractors = f"What word is printed on sign {i}?", f"WORD{i}", "exact", [f"W0RD{i}", "WORM"]
    elif group == "chart":
        options = ["apples", "pears", "plums", "figs"]
        q = f"Chart {i}: which bar is tallest? (A) apples (B) pears (C) plums (D) figs"
        a, kind, distractors = "ABCD"[i % 4], "choice", ["ABCD"[(i + 1) % 4]]
    elif group == "math":
        q, a, kind, distractors = f"Figure {i}: what is the value of x?", str(3 * i + 4), "numeric", [str(3 * i + 9)]
    else:
        q, a, kind, distractors = f"Scene {i}: what vehicle is shown?", "a red bus", "text", ["a blue car"]
    meta: dict[str, object] = {
        "visual": {f: round(float(rng.uniform(0, 0.8)), 3) for f in FACTORS},
        "distractors": distractors,
    }
    if options:
        meta["options"] = options
    sha, path = "", ""
    if image:
        data = png_bytes(f"{group} {i}", i)
        sha = hashlib.sha256(data).hexdigest()
        path = f"{sha}.png"
        images_dir.mkdir(parents=True, exist_ok=True)
        (images_dir / path).write_bytes(data)
    return {
        "query_id": f"q{i:04d}",
        "benchmark": "custom",
        "dataset": "collector-test",
        "task_group": group,
        "task": f"{group}-test",
        "question": q if question is None else question,
        "answer": a,
        "answer_kind": kind,
        "image_path": path,
        "image_sha256": sha,
        "source_meta": json.dumps(meta),
        "official_split": "",
    }


def queries_frame(rows: list[dict]) -> pl.DataFrame:
    return conform(pl.DataFrame(rows, schema=QUERIES), QUERIES, "queries")


def entry(spec: SimModelSpec) -> ModelEntry:
    return ModelEntry(
        model_id=spec.name,
        backend="sim",
        price_in_per_mtok=spec.price_in_per_mtok,
        price_out_per_mtok=spec.price_out_per_mtok,
        params_b=spec.params_b,
        simulated=True,
    )


def cfg(**kw) -> CollectConfig:
    base = dict(concurrency=4, timeout_s=10.0, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05,
                progress=False)
    return CollectConfig(**{**base, **kw})


@pytest.fixture()
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "wh").ensure()


def served(key: pl.DataFrame, **kw) -> SimServer:
    return SimServer(key, models=[NANO, CHART], seed=SEED, time_scale=kw.pop("time_scale", 0.001), **kw)


def model_calls(server: SimServer, model_id: str) -> int:
    return server.stats["models"].get(model_id, {}).get("calls", 0)


def expected_reply(spec: SimModelSpec, q: dict):
    """What the simulator must have answered for ``q`` given the prompt the collector sends."""
    prompt = DEFAULT_PROMPT.format(question=q["question"][:MAX_QUESTION_CHARS])
    n_images = 1 if q["image_path"] else 0
    return answer_for(spec, q, SEED, prompt_text=prompt, n_images=n_images), prompt


# ---------------------------------------------------------------------------------------- collect_model


@pytest.fixture()
def odd_queries(wh: Warehouse) -> pl.DataFrame:
    """Twelve regular queries, one text-only, and every awkward input the collector must survive."""
    img = wh.images_dir
    rows = [query_row(i, img) for i in range(12)]
    rows.append(query_row(12, img, image=False))  # text-only: matched by question
    corrupt = query_row(13, img)
    (img / "corrupt-13.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    corrupt["image_path"] = "corrupt-13.png"
    missing = query_row(14, img)
    missing["image_path"] = "missing-14.png"
    escaping = query_row(15, img)
    escaping["image_path"] = "../outside-15.png"
    empty = query_row(16, img, question="   \n\t ")
    huge = query_row(17, img, question="Read every word. " + "lorem ipsum dolor " * 5600)  # ~100k chars
    odd = query_row(
        18, img,
        question="Qu'est-ce qu'il y a? \u202eemoji \U0001f68c\u200d\U0001f525 z\u0301\u0308 {question} {0} "
        + b"caf\xe9 \xff\xfe".decode("utf-8", errors="replace") + " \x00 nul \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    )
    mojibake = query_row(19, img, question="Was ist das? " + "M\u00fcnchen".encode().decode("latin-1"))
    rows += [corrupt, missing, escaping, empty, huge, odd, mojibake]
    assert len(rows[17]["question"]) >= 100_000
    return queries_frame(rows)


def test_every_query_gets_one_row_with_server_numbers(wh: Warehouse, odd_queries: pl.DataFrame) -> None:
    with served(odd_queries) as server:
        df, stats = collect_model(entry(CHART), odd_queries, wh.images_dir, server.url, cfg(), run_id="r1")
        calls = model_calls(server, CHART.name)
    assert df.columns[: len(TRACES)] == list(TRACES)
    assert df["query_id"].to_list() == odd_queries["query_id"].to_list()  # one row each, in query order
    assert df["model_id"].unique().to_list() == [CHART.name] and set(df["run_id"]) == {"r1"}
    by_id = {r["query_id"]: r for r in df.iter_rows(named=True)}
    qs = {r["query_id"]: r for r in odd_queries.iter_rows(named=True)}

    skipped = {qid: r["error"] for qid, r in by_id.items() if r["status"] == "skipped"}
    assert set(skipped) == {"q0013", "q0014", "q0015", "q0016"}
    assert "corrupt-13.png" in skipped["q0013"]
    assert "missing-14.png" in skipped["q0014"]
    assert "outside-15.png" in skipped["q0015"] and "escapes" in skipped["q0015"]
    assert "empty question" in skipped["q0016"]
    assert all(by_id[q]["attempt"] == 0 and by_id[q]["quality"] is None for q in skipped)
    # skipped rows never reach the server; everything else is answered in one call each
    assert stats.calls == calls == len(qs) - len(skipped)
    assert stats.retries == 0 and stats.by_status == {"ok": len(qs) - len(skipped), "skipped": len(skipped)}

    ok = [r for r in by_id.values() if r["status"] == "ok"]
    assert len(ok) == len(qs) - len(skipped)
    for r in ok:
        q = qs[r["query_id"]]
        ans, prompt = expected_reply(CHART, q)
        assert r["prediction"] == ans.text, r["query_id"]
        assert 0.0 <= r["quality"] <= 1.0
        assert r["quality"] == pytest.approx(score_answer(r["prediction"], q["answer"], q["answer_kind"]))
        assert r["correct"] == is_correct(r["quality"], q["answer_kind"])
        if q["answer_kind"] != "text":  # ANLS gives near-misses partial credit; the others must match the sim
            assert r["correct"] == ans.correct, (r["query_id"], r["prediction"], q["answer"])
        assert r["prompt_tokens"] == ans.prompt_tokens and r["completion_tokens"] == ans.completion_tokens
        assert r["cost_usd"] == pytest.approx(
            (ans.prompt_tokens * CHART.price_in_per_mtok + ans.completion_tokens * CHART.price_out_per_mtok) / 1e6
        )
        assert r["latency_ms"] == pytest.approx(ans.total_duration_ns / 1e6)  # reported, not wall time
        assert r["model_digest"] == CHART.digest and r["error"] is None and r["attempt"] == 1
        if q["image_path"]:
            assert CHART.image_tokens <= r["image_tokens"] < r["prompt_tokens"]
        else:
            assert r["image_tokens"] == 0
    # the huge question is sent truncated, so its prompt count is bounded by the cap, not by 100k chars
    huge_prompt = DEFAULT_PROMPT.format(question=qs["q0017"]["question"][:MAX_QUESTION_CHARS])
    assert by_id["q0017"]["prompt_tokens"] <= estimate_text_tokens(huge_prompt) + CHART.image_tokens + 20
    # the answers are not all trivially right or wrong: the score distinguishes them
    assert 0 < sum(r["correct"] for r in ok) < len(ok)


def test_unknown_model_is_a_permanent_error_without_retries(wh: Warehouse) -> None:
    queries = queries_frame([query_row(i, wh.images_dir) for i in range(6)])
    ghost = ModelEntry(model_id="nosuch-vl:2b", backend="ollama", price_in_per_mtok=1.0)
    with served(queries) as server:
        df, stats = collect_model(ghost, queries, wh.images_dir, server.url, cfg(max_retries=3))
        calls = model_calls(server, ghost.model_id)
    assert df.height == 6 and set(df["status"]) == {"error"}
    assert all("not found" in e and "nosuch-vl:2b" in e for e in df["error"])
    assert df["attempt"].to_list() == [1] * 6 and df["quality"].null_count() == 6
    assert stats.retries == 0 and stats.permanent_failures == 6 and not stats.breaker_opened
    assert stats.calls == calls == 6


def test_unreachable_server_gives_error_rows(wh: Warehouse) -> None:
    queries = queries_frame([query_row(i, wh.images_dir) for i in range(3)])
    with served(queries) as server:
        url = server.url
    df, stats = collect_model(entry(NANO), queries, wh.images_dir, url, cfg(max_retries=1))
    assert df.height == 3 and set(df["status"]) == {"error"}
    assert all(e for e in df["error"]) and stats.retries == 3 and stats.calls == 6


def test_on_batch_receives_every_row_once(wh: Warehouse) -> None:
    queries = queries_frame([query_row(i, wh.images_dir) for i in range(11)])
    batches: list[list[str]] = []
    with served(queries) as server:
        df, _ = collect_model(entry(NANO), queries, wh.images_dir, server.url, cfg(batch_size=4),
                              on_batch=lambda rows: batches.append([r["query_id"] for r in rows]))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(q for b in batches for q in b) == sorted(df["query_id"].to_list())


# ------------------------------------------------------------------------------------ collect_partition


@pytest.fixture()
def key20(wh: Warehouse) -> pl.DataFrame:
    return queries_frame([query_row(i, wh.images_dir) for i in range(20)])


def test_partition_replaced_and_rematerialisation_is_idempotent(wh: Warehouse, key20: pl.DataFrame) -> None:
    a, b = key20.head(14), key20.tail(12)  # overlap q0008..q0013
    with served(key20) as server:
        r1 = collect_partition(wh, entry(NANO), a, server.url, cfg(), run_id="r1")
        assert r1.attempted == 14 and model_calls(server, NANO.name) == 14
        first = wh.read_trace_partition(NANO.name)
        assert first["query_id"].to_list() == a["query_id"].to_list()

        path = wh.trace_partition_path(NANO.name)
        mtime = path.stat().st_mtime_ns
        r2 = collect_partition(wh, entry(NANO), a, server.url, cfg(), run_id="r2")
        assert r2.attempted == 0 and model_calls(server, NANO.name) == 14  # no calls
        assert path.stat().st_mtime_ns == mtime  # not even rewritten
        assert wh.read_trace_partition(NANO.name).equals(first) and r2.traces.equals(first)

        # a different query set replaces the partition: only the new pairs are collected, old rows kept
        r3 = collect_partition(wh, entry(NANO), b, server.url, cfg(), run_id="r3")
        assert r3.attempted == 6 and model_calls(server, NANO.name) == 20
    part = wh.read_trace_partition(NANO.name)
    assert part["query_id"].to_list() == b["query_id"].to_list()
    kept = part.filter(pl.col("run_id") == "r1")
    assert kept["query_id"].to_list() == [f"q{i:04d}" for i in range(8, 14)]
    assert kept.equals(first.filter(pl.col("query_id").is_in(kept["query_id"].implode())))
    assert set(part.filter(pl.col("run_id") == "r3")["query_id"]) == {f"q{i:04d}" for i in range(14, 20)}
    assert not (wh.traces_dir / "_staging").exists() or not any((wh.traces_dir / "_staging").rglob("*.parquet"))
    # other models' partitions are untouched
    assert wh.trace_partitions() == [NANO.name]


class Interrupt(RuntimeError):
    pass


def interrupt_after(monkeypatch: pytest.MonkeyPatch, n_batches: int) -> list[list[str]]:
    """Make the checkpoint raise right after writing its n-th batch (a crash mid-run)."""
    seen: list[list[str]] = []
    original = TraceCheckpoint.append

    def append(self: TraceCheckpoint, rows: list[dict]) -> Path:
        path = original(self, rows)
        seen.append([r["query_id"] for r in rows])
        if len(seen) >= n_batches:
            raise Interrupt(f"simulated crash after {len(seen)} batches")
        return path

    monkeypatch.setattr(ckpt_mod.TraceCheckpoint, "append", append)
    return seen


def test_resume_after_interrupted_run_redoes_only_missing_pairs(
    wh: Warehouse, key20: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    with served(key20) as server:
        seen = interrupt_after(monkeypatch, 2)
        with pytest.raises(Interrupt):
            collect_partition(wh, entry(CHART), key20, server.url, cfg(concurrency=2, batch_size=3), run_id="r1")
        monkeypatch.undo()
        assert not wh.trace_partition_path(CHART.name).exists()  # nothing half-written
        staged = TraceCheckpoint(wh, CHART.name).staged()
        assert staged.height == 6 and sorted(staged["query_id"]) == sorted(q for b in seen for q in b)

        before = model_calls(server, CHART.name)
        r2 = collect_partition(wh, entry(CHART), key20, server.url, cfg(), run_id="r2")
        assert r2.resumed_rows == 6 and r2.attempted == 14
        assert model_calls(server, CHART.name) - before == 14  # exactly the missing pairs
    part = wh.read_trace_partition(CHART.name)
    assert part["query_id"].to_list() == key20["query_id"].to_list()  # every pair once, in order
    assert part["query_id"].n_unique() == 20 and set(part["status"]) == {"ok"}
    resumed = part.filter(pl.col("run_id") == "r1").select(sorted(TRACES))
    assert resumed.sort("query_id").equals(staged.select(sorted(TRACES)).sort("query_id"))
    assert TraceCheckpoint(wh, CHART.name).staged().height == 0  # staging cleared


def test_resume_from_staging_written_by_a_partial_collection(wh: Warehouse, key20: pl.DataFrame) -> None:
    with served(key20) as server:
        part_rows, _ = collect_model(entry(NANO), key20.head(7), wh.images_dir, server.url, cfg(), run_id="old")
        TraceCheckpoint(wh, NANO.name).append(part_rows.to_dicts())
        r = collect_partition(wh, entry(NANO), key20, server.url, cfg(), run_id="new")
        assert r.resumed_rows == 7 and r.attempted == 13 and model_calls(server, NANO.name) == 20
        # a crash after the partition was replaced but before staging was cleared leaves duplicates on disk
        TraceCheckpoint(wh, NANO.name).append(r.traces.to_dicts())
        again = collect_partition(wh, entry(NANO), key20, server.url, cfg(), run_id="again")
        assert again.attempted == 0 and model_calls(server, NANO.name) == 20
    part = wh.read_trace_partition(NANO.name)
    assert part.height == 20 and part["query_id"].n_unique() == 20
    assert part.filter(pl.col("run_id") == "old")["query_id"].to_list() == key20["query_id"].head(7).to_list()
    assert part.equals(r.traces)


def test_failed_pairs_are_retried_on_the_next_run_unless_told_not_to(wh: Warehouse, key20: pl.DataFrame) -> None:
    from collectors.simulator.faults import FaultConfig

    q = key20.head(8)
    with served(key20, faults=FaultConfig(down_models={NANO.name})) as server:
        r1 = collect_partition(wh, entry(NANO), q, server.url, cfg(max_retries=0, breaker_threshold=100))
        assert set(r1.traces["status"]) == {"error"} and r1.traces["attempt"].to_list() == [1] * 8
        server.set_faults(None)
        kept = collect_partition(wh, entry(NANO), q, server.url, cfg(), retry_failed=False)
        assert kept.attempted == 0 and set(kept.traces["status"]) == {"error"}
        r2 = collect_partition(wh, entry(NANO), q, server.url, cfg())
        assert r2.attempted == 8
    part = wh.read_trace_partition(NANO.name)
    assert set(part["status"]) == {"ok"} and part.height == 8
    assert part["attempt"].to_list() == [2] * 8  # attempts accumulate across runs


def test_calibration_first_ordering_is_honoured(
    wh: Warehouse, key20: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ["q0017", "q0003", "q0011", "q0000", "not-a-query", "q0019"]
    order: list[str] = []
    original = TraceCheckpoint.append

    def append(self: TraceCheckpoint, rows: list[dict]) -> Path:
        order.extend(r["query_id"] for r in rows)
        return original(self, rows)

    monkeypatch.setattr(ckpt_mod.TraceCheckpoint, "append", append)
    with served(key20) as server:
        r = collect_partition(wh, entry(NANO), key20, server.url, cfg(concurrency=1, batch_size=1), first=first)
    wanted = [q for q in first if q.startswith("q")]
    rest = [q for q in key20["query_id"].to_list() if q not in wanted]
    assert order == wanted + rest  # one at a time, so completion order is call order
    assert r.traces["query_id"].to_list() == key20["query_id"].to_list()  # the table keeps query order


def test_interrupted_calibration_first_run_has_the_calibration_rows(
    wh: Warehouse, key20: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    calib = [f"q{i:04d}" for i in (19, 15, 11, 7, 3, 1, 2, 5)]
    with served(key20) as server:
        interrupt_after(monkeypatch, 2)
        with pytest.raises(Interrupt):
            collect_partition(wh, entry(CHART), key20, server.url, cfg(concurrency=1, batch_size=4), first=calib)
    assert sorted(TraceCheckpoint(wh, CHART.name).staged()["query_id"]) == sorted(calib)


def test_collect_is_deterministic_across_runs(wh: Warehouse, key20: pl.DataFrame) -> None:
    cols = ["query_id", "prediction", "quality", "prompt_tokens", "completion_tokens", "cost_usd", "latency_ms"]
    outs = []
    for conc in (1, 6):
        with served(key20) as server:
            df, _ = collect_model(entry(CHART), key20, wh.images_dir, server.url, cfg(concurrency=conc))
        outs.append(df.select(cols))
    assert outs[0].equals(outs[1])
    assert not math.isnan(outs[0]["quality"].mean())
