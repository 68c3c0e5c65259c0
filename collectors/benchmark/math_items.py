"""Math queries: table sums and ranges, rectangle / triangle measures and linear equations, and the renderer.

Named ``math_items`` so it never shadows the standard library's ``math``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from collectors.benchmark.drawing import draw_text, is_free, text_patch, text_wh
from collectors.benchmark.sampling import (
    common_params,
    content_limit,
    distractors,
    fmt_num,
    numeric_fallback,
    pick,
)
from collectors.benchmark.spec import (
    FONTS,
    MIN_SIDE,
    TABLE_COLS,
    TABLE_ROWS,
    TEXT_PX_RANGE,
    BenchmarkItem,
    Params,
)


def sample_math(rng: np.random.Generator) -> BenchmarkItem:
    """A table, geometry or equation query with a numeric answer."""
    task = str(
        pick(
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
    p = common_params(rng, "math", 8.0, 0.65)
    limit = content_limit(p["angle"])
    font = str(pick(rng, FONTS[:9]))
    p.update(task=task, font=font)
    if task.startswith("table"):
        return _sample_table(rng, p, task, limit)
    if task == "equation":
        return _sample_equation(rng, p, limit)
    return _sample_geometry(rng, p, task, limit)


def table_layout(p: Params) -> dict[str, Any]:
    """Cell texts, column widths and row height of a table scene (shared by sampler and renderer)."""
    font, size = p["font"], p["size_px"]
    pad = max(3, size // 3)
    header = ["", *p["col_names"]]
    rows = [
        [name, *(fmt_num(v) for v in vals)] for name, vals in zip(p["row_names"], p["table"], strict=True)
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
        header_fill=[int(c) for c in pick(rng, ((225, 225, 225), (210, 225, 245), (245, 230, 200)))],
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
        q = pick(
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
            q = pick(
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
    a = fmt_num(ans)
    dis = distractors([fmt_num(c) for c in cands], a, "numeric", numeric_fallback(ans, rng), rng)
    return BenchmarkItem("math", task, q, a, "numeric", p, dis)


_UNITS = ("cm", "m", "mm", "")


def _sample_geometry(rng: np.random.Generator, p: Params, task: str, limit: int) -> BenchmarkItem:
    a, b = int(rng.integers(2, 31)), int(rng.integers(2, 31))
    while not 1 / 3 <= a / b <= 3:
        b = int(rng.integers(2, 31))
    unit = str(pick(rng, _UNITS))
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
            int(c) for c in pick(rng, ((220, 235, 250), (250, 235, 210), (225, 245, 225), (255, 255, 255)))
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
    ans_s = fmt_num(ans)
    dis = distractors(
        [fmt_num(round(c, 2)) for c in cands], ans_s, "numeric", numeric_fallback(ans, rng), rng
    )
    return BenchmarkItem("math", task, q, ans_s, "numeric", p, dis)


def _equation_text(a: int, b: int, c: int, var: str) -> str:
    return f"{a}{var} {'+' if b >= 0 else '-'} {abs(b)} = {c}"


def _sample_equation(rng: np.random.Generator, p: Params, limit: int) -> BenchmarkItem:
    var = str(pick(rng, ("x", "y", "n")))
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
            if is_free((ex0, ey0, ex0 + ew, ey0 + eh), placed):
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
    q = pick(
        rng,
        [
            f"What is the value of {var} in the boxed equation?",
            f"Solve the boxed equation for {var}. What is {var}?",
        ],
    )
    ans = fmt_num(x)
    cands = [fmt_num(-x), fmt_num(round((c + b) / a, 2)), fmt_num(x + 1), fmt_num(c - b)]
    dis = distractors(cands, ans, "numeric", numeric_fallback(x, rng), rng)
    return BenchmarkItem("math", "equation", q, ans, "numeric", p, dis)


def render_math(p: Params) -> Image.Image:
    """Draw a math scene (before rotation and noise, which `render_image` applies)."""
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
                    draw_text(d, (cx + w / 2, yy + lay["row_h"] / 2), str(cell), font, size, ink, "cc")
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
            draw_text(d, tuple(e["xy"]), e["text"], font, e["size_px"], ink)
        patch = text_patch(p["equation"], font, size, p["ink"], "box", [255, 255, 255], 0.0)
        img.paste(patch, tuple(p["xy"]), patch)
        return img
    if "grid" in p["extras"]:
        for gx in range(0, W, 16):
            d.line((gx, 0, gx, H), fill=(222, 230, 240), width=1)
        for gy in range(0, H, 16):
            d.line((0, gy, W, gy), fill=(222, 230, 240), width=1)
    if "caption" in p["extras"]:
        draw_text(d, (8, 8), f"Figure {p['caption_no']}", font, max(9, size - 2), ink)
    if "note" in p["extras"]:
        draw_text(d, (8, H - 8), "not to scale", font, max(9, size - 3), ink, "lb")
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
    draw_text(d, ((x0 + x1) / 2, y1 + 8), la, font, size, ink, "ct")
    draw_text(d, (x1 + 8, (y0 + y1) / 2), lb, font, size, ink, "lc")
    return img
