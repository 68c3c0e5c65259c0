"""General queries: scenes of coloured shapes asking for a count, a colour, a shape or a spatial relation,
and the renderer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from collectors.benchmark.sampling import (
    choice_question,
    common_params,
    content_limit,
    distractors,
    draw_level,
    letter_distractors,
    numeric_fallback,
    pick,
)
from collectors.benchmark.spec import (
    MIN_SIDE,
    SHAPE_COLOURS,
    SHAPE_KINDS,
    SHAPE_PX_RANGE,
    SPATIAL_OPTIONS,
    BenchmarkItem,
    Params,
)


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


@dataclass
class _Scene:
    """A shape scene being placed: canvas, shape size and allowed overlap (both may grow or shrink while
    placing, so later shapes see the adjusted values) and the shapes placed so far."""

    rng: np.random.Generator
    W: int
    H: int
    obj: int
    occlusion: float
    shapes: list[dict[str, Any]] = field(default_factory=list)

    def radius(self) -> int:
        return max(5, int(round(self.obj * float(self.rng.uniform(0.75, 1.25)))))

    def add(self, kind: str, colour: str) -> bool:
        """Place one shape where it stays visible; False when no free spot was found."""
        r = self.radius()
        pos = _place(self.rng, r, self.W, self.H, self.shapes, self.occlusion)
        if pos is None:
            return False
        self.shapes.append(
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


# (question, answer, answer kind, distractors, options, target) of one general query
_Asked = tuple[str, str, str, list[str], list[str] | None, dict[str, Any]]


def sample_general(rng: np.random.Generator) -> BenchmarkItem:
    """A scene of coloured shapes asking for a count, a colour, a shape or where one shape is."""
    task = str(
        pick(rng, ("general_count", "general_count", "general_colour", "general_shape", "general_spatial"))
    )
    p = common_params(rng, "general", 12.0, 0.45)
    limit = content_limit(p["angle"])
    W, H = int(rng.integers(MIN_SIDE, limit + 1)), int(rng.integers(MIN_SIDE, limit + 1))
    obj = int(rng.integers(SHAPE_PX_RANGE[0], SHAPE_PX_RANGE[1] + 1))
    scene = _Scene(rng, W, H, obj, draw_level(rng, 0.5))
    n_total = int(rng.integers(3, 25))
    if task == "general_count":
        q, ans, kind, dis, options, target = _ask_count(scene, n_total)
    elif task in ("general_colour", "general_shape"):
        q, ans, kind, dis, options, target = _ask_attribute(scene, n_total, task)
    else:
        q, ans, kind, dis, options, target = _ask_spatial(scene, n_total)
    p["target"] = target
    p.update(task=task, width=W, height=H, obj_size=scene.obj, occlusion=scene.occlusion, shapes=scene.shapes)
    return BenchmarkItem("general", task, q, ans, kind, p, dis, options)


def _ask_count(scene: _Scene, n_total: int) -> _Asked:
    """How many shapes of one kind and colour: placed first (shrinking until they fit) so the count is exact."""
    rng, shapes = scene.rng, scene.shapes
    colours, kinds = list(SHAPE_COLOURS), list(SHAPE_KINDS)
    tk, tc = str(pick(rng, kinds)), str(pick(rng, colours))
    target = int(rng.integers(1, min(8, n_total) + 1))
    for _ in range(target):
        while not scene.add(tk, tc):  # shrink until it fits: the count must be exact
            scene.obj = max(SHAPE_PX_RANGE[0], scene.obj - 2)
            scene.occlusion = min(1.0, scene.occlusion + 0.1)
    for _ in range(n_total - target):
        k, c = str(pick(rng, kinds)), str(pick(rng, colours))
        if (k, c) == (tk, tc):
            c = colours[(colours.index(c) + 1) % len(colours)]
        scene.add(k, c)
    plural = f"{tk}s"
    q = pick(
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
    dis = distractors(cands, ans, "numeric", numeric_fallback(count, rng), rng)
    return q, ans, "numeric", dis, None, {"kind": tk, "colour": tc}


def _ask_attribute(scene: _Scene, n_total: int, task: str) -> _Asked:
    """The colour of the only shape of a kind (or the kind of the only shape of a colour), drawn on top."""
    rng, shapes = scene.rng, scene.shapes
    colours, kinds = list(SHAPE_COLOURS), list(SHAPE_KINDS)
    tk, tc = str(pick(rng, kinds)), str(pick(rng, colours))
    unique_key = "kind" if task == "general_colour" else "colour"
    first = (tk, tc)
    while not scene.add(*first):
        scene.obj = max(SHAPE_PX_RANGE[0], scene.obj - 2)
    for _ in range(n_total - 1):
        k = str(pick(rng, [x for x in kinds if x != tk])) if unique_key == "kind" else str(pick(rng, kinds))
        c = (
            str(pick(rng, [x for x in colours if x != tc]))
            if unique_key == "colour"
            else str(pick(rng, colours))
        )
        scene.add(k, c)
    shapes.append(shapes.pop(0))  # the asked-about shape is drawn last: never hidden
    if task == "general_colour":
        q = pick(rng, [f"What colour is the {tk}?", f"Which colour does the {tk} have?"])
        ans = tc
        cands = [s["colour"] for s in shapes if s["colour"] != tc] + [c for c in colours if c != tc]
    else:
        q = pick(rng, [f"What shape is the {tc} object?", f"Which shape is drawn in {tc}?"])
        ans = tk
        cands = [s["kind"] for s in shapes if s["kind"] != tk] + [k for k in kinds if k != tk]
    pool = colours if task == "general_colour" else kinds
    dis = distractors(cands, ans, "exact", lambda i: str(pool[i % len(pool)]), rng)
    return q, ans, "exact", dis, None, {"kind": tk, "colour": tc}


def _ask_spatial(scene: _Scene, n_total: int) -> _Asked:
    """Where one named shape is relative to another (a choice question); both are drawn on top."""
    rng, shapes = scene.rng, scene.shapes
    colours, kinds = list(SHAPE_COLOURS), list(SHAPE_KINDS)
    ka, kb = (str(k) for k in rng.permutation(kinds)[:2])
    ca, cb = (str(c) for c in rng.choice(colours, 2))
    rel = str(pick(rng, SPATIAL_OPTIONS))
    ra, rb = scene.radius(), scene.radius()
    pa, pb = _spatial_positions(rng, rel, ra, rb, scene.W, scene.H)
    shapes.append(
        {"kind": ka, "colour": ca, "rgb": list(SHAPE_COLOURS[ca]), "cx": pa[0], "cy": pa[1], "r": ra}
    )
    shapes.append(
        {"kind": kb, "colour": cb, "rgb": list(SHAPE_COLOURS[cb]), "cx": pb[0], "cy": pb[1], "r": rb}
    )
    rel = spatial_relation(shapes[0], shapes[1]) or rel
    rest = [k for k in kinds if k not in (ka, kb)]
    for _ in range(n_total - 2):
        scene.add(str(pick(rng, rest)), str(pick(rng, colours)))
    shapes[:] = shapes[2:] + shapes[:2]  # the two named shapes on top
    opts = [f"{o} the {kb}" for o in SPATIAL_OPTIONS]
    order = [int(i) for i in rng.permutation(len(opts))]
    options = [opts[i] for i in order]
    ans = chr(65 + options.index(f"{rel} the {kb}"))
    q = choice_question(f"Where is the {ka} relative to the {kb}?", options)
    dis = letter_distractors(len(options), ans)
    return q, ans, "choice", dis, options, {"kind": ka, "reference": kb, "relation": rel}


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


def render_general(p: Params) -> Image.Image:
    """Draw a shape scene in list order (later shapes on top)."""
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
