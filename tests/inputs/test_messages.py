"""``messages=``: a conversation in the transformers chat format, with one video, gives the stock
model's own output on the processor's own chat-template text."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm import SpecVLM, load_video
from specvlm.video import from_frames
from specvlm.cli import main as cli_main
from specvlm.conversation import media_conversation

MAX_NEW = 12
FAMILIES = ("llava_onevision", "qwen2_5_vl")
SYSTEM = "You answer questions about videos."


def _conversation(video):
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video", "video": video}, {"type": "text", "text": "Describe the video."}]},
    ]


def _stock(path, frames, metadata) -> tuple[list[int], dict]:
    """Stock generate() on the processor's own chat-template output for the same conversation."""
    processor = AutoProcessor.from_pretrained(path)
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)
    return ids[0, inputs["input_ids"].shape[1] :].tolist(), inputs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["ar", "specvlm"])
def test_a_conversation_with_a_system_turn_matches_stock_generate(checkpoints, video_file, family, method):
    paths = checkpoints[family]
    engine = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"])
    clip = load_video(video_file, num_frames=8)
    expected, stock_inputs = _stock(paths["target"], clip.frames, clip.metadata())
    inputs = engine.build_inputs(messages=_conversation(video_file), num_frames=8)
    assert torch.equal(inputs["input_ids"], stock_inputs["input_ids"])  # the system turn is in the prompt
    assert SYSTEM.split()[0] in engine.processor.tokenizer.decode(inputs["input_ids"][0])
    result = engine.generate(messages=_conversation(video_file), num_frames=8, max_new_tokens=MAX_NEW, method=method)
    assert result.token_ids == expected
    # a video entry may hold the frames themselves (a frames array carries no fps: Qwen's temporal
    # positions then follow the array's default metadata, as they would in the stock processor)
    array = from_frames(clip.frames)
    expected_array, _ = _stock(paths["target"], array.frames, array.metadata())
    frames_result = engine.generate(messages=_conversation(clip.frames), max_new_tokens=MAX_NEW, method=method)
    assert frames_result.token_ids == expected_array


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must be a non-empty list"),
        ([{"role": "user"}], r"messages\[0\] must be a dict with 'role' and 'content'"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "no video or image entry"),
        ([{"role": "user", "content": [{"type": "video", "video": "a.mp4"}, {"type": "video", "video": "b.mp4"}]}], "2 video entries"),
        ([{"role": "user", "content": [{"type": "image"}, {"type": "video", "video": "a.mp4"}]}], "1 image entries, 0 of them naming"),
        ([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hi"}]}], "1 video entries, 0 of them naming"),
    ],
)
def test_malformed_conversations_are_named(checkpoints, messages, message):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    with pytest.raises(ValueError, match=message):
        engine.generate(messages=messages, max_new_tokens=2)


def test_cli_system_turn(checkpoints, video_file, capsys):
    paths = checkpoints["qwen2_5_vl"]
    argv = ["generate", "--target", str(paths["target"]), "--draft", str(paths["draft"]), "--video", video_file,
            "--prompt", "Describe the video.", "--system", SYSTEM, "--num-frames", "8", "--max-new-tokens", str(MAX_NEW), "--json"]
    assert cli_main(argv) == 0

    clip = load_video(video_file, num_frames=8)
    expected, _ = _stock(paths["target"], clip.frames, clip.metadata())
    assert json.loads(capsys.readouterr().out)["token_ids"] == expected


# --------------------------------------------------------------------------- entries the templates do not read

_VIDEO = {"type": "video", "video": "a.mp4"}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([[{"role": "user", "content": [_VIDEO]}]], r"messages\[0\] is a list, not a turn: messages is nested one level too deep"),
        ([{"role": "user", "content": [[_VIDEO, {"type": "text", "text": "hi"}]]}],
         r"messages\[0\]\['content'\]\[0\] is a list, not an entry: the content list is nested one level too deep"),
        ([{"role": "user", "content": [_VIDEO, "hi"]}], r"messages\[0\]\['content'\]\[1\] is a bare string 'hi'"),
        ([{"role": "user", "content": [_VIDEO, {"type": "audio", "audio": "a.wav"}]}],
         r"messages\[0\]\['content'\]\[1\] has type 'audio'; SpecVLM takes entries of type text, image, image_url, video"),
        ([{"role": "user", "content": [_VIDEO, {"text": "hi"}]}], r"messages\[0\]\['content'\]\[1\] has no 'type'"),
        ([{"role": "user", "content": [_VIDEO, {"type": "text", "text": 5}]}],
         r"messages\[0\]\['content'\]\[1\] is a text entry with 'text' of type int \(5\)"),
        ([{"role": "user", "content": [_VIDEO, {"type": "text"}]}], r"is a text entry with no 'text'"),
        ([{"role": "user", "content": [_VIDEO, {"type": "text", "text": "caf\udce9"}]}],
         r"messages\[0\]\['content'\]\[1\]\['text'\] is not valid Unicode text: a lone surrogate"),
        ([{"role": "system", "content": "\udcff"}, {"role": "user", "content": [_VIDEO]}], r"messages\[0\]\['content'\] is not valid Unicode"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"path": "a.png"}}]}], "has no 'url'"),
        ([{"role": 3, "content": [_VIDEO]}], r"messages\[0\]\['role'\] must be a string"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "no video or image entry; add"),
    ],
)
def test_entries_the_chat_template_would_drop_are_named(messages, message):
    with pytest.raises(ValueError, match=message):
        media_conversation(messages)


def test_openai_image_url_entries_are_image_entries(tmp_path):
    """``{"type": "image_url", "image_url": {"url": path}}`` is read as the image entry it is."""
    conversation, videos, images = media_conversation(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}},
                                      {"type": "image_url", "image_url": "b.png"},
                                      {"type": "image", "path": "c.png"}, {"type": "text", "text": "hi"}]}]  # fmt: skip
    )
    assert images == ["a.png", "b.png", "c.png"] and videos == []
    assert conversation[0]["content"] == [{"type": "image"}] * 3 + [{"type": "text", "text": "hi"}]


def test_a_bad_entry_is_named_before_the_model_runs(checkpoints, video_file):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    nested = [{"role": "user", "content": [[{"type": "video", "video": video_file}, {"type": "text", "text": "hi"}]]}]
    with pytest.raises(ValueError, match="nested one level too deep"):
        engine.generate(messages=nested, max_new_tokens=2)
