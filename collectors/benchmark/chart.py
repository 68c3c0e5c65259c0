"""Chart queries: bar, line and pie charts asking for a value or the extreme category, their layouts
(shared by sampler, renderer and tests) and the renderer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from collectors.benchmark.drawing import draw_text, lum, text_wh
from collectors.benchmark.sampling import (
    choice_question,
    common_params,
    content_limit,
    distractors,
    fmt_num,
    letter_distractors,
    numeric_fallback,
    pick,
)
from collectors.benchmark.spec import (
    CATEGORY_SETS,
    CHART_PALETTE,
    CHART_TITLES,
    FONTS,
    MIN_SIDE,
    PIE_NAMES,
    TEXT_PX_RANGE,
    BenchmarkItem,
    Params,
)


def _nice_axis(rng: np.random.Generator) -> tuple[int, int]:
    step = int(pick(rng, (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500)))
    return step, int(rng.integers(4, 9))


def axes_layout(p: Params) -> dict[str, Any]:
    """Plot box and category centres of a bar / line chart (shared by sampler, renderer and tests)."""
    W, H, font, size = p["width"], p["height"], p["font"], p["size_px"]
    ticks = [fmt_num(k * p["y_step"]) for k in range(p["n_ticks"] + 1)]
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
            max(text_wh(fmt_num(v), font, size)[0] for v in p["values"]) if p["annotate"] else 0,
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
    """Pixel row of value ``v`` on the y axis of ``layout``."""
    x0, y0, x1, y1 = layout["plot"]
    return int(round(y1 - v / layout["y_max"] * (y1 - y0)))


def pie_layout(p: Params) -> dict[str, Any]:
    """Pie centre, legend position and the smallest canvas that holds both."""
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
    """Legend entries: names with their shares when slices are not labelled."""
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


def sample_chart(rng: np.random.Generator) -> BenchmarkItem:
    """A bar, line or pie chart asking for one value or for the largest / smallest category."""
    chart = str(pick(rng, ("bar", "bar", "line", "pie")))
    ask = "value" if rng.random() < 0.5 else "extreme"
    angle_max = 10.0
    p = common_params(rng, "chart", angle_max, 0.7)
    limit = content_limit(p["angle"])
    font = str(pick(rng, FONTS[:9]))
    size = int(rng.integers(TEXT_PX_RANGE[0], 23))
    title = str(pick(rng, CHART_TITLES)) if rng.random() < 0.5 else ""
    p.update(chart=chart, font=font, title=title)
    largest = rng.random() < 0.6
    if chart == "pie":
        _sample_pie(rng, p, ask, largest, size, limit)
    else:
        _sample_axes(rng, p, chart, ask, largest, size, limit)
    return _chart_question(p, ask, largest, rng)


def _sample_pie(rng: np.random.Generator, p: Params, ask: str, largest: bool, size: int, limit: int) -> None:
    """Fill ``p`` with a pie whose shares sum to 100 and whose layout fits ``limit``."""
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


def _sample_axes(
    rng: np.random.Generator, p: Params, chart: str, ask: str, largest: bool, size: int, limit: int
) -> None:
    """Fill ``p`` with a bar or line chart, growing the canvas (then shrinking text, then dropping
    categories) until every label fits."""
    n = int(rng.integers(3 if chart == "bar" else 4, 13))
    if chart == "line":
        start = int(rng.integers(2000, 2016))
        cats = [str(start + i) for i in range(n)] if rng.random() < 0.6 else list(CATEGORY_SETS[1][:n])
    else:  # option letters would clash with letter categories in a choice question
        sets = CATEGORY_SETS if ask == "value" else CATEGORY_SETS[1:]
        cats = list(pick(rng, sets)[:n])
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
            [list(pick(rng, CHART_PALETTE))] * n
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
            q = pick(
                rng,
                [
                    f"What percentage of the total is {cats[i]}?",
                    f"What share (in percent) does {cats[i]} have in the pie chart?",
                ],
            )
        elif chart == "bar":
            q = pick(
                rng,
                [
                    f"What is the value of the bar labelled {cats[i]}?",
                    f"What value does the bar for {cats[i]} show?",
                ],
            )
        else:
            q = pick(
                rng, [f"What was the value in {cats[i]}?", f"What value does the line reach at {cats[i]}?"]
            )
        ans = fmt_num(vals[i])
        others = [fmt_num(v) for j, v in enumerate(vals) if j != i]
        order = sorted(others, key=lambda s: abs(float(s) - vals[i]))
        dis = distractors(order, ans, "numeric", numeric_fallback(vals[i], rng), rng)
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
    q = choice_question(stem, options)
    return BenchmarkItem(
        "chart",
        f"chart_{chart}_extreme",
        q,
        letter,
        "choice",
        p,
        letter_distractors(len(options), letter),
        options,
    )


def render_chart(p: Params) -> Image.Image:
    """Draw a chart scene (before rotation and noise, which `render_image` applies)."""
    img = Image.new("RGB", (p["width"], p["height"]), tuple(p["bg"]))
    d = ImageDraw.Draw(img)
    ink, font, size = tuple(p["ink"]), p["font"], p["size_px"]
    if p["title"]:
        draw_text(d, (p["width"] / 2, 8), p["title"], font, size + 2, ink, "ct")
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
                txt_col = (255, 255, 255) if lum(col) < 140 else (0, 0, 0)
                draw_text(d, (tx, ty), f"{v}%", font, size, txt_col, "cc")
            lx, ly = lay["legend_xy"]
            y = ly + k * lay["row_h"]
            sw = lay["swatch"]
            d.rectangle((lx, y, lx + sw, y + sw), fill=tuple(col))
            draw_text(d, (lx + sw + 6, y + sw / 2), lay["entries"][k], font, size, ink, "lc")
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
        draw_text(d, (x0 - 6, y), fmt_num(v), font, size, ink, "rc")
    pts = []
    for i, (c, v) in enumerate(zip(p["categories"], p["values"], strict=True)):
        cx = lay["centres"][i]
        top = value_y(lay, v)
        if p["chart"] == "bar":
            half = lay["slot"] * 0.31
            d.rectangle((round(cx - half), top, round(cx + half), y1 - 1), fill=tuple(p["colors"][i]))
        pts.append((cx, top))
        draw_text(d, (cx, y1 + 6), c, font, size, ink, "ct")
    if p["chart"] == "line":
        d.line(pts, fill=tuple(p["colors"][0]), width=2)
        for cx, top in pts:
            d.ellipse((cx - 3, top - 3, cx + 3, top + 3), fill=tuple(p["colors"][0]))
    if p["annotate"]:
        for (cx, top), v in zip(pts, p["values"], strict=True):
            draw_text(d, (cx, top - 5), fmt_num(v), font, size, ink, "cb")
    d.line((x0, y0, x0, y1), fill=ink, width=1)
    d.line((x0, y1, x1, y1), fill=ink, width=1)
    return img
