"""Frozen encoders really load and mean something; cache, masking and bad images behave."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import open_clip
import polars as pl
import pytest
import torch
from PIL import Image, ImageDraw

from router.features.config import FeatureConfig
from router.features.encoders import (
    EfficientNetLite0Encoder,
    efficientnet_lite0_weights_path,
    load_efficientnet_lite0,
    load_encoders,
    to_rgb,
)
from router.features.extract import extract_features
from router.features.feature_set import FeatureSet
from router.features.side import side_vector


def _sample_photo(name: str) -> Image.Image:
    """Real photographs shipped with matplotlib / scikit-learn (project dependencies), no download."""
    if name == "grace_hopper":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(f"{name}.jpg"))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def encoders():
    return load_encoders(FeatureConfig(progress=False))


def _queries(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    """rows of (query_id, question, image_path, task_group)."""
    return pl.DataFrame({
        "query_id": [r[0] for r in rows], "question": [r[1] for r in rows], "image_path": [r[2] for r in rows],
        "image_sha256": [""] * len(rows), "task_group": [r[3] for r in rows],
        "dataset": ["dsA" if i % 2 == 0 else "dsB" for i in range(len(rows))],
    })


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    chart = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(chart)
    for i, h in enumerate([50, 120, 80, 200]):
        draw.rectangle([30 + 70 * i, 230 - h, 80 + 70 * i, 230], fill=(40, 90, 200))
    chart.save(d / "chart.png")
    Image.new("RGB", (200, 500), (255, 140, 0)).save(d / "orange.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return d


# ----------------------------------------------------------------------------------------------- image encoder


def _load_by_name(weights: Path) -> torch.nn.Module:
    """Second, independent path: translate EfficientNet-PyTorch names to timm names by rule (not by order)."""
    import timm

    src = torch.load(weights, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    flat = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expands = {int(m.group(1)) for k in src if (m := re.match(r"_blocks\.(\d+)\._expand_conv", k))}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for k, v in src.items():
        m = re.match(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", k)
        if m:
            i, mod, rest = int(m.group(1)), m.group(2), m.group(3)
            s, j = flat[i]
            out[f"blocks.{s}.{j}.{(ir if i in expands else ds)[mod]}.{rest}"] = v
        else:
            mod, rest = k.split(".", 1)
            out[f"{top[mod]}.{rest}"] = v
    model.load_state_dict(out, strict=True)
    return model.eval()


def test_efficientnet_load_matches_name_based_load_and_recognises_photos():
    from timm.data import ImageNetInfo

    weights = efficientnet_lite0_weights_path()
    by_order = load_efficientnet_lite0(weights)
    by_name = _load_by_name(weights)
    for (ka, a), (kb, b) in zip(by_order.state_dict().items(), by_name.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b), ka

    # ImageNet protocol (resize + centre crop); real photos must land on plausible classes
    enc = EfficientNetLite0Encoder(FeatureConfig(image_resize="crop", dtype="float32", progress=False))
    info = ImageNetInfo()
    expected = {"grace_hopper": {"military uniform"}, "flower": {"daisy"}, "china": {"palace", "monastery"}}
    photos = {k: _sample_photo(k) for k in expected}
    x = torch.stack([enc.preprocess(p) for p in photos.values()])
    _, _, logits = enc.forward_all(x)
    with torch.inference_mode():
        ref = by_name(x)  # the second load path gives the same predictions
    assert torch.allclose(logits, ref, atol=1e-4)
    for (name, want), row in zip(expected.items(), logits, strict=True):
        top5 = {info.index_to_description(int(i)).split(",")[0] for i in row.topk(5).indices}
        assert want & top5, f"{name}: top-5 {top5}"


def test_image_embedding_two_crops_closer_than_other_photos(encoders):
    hopper, flower, china = (_sample_photo(n) for n in ("grace_hopper", "flower", "china"))
    w, h = hopper.size
    crop_a = hopper.crop((0, 0, int(w * 0.85), int(h * 0.85)))
    crop_b = hopper.crop((int(w * 0.15), int(h * 0.15), w, h))
    enc = encoders.image
    tokens, pooled = enc.encode(torch.stack([enc.preprocess(i) for i in (crop_a, crop_b, flower, china)]))
    assert tokens.shape == (4, 49, 320) and pooled.shape == (4, 1280)
    same = _cos(pooled[0], pooled[1])
    assert same > _cos(pooled[0], pooled[2]) + 0.1
    assert same > _cos(pooled[0], pooled[3]) + 0.1


# ----------------------------------------------------------------------------------------------- text encoder


def test_minilm_related_questions_closer_than_unrelated(encoders):
    toks, pooled = encoders.text.encode([
        "How many bars are in the chart?", "Count the bars shown in this bar chart.",
        "What is the capital of France?", "Solve for x: 2x + 3 = 7",
    ])
    assert pooled.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-4)
    related = _cos(pooled[0], pooled[1])
    assert related > _cos(pooled[0], pooled[2]) + 0.3
    assert related > _cos(pooled[0], pooled[3]) + 0.3
    assert all(t.shape[1] == 384 and 1 <= t.shape[0] <= 32 for t in toks)


# ----------------------------------------------------------------------------------------------- extraction


def test_extract_masks_text_only_skips_bad_images_and_roundtrips(encoders, image_dir, tmp_path):
    q = _queries([
        ("q1", "What is the height of the tallest bar?", "chart.png", "chart"),
        ("q2", "What colour is the image?", "orange.png", "general"),
        ("q3", "What is 17 times 3?", "", "math"),
        ("q4", "Read the text.", "corrupt.png", "ocr"),
        ("q5", "What is shown?", "does_not_exist.png", "general"),
        ("q6", "How many bars are there?", "chart.png", "chart"),
    ])
    fs = extract_features(q, image_dir, tmp_path / "cache", FeatureConfig(progress=False), encoders)
    assert fs.query_ids == ["q1", "q2", "q3", "q6"]
    reasons = {s["query_id"]: s["reason"] for s in fs.skipped}
    assert set(reasons) == {"q4", "q5"}
    assert "corrupt.png" in reasons["q4"] and "not found" in reasons["q5"]

    assert fs.img_tokens.shape == (4, 49, 320) and fs.img_tokens.dtype == np.float16
    assert fs.img_mask.tolist() == [[True] * 49, [True] * 49, [False] * 49, [True] * 49]
    assert not fs.img_pooled[2].any()  # the text-only row is masked, not a fake image
    assert fs.img_pooled[1].any()
    np.testing.assert_array_equal(fs.img_tokens[0], fs.img_tokens[3])  # same image -> same features
    side = dict(zip(fs.side_names, fs.side.T, strict=True))
    assert side["has_image"].tolist() == [1, 1, 0, 1]
    assert side["image_width_log"][0] == pytest.approx(np.log1p(320))
    assert side["image_height_log"][1] == pytest.approx(np.log1p(500))
    assert side["task_group=math"].tolist() == [0, 0, 1, 0]
    assert fs.txt_mask.sum(1).min() >= 3 and fs.txt_tokens.shape[2] == 384
    # routing time rebuilds the same side row from the stored layout
    np.testing.assert_allclose(side_vector(fs.side_names, "What colour is the image?", "general", "dsB", (200, 500)),
                               fs.side[1])
    np.testing.assert_allclose(side_vector(fs.side_names, "What is 17 times 3?", "math", "dsA", None), fs.side[2])

    fs.save(tmp_path / "fs")
    back = FeatureSet.load(tmp_path / "fs")
    for a in FeatureSet.ARRAYS:
        np.testing.assert_array_equal(getattr(back, a), getattr(fs, a))
    assert back.query_ids == fs.query_ids and back.skipped == fs.skipped

    table = fs.to_table()
    assert table["n_img_tokens"].to_list() == [49, 49, 0, 49]
    assert table["img_pooled"][2] is None and len(table["img_pooled"][0]) == 1280
    expected_bytes = (49 * 320 * 2 + 1280 * 2) * 1 + table["n_txt_tokens"][0] * 384 * 2 + 384 * 2 + fs.side.shape[1] * 4
    assert table["bytes"][0] == expected_bytes
    assert fs.bytes_per_query > 49 * 320 * 2  # the dense image tokens alone


def test_transparent_png_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgb = np.asarray(to_rgb(rgba))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[1, 1].tolist() == [255, 0, 0]
    assert np.asarray(to_rgb(rgba.convert("LA")))[0, 0].tolist() == [255, 255, 255]


def test_all_text_only_has_no_image_arrays(encoders, tmp_path):
    q = _queries([("t1", "What is 2 + 2?", "", "math"), ("t2", "Name a prime number.", "", "math")])
    fs = extract_features(q, tmp_path, tmp_path / "cache", FeatureConfig(progress=False), encoders)
    assert fs.img_tokens is None and fs.img_mask is None and fs.image_encoder_id is None
    assert not fs.has_image.any()


def test_cache_skips_recomputation(encoders, image_dir, tmp_path):
    cfg = FeatureConfig(progress=False, image_batch_size=2, text_batch_size=2)
    q = _queries([
        ("q1", "What is the height of the tallest bar?", "chart.png", "chart"),
        ("q2", "What colour is the image?", "orange.png", "general"),
        ("q3", "What is 17 times 3?", "", "math"),
    ])
    img0, txt0 = encoders.image.calls, encoders.text.calls
    first = extract_features(q, image_dir, tmp_path / "cache", cfg, encoders)
    assert (encoders.image.calls - img0, encoders.text.calls - txt0) == (1, 2)

    img1, txt1 = encoders.image.calls, encoders.text.calls
    again = extract_features(q, image_dir, tmp_path / "cache", cfg, encoders)
    assert (encoders.image.calls, encoders.text.calls) == (img1, txt1)  # nothing recomputed
    np.testing.assert_array_equal(again.img_tokens, first.img_tokens)
    np.testing.assert_array_equal(again.txt_tokens, first.txt_tokens)

    # one new question, same image: exactly one text batch and no image batch
    q2 = pl.concat([q, _queries([("q4", "Which bar is the shortest?", "chart.png", "chart")])])
    extract_features(q2, image_dir, tmp_path / "cache", cfg, encoders)
    assert (encoders.image.calls, encoders.text.calls) == (img1, txt1 + 1)

    # a different encoder version (max tokens) is a different cache entry
    cfg8 = FeatureConfig(progress=False, max_text_tokens=8)
    enc8 = load_encoders(cfg8)
    t8 = enc8.text.calls
    fs8 = extract_features(q, image_dir, tmp_path / "cache", cfg8, enc8)
    assert enc8.text.calls > t8 and fs8.txt_tokens.shape[1] <= 8


# ----------------------------------------------------------------------------------------------- open_clip


def test_open_clip_local_checkpoint_roundtrip(tmp_path, image_dir):
    cfg_file = tmp_path / "LRouterTinyCLIP.json"
    cfg_file.write_text(json.dumps({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(0)
    ref = open_clip.create_model("LRouterTinyCLIP").eval()
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(ref.state_dict(), ckpt)

    missing = FeatureConfig(clip_arch="LRouterTinyCLIP", clip_checkpoint=str(tmp_path / "nope.pt"), progress=False)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        extract_features(_queries([("a", "x", "", "math")]), image_dir, tmp_path / "c0", missing)

    cfg = FeatureConfig(clip_arch="LRouterTinyCLIP", clip_checkpoint=str(ckpt), progress=False, max_text_tokens=12,
                        dtype="float32")
    q = _queries([("q1", "How many bars are there?", "chart.png", "chart"), ("q2", "What is 3 + 4?", "", "math")])
    fs = extract_features(q, image_dir, tmp_path / "cache", cfg)
    assert fs.image_encoder_id == "open_clip/LRouterTinyCLIP:image"
    assert fs.img_tokens.shape == (2, 16, 32)  # (64/16)^2 patch tokens of width 32
    assert fs.img_mask.tolist() == [[True] * 16, [False] * 16]
    assert fs.img_pooled.shape == (2, 24) and fs.txt_pooled.shape == (2, 24)
    assert fs.txt_tokens.shape[2] == 32 and 3 <= fs.txt_mask[0].sum() <= 12

    # the checkpoint was really loaded: embeddings equal those of the model that wrote it
    _, _, preprocess = open_clip.create_model_and_transforms("LRouterTinyCLIP", pretrained=str(ckpt))
    tok = open_clip.get_tokenizer("LRouterTinyCLIP")
    with torch.inference_mode():
        img = ref.encode_image(preprocess(Image.open(image_dir / "chart.png").convert("RGB"))[None])
        txt = ref.encode_text(tok(["How many bars are there?"]))
    np.testing.assert_allclose(fs.img_pooled[0].astype(np.float32), img[0].numpy(), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(fs.txt_pooled[0].astype(np.float32), txt[0].numpy(), atol=2e-3, rtol=2e-3)


def test_bad_queries_raise_clear_errors(tmp_path):
    q = _queries([("q1", "a", "", "math"), ("q1", "b", "", "math")])
    with pytest.raises(ValueError, match="q1"):
        extract_features(q, tmp_path, tmp_path / "cache", FeatureConfig(progress=False))
    with pytest.raises(ValueError, match="image_path"):
        extract_features(q.drop("image_path"), tmp_path, tmp_path / "cache", FeatureConfig(progress=False))
    with pytest.raises(ValueError, match="clip_checkpoint"):
        FeatureConfig(clip_arch="ViT-B-32")


def test_onnx_runtime_matches_eager_encoders_for_any_batch_and_length(image_dir):
    """The routing service's ONNX Runtime graphs give the eager encoders' numbers (same fp32 weights): MiniLM
    for one question and for a padded batch of very different lengths, EfficientNet for one image and a batch.
    float32 pinned: on a CPU with native bf16 ``auto`` picks bf16, which the graphs do not run."""
    eager = load_encoders(FeatureConfig(progress=False, runtime="torch", dtype="float32")).text
    graph = load_encoders(FeatureConfig(progress=False, runtime="onnx", dtype="float32")).text
    assert (eager.runtime, graph.runtime) == ("torch", "onnx") and graph.encoder_id == eager.encoder_id
    assert graph.version == eager.version  # same numbers: cached features stay valid
    texts = ["x", "What word is written in the box?", "a much longer question about the chart " * 12,
             "Is this a cat or a dog?"]
    for batch in ([texts[1]], [texts[2]], texts, texts[::-1]):
        (t_e, p_e), (t_g, p_g) = eager.encode(batch), graph.encode(batch)
        np.testing.assert_allclose(p_g, p_e, atol=1e-5)
        for a, b in zip(t_g, t_e, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-4)
    # batched pooled vectors equal one-at-a-time ones (the gateway routes queued requests together)
    singles = np.stack([graph.encode([t])[1][0] for t in texts])
    np.testing.assert_allclose(graph.encode(texts)[1], singles, atol=1e-5)
    # one intra-op thread unless FeatureConfig.num_threads says otherwise (whatever torch's count when built)
    assert graph._graph.session.get_session_options().intra_op_num_threads == 1
    two = load_encoders(FeatureConfig(progress=False, runtime="onnx", dtype="float32", num_threads=2)).text
    np.testing.assert_allclose(two.encode(texts)[1], graph.encode(texts)[1], atol=1e-5)
    assert two._graph.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(ValueError, match="runtime"):
        FeatureConfig(runtime="tensorrt")
    img_eager = load_encoders(FeatureConfig(progress=False, runtime="torch", dtype="float32")).image
    img_graph = load_encoders(FeatureConfig(progress=False, runtime="onnx", dtype="float32")).image
    assert (img_eager.runtime, img_graph.runtime) == ("torch", "onnx") and img_graph.version == img_eager.version
    images = [Image.open(image_dir / n).convert("RGB") for n in ("chart.png", "orange.png")]
    pixels = torch.stack([img_eager.preprocess(im) for im in images])
    for batch in (pixels[:1], pixels):
        (tok_e, pool_e), (tok_g, pool_g) = img_eager.encode(batch), img_graph.encode(batch)
        assert tok_g.shape == tok_e.shape == (len(batch), 49, 320)
        np.testing.assert_allclose(tok_g, tok_e, atol=2e-4)
        np.testing.assert_allclose(pool_g, pool_e, atol=1e-4)


def test_int8_text_graph_is_close_to_fp32_but_not_equal_and_keeps_its_own_cache_version(image_dir):
    """``onnx_int8`` quantizes the text encoder's weights: the embeddings move (so it never shares a cache
    version with fp32) but stay close (cosine >= 0.97 per question, batched equals one at a time); the image
    encoder under it is the exact fp32 graph."""
    fp32 = load_encoders(FeatureConfig(progress=False, runtime="onnx", dtype="float32")).text
    int8 = load_encoders(FeatureConfig(progress=False, runtime="onnx_int8", dtype="float32")).text
    assert int8.runtime == "onnx_int8" and int8.encoder_id == fp32.encoder_id and int8.version != fp32.version
    texts = ["What word is written in the box?", "How many bars in the chart are above 40?", "Is this a cat?",
             "Solve for x: 3x + 4 = 19. Give the value of x."]
    (t_f, p_f), (t_q, p_q) = fp32.encode(texts), int8.encode(texts)
    cos = (p_f * p_q).sum(1)  # both L2-normalised
    assert cos.min() >= 0.97 and np.abs(p_q - p_f).max() > 1e-3, cos
    assert [t.shape for t in t_q] == [t.shape for t in t_f]
    np.testing.assert_allclose(np.stack([int8.encode([t])[1][0] for t in texts]), p_q, atol=1e-5)
    # the closest fp32 embedding of each int8 one is its own question's
    assert ((p_q @ p_f.T).argmax(1) == np.arange(len(texts))).all()
    img_fp32 = load_encoders(FeatureConfig(progress=False, runtime="onnx", dtype="float32")).image
    img_int8 = load_encoders(FeatureConfig(progress=False, runtime="onnx_int8", dtype="float32")).image
    pixels = img_fp32.preprocess(Image.open(image_dir / "chart.png").convert("RGB"))[None]
    np.testing.assert_allclose(img_int8.encode(pixels)[1], img_fp32.encode(pixels)[1], atol=1e-5)
    assert img_int8.version == img_fp32.version
    with pytest.raises(RuntimeError, match="onnx_int8.*float32"):
        load_encoders(FeatureConfig(progress=False, runtime="onnx_int8", dtype="bfloat16"))


def test_serving_encoders_follow_the_features_dtype_unless_overridden(monkeypatch):
    """The routing service encodes requests in the features' dtype (a bf16 feature set is served by the eager
    bf16 encoders, matching the stored numbers); serving dtype float32 (LROUTER_SERVING_DTYPE, read once by
    pipelines.settings) opts into the fp32 ONNX graphs, ``int8`` into them with int8 text weights; a bad value
    is named. The library reads no variable itself."""
    from pipelines.settings import Settings
    from router.serving.service import ServingOptions, serving_feature_config

    monkeypatch.setenv("LROUTER_SERVING_DTYPE", "int8")  # ignored by the library: settings are passed
    for dtype in ("bfloat16", "float32"):
        cfg = serving_feature_config(FeatureConfig(dtype=dtype))
        assert (cfg.dtype, cfg.runtime, cfg.progress) == (dtype, "auto", False)
        assert load_encoders(cfg).text.runtime == ("onnx" if dtype == "float32" else "torch")
    cfg = serving_feature_config(FeatureConfig(dtype="bfloat16"), ServingOptions(dtype="float32"))
    assert cfg.dtype == "float32" and load_encoders(cfg).text.runtime == "onnx"
    serving = Settings.from_env({"LROUTER_SERVING_DTYPE": "int8"}).serving()  # fp32 graphs, int8 text weights
    cfg = serving_feature_config(FeatureConfig(dtype="bfloat16"), serving)
    assert (cfg.dtype, cfg.runtime) == ("float32", "onnx_int8") and load_encoders(cfg).text.runtime == "onnx_int8"
    with pytest.raises(ValueError, match=r"dtype int8 \(LROUTER_SERVING_DTYPE\).*\(LROUTER_RUNTIME\) is 'torch'"):
        serving_feature_config(FeatureConfig(), ServingOptions(runtime="torch", dtype="int8"))
    with pytest.raises(ValueError, match=r"dtype 'int4'.*dtype"):
        serving_feature_config(FeatureConfig(), ServingOptions(dtype="int4"))


def test_encode_lanes_split_a_routing_batch_across_threads_with_the_same_numbers(image_dir, monkeypatch):
    """``encode_lanes=2`` encodes a routing batch's images and questions in two concurrent chunks on the graph
    runtimes: every request's features are bitwise those of one lane, the encoders really run on two pool
    threads, a one-request batch stays on the caller's thread, the eager runtime ignores lanes,
    and ``$LROUTER_ENCODE_LANES`` sets it for serving (a bad value names the variable)."""
    from router.features.extract import encode_requests
    from router.serving.service import serving_feature_config

    one = FeatureConfig(progress=False, runtime="onnx_int8", dtype="float32")
    two = replace(one, encode_lanes=2)
    photos = [Image.open(image_dir / n).convert("RGB") for n in ("chart.png", "orange.png")]
    images = [photos[0], None, photos[1], photos[0], None]
    questions = ["What is the tallest bar?", "Solve 3x + 4 = 19.", "What fruit is this?", "Which year?", "Hi"]
    enc = load_encoders(two)  # the same memoised encoders: lanes do not change them
    assert load_encoders(one) is enc
    seen: list[str] = []
    for part in (enc.image, enc.text):
        monkeypatch.setattr(part, "encode", _recording(part.encode, seen))
    a, b = encode_requests(images, questions, one), encode_requests(images, questions, two)
    assert seen[:2] == [threading.current_thread().name] * 2  # one lane: one image pass + one text pass, inline
    lanes = seen[2:]
    assert len(lanes) == 4 and all(n.startswith("lrouter-encode") for n in lanes), lanes
    assert len(set(lanes)) == 2  # 2 image chunks + 2 question chunks on two worker threads
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k, v in x.items():
            assert (v is None and y[k] is None) or np.array_equal(v, y[k]), k
    seen.clear()
    encode_requests([None], ["just one"], two)
    assert seen == [threading.current_thread().name]
    eager = FeatureConfig(progress=False, runtime="torch", dtype="float32", encode_lanes=2)
    monkeypatch.setattr(load_encoders(eager).text, "encode", _recording(load_encoders(eager).text.encode, seen))
    seen.clear()
    encode_requests([None, None], ["a", "b"], eager)
    assert seen == [threading.current_thread().name]  # eager torch keeps its own threads: one inline pass
    with pytest.raises(ValueError, match="encode_lanes"):
        FeatureConfig(encode_lanes=0)
    from pipelines.settings import Settings

    assert serving_feature_config(FeatureConfig(), Settings.from_env({"LROUTER_ENCODE_LANES": "2"}).serving()
                                  ).encode_lanes == 2
    with pytest.raises(ValueError, match="LROUTER_ENCODE_LANES.*'two'"):
        Settings.from_env({"LROUTER_ENCODE_LANES": "two"}).serving()


def _recording(fn, seen: list[str]):
    def wrapped(*args, **kwargs):
        seen.append(threading.current_thread().name)
        return fn(*args, **kwargs)
    return wrapped


def test_graphs_built_at_once_on_several_threads_take_turns_in_the_exporter():
    """Two lanes can build the text and image graphs at the same moment (the first routed batch after a
    start); torch's ONNX exporter is process-wide state, so concurrent builds must not fail."""
    from router.features.onnx_graph import OnnxGraph

    barrier, errors, graphs = threading.Barrier(4), [], []

    def build(width: int) -> None:
        module = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(8)])
        barrier.wait()
        try:
            graphs.append(OnnxGraph(module, (torch.zeros(1, width),), ("x",), ("y",), {"x": {0: "b"}}, None))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(16 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(graphs) == 4
    assert sorted(g.run(np.ones((2, g.session.get_inputs()[0].shape[1]), np.float32))[0].shape[1]
                  for g in graphs) == [16, 17, 18, 19]
