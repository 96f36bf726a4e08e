"""Inputs: a video, images, a prompt or a conversation -> the stock processor's output for one prompt.

:func:`build_inputs` checks the prompt (non-empty Unicode text, no placeholder of the processor's own) and the
conversation (``specvlm.conversation``), loads the media (``specvlm.video``, ``specvlm.images``), refuses a
video with fewer frames than the family's processor takes, and calls the stock processor with the frames and
their ``VideoMetadata``, so that ``target.generate(**inputs)`` accepts the result as it is.

What this module deliberately does not do: run a model, or choose frames beyond sampling them evenly.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from specvlm.conversation import check_text, fill_media, media_conversation
from specvlm.images import load_images
from specvlm.video import DEFAULT_NUM_FRAMES, Video, from_frames, load_video


def load_clip(video, *, num_frames: int | None = None, fps: float | None = None, max_frames: int | None = None) -> Video:
    """A :class:`Video` from a path or a (T, H, W, 3) uint8 frames array / list of frames.

    ``max_frames`` caps the frames sampled (with ``fps``: uniform over the clip when the rate gives more).
    """
    if isinstance(video, Video):
        return video
    if isinstance(video, (str, os.PathLike)):
        if num_frames is None and fps is None:
            num_frames = DEFAULT_NUM_FRAMES
        return load_video(video, num_frames=num_frames, fps=fps, max_frames=max_frames)
    if isinstance(video, (np.ndarray, torch.Tensor, list, tuple)):
        return from_frames(video, num_frames=num_frames, max_frames=max_frames)
    raise TypeError(f"video must be a path, a Video or a (T, H, W, 3) uint8 array, got {type(video).__name__}")


def build_inputs(
    processor,
    adapter,
    video=None,
    prompt: str | None = None,
    num_frames: int | None = None,
    fps: float | None = None,
    *,
    messages: list | None = None,
    max_frames: int | None = None,
    images=None,
):
    """The stock ``processor``'s output for a video and / or images with one user prompt, or for a conversation
    (``SpecVLM.build_inputs`` documents the arguments); ``adapter`` is the target's (its family's frame minimum)."""
    if getattr(processor, "chat_template", None) is None:
        raise ValueError("the processor has no chat template; pass a checkpoint whose processor defines one")
    if images is not None and not isinstance(images, (list, tuple)):
        images = [images]
    if messages is not None:
        if prompt is not None:
            raise ValueError("pass `prompt` or `messages`, not both")
        messages, videos, image_sources = media_conversation(messages)
        videos = fill_media("video", videos, None if video is None else [video])
        image_sources = fill_media("image", image_sources, images)
        video = videos[0] if videos else None
        images = image_sources or None
        for turn in messages:
            content = turn["content"]
            texts = [content] if isinstance(content, str) else [e.get("text", "") for e in content if isinstance(e, dict)]
            for text in texts:
                check_no_placeholder(processor, text)
    else:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        check_text(prompt, "prompt")
        check_no_placeholder(processor, prompt)
        if video is None and images is None:
            raise ValueError("pass `video` and / or `images` with `prompt`")
        content = [{"type": "image"} for _ in images or []] + ([{"type": "video"}] if video is not None else [])
        messages = [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]
    pictures = load_images(images) if images is not None else None
    clip = load_clip(video, num_frames=num_frames, fps=fps, max_frames=max_frames) if video is not None else None
    if clip is not None:
        adapter.check_video_frames(len(clip.frames))  # before the processor's own, unclear refusal
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    kwargs = {}
    if clip is not None:
        kwargs.update(
            videos=[clip.frames],
            video_metadata=[clip.metadata()],
            do_sample_frames=False,
            # frames are always (T, H, W, 3): the processor would guess channels-first for a height of 1 or 3
            videos_kwargs={"input_data_format": "channels_last"},
        )
    if pictures is not None:
        # one prompt: its images as one nested list (LLaVA-OneVision then counts them per prompt)
        kwargs.update(images=[pictures], images_kwargs={"input_data_format": "channels_last"})
    return processor(text=[text], return_tensors="pt", **kwargs)


def check_no_placeholder(processor, text) -> None:
    """Raise when ``text`` holds the processor's image or video placeholder: the processor would expand it into
    visual tokens with no pixels behind them."""
    if not isinstance(text, str):
        return
    for name in ("video_token", "image_token"):
        token = getattr(processor, name, None)
        if isinstance(token, str) and token and token in text:
            raise ValueError(
                f"the prompt contains the processor's {name.replace('_', ' ')} {token!r}; the video is placed by "
                "the chat template, so write the text without it"
            )
