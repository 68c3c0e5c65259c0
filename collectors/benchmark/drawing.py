"""Shared rendering helpers: the bundled fonts, ink-anchored text, framed text patches and colour luminance.

The samplers measure text with the same cached boxes the renderers draw with, so a layout computed while
sampling is exactly the one rendered later.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


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
    """A bundled font at ``size`` px (cached: samplers and renderers ask for the same few thousands)."""
    path = font_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"font {name!r} not found in {font_dir()}")
    return ImageFont.truetype(str(path), int(size))


@functools.lru_cache(maxsize=65536)
def text_box(text: str, font: str, size: int) -> tuple[int, int, int, int]:
    """Ink bounding box (left, top, right, bottom) of ``text`` drawn at the origin."""
    return tuple(int(v) for v in get_font(font, size).getbbox(text))  # type: ignore[return-value]


def text_wh(text: str, font: str, size: int) -> tuple[int, int]:
    """Ink width and height of ``text``, the size layouts are computed with."""
    x0, y0, x1, y1 = text_box(text, font, size)
    return x1 - x0, y1 - y0


def draw_text(
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


def lum(c: Sequence[int]) -> float:
    """Perceived luminance of an RGB colour (0-255), used for contrast and legible label colours."""
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


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
    draw_text(d, (pad + 1, pad + 1), text, font, size, (*ink, 255))
    if angle:
        patch = patch.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(*ink, 0))
    return patch


def is_free(rect: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]], gap: int = 4) -> bool:
    """True when ``rect`` keeps ``gap`` pixels from every placed box, so no text hides another."""
    x0, y0, x1, y1 = rect
    return all(
        x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0 for a0, b0, a1, b1 in placed
    )
