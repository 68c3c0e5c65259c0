"""Helpers every task-group sampler shares: difficulty levels, the common background / ink / noise knobs,
number formatting, rotation-safe content size and plausible distractors.

Distractors are checked with the project's scorers, so a distractor is always scored wrong.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from collectors.benchmark.spec import INKS, MAX_BLUR, MAX_SIDE, Params
from collectors.scoring import anls, extract_number, normalise_text


def draw_level(rng: np.random.Generator, p_zero: float) -> float:
    """A difficulty level: 0 with probability ``p_zero``, else uniform in (0, 1]."""
    return 0.0 if rng.random() < p_zero else round(float(rng.uniform(0.05, 1.0)), 3)


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """One element of ``seq``, drawn with a single integer draw."""
    return seq[int(rng.integers(len(seq)))]


def fmt_num(v: float) -> str:
    """Numbers as a person writes them: 84, 17.5, -3 (no trailing zeros)."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _light_bg(rng: np.random.Generator) -> list[int]:
    base = int(rng.integers(228, 256))
    return [int(min(255, max(215, base + rng.integers(-12, 6)))) for _ in range(3)]


def common_params(rng: np.random.Generator, group: str, max_angle: float, max_wash: float) -> Params:
    """Background, ink and the post-processing knobs shared by every group."""
    angle_level = draw_level(rng, 0.45)
    u = draw_level(rng, 0.35)
    return {
        "group": group,
        "bg": _light_bg(rng),
        "ink": [int(c) + int(rng.integers(0, 20)) for c in pick(rng, INKS)],
        "angle": round(float(angle_level * max_angle * (1 if rng.random() < 0.5 else -1)), 2),
        "wash": round(draw_level(rng, 0.45) * max_wash, 3),
        "noise": u,
        "blur": round(MAX_BLUR * u, 3) if (u > 0 and rng.random() < 0.4) else 0.0,
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def content_limit(angle: float) -> int:
    """Largest content side that still fits MAX_SIDE once rotated by ``angle`` with expansion."""
    a = math.radians(abs(angle))
    return int(MAX_SIDE / (math.cos(a) + math.sin(a))) - 2  # PIL rounds the expanded size up


def _is_wrong(cand: str, answer: str, kind: str) -> bool:
    """True when ``cand`` is scored wrong against ``answer`` (numeric: more than 6% off, so the simulator
    also treats it as wrong; text: ANLS 0)."""
    if not cand.strip() or normalise_text(cand) == normalise_text(answer):
        return False
    if kind == "numeric":
        a, c = extract_number(answer), extract_number(cand)
        if a is None or c is None:
            return False
        return abs(c - a) > max(0.06 * abs(a), 0.5)
    if kind == "text":
        return anls(cand, answer) == 0.0
    return True


def distractors(
    cands: Sequence[str], answer: str, kind: str, fallback: Callable[[int], str], rng: np.random.Generator
) -> list[str]:
    """2-4 distinct plausible wrong answers (candidates first, then ``fallback(i)``)."""
    out: list[str] = []
    seen = {normalise_text(answer)}
    for c in itertools.chain(cands, (fallback(i) for i in range(40))):  # fallbacks only when needed
        c = str(c)
        if _is_wrong(c, answer, kind) and normalise_text(c) not in seen:
            out.append(c)
            seen.add(normalise_text(c))
        if len(out) == 4:
            break
    k = int(rng.integers(2, 5))
    if len(out) < 2:
        raise RuntimeError(f"could not find two distractors for answer {answer!r} ({kind})")
    return out[: max(2, min(k, len(out)))]


def numeric_fallback(value: float, rng: np.random.Generator) -> Callable[[int], str]:
    """Numbers near ``value`` to draw distractors from when the scene offers too few."""

    def f(i: int) -> str:
        if float(value).is_integer():
            step = max(1, round(abs(value) * float(rng.uniform(0.1, 0.4))))
            return fmt_num(value + step * (1 if i % 2 == 0 else -1) * (1 + i // 2))
        return fmt_num(round(value * float(rng.uniform(1.1, 1.6)) if i % 2 == 0 else value * 0.75, 2))

    return f


def choice_question(stem: str, options: Sequence[str]) -> str:
    """``stem`` followed by lettered options, the form the choice scorer expects."""
    return stem + "\n" + "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))


def letter_distractors(n_options: int, answer: str) -> list[str]:
    """Every option letter but the correct one."""
    return [chr(65 + i) for i in range(n_options) if chr(65 + i) != answer]
