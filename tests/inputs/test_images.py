"""Images as visual runs: single image, several images and image + video in one prompt, their runs on LLaVA-OneVision
(anyres with newline tokens), Qwen2.5-VL and Qwen3-VL (2-D grids, DeepStack) and InternVL (tiles), scored and pruned
with the video's tokens; ``images=`` / ``messages=`` and their errors, GLM-4V and Qwen3.5 images, and every pixel
format read faithfully. (Every method, draft kind and tree on these prompts against the stock model: the ``images``
suite of tests/decoding/test_lossless.py.)

Reference tokens come from a separately loaded stock model (the session's ``stock_reference``), never from our loop.
EOS is disabled so every run spans several verify steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import specvlm_pruning as pruning
from specvlm_pruning.verifier_guided import share
from specvlm import SpecVLM
from specvlm.decoding.target import prefill_target
from specvlm.images import ImageLoadError, load_image
from specvlm.video import from_frames
from tiny_pairs import IMAGE_PROMPTS as PROMPTS
from tiny_pairs import IMAGE_QUESTION as QUESTION
from tiny_pairs import build_prompt, eos_free_engine, image_media, pictures

MAX_NEW = 16
FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl", "internvl")


@pytest.fixture(scope="module")
def image_checkpoints(pairs):
    return {family: pairs(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def image_engines(image_checkpoints):
    out = {}
    for family, paths in image_checkpoints.items():
        for draft in ("separate", "self"):
            out[family, draft] = eos_free_engine(paths["target"], draft=paths["draft"] if draft == "separate" else None)
    return out


@pytest.fixture(scope="module")
def image_references(image_checkpoints, image_engines, stock_reference, frames):
    """{(family, prompt): (inputs, stock greedy new tokens)}."""
    out = {}
    for family in FAMILIES:
        for prompt in PROMPTS:
            inputs = build_prompt(image_engines[family, "self"], prompt, frames)
            out[family, prompt] = (inputs, stock_reference(image_checkpoints[family]["target"], inputs, MAX_NEW))
    return out


def test_runs_follow_the_prompt(image_engines, image_references):
    """Each image and the video are runs in prompt order, with each family's own grids."""
    kinds = {
        (family, prompt): [run.kind for run in image_engines[family, "self"].target_adapter.layout(image_references[family, prompt][0]).runs]
        for family in FAMILIES
        for prompt in PROMPTS
    }
    for family in ("qwen2_5_vl", "qwen3_vl", "internvl"):  # one run per image (InternVL: its tiles), one per video
        assert kinds[family, "image"] == ["image"]
        assert kinds[family, "multi"] == ["image", "image"]
        assert kinds[family, "image+video"] == ["image", "video"]
    # LLaVA-OneVision: an image is its base view plus, when tiled, its high-resolution view
    assert kinds["llava_onevision", "image+video"][-1] == "video"
    assert set(kinds["llava_onevision", "multi"]) == {"image"}
    qwen = image_engines["qwen2_5_vl", "self"].target_adapter.layout(image_references["qwen2_5_vl", "multi"][0])
    thw = image_references["qwen2_5_vl", "multi"][0]["image_grid_thw"]
    assert qwen.grids == tuple((int(t), int(h) // 2, int(w) // 2) for t, h, w in thw.tolist())
    internvl = image_engines["internvl", "self"].target_adapter.layout(image_references["internvl", "image+video"][0])
    assert internvl.runs[1].grid[0] == 4  # the four frames are one video run, not four images


def test_llava_onevision_newline_tokens_are_structural(image_engines, image_references):
    """The anyres image's newline tokens (one per row of its high-resolution view) stay in the draft."""
    engine = image_engines["llava_onevision", "separate"]
    inputs, _ = image_references["llava_onevision", "image"]
    adapter = engine.target_adapter
    layout = adapter.layout(inputs)
    slots = adapter.image_slots(inputs)
    assert layout.num_tokens + layout.structural.numel() == slots.numel()
    base, high = layout.runs
    assert base.grid[1] == base.grid[2]
    assert layout.structural.numel() == high.grid[1]  # one newline per row
    features = adapter.image_features(inputs)
    newline = adapter.model.model.image_newline
    rows = torch.isin(slots, layout.structural)
    assert bool((features[rows] == newline).all())
    assert not bool((features[~rows] == newline).all(-1).any())
    keep = engine.draft_keep(inputs, drop_rate=0.9)
    assert bool(torch.isin(layout.structural, keep).all())


@torch.no_grad()
def test_captured_scores_equal_eager_attention_over_runs(image_checkpoints, image_engines, image_references):
    """InternVL image + video: the hook's scores equal eager attention of the text after the last visual token
    to every image and video token."""
    inputs, _ = image_references["internvl", "image+video"]
    adapter = image_engines["internvl", "separate"].target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout
    eager = AutoModelForImageTextToText.from_pretrained(image_checkpoints["internvl"]["target"], attn_implementation="eager").eval()
    out = eager(**inputs, output_attentions=True)
    split = layout.last_position + 1
    rows = torch.stack([a[0, :, split:, :] for a in out.attentions])
    expected = rows[..., layout.positions].mean(dim=(0, 1, 2))
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    image_tokens = layout.runs[0].num_tokens
    assert float(expected[:image_tokens].sum()) > 0 and float(expected[image_tokens:].sum()) > 0


def test_messages_with_image_entries_match_images_argument(image_engines, image_checkpoints, stock_reference, frames, tmp_path):
    """``{"type": "image", "image": ...}`` entries (a path, a PIL image) give the stock processor's own
    inputs, and the stock model's tokens."""
    engine = image_engines["qwen2_5_vl", "separate"]
    wide, square = pictures()
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You look carefully."}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": str(path)},
                {"type": "image", "image": Image.fromarray(square)},
                {"type": "video"},
                {"type": "text", "text": QUESTION},
            ],
        },
    ]
    inputs = engine.build_inputs(messages=messages, video=frames[:4])
    processor = AutoProcessor.from_pretrained(image_checkpoints["qwen2_5_vl"]["target"])
    plain = [{**turn, "content": [{"type": e["type"]} if e["type"] != "text" else e for e in turn["content"]]} for turn in messages]
    text = processor.apply_chat_template(plain, add_generation_prompt=True)
    stock_inputs = processor(
        text=[text], images=[wide, square], videos=[frames[:4]], do_sample_frames=False, return_tensors="pt",
        video_metadata=[engine.load(frames[:4]).metadata()],
    )
    assert "You look carefully." in processor.tokenizer.decode(inputs["input_ids"][0])
    for key in ("input_ids", "pixel_values", "image_grid_thw", "pixel_values_videos"):
        assert torch.equal(inputs[key], stock_inputs[key]), key
    result = engine.generate(messages=messages, video=frames[:4], max_new_tokens=MAX_NEW, lazy_draft_after=0)
    assert result.token_ids == stock_reference(image_checkpoints["qwen2_5_vl"]["target"], inputs, MAX_NEW)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"images": [np.zeros((4, 4, 2), dtype=np.uint8)]}, r"shape \(4, 4, 2\).*\(H, W, 3\)"),
        ({"images": [np.zeros((4, 4, 3), dtype=np.float32)]}, r"dtype float32.*uint8 \(0-255\) or uint16"),
        ({"images": ["/no/such/image.png"]}, "cannot read image '/no/such/image.png': file does not exist"),
        ({"images": ["https://example.com/cat.png"]}, "URL"),
        ({"images": []}, "empty list"),
    ],
)
def test_bad_images_are_named(image_engines, kwargs, match):
    engine = image_engines["qwen2_5_vl", "self"]
    with pytest.raises(ValueError, match=match):
        engine.build_inputs(prompt=QUESTION, **kwargs)


def test_bad_image_conversations_are_named(image_engines, frames):
    engine = image_engines["qwen2_5_vl", "self"]
    wide, _ = pictures()
    two_videos = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "video", "video": frames}]}]
    with pytest.raises(ValueError, match="at most one video"):
        engine.build_inputs(messages=two_videos)
    unnamed = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": QUESTION}]}]
    with pytest.raises(ValueError, match="2 image entries, 0 of them naming their image, and 1 image"):
        engine.build_inputs(messages=unnamed, images=[wide])
    with pytest.raises(ValueError, match="no video or image entry"):
        engine.build_inputs(messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}])
    with pytest.raises(TypeError, match="an image must be"):
        engine.build_inputs(prompt=QUESTION, images=[object()])


@torch.no_grad()
def test_glm_takes_images_but_refuses_images_with_a_video(pairs, stock_reference, frames):
    """GLM-4V: images alone match stock greedy; with a video the stock model reads the video's tokens as
    image tokens, so such a prompt is refused."""
    path = pairs("glm4v")["target"]
    engine = SpecVLM.from_pretrained(path)
    engine.target.generation_config.eos_token_id = None
    wide, square = pictures()
    inputs = engine.build_inputs(prompt=QUESTION, images=[wide, square])
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0, self_draft_layers="all")
    assert result.token_ids == stock_reference(path, inputs, MAX_NEW)
    assert [run.kind for run in engine.target_adapter.layout(inputs).runs] == ["image", "image"]
    inputs = engine.build_inputs(prompt=QUESTION, images=[wide], video=frames[:4])
    with pytest.raises(ValueError, match="images and a video in one prompt are not supported"):
        engine.generate(inputs=inputs, max_new_tokens=2)


# ---- pruning over runs -------------------------------------------------------------------------
def test_share_is_proportional_and_exact():
    assert share(10, [30, 60, 10]) == [3, 6, 1]
    assert share(3, [5, 5]) == [2, 1]  # the leftover goes to the earlier run on a tie
    assert share(0, [4, 4]) == [0, 0]
    assert sum(share(7, [3, 9, 11])) == 7


def test_budget_and_stage_two_cover_every_run():
    runs = [(1, 4, 6), (4, 3, 3)]  # an image of 24 tokens, a video of 36
    n = 60
    kept = pruning.prune("specvlm", torch.zeros(n), runs, 0.9, stage1_mass=0.0)
    assert kept.numel() == 6  # floor(60 x 0.1), over all runs
    assert int((kept < 24).sum()) == 2 and int((kept >= 24).sum()) == 4  # in proportion to each run's tokens
    # Stage I ranks every run's tokens together
    scores = torch.zeros(n)
    scores[[3, 50]] = 1.0
    result = pruning.select("specvlm", scores, runs, 0.9, stage1_mass=1.0)
    assert result.stage1.tolist() == [3, 50]
    assert result.kept.numel() == 6
    # one run: the same as the plain (T, H, W) grid
    single = torch.rand(36)
    assert torch.equal(
        pruning.prune("specvlm", single, [(4, 3, 3)], 0.75), pruning.prune("specvlm", single, (4, 3, 3), 0.75)
    )
    with pytest.raises(ValueError, match="list of such grids"):
        pruning.prune("uniform", None, [(1, 2, 3), (0, 1, 1)], 0.5)


def test_cli_generate_with_an_image(image_checkpoints, image_references, tmp_path, capsys):
    """``specvlm generate --image FILE`` (no video) gives the stock model's tokens; neither --video nor
    --image is a one-line error."""
    from specvlm.cli import main as cli_main
    import json

    paths = image_checkpoints["qwen2_5_vl"]
    wide, _ = pictures()
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    argv = ["generate", "--target", str(paths["target"]), "--draft", str(paths["draft"]), "--image", str(path),
            "--prompt", QUESTION, "--max-new-tokens", str(MAX_NEW), "--ignore-eos", "--json"]  # fmt: skip
    assert cli_main(argv) == 0
    _, expected = image_references["qwen2_5_vl", "image"]
    assert json.loads(capsys.readouterr().out)["token_ids"] == expected
    assert cli_main(["generate", "--target", str(paths["target"]), "--prompt", QUESTION]) == 2
    assert "pass --video, --image" in capsys.readouterr().err


@torch.no_grad()
def test_qwen3_5_image_and_video_prompt_matches_stock(pairs, stock_reference, frames):
    """The hybrid Qwen3.5 takes images like Qwen3-VL: an image + video prompt, chain with a separate draft."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pure-torch linear-attention fallback is far slower with several threads here
    try:
        target, draft = pairs("qwen3_5")["target"], pairs("qwen3_5")["draft"]  # 4 and 2 layers
        engine = SpecVLM.from_pretrained(target, draft=draft)
        engine.target.generation_config.eos_token_id = None
        inputs = engine.build_inputs(prompt=QUESTION, **image_media("image+video", frames))
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, drop_rate=0.9, lazy_draft_after=0)
        assert result.token_ids == stock_reference(target, inputs, MAX_NEW)
        assert [run.kind for run in engine.target_adapter.layout(inputs).runs] == ["image", "video"]
        assert result.stats.kept_video_tokens == max(1, result.stats.video_tokens // 10)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- every pixel format, faithfully


def _png(tmp_path, image: Image.Image, name: str = "picture.png"):
    path = tmp_path / name
    image.save(path)
    return path


def test_a_16_bit_png_is_scaled_not_saturated(tmp_path):
    """A 16-bit grey PNG (PIL mode I;16) is read by its 16-bit range: a ramp stays a ramp (mean ~127),
    where ``convert("RGB")`` saturates every value above 255 to white (mean ~254)."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _png(tmp_path, Image.fromarray(ramp))
    assert Image.open(path).mode == "I;16"
    rgb = load_image(str(path))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[-1, -1].tolist() == [255, 255, 255]
    assert 120 < rgb.mean() < 135
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 0], rgb[..., 2])


def _mode(mode: str, value) -> Image.Image:
    return Image.new(mode, (2, 2), value)


@pytest.mark.parametrize(
    "image,expected",
    [
        (_mode("RGB", (10, 20, 30)), (10, 20, 30)),
        (_mode("RGBX", (10, 20, 30, 0)), (10, 20, 30)),
        (_mode("L", 77), (77, 77, 77)),
        (_mode("1", 1), (255, 255, 255)),
        (_mode("1", 0), (0, 0, 0)),
        (_mode("I;16", 32768), (128, 128, 128)),
        (_mode("I;16B", 65535), (255, 255, 255)),
        (_mode("I;16L", 257 * 100), (100, 100, 100)),
        (_mode("I", 257 * 200), (200, 200, 200)),  # 16-bit PGM / TIFF data
        (_mode("YCbCr", (128, 128, 128)), (128, 128, 128)),
        (_mode("CMYK", (0, 0, 0, 0)), (255, 255, 255)),  # no ink: white
        (_mode("CMYK", (0, 0, 0, 255)), (0, 0, 0)),
        (_mode("HSV", (0, 255, 255)), (255, 0, 0)),
        (_mode("RGBA", (255, 0, 0, 255)), (255, 0, 0)),
        (_mode("RGBA", (255, 0, 0, 0)), (255, 255, 255)),  # transparent: white, as transformers composites
        (_mode("RGBA", (0, 0, 0, 128)), (127, 127, 127)),
        (_mode("LA", (0, 0)), (255, 255, 255)),
        (_mode("RGBa", (64, 0, 0, 128)), (191, 127, 127)),  # premultiplied: un-premultiplied, then composited
    ],
    ids=lambda v: getattr(v, "mode", None) or str(v),
)
def test_every_pil_mode_is_read_faithfully(image, expected):
    rgb = load_image(image)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0].tolist()) == expected, image.mode


def test_a_palette_with_a_transparent_entry_is_composited_on_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # index 0 (red) is transparent
    for image in (palette, Image.open(_png(tmp_path, palette))):
        rgb = load_image(image)
        assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 0, 255]


@pytest.mark.parametrize(
    "image,match",
    [
        (_mode("F", 0.5), "mode 'F'.*no fixed white level"),
        (_mode("La", (0, 0)), "mode 'La'"),
        (Image.fromarray(np.array([[-1, 70000]], dtype=np.int32)), r"mode 'I'.*-1\.\.70000.*outside the 16-bit range"),
    ],
)
def test_pil_modes_without_a_faithful_reading_are_refused_by_name(image, match):
    with pytest.raises(ValueError, match=match):
        load_image(image)


def test_arrays_follow_the_same_rules():
    grey16 = np.full((3, 4), 65535, dtype=np.uint16)
    assert load_image(grey16).tolist() == np.full((3, 4, 3), 255).tolist()
    rgb16 = np.zeros((3, 4, 3), dtype=np.uint16)
    rgb16[..., 1] = 257 * 10
    assert load_image(rgb16)[0, 0].tolist() == [0, 10, 0]
    assert load_image(torch.from_numpy(rgb16.astype(np.int32)).to(torch.uint16))[0, 0].tolist() == [0, 10, 0]
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # fully transparent black -> white
    assert load_image(rgba)[0, 0].tolist() == [255, 255, 255]
    assert load_image(np.full((2, 2, 1), 9, dtype=np.uint8))[0, 0].tolist() == [9, 9, 9]
    for dtype in (np.float32, np.int64, np.int16, bool):
        with pytest.raises(ValueError, match=f"dtype {np.dtype(dtype)}"):
            load_image(np.zeros((2, 2, 3), dtype=dtype))
    with pytest.raises(ValueError, match=r"astype\(np.uint8\)"):
        load_image(np.zeros((2, 2, 3), dtype=np.int64))


def test_frames_follow_the_same_rules():
    frames16 = np.full((2, 4, 4, 3), 32768, dtype=np.uint16)
    assert from_frames(frames16).frames[0, 0, 0].tolist() == [128, 128, 128]
    video = from_frames([Image.new("I;16", (4, 4), 65535), Image.new("RGBA", (4, 4), (0, 0, 0, 0))])
    assert video.frames[0, 0, 0].tolist() == [255, 255, 255] and video.frames[1, 0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="dtype float32.*uint8"):
        from_frames(np.zeros((2, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="frame 1 has PIL mode 'F'"):
        from_frames([Image.new("L", (4, 4)), Image.new("F", (4, 4))])


def test_image_files_are_checked_like_video_files(tmp_path):
    """A missing file, a directory, an empty file, a non-image and an animation: each an ImageLoadError
    (a ValueError, like VideoDecodeError) with one line naming the path."""
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    gif = tmp_path / "anim.gif"
    Image.new("L", (4, 4), 0).save(gif, save_all=True, append_images=[Image.new("L", (4, 4), 255)])
    cases = [
        (tmp_path / "missing.png", "file does not exist"),
        (tmp_path, "is a directory, not an image file"),
        (empty, r"file is empty \(0 bytes\)"),
        (text, "not a readable image"),
        (gif, "holds 2 frames .an animation.; pass an animation as a video"),
    ]
    for path, reason in cases:
        with pytest.raises(ImageLoadError, match=reason) as info:
            load_image(str(path))
        assert isinstance(info.value, ValueError) and info.value.path == str(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_exif_orientation_and_data_uris(tmp_path):
    wide = Image.new("RGB", (6, 2), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    path = tmp_path / "rotated.jpg"
    wide.save(path, exif=exif)
    assert load_image(str(path)).shape == (6, 2, 3)  # as displayed (transformers' load_image does the same)
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert load_image(uri)[0, 0].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="base64 payload is invalid"):
        load_image("data:image/png;base64,@@@")
