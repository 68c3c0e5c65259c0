"""The built-in benchmark generator: determinism, schema, exact ground truth, honest visual factors."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from collectors.benchmark.chart import axes_layout
from collectors.benchmark.drawing import get_font
from collectors.benchmark.factors import visual_factors, visual_from_params
from collectors.benchmark.generator import (
    encode_png,
    generate_benchmark,
    query_id,
    render_image,
    sample_query,
)
from collectors.benchmark.spec import DATASETS, MAX_SIDE, MIN_SIDE
from collectors.scoring import is_correct, score_answer
from collectors.simulator import behaviour
from collectors.simulator.specs import DEFAULT_POOL
from warehouse.schemas import QUERIES
from warehouse.vocabulary import TASK_GROUPS, VISUAL_FACTORS

N, SEED = 48, 7


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    d = tmp_path_factory.mktemp("images_a")
    return generate_benchmark(n=N, seed=SEED, images_dir=d), d


@pytest.fixture(scope="module")
def items() -> list:
    """Many sampled (not rendered) queries for ground-truth checks: sampling alone is cheap."""
    return [sample_query(11, i) for i in range(480)]


def _meta(row: dict) -> dict:
    return json.loads(row["source_meta"])


def _clean(params: dict, **changes: object) -> dict:
    """The same scene without rotation, wash, blur and noise (plus ``changes``)."""
    p = copy.deepcopy(params)
    p.update(angle=0.0, wash=0.0, blur=0.0, noise=0.0)
    p.update(changes)
    return p


def _arr(params: dict) -> np.ndarray:
    return np.asarray(render_image(params).convert("RGB"), dtype=np.int16)


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_table_and_png_bytes(bench, tmp_path: Path) -> None:
    df, d = bench
    df2 = generate_benchmark(n=N, seed=SEED, images_dir=tmp_path)
    assert df.equals(df2)
    for name in df["image_path"]:
        assert (d / name).read_bytes() == (tmp_path / name).read_bytes()


def test_parallel_workers_give_the_same_result(bench, tmp_path: Path) -> None:
    df, _ = bench
    df2 = generate_benchmark(n=N, seed=SEED, images_dir=tmp_path, workers=2)
    assert df.equals(df2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(df["image_path"]))


def test_prefix_and_different_seed(bench, tmp_path: Path) -> None:
    df, _ = bench
    head = generate_benchmark(n=8, seed=SEED, images_dir=tmp_path / "a")
    assert head.equals(df.head(8))  # query i depends only on (seed, i)
    other = generate_benchmark(n=8, seed=SEED + 1, images_dir=tmp_path / "b")
    assert not set(other["query_id"]) & set(df["query_id"])
    assert not set(other["image_sha256"]) & set(df["image_sha256"])
    assert other["question"].to_list() != head["question"].to_list()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate_benchmark(n=-1, images_dir=tmp_path)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_benchmark(n=4, images_dir=tmp_path, workers=0)
    with pytest.raises(ValueError, match="benchmark name"):
        generate_benchmark(n=4, images_dir=tmp_path, benchmark="")
    assert generate_benchmark(n=0, images_dir=tmp_path).columns == list(QUERIES)
    with pytest.raises(ValueError, match="field 'group'"):
        render_image({"group": "audio"})


# ------------------------------------------------------------------------------------------- schema


def test_schema_and_ids(bench) -> None:
    df, _ = bench
    assert df.height == N
    assert df.columns == list(QUERIES)
    assert dict(df.schema) == QUERIES
    assert df.null_count().sum_horizontal().item() == 0
    assert set(df["benchmark"]) == {"builtin"} and set(df["official_split"]) == {""}
    assert df["query_id"].n_unique() == N
    for row in df.iter_rows(named=True):
        meta = _meta(row)
        assert re.fullmatch(r"[0-9a-f]{16}", row["query_id"])
        assert row["query_id"] == hashlib.sha1(f"builtin:{meta['source_id']}".encode()).hexdigest()[:16]
        assert row["query_id"] == query_id("builtin", meta["source_id"])
        assert row["dataset"] == DATASETS[row["task_group"]]
        assert row["answer_kind"] in {"exact", "numeric", "choice", "text"}
        assert meta["generator_version"] == "1"
        assert meta["params"]["task"] == row["task"]


def test_every_group_present_and_balanced(bench) -> None:
    df, _ = bench
    counts = Counter(df["task_group"])
    assert set(counts) == set(TASK_GROUPS)
    assert set(counts.values()) == {N // 4}


def test_images_exist_with_recorded_sha_and_render_from_params(bench) -> None:
    df, d = bench
    sizes = []
    for row in df.iter_rows(named=True):
        data = (d / row["image_path"]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        assert sha == row["image_sha256"] and row["image_path"] == f"{sha}.png"
        img = Image.open(io.BytesIO(data))
        assert img.format == "PNG"
        assert MIN_SIDE <= img.width <= MAX_SIDE and MIN_SIDE <= img.height <= MAX_SIDE
        sizes.append(len(data))
        # the image is a pure function of the stored scene description
        params = _meta(row)["params"]
        assert hashlib.sha256(encode_png(render_image(params))).hexdigest() == sha
    assert np.median(sizes) < 60_000


# ------------------------------------------------------------------------------------ visual factors


def test_visual_factors_present_in_range_and_derived_from_params(bench) -> None:
    df, _ = bench
    for row in df.iter_rows(named=True):
        meta = _meta(row)
        vis = visual_factors(row["source_meta"])
        assert set(vis) == set(VISUAL_FACTORS)
        assert all(0.0 <= v <= 1.0 for v in vis.values())
        assert vis == visual_from_params(meta["params"])
        assert behaviour.check_visual(meta["visual"]) == vis  # the simulator accepts them as they are
    spread = pl.DataFrame([visual_factors(m) for m in df["source_meta"]])
    assert all(spread[f].std() > 0.1 for f in VISUAL_FACTORS)  # every factor actually varies


def test_visual_factors_rejects_bad_meta() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        visual_factors("{nope")
    with pytest.raises(ValueError, match="factor 'noise' missing"):
        visual_factors(json.dumps({"visual": {"small_text": 0.1}}))
    with pytest.raises(ValueError, match="'rotation' = 1.5 outside"):
        visual_factors(json.dumps({"visual": dict.fromkeys(VISUAL_FACTORS, 0.0) | {"rotation": 1.5}}))
    assert visual_factors("{}", default=0.3) == dict.fromkeys(VISUAL_FACTORS, 0.3)


def _item(items: list, task: str):
    return next(it for it in items if it.task == task)


def _ink_box(arr: np.ndarray, bg: list[int]) -> tuple[int, int, int, int]:
    dark = np.abs(arr - np.array(bg)).sum(axis=2) > 60
    ys, xs = np.nonzero(dark)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_small_text_factor_tracks_rendered_glyph_size(items) -> None:
    it = _item(items, "ocr_word")
    heights, factors = [], []
    for size in (12, 20, 28):
        p = _clean(it.params, others=[])
        p["target"] = dict(p["target"], size_px=size, style="plain", text="HARBOR")
        x0, y0, x1, y1 = _ink_box(_arr(p), p["bg"])
        heights.append(y1 - y0)
        factors.append(visual_from_params(p)["small_text"])
    assert heights[0] < heights[1] < heights[2]
    assert factors[0] > factors[1] > factors[2]


def test_noise_contrast_rotation_density_factors_track_pixels(items) -> None:
    it = _item(items, "ocr_word")
    base = _clean(it.params, others=[])
    base["target"] = dict(base["target"], size_px=24, style="plain", text="HARBOR")
    clean = _arr(base)
    # noise: more speckle (and blur) => more pixels changed and a larger factor
    changed, f_noise = [], []
    for u in (0.2, 0.8):
        p = dict(base, noise=u)
        changed.append(float((np.abs(_arr(p) - clean).sum(axis=2) > 0).mean()))
        f_noise.append(visual_from_params(p)["noise"])
    assert 0 < changed[0] < changed[1] and f_noise[0] < f_noise[1]
    # contrast: a stronger wash => narrower luminance range and a larger low_contrast
    spans, f_contrast = [], []
    for wash in (0.0, 0.6):
        lum = _arr(dict(base, wash=wash)).mean(axis=2)
        spans.append(np.percentile(lum, 99.9) - lum.min())
        f_contrast.append(visual_from_params(dict(base, wash=wash))["low_contrast"])
    assert spans[1] < 0.6 * spans[0] and f_contrast[0] < f_contrast[1]
    # rotation: a rotated word is taller => larger rotation factor
    boxes, f_rot = [], []
    for angle in (0.0, 25.0):
        x0, y0, x1, y1 = _ink_box(_arr(dict(base, angle=angle)), base["bg"])
        boxes.append(y1 - y0)
        f_rot.append(visual_from_params(dict(base, angle=angle))["rotation"])
    assert boxes[1] > 1.5 * boxes[0] and f_rot == [0.0, pytest.approx(25 / 30, abs=1e-3)]
    # density: more shapes in a scene => more covered pixels and a larger density
    g = _clean(_item(items, "general_count").params)
    few = dict(g, shapes=g["shapes"][:3])
    cover = [float((np.abs(_arr(q) - np.array(q["bg"])).sum(axis=2) > 30).mean()) for q in (few, g)]
    assert len(g["shapes"]) > 3 and cover[0] < cover[1]
    assert visual_from_params(few)["density"] < visual_from_params(g)["density"]


# ---------------------------------------------------------------------------------- exact answers


def test_answers_follow_from_the_scene(items) -> None:
    seen = Counter()
    for it in items:
        p, a = it.params, it.answer
        seen[it.task] += 1
        if it.task == "general_count":
            t = p["target"]
            assert int(a) == sum(
                1 for s in p["shapes"] if (s["kind"], s["colour"]) == (t["kind"], t["colour"])
            )
            assert f"{t['colour']} {t['kind']}s" in it.question
        elif it.task == "general_colour":
            (only,) = [s for s in p["shapes"] if s["kind"] == p["target"]["kind"]]
            assert a == only["colour"] and p["shapes"][-1] is only  # unique and drawn on top
        elif it.task == "general_shape":
            (only,) = [s for s in p["shapes"] if s["colour"] == p["target"]["colour"]]
            assert a == only["kind"]
        elif it.task == "general_spatial":
            t = p["target"]
            (sa,) = [s for s in p["shapes"] if s["kind"] == t["kind"]]
            (sb,) = [s for s in p["shapes"] if s["kind"] == t["reference"]]
            dx, dy = sa["cx"] - sb["cx"], sa["cy"] - sb["cy"]
            rel = (
                ("left of" if dx < 0 else "right of")
                if abs(dx) > abs(dy)
                else ("above" if dy < 0 else "below")
            )
            assert max(abs(dx), abs(dy)) >= 2 * min(abs(dx), abs(dy))  # unambiguous
            assert it.options[ord(a) - 65] == f"{rel} the {t['reference']}"
        elif it.task.startswith("table"):
            arr = np.array(p["table"])
            tgt = p["target"]
            col = arr[:, tgt["col"]] if "col" in tgt else None
            if it.task == "table_row_sum":
                expected = arr[tgt["row"]].sum()
            elif it.task == "table_col_sum":
                expected = col.sum()
            else:
                expected = col.max() - col.min()
            assert float(a) == expected
            name = p["col_names"][tgt["col"]] if "col" in tgt else p["row_names"][tgt["row"]]
            assert name in it.question
        elif it.task in ("rect_area", "rect_perimeter", "triangle_area"):
            sa, sb = p["side_a"], p["side_b"]
            expected = {"rect_area": sa * sb, "rect_perimeter": 2 * (sa + sb), "triangle_area": sa * sb / 2}
            assert float(a) == expected[it.task]
            assert [lab.split()[0] for lab in p["labels"]] == [str(sa), str(sb)]
        elif it.task == "equation":  # solve the rendered text itself
            m = re.fullmatch(r"(\d+)([a-z]) ([+-]) (\d+) = (-?\d+)", p["equation"])
            assert m is not None, p["equation"]
            b = int(m[4]) * (1 if m[3] == "+" else -1)
            assert float(a) == (int(m[5]) - b) / int(m[1]) and re.search(rf"\b{m[2]}\b", it.question)
        elif it.task.startswith("chart"):
            vals, cats = p["values"], p["categories"]
            if p["chart"] == "pie":
                assert sum(vals) == 100 and min(vals) > 0
            elif not p["annotate"]:  # unlabelled bars end exactly on a labelled gridline
                assert all(v % p["y_step"] == 0 and v <= p["y_step"] * p["n_ticks"] for v in vals)
            if it.task.endswith("_value"):
                assert float(a) == vals[p["target"]] and cats[p["target"]] in it.question
            else:
                largest = "largest" in it.question or "highest" in it.question
                best = max(vals) if largest else min(vals)
                assert vals.count(best) == 1
                assert it.options[ord(a) - 65] == cats[vals.index(best)]
                assert len(it.options) == len(set(it.options)) and not set(it.options) & set("ABCDEFGH")
        else:
            assert it.task_group == "ocr"
            assert a == p["target"]["text"]
    assert len(seen) >= 20, seen  # every task appears


def test_counted_shapes_are_visible(items) -> None:
    """Non-overlapping scenes: the number of blobs of each colour equals the shapes of that colour."""
    from scipy import ndimage

    checked = 0
    for it in items:
        if it.task_group != "general" or it.params["occlusion"] > 0:
            continue
        p = _clean(it.params)
        arr = _arr(p)
        for colour, rgb in {s["colour"]: s["rgb"] for s in p["shapes"]}.items():
            edge = [int(c * 0.6) for c in rgb]  # shapes are outlined in a darker shade
            mask = (arr == np.array(rgb)).all(axis=2) | (arr == np.array(edge)).all(axis=2)
            _, blobs = ndimage.label(mask, structure=np.ones((3, 3)))
            assert blobs == sum(1 for s in p["shapes"] if s["colour"] == colour), (it.task, colour)
        checked += 1
        if checked == 8:
            break
    assert checked == 8


def test_bar_heights_match_values(items) -> None:
    checked = 0
    for it in items:
        p = it.params
        if p["group"] != "chart" or p["chart"] != "bar":
            continue
        q = _clean(p)
        arr = _arr(q)
        lay = axes_layout(q)
        heights = []
        for cx, rgb in zip(lay["centres"], q["colors"], strict=True):
            col = arr[:, int(round(cx))]
            heights.append(int((col == np.array(rgb)).all(axis=1).sum()))
        y0, y1 = lay["plot"][1], lay["plot"][3]
        y_max = q["y_step"] * q["n_ticks"]
        for h, v in zip(heights, q["values"], strict=True):
            assert abs(h - v / y_max * (y1 - y0)) <= 1.0, (h, v, y_max, y1 - y0)
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_ocr_target_text_is_what_is_drawn(items) -> None:
    """Alone, unframed and unrotated, the target's glyphs are those of the answer drawn directly with PIL."""
    checked = 0
    for it in items:
        if it.task_group != "ocr":
            continue
        p = _clean(it.params, others=[])
        p["target"] = dict(p["target"], style="plain")
        x0, y0, x1, y1 = _ink_box(_arr(p), p["bg"])
        tx, ty = p["target"]["xy"]
        assert tx <= x0 <= tx + 6 and ty <= y0 <= ty + 6  # (faint anti-aliased edges are not ink)
        got = np.abs(_arr(p) - np.array(p["bg"])).sum(axis=2)[y0 : y1 + 1, x0 : x1 + 1] > 60
        ref_img = Image.new("RGB", (x1 - x0 + 80, y1 - y0 + 80), tuple(p["bg"]))
        font = get_font(p["target"]["font"], p["target"]["size_px"])
        ImageDraw.Draw(ref_img).text((20, 20), it.answer, font=font, fill=tuple(p["ink"]))
        ref_arr = np.asarray(ref_img, dtype=np.int16)
        r0, s0, r1, s1 = _ink_box(ref_arr, p["bg"])
        ref = np.abs(ref_arr - np.array(p["bg"])).sum(axis=2)[s0 : s1 + 1, r0 : r1 + 1] > 60
        assert got.shape == ref.shape, it.answer
        assert (got & ref).sum() / (got | ref).sum() > 0.9, it.answer
        checked += 1
        if checked == 12:
            break
    assert checked == 12


# ------------------------------------------------------------------------------ distractors, scoring


def test_distractors_are_plausible_and_wrong(items) -> None:
    for it in items:
        assert 2 <= len(it.distractors) <= 4, it.task
        assert len({d.casefold() for d in it.distractors}) == len(it.distractors)
        for d in it.distractors:
            assert not is_correct(
                score_answer(d, it.answer, it.answer_kind, options=it.options), it.answer_kind
            )
            if it.answer_kind == "numeric":
                assert re.fullmatch(r"-?\d+(\.\d+)?", d), d
            if it.answer_kind == "choice":
                assert re.fullmatch(r"[A-D]", d) and ord(d) - 65 < len(it.options)
        if it.answer_kind == "choice":
            assert 3 <= len(it.options) <= 4 and re.fullmatch(r"[A-D]", it.answer)
            for k, opt in enumerate(it.options):
                assert f"{chr(65 + k)}) {opt}" in it.question
        else:
            assert it.options is None


def test_every_answer_scores_itself_perfectly(bench) -> None:
    df, _ = bench
    for row in df.iter_rows(named=True):
        kind = row["answer_kind"]
        for pred in (row["answer"], f"The answer is {row['answer']}.", f"Answer: {row['answer']}"):
            s = score_answer(pred, row["answer"], kind)
            assert s == 1.0 and is_correct(s, kind), (pred, row["task"])


def test_simulated_replies_are_scored_as_the_simulator_meant(bench) -> None:
    """A reply the simulator drew as correct scores correct; a wrong one (other than near-miss text) wrong."""
    df, _ = bench
    for row in df.iter_rows(named=True):
        meta = _meta(row)
        for spec in DEFAULT_POOL[::2]:
            reply = behaviour.answer_for(spec, row, seed=3)
            ok = is_correct(
                score_answer(reply.text, row["answer"], row["answer_kind"], options=meta.get("options")),
                row["answer_kind"],
            )
            if reply.correct or row["answer_kind"] != "text":
                assert ok == reply.correct, (spec.name, row["task"], row["answer"], reply.text)
