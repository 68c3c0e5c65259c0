"""OCR queries: a word, number, line or code in a framed patch among distracting text, and its renderer."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from collectors.benchmark.drawing import draw_text, is_free, text_patch, text_wh
from collectors.benchmark.sampling import common_params, distractors, pick
from collectors.benchmark.spec import (
    CODE_ALPHABET,
    FONTS,
    INKS,
    MAX_ROTATION_DEG,
    MAX_SIDE,
    MIN_SIDE,
    TEXT_PX_RANGE,
    WORDS,
    BenchmarkItem,
    Params,
)

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
    i = int(pick(rng, idx))
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
    out = [w if (i == 0 and len(words) > 3) else str(pick(rng, WORDS)) for i, w in enumerate(words)]
    line = " ".join(out)
    return line.capitalize() if text[:1].isupper() else line


def _ocr_text(task: str, rng: np.random.Generator) -> str:
    if task == "ocr_word":
        w = str(pick(rng, WORDS))
        return (w, w.capitalize(), w.upper())[int(rng.integers(3))]
    if task == "ocr_number":
        if rng.random() < 0.2:
            return f"{int(rng.integers(1, 1000))}.{int(rng.integers(0, 100)):02d}"
        return str(int(rng.integers(10 ** int(rng.integers(1, 4)), 10 ** int(rng.integers(4, 7)))))
    if task == "ocr_line":
        words = [str(pick(rng, WORDS)) for _ in range(int(rng.integers(2, 5)))]
        line = " ".join(words)
        return line.capitalize() if rng.random() < 0.5 else line
    a = "".join(pick(rng, CODE_ALPHABET) for _ in range(int(rng.integers(2, 4))))
    b = "".join(pick(rng, CODE_ALPHABET) for _ in range(int(rng.integers(2, 4))))
    return f"{a}-{b}"


def sample_ocr(rng: np.random.Generator) -> BenchmarkItem:
    """A framed text to read among other texts; the text shrinks until the rotated patch fits."""
    task = str(rng.choice(list(_OCR_STYLES), p=[0.35, 0.25, 0.2, 0.2]))
    style, questions = _OCR_STYLES[task]
    p = common_params(rng, "ocr", MAX_ROTATION_DEG, 0.7)
    text = _ocr_text(task, rng)
    font = str(pick(rng, FONTS))
    size = int(rng.integers(TEXT_PX_RANGE[0], TEXT_PX_RANGE[1] + 1))
    fill = list(pick(rng, _SIGN_FILLS)) if style == "sign" else [252, 252, 248]
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
        ofont, osize = str(pick(rng, FONTS)), int(rng.integers(9, 25))
        ow, oh = text_wh(otext, ofont, osize)
        for _try in range(30):
            if W - ow - 4 <= 4 or H - oh - 4 <= 4:
                break
            ox, oy = int(rng.integers(4, W - ow - 4)), int(rng.integers(4, H - oh - 4))
            if is_free((ox, oy, ox + ow, oy + oh), placed):
                placed.append((ox, oy, ox + ow, oy + oh))
                others.append(
                    {
                        "text": otext,
                        "font": ofont,
                        "size_px": osize,
                        "xy": [ox, oy],
                        "rgb": [int(c) for c in pick(rng, INKS)],
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
    dis = distractors(cands, text, kind, fallback, rng)
    return BenchmarkItem("ocr", task, str(pick(rng, questions)), text, kind, p, dis)


def render_ocr(p: Params) -> Image.Image:
    """Draw an OCR scene: the other texts, then the (already rotated) target patch."""
    img = Image.new("RGB", (p["width"], p["height"]), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    for o in p["others"]:
        draw_text(d, tuple(o["xy"]), o["text"], o["font"], o["size_px"], o["rgb"])
    t = p["target"]
    patch = text_patch(t["text"], t["font"], t["size_px"], p["ink"], t["style"], t["fill"], p["angle"])
    img.paste(patch, tuple(t["xy"]), patch)
    return img
