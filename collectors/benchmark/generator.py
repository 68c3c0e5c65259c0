"""The built-in benchmark: seeded, rendered image+question queries whose ground truth is exact.

Why it is built this way:
- every query is sampled as a JSON-serialisable *scene description* (``params``) first and rendered from
  that description alone (`render_image`), so the answer is derived from the same data that drew the pixels
  (counted shapes, table sums, bar values, rendered text) and tests can re-render and re-derive both;
- query ``i`` depends only on ``(seed, i)``: the same seed gives byte-identical PNGs and an identical table,
  and ``n=40`` is the first 40 rows of ``n=2000``;
- the five hidden difficulty factors in ``source_meta["visual"]`` (read by the simulated model pool) are
  computed from the rendering parameters (`visual_from_params`): a larger ``small_text`` means smaller
  rendered text, ``noise`` more speckle / blur, ``rotation`` a larger angle, ``density`` more elements,
  ``low_contrast`` fainter ink; so a frozen image encoder can, in principle, see them;
- charts, tables and shapes are drawn with PIL (fast), text with the TTF fonts matplotlib ships.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from collectors.scoring import anls, extract_number, normalise_text
from warehouse.schemas import QUERIES, conform
from warehouse.store import atomic_write_bytes

GENERATOR_VERSION = "1"
TASK_GROUPS: tuple[str, ...] = ("ocr", "chart", "math", "general")
VISUAL_FACTORS: tuple[str, ...] = ("small_text", "noise", "rotation", "density", "low_contrast")
DATASETS: dict[str, str] = {g: f"synth-{g}" for g in TASK_GROUPS}
MIN_SIDE, MAX_SIDE = 224, 448
MAX_ROTATION_DEG = 30.0  # rotation factor = |angle| / MAX_ROTATION_DEG
TEXT_PX_RANGE = (9, 30)  # small_text: 1 at 9 px glyph size, 0 at 30 px and above
SHAPE_PX_RANGE = (8, 30)  # small_text of shape scenes: mean shape radius
MAX_SPECKLE = 0.04  # share of pixels replaced by speckle at noise level 1
MAX_BLUR = 0.9  # Gaussian blur radius at noise level 1 (when blur is on)

FONTS: tuple[str, ...] = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
)

WORDS: tuple[str, ...] = tuple(
    """harbor window garden silver market rocket planet castle bridge forest candle pencil basket mirror
    button ladder tunnel island meadow jacket helmet pepper violin anchor dragon falcon ginger hammer kettle
    lantern marble napkin parrot quartz ribbon saddle temple velvet walnut yogurt zipper copper desert engine
    fabric glacier harvest insect jungle kitten lemon magnet needle oyster puzzle quiver river sunset tiger
    umbrella valley wizard cat map sky fox jam owl pen sun cup bus key ice oak elk ink fig gem hat jar kit
    log mug net pot rug tea van web yak zoo cloud stone piano trail honey storm cabin spoon""".split()
)
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no O/0, I/1/l look-alikes
CATEGORY_SETS: tuple[tuple[str, ...], ...] = (
    tuple("ABCDEFGHIJKL"),
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    ("Oslo", "Rome", "Lima", "Kyiv", "Pune", "Nice", "Bonn", "Cork", "Agra", "Baku", "Doha", "Kobe"),
    ("Tea", "Jam", "Oil", "Rice", "Corn", "Milk", "Salt", "Figs", "Nuts", "Eggs", "Soap", "Wax"),
)
PIE_NAMES: tuple[str, ...] = (
    "Rent",
    "Food",
    "Travel",
    "Bills",
    "Games",
    "Books",
    "Gifts",
    "Health",
    "Sport",
    "Music",
)
CHART_TITLES: tuple[str, ...] = (
    "Sales by region",
    "Visitors per day",
    "Monthly output",
    "Survey results",
    "Units sold",
    "Orders",
    "Budget share",
    "Energy use",
)
TABLE_COLS: tuple[str, ...] = ("Apples", "Pears", "Plums", "Figs", "Limes", "Kiwis")
TABLE_ROWS: tuple[str, ...] = ("Ana", "Ben", "Cleo", "Dev", "Eva", "Finn", "Gus", "Hana", "Ivo", "Jade")
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star")
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (38, 94, 214),
    "yellow": (240, 200, 20),
    "orange": (245, 130, 20),
    "purple": (128, 60, 170),
    "brown": (125, 80, 40),
}
CHART_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
INKS: tuple[tuple[int, int, int], ...] = (
    (15, 15, 15),
    (30, 30, 90),
    (90, 20, 20),
    (20, 70, 30),
    (60, 60, 60),
)
SPATIAL_OPTIONS: tuple[str, ...] = ("left of", "right of", "above", "below")

Params = dict[str, Any]


@dataclass
class BenchmarkItem:
    """One sampled query before rendering: question, exact answer and the scene that shows it."""

    task_group: str
    task: str
    question: str
    answer: str
    answer_kind: str
    params: Params
    distractors: list[str]
    options: list[str] | None = None
    visual: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ fonts


@functools.lru_cache(maxsize=1)
def font_dir() -> Path:
    """Folder of the TTF fonts bundled with matplotlib (always installed here, so no download)."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    if not path.is_dir():
        raise FileNotFoundError(f"matplotlib font folder {path} is missing")
    return path


@functools.lru_cache(maxsize=1024)
def get_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = font_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"font {name!r} not found in {font_dir()}")
    return ImageFont.truetype(str(path), int(size))


@functools.lru_cache(maxsize=65536)
def text_box(text: str, font: str, size: int) -> tuple[int, int, int, int]:
    """Ink bounding box (left, top, right, bottom) of ``text`` drawn at the origin."""
    return tuple(int(v) for v in get_font(font, size).getbbox(text))  # type: ignore[return-value]


def text_wh(text: str, font: str, size: int) -> tuple[int, int]:
    x0, y0, x1, y1 = text_box(text, font, size)
    return x1 - x0, y1 - y0


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: str,
    size: int,
    fill: Sequence[int],
    align: str = "lt",
) -> tuple[int, int, int, int]:
    """Draw ``text`` so its INK box is anchored at ``xy`` ("lt" top-left, "ct" top-centre, "cc" centre,
    "rc" right-centre, "lc" left-centre, "cb" bottom-centre); returns the ink box drawn."""
    left, top, right, bottom = text_box(text, font, size)
    w, h = right - left, bottom - top
    x, y = xy
    dx = {"l": 0.0, "c": w / 2, "r": float(w)}[align[0]]
    dy = {"t": 0.0, "c": h / 2, "b": float(h)}[align[1]]
    x0, y0 = round(x - dx), round(y - dy)
    draw.text((x0 - left, y0 - top), text, font=get_font(font, size), fill=tuple(fill))
    return x0, y0, x0 + w, y0 + h


# ---------------------------------------------------------------------------------------------- factors


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _lum(c: Sequence[int]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _text_small(px: float) -> float:
    lo, hi = TEXT_PX_RANGE
    return _clip01((hi - px) / (hi - lo))


def visual_from_params(params: Params) -> dict[str, float]:
    """The five normalised difficulty factors of a scene, from its rendering parameters."""
    g = params["group"]
    angle = abs(float(params.get("angle", 0.0)))
    wash = float(params.get("wash", 0.0))
    u = float(params.get("noise", 0.0))
    noise = u * (0.85 + (0.15 if float(params.get("blur", 0.0)) > 0 else 0.0))
    if g == "general":
        shapes = params["shapes"]
        lo, hi = SHAPE_PX_RANGE
        small = _clip01((hi - float(params["obj_size"])) / (hi - lo))
        density = _clip01(0.8 * (len(shapes) - 3) / 21 + 0.2 * float(params["occlusion"]))
        contrast = float(np.mean([abs(_lum(params["bg"]) - _lum(s["rgb"])) for s in shapes])) / 255
        low_contrast = _clip01((0.6 - contrast * (1 - wash)) / 0.4)
    else:
        if g == "ocr":
            size = params["target"]["size_px"]
            density = len(params["others"]) / 6
        elif g == "chart":
            size = params["size_px"]
            n, (lo, hi) = (
                len(params["values"]),
                {"bar": (3, 12), "line": (4, 12), "pie": (3, 8)}[params["chart"]],
            )
            density = (n - lo) / (hi - lo)
        elif g == "math":
            size = params["size_px"]
            if params["figure"] == "table":
                cells = len(params["table"]) * len(params["table"][0])
                density = (cells - 6) / (40 - 6)
            else:
                density = len(params["extras"]) / 3
        else:
            raise ValueError(f"params: unknown group {g!r}; expected one of {', '.join(TASK_GROUPS)}")
        small = _text_small(size)
        contrast = (_lum(params["bg"]) - _lum(params["ink"])) / 255 * (1 - wash)
        low_contrast = _clip01((0.9 - contrast) / 0.7)
        density = _clip01(density)
    vis = {
        "small_text": small,
        "noise": _clip01(noise),
        "rotation": _clip01(angle / MAX_ROTATION_DEG),
        "density": density,
        "low_contrast": low_contrast,
    }
    return {k: round(v, 4) for k, v in vis.items()}


def visual_factors(meta_json: str | dict, default: float | None = None) -> dict[str, float]:
    """The five visual factors stored in a ``source_meta`` JSON string.

    Missing factors raise ValueError unless ``default`` is given (imported benchmarks may have none).
    """
    try:
        meta = json.loads(meta_json) if isinstance(meta_json, str) else dict(meta_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"source_meta: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"source_meta: expected a JSON object, got {type(meta).__name__}")
    vis = meta.get("visual") or {}
    if not isinstance(vis, dict):
        raise ValueError(f"source_meta.visual: expected an object, got {type(vis).__name__}")
    out: dict[str, float] = {}
    for k in VISUAL_FACTORS:
        if k not in vis:
            if default is None:
                raise ValueError(f"source_meta.visual: factor {k!r} missing (have {sorted(vis)})")
            out[k] = float(default)
            continue
        try:
            v = float(vis[k])
        except (TypeError, ValueError):
            raise ValueError(f"source_meta.visual: factor {k!r} is not a number: {vis[k]!r}") from None
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"source_meta.visual: factor {k!r} = {v} outside [0, 1]")
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------- helpers


def _level(rng: np.random.Generator, p_zero: float) -> float:
    """A difficulty level: 0 with probability ``p_zero``, else uniform in (0, 1]."""
    return 0.0 if rng.random() < p_zero else round(float(rng.uniform(0.05, 1.0)), 3)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _fmt_num(v: float) -> str:
    """Numbers as a person writes them: 84, 17.5, -3 (no trailing zeros)."""
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.4f}".rstrip("0").rstrip(".")


def _light_bg(rng: np.random.Generator) -> list[int]:
    base = int(rng.integers(228, 256))
    return [int(min(255, max(215, base + rng.integers(-12, 6)))) for _ in range(3)]


def _common(rng: np.random.Generator, group: str, max_angle: float, max_wash: float) -> Params:
    """Background, ink and the post-processing knobs shared by every group."""
    angle_level = _level(rng, 0.45)
    u = _level(rng, 0.35)
    return {
        "group": group,
        "bg": _light_bg(rng),
        "ink": [int(c) + int(rng.integers(0, 20)) for c in _pick(rng, INKS)],
        "angle": round(float(angle_level * max_angle * (1 if rng.random() < 0.5 else -1)), 2),
        "wash": round(_level(rng, 0.45) * max_wash, 3),
        "noise": u,
        "blur": round(MAX_BLUR * u, 3) if (u > 0 and rng.random() < 0.4) else 0.0,
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def _content_limit(angle: float) -> int:
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


def _distractors(
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


def _numeric_fallback(value: float, rng: np.random.Generator) -> Callable[[int], str]:
    def f(i: int) -> str:
        if float(value).is_integer():
            step = max(1, round(abs(value) * float(rng.uniform(0.1, 0.4))))
            return _fmt_num(value + step * (1 if i % 2 == 0 else -1) * (1 + i // 2))
        return _fmt_num(round(value * float(rng.uniform(1.1, 1.6)) if i % 2 == 0 else value * 0.75, 2))

    return f


# OCR-style look-alikes used to misread one character
_CONFUSE: dict[str, str] = dict(
    pair.split(":")
    for pair in (
        "o:0 0:8 l:1 1:7 i:l s:5 5:6 b:8 8:3 e:c c:e a:o n:h h:b "
        "m:n u:v v:y g:q 2:Z r:n t:f 3:8 4:9 6:5 7:1 9:4 z:2"
    ).split()
)


def _text_edit(text: str, rng: np.random.Generator) -> str:
    """A one-character OCR-style misreading of ``text`` (substitution, swap or drop)."""
    chars = list(text)
    idx = [i for i, ch in enumerate(chars) if ch.isalnum()]
    if not idx:
        return text + "x"
    i = int(_pick(rng, idx))
    op = rng.random()
    ch = chars[i]
    if op < 0.6:
        low = ch.lower()
        rep = _CONFUSE.get(
            low, chr((ord(low) - 97 + 1) % 26 + 97) if low.isalpha() else str((int(ch) + 1) % 10)
        )
        chars[i] = rep.upper() if ch.isupper() else rep
    elif op < 0.8 and i + 1 < len(chars) and chars[i + 1] != ch and chars[i + 1].isalnum():
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    elif len(idx) > 2:
        del chars[i]
    else:
        chars.insert(i, ch)
    return "".join(chars)


def _line_variant(text: str, rng: np.random.Generator) -> str:
    """Another line of the same shape: every word but (for long lines) the first replaced."""
    words = text.split()
    out = [w if (i == 0 and len(words) > 3) else str(_pick(rng, WORDS)) for i, w in enumerate(words)]
    line = " ".join(out)
    return line.capitalize() if text[:1].isupper() else line


def _choice_question(stem: str, options: Sequence[str]) -> str:
    return stem + "\n" + "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))


def _letter_distractors(n_options: int, answer: str) -> list[str]:
    return [chr(65 + i) for i in range(n_options) if chr(65 + i) != answer]


# ------------------------------------------------------------------------------------------------- OCR

_OCR_STYLES = {
    "ocr_word": (
        "box",
        [
            "What word is written in the box?",
            "Which word appears inside the framed box?",
            "Read the word inside the rectangle.",
        ],
    ),
    "ocr_number": (
        "sign",
        [
            "What is the number on the sign?",
            "Which number is shown on the sign?",
            "Read the number printed on the sign.",
        ],
    ),
    "ocr_line": (
        "label",
        [
            "What does the text on the label say?",
            "Transcribe the text on the label.",
            "Which words are printed on the label?",
        ],
    ),
    "ocr_code": (
        "ticket",
        ["What code is written in the double-bordered box?", "Read the code inside the double-bordered box."],
    ),
}
_SIGN_FILLS = ((255, 226, 120), (200, 228, 255), (205, 240, 200), (255, 210, 200))


def _patch_pad(size: int) -> int:
    return max(4, size // 3 + 2)


def text_patch(
    text: str, font: str, size: int, ink: Sequence[int], style: str, fill: Sequence[int], angle: float
) -> Image.Image:
    """An RGBA patch with ``text`` in its frame style (plain | box | sign | label | ticket), rotated."""
    w, h = text_wh(text, font, size)
    pad = 0 if style == "plain" else _patch_pad(size)
    pw, ph = w + 2 * pad + 2, h + 2 * pad + 2
    patch = Image.new("RGBA", (pw, ph), (*ink, 0))
    d = ImageDraw.Draw(patch)
    line = max(1, size // 12)
    if style == "box":
        d.rectangle((0, 0, pw - 1, ph - 1), outline=(*ink, 255), width=line + 1)
    elif style == "sign":
        d.rounded_rectangle(
            (0, 0, pw - 1, ph - 1), radius=max(3, pad), fill=(*fill, 255), outline=(*ink, 255), width=line + 1
        )
    elif style == "label":
        d.rectangle((0, 0, pw - 1, ph - 1), fill=(*fill, 255), outline=(*ink, 255), width=line)
    elif style == "ticket":
        d.rectangle((0, 0, pw - 1, ph - 1), outline=(*ink, 255), width=line)
        g = max(2, pad // 2)
        d.rectangle((g, g, pw - 1 - g, ph - 1 - g), outline=(*ink, 255), width=line)
    elif style != "plain":
        raise ValueError(f"text patch: unknown style {style!r}")
    _draw_text(d, (pad + 1, pad + 1), text, font, size, (*ink, 255))
    if angle:
        patch = patch.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(*ink, 0))
    return patch


def _free(rect: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]], gap: int = 4) -> bool:
    x0, y0, x1, y1 = rect
    return all(
        x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0 for a0, b0, a1, b1 in placed
    )


def _ocr_text(task: str, rng: np.random.Generator) -> str:
    if task == "ocr_word":
        w = str(_pick(rng, WORDS))
        return (w, w.capitalize(), w.upper())[int(rng.integers(3))]
    if task == "ocr_number":
        if rng.random() < 0.2:
            return f"{int(rng.integers(1, 1000))}.{int(rng.integers(0, 100)):02d}"
        return str(int(rng.integers(10 ** int(rng.integers(1, 4)), 10 ** int(rng.integers(4, 7)))))
    if task == "ocr_line":
        words = [str(_pick(rng, WORDS)) for _ in range(int(rng.integers(2, 5)))]
        line = " ".join(words)
        return line.capitalize() if rng.random() < 0.5 else line
    a = "".join(_pick(rng, CODE_ALPHABET) for _ in range(int(rng.integers(2, 4))))
    b = "".join(_pick(rng, CODE_ALPHABET) for _ in range(int(rng.integers(2, 4))))
    return f"{a}-{b}"


def _sample_ocr(rng: np.random.Generator) -> BenchmarkItem:
    task = str(rng.choice(list(_OCR_STYLES), p=[0.35, 0.25, 0.2, 0.2]))
    style, questions = _OCR_STYLES[task]
    p = _common(rng, "ocr", MAX_ROTATION_DEG, 0.7)
    text = _ocr_text(task, rng)
    font = str(_pick(rng, FONTS))
    size = int(rng.integers(TEXT_PX_RANGE[0], TEXT_PX_RANGE[1] + 1))
    fill = list(_pick(rng, _SIGN_FILLS)) if style == "sign" else [252, 252, 248]
    W, H = int(rng.integers(MIN_SIDE, MAX_SIDE + 1)), int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    while True:  # shrink the text until the rotated patch fits in the largest canvas
        patch = text_patch(text, font, size, p["ink"], style, fill, p["angle"])
        if patch.width <= MAX_SIDE - 8 and patch.height <= MAX_SIDE - 8:
            break
        size -= 1
    W, H = max(W, patch.width + 8), max(H, patch.height + 8)
    x = int(rng.integers(4, W - patch.width - 3))
    y = int(rng.integers(4, H - patch.height - 3))
    placed = [(x, y, x + patch.width, y + patch.height)]
    others: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(0, 7))):
        otext = _ocr_text("ocr_number" if task == "ocr_number" and rng.random() < 0.5 else "ocr_word", rng)
        if otext.casefold() == text.casefold():
            continue
        ofont, osize = str(_pick(rng, FONTS)), int(rng.integers(9, 25))
        ow, oh = text_wh(otext, ofont, osize)
        for _try in range(30):
            if W - ow - 4 <= 4 or H - oh - 4 <= 4:
                break
            ox, oy = int(rng.integers(4, W - ow - 4)), int(rng.integers(4, H - oh - 4))
            if _free((ox, oy, ox + ow, oy + oh), placed):
                placed.append((ox, oy, ox + ow, oy + oh))
                others.append(
                    {
                        "text": otext,
                        "font": ofont,
                        "size_px": osize,
                        "xy": [ox, oy],
                        "rgb": [int(c) for c in _pick(rng, INKS)],
                    }
                )
                break
    p.update(
        width=W,
        height=H,
        task=task,
        target={"text": text, "font": font, "size_px": size, "style": style, "fill": fill, "xy": [x, y]},
        others=others,
    )
    kind = "text" if task == "ocr_line" else "exact"
    scene_words = (
        [o["text"] for o in others if o["text"].isdigit() == text.isdigit()] if task != "ocr_code" else []
    )
    if kind == "text":  # a misread line must still score ANLS 0, so most of its words differ
        cands = [_line_variant(text, rng) for _ in range(3)]
        if len(scene_words) >= 2:
            cands.insert(1, " ".join(scene_words[:4]))
        fallback = lambda i: _line_variant(text, np.random.default_rng(i))  # noqa: E731
    else:
        cands = [_text_edit(text, rng) for _ in range(2)] + scene_words[:2] + [_text_edit(text, rng)]
        fallback = lambda i: _text_edit(text, np.random.default_rng(i))  # noqa: E731
    dis = _distractors(cands, text, kind, fallback, rng)
    return BenchmarkItem("ocr", task, str(_pick(rng, questions)), text, kind, p, dis)


def _render_ocr(p: Params) -> Image.Image:
    img = Image.new("RGB", (p["width"], p["height"]), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    for o in p["others"]:
        _draw_text(d, tuple(o["xy"]), o["text"], o["font"], o["size_px"], o["rgb"])
    t = p["target"]
    patch = text_patch(t["text"], t["font"], t["size_px"], p["ink"], t["style"], t["fill"], p["angle"])
    img.paste(patch, tuple(t["xy"]), patch)
    return img


# ----------------------------------------------------------------------------------------------- charts


def _nice_axis(rng: np.random.Generator) -> tuple[int, int]:
    step = int(_pick(rng, (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500)))
    return step, int(rng.integers(4, 9))


def axes_layout(p: Params) -> dict[str, Any]:
    """Plot box and category centres of a bar / line chart (shared by sampler, renderer and tests)."""
    W, H, font, size = p["width"], p["height"], p["font"], p["size_px"]
    ticks = [_fmt_num(k * p["y_step"]) for k in range(p["n_ticks"] + 1)]
    tick_w = max(text_wh(t, font, size)[0] for t in ticks)
    line_h = text_wh("Ag08", font, size)[1]
    left = 8 + tick_w + 6
    top = (
        8
        + (text_wh(p["title"], font, size + 2)[1] + 8 if p["title"] else 0)
        + (line_h + 6 if p["annotate"] else 0)
    )
    bottom = 8 + line_h + 8
    x0, y0, x1, y1 = left, top, W - 12, H - bottom  # y1 is the x axis (value 0)
    n = len(p["values"])
    slot = (x1 - x0) / n
    centres = [x0 + slot * (i + 0.5) for i in range(n)]
    need = (
        max(
            max(text_wh(c, font, size)[0] for c in p["categories"]),
            max(text_wh(_fmt_num(v), font, size)[0] for v in p["values"]) if p["annotate"] else 0,
        )
        + 6
    )
    return {
        "plot": (x0, y0, x1, y1),
        "slot": slot,
        "centres": centres,
        "fits": slot >= need and y1 - y0 >= 90,
        "y_max": p["y_step"] * p["n_ticks"],
        "line_h": line_h,
    }


def value_y(layout: dict[str, Any], v: float) -> int:
    x0, y0, x1, y1 = layout["plot"]
    return int(round(y1 - v / layout["y_max"] * (y1 - y0)))


def pie_layout(p: Params) -> dict[str, Any]:
    font, size = p["font"], p["size_px"]
    entries = pie_legend(p)
    sw = max(8, size)
    lw = max(text_wh(e, font, size)[0] for e in entries) + sw + 8
    lh = max(text_wh("Ag08%", font, size)[1], sw) + 6
    r = p["radius"]
    title_h = text_wh(p["title"], font, size + 2)[1] + 10 if p["title"] else 0
    cx, cy = 12 + r, 10 + title_h + max(r, (lh * len(entries)) // 2)
    legend_xy = (cx + r + 16, cy - (lh * len(entries)) // 2)
    W = legend_xy[0] + lw + 10
    H = max(cy + r + 12, legend_xy[1] + lh * len(entries) + 10)
    return {
        "centre": (cx, cy),
        "legend_xy": legend_xy,
        "row_h": lh,
        "swatch": sw,
        "entries": entries,
        "min_size": (W, H),
        "title_h": title_h,
    }


def pie_legend(p: Params) -> list[str]:
    if p["pie_labels"] == "legend":
        return [f"{c} ({v}%)" for c, v in zip(p["categories"], p["values"], strict=True)]
    return list(p["categories"])


def extreme_margin(p: Params) -> float:
    """How much the largest (smallest) element must stand out for a "which is largest" question."""
    if p["chart"] == "pie":
        return 4.0
    return float(max(p["y_step"], 0.08 * p["y_step"] * p["n_ticks"]))


def _unique_extreme(values: list[int], margin: float, largest: bool) -> bool:
    s = sorted(values, reverse=largest)
    return abs(s[0] - s[1]) >= margin


def _sample_chart(rng: np.random.Generator) -> BenchmarkItem:
    chart = str(_pick(rng, ("bar", "bar", "line", "pie")))
    ask = "value" if rng.random() < 0.5 else "extreme"
    angle_max = 10.0
    p = _common(rng, "chart", angle_max, 0.7)
    limit = _content_limit(p["angle"])
    font = str(_pick(rng, FONTS[:9]))
    size = int(rng.integers(TEXT_PX_RANGE[0], 23))
    title = str(_pick(rng, CHART_TITLES)) if rng.random() < 0.5 else ""
    p.update(chart=chart, font=font, title=title)
    largest = rng.random() < 0.6
    if chart == "pie":
        n = int(rng.integers(3, 9))
        names = list(rng.permutation(PIE_NAMES)[:n])
        jitter = bool(rng.random() < 0.5)
        while True:
            cuts = np.sort(rng.choice(np.arange(1, 20), size=n - 1, replace=False))
            vals = [int(v) * 5 for v in np.diff(np.concatenate([[0], cuts, [20]]))]
            if jitter:
                vals = _jitter_percentages(vals, rng)
            if ask == "value" or _unique_extreme(vals, extreme_margin({"chart": "pie"}), largest):
                break
        labels = "slices" if min(vals) >= 8 and rng.random() < 0.5 else "legend"
        p.update(
            categories=[str(c) for c in names],
            values=vals,
            pie_labels=labels,
            colors=[list(c) for c in rng.permutation(np.array(CHART_PALETTE))[:n].tolist()],
        )
        for _ in range(40):
            p.update(size_px=size, radius=int(rng.integers(60, 150)))
            lay = pie_layout(p)
            if lay["min_size"][0] <= limit and lay["min_size"][1] <= limit:
                break
            size = max(TEXT_PX_RANGE[0], size - 1)
        else:  # smallest pie that always fits
            p.update(size_px=TEXT_PX_RANGE[0], radius=60)
            lay = pie_layout(p)
        mw, mh = lay["min_size"]
        p.update(
            width=int(rng.integers(max(MIN_SIDE, mw), max(MIN_SIDE, mw, limit) + 1)),
            height=int(rng.integers(max(MIN_SIDE, mh), max(MIN_SIDE, mh, limit) + 1)),
        )
    else:
        n = int(rng.integers(3 if chart == "bar" else 4, 13))
        if chart == "line":
            start = int(rng.integers(2000, 2016))
            cats = [str(start + i) for i in range(n)] if rng.random() < 0.6 else list(CATEGORY_SETS[1][:n])
        else:  # option letters would clash with letter categories in a choice question
            sets = CATEGORY_SETS if ask == "value" else CATEGORY_SETS[1:]
            cats = list(_pick(rng, sets)[:n])
        step, n_ticks = _nice_axis(rng)
        annotate = bool(rng.random() < 0.6)
        y_max = step * n_ticks
        while True:
            if not annotate:  # bar tops sit exactly on labelled gridlines
                vals = [int(step * rng.integers(1, n_ticks + 1)) for _ in range(n)]
            else:
                vals = [int(rng.integers(max(1, step // 2), y_max + 1)) for _ in range(n)]
            if ask == "value" or _unique_extreme(
                vals, extreme_margin({"chart": chart, "y_step": step, "n_ticks": n_ticks}), largest
            ):
                break
        p.update(
            categories=cats,
            values=vals,
            y_step=step,
            n_ticks=n_ticks,
            annotate=annotate,
            gridlines=bool((not annotate) or rng.random() < 0.5),
            colors=(
                [list(_pick(rng, CHART_PALETTE))] * n
                if rng.random() < 0.6
                else [list(CHART_PALETTE[i % len(CHART_PALETTE)]) for i in range(n)]
            ),
        )
        W = int(rng.integers(MIN_SIDE, limit + 1))
        H = int(rng.integers(MIN_SIDE, limit + 1))
        while True:
            p.update(width=W, height=H, size_px=size)
            if axes_layout(p)["fits"]:
                break
            if W < limit:
                W = min(limit, W + 24)
            elif size > TEXT_PX_RANGE[0]:
                size -= 1
            else:  # too many categories for the canvas: drop the last one
                for key in ("categories", "values", "colors"):
                    p[key] = p[key][:-1]
                n -= 1
    return _chart_question(p, ask, largest, rng)


def _jitter_percentages(vals: list[int], rng: np.random.Generator) -> list[int]:
    """Move a few points between slices so shares are not all multiples of 5 (still summing to 100)."""
    v = list(vals)
    for _ in range(len(v)):
        i, j = (int(x) for x in rng.choice(len(v), 2, replace=False))
        d = int(rng.integers(1, 4))
        if v[i] - d >= 4:
            v[i] -= d
            v[j] += d
    return v


def _chart_question(p: Params, ask: str, largest: bool, rng: np.random.Generator) -> BenchmarkItem:
    cats, vals = p["categories"], p["values"]
    n = len(vals)
    chart = p["chart"]
    if ask == "extreme" and not _unique_extreme(vals, extreme_margin(p), largest):
        ask = "value"  # ties can appear after categories were dropped to fit: ask for a value instead
    if ask == "value":
        i = int(rng.integers(n))
        p["target"] = i
        if chart == "pie":
            q = _pick(
                rng,
                [
                    f"What percentage of the total is {cats[i]}?",
                    f"What share (in percent) does {cats[i]} have in the pie chart?",
                ],
            )
        elif chart == "bar":
            q = _pick(
                rng,
                [
                    f"What is the value of the bar labelled {cats[i]}?",
                    f"What value does the bar for {cats[i]} show?",
                ],
            )
        else:
            q = _pick(
                rng, [f"What was the value in {cats[i]}?", f"What value does the line reach at {cats[i]}?"]
            )
        ans = _fmt_num(vals[i])
        others = [_fmt_num(v) for j, v in enumerate(vals) if j != i]
        order = sorted(others, key=lambda s: abs(float(s) - vals[i]))
        dis = _distractors(order, ans, "numeric", _numeric_fallback(vals[i], rng), rng)
        return BenchmarkItem("chart", f"chart_{chart}_value", q, ans, "numeric", p, dis)
    best = int(np.argmax(vals) if largest else np.argmin(vals))
    pool = [j for j in range(n) if j != best]
    chosen = [best] + [int(j) for j in rng.permutation(pool)[: min(3, len(pool))]]
    chosen = [int(j) for j in rng.permutation(chosen)]
    options = [cats[j] for j in chosen]
    letter = chr(65 + chosen.index(best))
    p["target"] = best
    word = "largest" if largest else "smallest"
    if chart == "line":
        stem = f"At which point does the line reach its {'highest' if largest else 'lowest'} value?"
    elif chart == "pie":
        stem = f"Which category has the {word} share?"
    else:
        stem = f"Which category has the {word} value?"
    q = _choice_question(stem, options)
    return BenchmarkItem(
        "chart",
        f"chart_{chart}_extreme",
        q,
        letter,
        "choice",
        p,
        _letter_distractors(len(options), letter),
        options,
    )


def _render_chart(p: Params) -> Image.Image:
    img = Image.new("RGB", (p["width"], p["height"]), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    ink, font, size = tuple(p["ink"]), p["font"], p["size_px"]
    if p["title"]:
        _draw_text(d, (p["width"] / 2, 8), p["title"], font, size + 2, ink, "ct")
    if p["chart"] == "pie":
        lay = pie_layout(p)
        cx, cy = lay["centre"]
        r = p["radius"]
        start = -90.0
        for k, (v, col) in enumerate(zip(p["values"], p["colors"], strict=True)):
            end = start + 3.6 * v
            d.pieslice((cx - r, cy - r, cx + r, cy + r), start, end, fill=tuple(col), outline=(255, 255, 255))
            if p["pie_labels"] == "slices":
                mid = math.radians((start + end) / 2)
                tx, ty = cx + 0.62 * r * math.cos(mid), cy + 0.62 * r * math.sin(mid)
                txt_col = (255, 255, 255) if _lum(col) < 140 else (0, 0, 0)
                _draw_text(d, (tx, ty), f"{v}%", font, size, txt_col, "cc")
            lx, ly = lay["legend_xy"]
            y = ly + k * lay["row_h"]
            sw = lay["swatch"]
            d.rectangle((lx, y, lx + sw, y + sw), fill=tuple(col))
            _draw_text(d, (lx + sw + 6, y + sw / 2), lay["entries"][k], font, size, ink, "lc")
            start = end
        return img
    lay = axes_layout(p)
    x0, y0, x1, y1 = lay["plot"]
    for k in range(p["n_ticks"] + 1):
        v = k * p["y_step"]
        y = value_y(lay, v)
        if p["gridlines"] and k > 0:
            d.line((x0, y, x1, y), fill=(205, 205, 205), width=1)
        d.line((x0 - 4, y, x0, y), fill=ink, width=1)
        _draw_text(d, (x0 - 6, y), _fmt_num(v), font, size, ink, "rc")
    pts = []
    for i, (c, v) in enumerate(zip(p["categories"], p["values"], strict=True)):
        cx = lay["centres"][i]
        top = value_y(lay, v)
        if p["chart"] == "bar":
            half = lay["slot"] * 0.31
            d.rectangle((round(cx - half), top, round(cx + half), y1 - 1), fill=tuple(p["colors"][i]))
        pts.append((cx, top))
        _draw_text(d, (cx, y1 + 6), c, font, size, ink, "ct")
    if p["chart"] == "line":
        d.line(pts, fill=tuple(p["colors"][0]), width=2)
        for cx, top in pts:
            d.ellipse((cx - 3, top - 3, cx + 3, top + 3), fill=tuple(p["colors"][0]))
    if p["annotate"]:
        for (cx, top), v in zip(pts, p["values"], strict=True):
            _draw_text(d, (cx, top - 5), _fmt_num(v), font, size, ink, "cb")
    d.line((x0, y0, x0, y1), fill=ink, width=1)
    d.line((x0, y1, x1, y1), fill=ink, width=1)
    return img


# ------------------------------------------------------------------------------------------------- math


def _sample_math(rng: np.random.Generator) -> BenchmarkItem:
    task = str(
        _pick(
            rng,
            (
                "table_col_sum",
                "table_row_sum",
                "table_col_range",
                "rect_area",
                "rect_perimeter",
                "triangle_area",
                "equation",
            ),
        )
    )
    p = _common(rng, "math", 8.0, 0.65)
    limit = _content_limit(p["angle"])
    font = str(_pick(rng, FONTS[:9]))
    p.update(task=task, font=font)
    if task.startswith("table"):
        return _sample_table(rng, p, task, limit)
    if task == "equation":
        return _sample_equation(rng, p, limit)
    return _sample_geometry(rng, p, task, limit)


def table_layout(p: Params) -> dict[str, Any]:
    font, size = p["font"], p["size_px"]
    pad = max(3, size // 3)
    header = ["", *p["col_names"]]
    rows = [
        [name, *(_fmt_num(v) for v in vals)] for name, vals in zip(p["row_names"], p["table"], strict=True)
    ]
    widths = [
        max(text_wh(str(r[c]), font, size)[0] for r in [header, *rows]) + 2 * pad for c in range(len(header))
    ]
    row_h = text_wh("Ag08", font, size)[1] + 2 * pad
    return {
        "pad": pad,
        "widths": widths,
        "row_h": row_h,
        "cells": [header, *rows],
        "size": (sum(widths), row_h * (len(rows) + 1)),
    }


def _sample_table(rng: np.random.Generator, p: Params, task: str, limit: int) -> BenchmarkItem:
    n_rows, n_cols = int(rng.integers(3, 9)), int(rng.integers(2, 6))
    hi = 99 if rng.random() < 0.6 else 999
    table = [[int(rng.integers(1, hi + 1)) for _ in range(n_cols)] for _ in range(n_rows)]
    p.update(
        col_names=[str(c) for c in rng.permutation(TABLE_COLS)[:n_cols]],
        row_names=[str(r) for r in rng.permutation(TABLE_ROWS)[:n_rows]],
        table=table,
        figure="table",
        header_fill=[int(c) for c in _pick(rng, ((225, 225, 225), (210, 225, 245), (245, 230, 200)))],
    )
    size = int(rng.integers(10, 27))
    while True:
        p["size_px"] = size
        tw, th = table_layout(p)["size"]
        if (tw + 16 <= limit and th + 16 <= limit) or size <= TEXT_PX_RANGE[0]:
            break
        size -= 1
    tw, th = table_layout(p)["size"]
    W = int(rng.integers(max(MIN_SIDE, tw + 16), max(MIN_SIDE, tw + 16, limit) + 1))
    H = int(rng.integers(max(MIN_SIDE, th + 16), max(MIN_SIDE, th + 16, limit) + 1))
    p.update(width=W, height=H, xy=[int(rng.integers(8, W - tw - 7)), int(rng.integers(8, H - th - 7))])
    arr = np.array(table)
    if task == "table_row_sum":
        i = int(rng.integers(n_rows))
        p["target"] = {"row": i}
        ans = int(arr[i].sum())
        q = _pick(
            rng,
            [
                f"What is the total for {p['row_names'][i]} across all columns of the table?",
                f"What is the sum of the values in the row {p['row_names'][i]}?",
            ],
        )
        cands = [
            int(arr[(i + 1) % n_rows].sum()),
            ans - int(arr[i, -1]),
            int(arr[i].max()),
            ans + int(arr[i, 0]),
        ]
    else:
        j = int(rng.integers(n_cols))
        p["target"] = {"col": j}
        col = arr[:, j]
        name = p["col_names"][j]
        if task == "table_col_sum":
            ans = int(col.sum())
            q = _pick(
                rng,
                [
                    f"What is the sum of the {name} column?",
                    f"What is the total of all values in the column {name}?",
                ],
            )
            cands = [
                int(arr[:, (j + 1) % n_cols].sum()),
                ans - int(col[-1]),
                ans + int(col[0]),
                int(col.max()),
            ]
        else:
            ans = int(col.max() - col.min())
            if ans == 0:
                col_i = int(np.argmax(col))
                table[col_i][j] += 7
                arr = np.array(table)
                col = arr[:, j]
                ans = int(col.max() - col.min())
            q = f"What is the difference between the largest and the smallest value in the {name} column?"
            cands = [int(col.max()), int(col.max() + col.min()), int(col.sum()), int(col.min())]
    a = _fmt_num(ans)
    dis = _distractors([_fmt_num(c) for c in cands], a, "numeric", _numeric_fallback(ans, rng), rng)
    return BenchmarkItem("math", task, q, a, "numeric", p, dis)


_UNITS = ("cm", "m", "mm", "")


def _sample_geometry(rng: np.random.Generator, p: Params, task: str, limit: int) -> BenchmarkItem:
    a, b = int(rng.integers(2, 31)), int(rng.integers(2, 31))
    while not 1 / 3 <= a / b <= 3:
        b = int(rng.integers(2, 31))
    unit = str(_pick(rng, _UNITS))
    size = int(rng.integers(10, 29))
    W, H = int(rng.integers(MIN_SIDE, limit + 1)), int(rng.integers(MIN_SIDE, limit + 1))
    extras = [str(e) for e in rng.permutation(["grid", "caption", "note"])[: int(rng.integers(0, 4))]]
    p.update(
        figure="triangle" if task == "triangle_area" else "rectangle",
        side_a=a,
        side_b=b,
        unit=unit,
        size_px=size,
        width=W,
        height=H,
        extras=sorted(extras),
        caption_no=int(rng.integers(2, 10)),
        fill=[
            int(c) for c in _pick(rng, ((220, 235, 250), (250, 235, 210), (225, 245, 225), (255, 255, 255)))
        ],
    )
    lab = f" {unit}" if unit else ""
    what = "rectangle" if p["figure"] == "rectangle" else "right triangle"
    if task == "rect_area":
        ans, q = a * b, f"What is the area of the {what}" + (f" in square {unit}?" if unit else "?")
        cands = [2 * (a + b), a * b / 2, a + b, a * b + a]
    elif task == "rect_perimeter":
        ans, q = 2 * (a + b), f"What is the perimeter of the {what}" + (f" in {unit}?" if unit else "?")
        cands = [a * b, a + b, 2 * a + b, 4 * a]
    else:
        ans, q = a * b / 2, f"What is the area of the {what}" + (f" in square {unit}?" if unit else "?")
        cands = [a * b, a + b, math.hypot(a, b), (a + b) / 2]
    p["labels"] = [f"{a}{lab}", f"{b}{lab}"]
    ans_s = _fmt_num(ans)
    dis = _distractors(
        [_fmt_num(round(c, 2)) for c in cands], ans_s, "numeric", _numeric_fallback(ans, rng), rng
    )
    return BenchmarkItem("math", task, q, ans_s, "numeric", p, dis)


def _equation_text(a: int, b: int, c: int, var: str) -> str:
    return f"{a}{var} {'+' if b >= 0 else '-'} {abs(b)} = {c}"


def _sample_equation(rng: np.random.Generator, p: Params, limit: int) -> BenchmarkItem:
    var = str(_pick(rng, ("x", "y", "n")))
    a, x, b = int(rng.integers(2, 10)), int(rng.integers(-12, 21)), int(rng.integers(-40, 41))
    b = b or 5
    c = a * x + b
    text = _equation_text(a, b, c, var)
    size = int(rng.integers(12, 37))
    W, H = int(rng.integers(MIN_SIDE, limit + 1)), int(rng.integers(MIN_SIDE, limit + 1))
    while True:
        patch = text_patch(text, p["font"], size, p["ink"], "box", [255, 255, 255], 0.0)
        if patch.width + 16 <= W:
            break
        size -= 1
    x0, y0 = int(rng.integers(8, W - patch.width - 7)), int(rng.integers(8, H - patch.height - 7))
    placed = [(x0, y0, x0 + patch.width, y0 + patch.height)]
    extras = []
    for _ in range(int(rng.integers(0, 4))):
        ea, ex, eb = int(rng.integers(2, 10)), int(rng.integers(-9, 15)), int(rng.integers(1, 30))
        et, es = _equation_text(ea, eb, ea * ex + eb, var), int(rng.integers(10, 22))
        ew, eh = text_wh(et, p["font"], es)
        for _try in range(30):
            if W - ew - 8 <= 8 or H - eh - 8 <= 8:
                break
            ex0, ey0 = int(rng.integers(8, W - ew - 8)), int(rng.integers(8, H - eh - 8))
            if _free((ex0, ey0, ex0 + ew, ey0 + eh), placed):
                placed.append((ex0, ey0, ex0 + ew, ey0 + eh))
                extras.append({"text": et, "size_px": es, "xy": [ex0, ey0]})
                break
    p.update(
        figure="equation",
        equation=text,
        coef=[a, b, c],
        var=var,
        size_px=size,
        width=W,
        height=H,
        xy=[x0, y0],
        extras=extras,
    )
    q = _pick(
        rng,
        [
            f"What is the value of {var} in the boxed equation?",
            f"Solve the boxed equation for {var}. What is {var}?",
        ],
    )
    ans = _fmt_num(x)
    cands = [_fmt_num(-x), _fmt_num(round((c + b) / a, 2)), _fmt_num(x + 1), _fmt_num(c - b)]
    dis = _distractors(cands, ans, "numeric", _numeric_fallback(x, rng), rng)
    return BenchmarkItem("math", "equation", q, ans, "numeric", p, dis)


def _render_math(p: Params) -> Image.Image:
    W, H = p["width"], p["height"]
    img = Image.new("RGB", (W, H), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    ink, font, size = tuple(p["ink"]), p["font"], p["size_px"]
    fig = p["figure"]
    if fig == "table":
        lay = table_layout(p)
        x, y = p["xy"]
        tw, th = lay["size"]
        d.rectangle((x, y, x + tw, y + lay["row_h"]), fill=tuple(p["header_fill"]))
        for r, row in enumerate(lay["cells"]):
            cx = x
            for c, cell in enumerate(row):
                w = lay["widths"][c]
                yy = y + r * lay["row_h"]
                if cell:
                    _draw_text(d, (cx + w / 2, yy + lay["row_h"] / 2), str(cell), font, size, ink, "cc")
                cx += w
        for r in range(len(lay["cells"]) + 1):
            d.line((x, y + r * lay["row_h"], x + tw, y + r * lay["row_h"]), fill=ink, width=1)
        cx = x
        for w in [0, *lay["widths"]]:
            cx += w
            d.line((cx, y, cx, y + th), fill=ink, width=1)
        return img
    if fig == "equation":
        for e in p["extras"]:
            _draw_text(d, tuple(e["xy"]), e["text"], font, e["size_px"], ink)
        patch = text_patch(p["equation"], font, size, p["ink"], "box", [255, 255, 255], 0.0)
        img.paste(patch, tuple(p["xy"]), patch)
        return img
    if "grid" in p["extras"]:
        for gx in range(0, W, 16):
            d.line((gx, 0, gx, H), fill=(222, 230, 240), width=1)
        for gy in range(0, H, 16):
            d.line((0, gy, W, gy), fill=(222, 230, 240), width=1)
    if "caption" in p["extras"]:
        _draw_text(d, (8, 8), f"Figure {p['caption_no']}", font, max(9, size - 2), ink)
    if "note" in p["extras"]:
        _draw_text(d, (8, H - 8), "not to scale", font, max(9, size - 3), ink, "lb")
    a, b = p["side_a"], p["side_b"]
    la, lb = p["labels"]
    wa, ha = text_wh(la, font, size)
    wb, hb = text_wh(lb, font, size)
    top_room = 8 + (text_wh("Figure 8", font, size)[1] + 8 if "caption" in p["extras"] else 0)
    bottom_room = 8 + ha + 10 + (text_wh("not to scale", font, size)[1] + 6 if "note" in p["extras"] else 0)
    avail_w, avail_h = W - 16 - wb - 12, H - top_room - bottom_room
    scale = min(avail_w / a, avail_h / b)
    fw, fh = max(20, int(a * scale * 0.9)), max(20, int(b * scale * 0.9))
    x0 = 8 + (avail_w - fw) // 2
    y0 = top_room + (avail_h - fh) // 2
    x1, y1 = x0 + fw, y0 + fh
    if fig == "rectangle":
        d.rectangle((x0, y0, x1, y1), fill=tuple(p["fill"]), outline=ink, width=2)
    else:
        d.polygon([(x0, y1), (x1, y1), (x1, y0)], fill=tuple(p["fill"]), outline=ink, width=2)
        m = max(6, min(fw, fh) // 8)
        d.line((x1 - m, y1, x1 - m, y1 - m, x1, y1 - m), fill=ink, width=1)
    _draw_text(d, ((x0 + x1) / 2, y1 + 8), la, font, size, ink, "ct")
    _draw_text(d, (x1 + 8, (y0 + y1) / 2), lb, font, size, ink, "lc")
    return img


# ---------------------------------------------------------------------------------------------- general


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if kind == "square":
        h = 0.7 * r  # corners stay inside the radius-r circle used for spacing
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if kind == "triangle":
        return [
            (cx + r * math.cos(math.radians(a)), cy - r * math.sin(math.radians(a))) for a in (90, 210, 330)
        ]
    if kind == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else 0.45 * r
            a = math.radians(90 + 36 * k)
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        return pts
    raise ValueError(f"shape: unknown kind {kind!r}")


def _place(
    rng: np.random.Generator,
    r: float,
    W: int,
    H: int,
    shapes: list[dict[str, Any]],
    occlusion: float,
    tries: int = 80,
) -> tuple[int, int] | None:
    for _ in range(tries):
        cx, cy = int(rng.integers(int(r) + 4, W - int(r) - 3)), int(rng.integers(int(r) + 4, H - int(r) - 3))
        if all(_separated(cx, cy, r, s, occlusion) for s in shapes):
            return cx, cy
    return None


def _separated(cx: float, cy: float, r: float, s: dict[str, Any], occlusion: float) -> bool:
    """Shapes may overlap by at most half the smaller radius times ``occlusion``: each stays visible."""
    need = r + s["r"] + 3 - occlusion * (0.5 * min(r, s["r"]) + 3)
    return math.hypot(cx - s["cx"], cy - s["cy"]) >= need


def _sample_general(rng: np.random.Generator) -> BenchmarkItem:
    task = str(
        _pick(rng, ("general_count", "general_count", "general_colour", "general_shape", "general_spatial"))
    )
    p = _common(rng, "general", 12.0, 0.45)
    limit = _content_limit(p["angle"])
    W, H = int(rng.integers(MIN_SIDE, limit + 1)), int(rng.integers(MIN_SIDE, limit + 1))
    obj = int(rng.integers(SHAPE_PX_RANGE[0], SHAPE_PX_RANGE[1] + 1))
    occlusion = _level(rng, 0.5)
    n_total = int(rng.integers(3, 25))
    colours, kinds = list(SHAPE_COLOURS), list(SHAPE_KINDS)
    shapes: list[dict[str, Any]] = []

    def radius() -> int:
        return max(5, int(round(obj * float(rng.uniform(0.75, 1.25)))))

    def add(kind: str, colour: str) -> bool:
        r = radius()
        pos = _place(rng, r, W, H, shapes, occlusion)
        if pos is None:
            return False
        shapes.append(
            {
                "kind": kind,
                "colour": colour,
                "rgb": list(SHAPE_COLOURS[colour]),
                "cx": pos[0],
                "cy": pos[1],
                "r": r,
            }
        )
        return True

    options = None
    if task == "general_count":
        tk, tc = str(_pick(rng, kinds)), str(_pick(rng, colours))
        target = int(rng.integers(1, min(8, n_total) + 1))
        for _ in range(target):
            while not add(tk, tc):  # shrink until it fits: the count must be exact
                obj = max(SHAPE_PX_RANGE[0], obj - 2)
                occlusion = min(1.0, occlusion + 0.1)
        for _ in range(n_total - target):
            k, c = str(_pick(rng, kinds)), str(_pick(rng, colours))
            if (k, c) == (tk, tc):
                c = colours[(colours.index(c) + 1) % len(colours)]
            add(k, c)
        plural = f"{tk}s"
        q = _pick(
            rng,
            [
                f"How many {tc} {plural} are there?",
                f"Count the {tc} {plural} in the image.",
                f"How many {tc} {plural} can you see?",
            ],
        )
        count = sum(1 for s in shapes if (s["kind"], s["colour"]) == (tk, tc))
        same_kind = sum(1 for s in shapes if s["kind"] == tk)
        same_col = sum(1 for s in shapes if s["colour"] == tc)
        ans = str(count)
        cands = [str(count + 1), str(max(0, count - 1)), str(same_kind), str(same_col), str(count + 2)]
        dis = _distractors(cands, ans, "numeric", _numeric_fallback(count, rng), rng)
        kind = "numeric"
        p["target"] = {"kind": tk, "colour": tc}
    elif task in ("general_colour", "general_shape"):
        tk, tc = str(_pick(rng, kinds)), str(_pick(rng, colours))
        unique_key = "kind" if task == "general_colour" else "colour"
        first = (tk, tc)
        while not add(*first):
            obj = max(SHAPE_PX_RANGE[0], obj - 2)
        for _ in range(n_total - 1):
            k = (
                str(_pick(rng, [x for x in kinds if x != tk]))
                if unique_key == "kind"
                else str(_pick(rng, kinds))
            )
            c = (
                str(_pick(rng, [x for x in colours if x != tc]))
                if unique_key == "colour"
                else str(_pick(rng, colours))
            )
            add(k, c)
        shapes.append(shapes.pop(0))  # the asked-about shape is drawn last: never hidden
        if task == "general_colour":
            q = _pick(rng, [f"What colour is the {tk}?", f"Which colour does the {tk} have?"])
            ans = tc
            cands = [s["colour"] for s in shapes if s["colour"] != tc] + [c for c in colours if c != tc]
        else:
            q = _pick(rng, [f"What shape is the {tc} object?", f"Which shape is drawn in {tc}?"])
            ans = tk
            cands = [s["kind"] for s in shapes if s["kind"] != tk] + [k for k in kinds if k != tk]
        pool = colours if task == "general_colour" else kinds
        dis = _distractors(cands, ans, "exact", lambda i: str(pool[i % len(pool)]), rng)
        kind = "exact"
        p["target"] = {"kind": tk, "colour": tc}
    else:
        ka, kb = (str(k) for k in rng.permutation(kinds)[:2])
        ca, cb = (str(c) for c in rng.choice(colours, 2))
        rel = str(_pick(rng, SPATIAL_OPTIONS))
        ra, rb = radius(), radius()
        pa, pb = _spatial_positions(rng, rel, ra, rb, W, H)
        shapes.append(
            {"kind": ka, "colour": ca, "rgb": list(SHAPE_COLOURS[ca]), "cx": pa[0], "cy": pa[1], "r": ra}
        )
        shapes.append(
            {"kind": kb, "colour": cb, "rgb": list(SHAPE_COLOURS[cb]), "cx": pb[0], "cy": pb[1], "r": rb}
        )
        rel = spatial_relation(shapes[0], shapes[1]) or rel
        rest = [k for k in kinds if k not in (ka, kb)]
        for _ in range(n_total - 2):
            add(str(_pick(rng, rest)), str(_pick(rng, colours)))
        shapes[:] = shapes[2:] + shapes[:2]  # the two named shapes on top
        opts = [f"{o} the {kb}" for o in SPATIAL_OPTIONS]
        order = [int(i) for i in rng.permutation(len(opts))]
        options = [opts[i] for i in order]
        ans = chr(65 + options.index(f"{rel} the {kb}"))
        q = _choice_question(f"Where is the {ka} relative to the {kb}?", options)
        dis = _letter_distractors(len(options), ans)
        kind = "choice"
        p["target"] = {"kind": ka, "reference": kb, "relation": rel}
    p.update(task=task, width=W, height=H, obj_size=obj, occlusion=occlusion, shapes=shapes)
    return BenchmarkItem("general", task, q, ans, kind, p, dis, options)


def spatial_relation(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Where shape ``a`` is relative to ``b`` when one direction clearly dominates (else None)."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dx) >= 2 * abs(dy) and abs(dx) >= a["r"] + b["r"] + 6:
        return "left of" if dx < 0 else "right of"
    if abs(dy) >= 2 * abs(dx) and abs(dy) >= a["r"] + b["r"] + 6:
        return "above" if dy < 0 else "below"
    return None


def _spatial_positions(
    rng: np.random.Generator, rel: str, ra: int, rb: int, W: int, H: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    a_s = {"cx": 0, "cy": 0, "r": ra}
    b_s = {"cx": 0, "cy": 0, "r": rb}
    for _ in range(400):
        a_s["cx"], a_s["cy"] = int(rng.integers(ra + 4, W - ra - 3)), int(rng.integers(ra + 4, H - ra - 3))
        b_s["cx"], b_s["cy"] = int(rng.integers(rb + 4, W - rb - 3)), int(rng.integers(rb + 4, H - rb - 3))
        if spatial_relation(a_s, b_s) == rel:
            return (a_s["cx"], a_s["cy"]), (b_s["cx"], b_s["cy"])
    # deterministic fallback along the asked direction
    mx, my = W // 2, H // 2
    off_x, off_y = W // 4, H // 4
    delta = {"left of": (-off_x, 0), "right of": (off_x, 0), "above": (0, -off_y), "below": (0, off_y)}[rel]
    return (mx + delta[0], my + delta[1]), (mx - delta[0], my - delta[1])


def _render_general(p: Params) -> Image.Image:
    img = Image.new("RGB", (p["width"], p["height"]), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    for s in p["shapes"]:
        col = tuple(s["rgb"])
        edge = tuple(int(c * 0.6) for c in col)
        cx, cy, r = s["cx"], s["cy"], s["r"]
        if s["kind"] == "circle":
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=col, outline=edge, width=1)
        else:
            d.polygon(_shape_points(s["kind"], cx, cy, r), fill=col, outline=edge)
    return img


# -------------------------------------------------------------------------------------- render / encode

_SAMPLERS: dict[str, Callable[[np.random.Generator], BenchmarkItem]] = {
    "ocr": _sample_ocr,
    "chart": _sample_chart,
    "math": _sample_math,
    "general": _sample_general,
}
_RENDERERS: dict[str, Callable[[Params], Image.Image]] = {
    "ocr": _render_ocr,
    "chart": _render_chart,
    "math": _render_math,
    "general": _render_general,
}


def render_image(params: Params) -> Image.Image:
    """Render a scene from its parameters alone (content, then rotation, wash, blur, speckle noise)."""
    g = params.get("group")
    if g not in _RENDERERS:
        raise ValueError(f"params: field 'group' = {g!r}; expected one of {', '.join(TASK_GROUPS)}")
    img = _RENDERERS[g](params)
    bg = tuple(params["bg"])
    if g != "ocr" and params["angle"]:  # OCR rotates only its text patch
        img = img.rotate(params["angle"], resample=Image.Resampling.BILINEAR, expand=True, fillcolor=bg)
    if params["wash"] > 0:
        img = Image.blend(img, Image.new("RGB", img.size, bg), float(params["wash"]))
    if params["blur"] > 0:
        img = img.filter(ImageFilter.GaussianBlur(float(params["blur"])))
    if params["noise"] > 0:
        rng = np.random.default_rng(params["noise_seed"])
        arr = np.array(img, dtype=np.uint8)
        flat = arr.reshape(-1, 3)
        k = int(MAX_SPECKLE * params["noise"] * flat.shape[0])
        idx = rng.integers(0, flat.shape[0], k)
        flat[idx] = (rng.integers(0, 5, k) * 63).astype(np.uint8)[:, None]
        img = Image.fromarray(arr)
    return img


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes without metadata (deterministic for identical pixels)."""
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _n_elements(p: Params) -> int:
    """Number of distinct things drawn (texts, bars / slices / points, table cells, shapes)."""
    g = p["group"]
    if g == "ocr":
        return 1 + len(p["others"])
    if g == "chart":
        return len(p["values"])
    if g == "math":
        return len(p["table"]) * len(p["table"][0]) if p["figure"] == "table" else 1 + len(p["extras"])
    return len(p["shapes"])


def sample_query(seed: int, index: int) -> BenchmarkItem:
    """Query ``index`` of the benchmark with ``seed`` (groups cycle ocr, chart, math, general)."""
    if index < 0:
        raise ValueError(f"sample_query: index must be >= 0, got {index}")
    group = TASK_GROUPS[index % len(TASK_GROUPS)]
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, index, TASK_GROUPS.index(group)])
    item = _SAMPLERS[group](rng)
    item.params["task"] = item.task
    item.params["n_elements"] = _n_elements(item.params)
    item.visual = visual_from_params(item.params)
    return item


def query_id(benchmark: str, source_id: str) -> str:
    """Stable id of a query: sha1 of "<benchmark>:<source id>", 16 hex digits."""
    return hashlib.sha1(f"{benchmark}:{source_id}".encode()).hexdigest()[:16]


def source_meta(item: BenchmarkItem, source_id: str) -> str:
    meta: dict[str, Any] = {
        "visual": item.visual,
        "params": item.params,
        "distractors": item.distractors,
        "generator_version": GENERATOR_VERSION,
        "source_id": source_id,
    }
    if item.options is not None:
        meta["options"] = item.options
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def build_row(seed: int, index: int, images_dir: Path, benchmark: str) -> dict[str, str]:
    """Sample, render, encode and store query ``index``; returns its ``queries`` row."""
    item = sample_query(seed, index)
    data = encode_png(render_image(item.params))
    sha = hashlib.sha256(data).hexdigest()
    path = images_dir / f"{sha}.png"
    if not path.exists():
        atomic_write_bytes(data, path)
    sid = f"s{seed}:{item.task}:{index:06d}"
    return {
        "query_id": query_id(benchmark, sid),
        "benchmark": benchmark,
        "dataset": DATASETS[item.task_group],
        "task_group": item.task_group,
        "task": item.task,
        "question": item.question,
        "answer": item.answer,
        "answer_kind": item.answer_kind,
        "image_path": path.name,
        "image_sha256": sha,
        "source_meta": source_meta(item, sid),
        "official_split": "",
    }


def _build_chunk(seed: int, indices: range, images_dir: str, benchmark: str) -> list[dict[str, str]]:
    return [build_row(seed, i, Path(images_dir), benchmark) for i in indices]


def generate_benchmark(
    n: int = 2000, seed: int = 0, *, images_dir: Path | str, benchmark: str = "builtin", workers: int = 1
) -> pl.DataFrame:
    """``n`` rendered queries (``queries`` table rows) with their PNGs written to ``images_dir``.

    Images are content-addressed ("<sha256>.png", the hash of the exact bytes written), so a model server
    can find the query from the bytes it receives; an existing file with that name is left alone.
    ``workers > 1`` renders in that many spawned processes (call it under ``if __name__ == "__main__":`` in
    scripts); the result does not depend on it, since query ``i`` depends only on ``(seed, i)``.
    """
    if n < 0:
        raise ValueError(f"generate_benchmark: n must be >= 0, got {n}")
    if not benchmark:
        raise ValueError("generate_benchmark: benchmark name must not be empty")
    if workers < 1:
        raise ValueError(f"generate_benchmark: workers must be >= 1, got {workers}")
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    workers = min(workers, max(1, n // 50))
    if workers <= 1:
        rows = _build_chunk(seed, range(n), str(images_dir), benchmark)
    else:
        chunk = -(-n // (workers * 4))
        parts = [range(s, min(n, s + chunk)) for s in range(0, n, chunk)]
        ctx = multiprocessing.get_context("spawn")  # safe under threaded parents (Dagster, servers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_build_chunk, seed, part, str(images_dir), benchmark) for part in parts]
            rows = [row for fut in futures for row in fut.result()]
    df = pl.DataFrame(rows, schema={c: pl.String for c in QUERIES}) if rows else pl.DataFrame(schema=QUERIES)
    return conform(df, QUERIES, "queries")
