"""The simulated pool's test answer key (rendered images, hidden factors), and small helpers (the key and server
fixtures are in conftest.py), shared by test_sim_server.py and test_sim_faults.py."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from collectors.simulator import specs

CLEAN = dict.fromkeys(specs.VISUAL_FACTORS, 0.0)


def _png(text: str, seed: int, size: tuple[int, int] = (120, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    d.text((4, 4), text, fill="black")
    for _ in range(20):  # a little seeded noise so every image has distinct bytes
        d.point((int(rng.integers(size[0])), int(rng.integers(size[1]))), fill="gray")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _meta(visual: dict[str, float], distractors: list[str], options: list[str] | None = None) -> str:
    m: dict[str, object] = {"visual": {**CLEAN, **visual}, "distractors": distractors}
    if options:
        m["options"] = options
    return json.dumps(m)


def _row(df: pl.DataFrame, qid: str) -> dict:
    return df.filter(pl.col("query_id") == qid).row(0, named=True)


def _final(text: str) -> str:
    """The answer a scorer would extract from a simulated reply."""
    m = re.search(r"(?:answer is|Answer:)\s*(.+?)\.?$", text)
    core = (m.group(1) if m else text).strip().rstrip(".")
    letter = re.match(r"^([A-Z])\. ", core)
    return letter.group(1) if letter else core
