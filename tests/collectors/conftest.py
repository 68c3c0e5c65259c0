"""Fixtures of the simulator tests: the answer key (rendered images with known hidden factors) and a server."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from collectors.simulator.server import SimServer
from tests.collectors.sim_support import _meta, _png


@pytest.fixture(scope="module")
def key() -> tuple[pl.DataFrame, dict[str, bytes]]:
    imgs = {n: _png(n, i) for i, n in enumerate(["ocr", "chart", "math", "general", "shared", "ocr2"])}
    sha = {n: hashlib.sha256(b).hexdigest() for n, b in imgs.items()}
    rows = [
        (
            "q-ocr",
            "ocr",
            "What word is printed?",
            "HELLO",
            "exact",
            sha["ocr"],
            _meta({"small_text": 0.7, "low_contrast": 0.4}, ["HELL0", "JELLO"]),
        ),
        (
            "q-chart",
            "chart",
            "Which bar is tallest?",
            "B",
            "choice",
            sha["chart"],
            _meta({"density": 0.6}, ["A", "C"], ["apples", "pears", "plums"]),
        ),
        (
            "q-math",
            "math",
            "What is the value of x?",
            "42",
            "numeric",
            sha["math"],
            _meta({"noise": 0.3}, ["24", "40"]),
        ),
        (
            "q-gen",
            "general",
            "What is shown?",
            "a red bus",
            "text",
            sha["general"],
            _meta({"rotation": 0.2}, ["a blue car", "a train"]),
        ),
        (
            "q-shared-1",
            "chart",
            "What is the value of the first bar?",
            "17",
            "numeric",
            sha["shared"],
            _meta({"density": 0.2}, ["71", "12"]),
        ),
        (
            "q-shared-2",
            "chart",
            "How many bars are there?",
            "5",
            "numeric",
            sha["shared"],
            _meta({"density": 0.2}, ["6", "4"]),
        ),
        (
            "q-ocr2",
            "ocr",
            "Read the sign.",
            "EXIT",
            "exact",
            sha["ocr2"],
            _meta({"rotation": 0.9, "noise": 0.5}, ["EXTT", "EDIT"]),
        ),
        ("q-text", "math", "What is six times seven?", "42", "numeric", "", _meta({}, ["48", "36"])),
    ]
    cols = ["query_id", "task_group", "question", "answer", "answer_kind", "image_sha256", "source_meta"]
    df = pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])
    df = df.with_columns(
        benchmark=pl.lit("test"),
        dataset=pl.lit("test"),
        task=pl.col("task_group"),
        image_path=pl.lit(""),
        official_split=pl.lit(""),
    )
    return df, imgs


@pytest.fixture(scope="module")
def server(key):
    df, _ = key
    with SimServer(df, time_scale=0.0, seed=3) as srv:
        yield srv
