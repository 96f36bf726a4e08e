"""InternVL (HF-native ``-hf`` checkpoints, InternVL2.5 / 3 / 3.5) over the stock ``InternVLForConditionalGeneration``.

Video tokens: every frame is an image. The processor writes the video as ``FrameK: <img>`` + the frame's
``image_seq_length`` ``<IMG_CONTEXT>`` tokens + ``</img>``, one frame per line, and passes the frames as
``pixel_values`` (T, 3, H, W): there is no video token id, the placeholder is the image token id. Each
frame's vision features (CLS dropped) are pixel-shuffled by ``downsample_ratio`` (0.5: 2x2 neighbours
merged) to an (h, w) grid in row-major order and projected. The prunable tokens are all ``<IMG_CONTEXT>``
positions of the prompt, in (t, h, w) row-major order: T runs, not contiguous. The frame labels,
``<img>`` / ``</img>`` and the newlines between runs are text and always kept. Positions are 1-D.

Images: the processor writes an image as a bare ``<img>`` block of its tiles' tokens (dynamic tiling,
thumbnail included) and passes every tile and frame in ``pixel_values``, in prompt order. Each image is a
(tiles, h, w) run; the frames, told apart by their ``FrameK:`` label, are one (T, h, w) video run.

What this adapter deliberately does not do: dynamic tiling of frames (the video processor gives one tile
per frame).
"""

from __future__ import annotations

import re

import torch

from specvlm.models.base import ModelAdapter, VisualLayout

#: how the processor labels a frame's ``<img>`` block
FRAME_LABEL = re.compile(r"Frame\d+:\s*<img>$")


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


class InternVLAdapter(ModelAdapter):
    family = "internvl"
    model_types = ("internvl",)
    video_input_key = "pixel_values"

    @property
    def video_token_id(self) -> int:
        return int(self.config.image_token_id)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {
            "image_size": list(_pair(vision.image_size)),
            "patch_size": list(_pair(vision.patch_size)),
            "downsample_ratio": self.config.downsample_ratio,
            "vision_feature_select_strategy": self.config.vision_feature_select_strategy,
        }

    def frame_grid(self) -> tuple[int, int]:
        """(h, w) tokens of one frame: patches per side scaled by the pixel shuffle's ``downsample_ratio``."""
        vision = self.config.vision_config
        (height, width), (ph, pw) = _pair(vision.image_size), _pair(vision.patch_size)
        ratio = self.config.downsample_ratio
        return int(height // ph * ratio), int(width // pw * ratio)

    def has_images(self, inputs) -> bool:
        return False  # images and frames share ``pixel_values``: :meth:`embed` places them together

    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        """(N, D) features of every tile and frame in ``pixel_values``, in placeholder order."""
        pixels = inputs["pixel_values"].to(self.device, self.model.model.vision_tower.dtype)
        out = self.model.get_image_features(pixel_values=pixels)  # vision_feature_* from the config
        return out.pooler_output.flatten(0, 1)  # (tiles and frames * h * w, D)

    def video_slots(self, inputs) -> torch.Tensor:
        return self.image_slots(inputs)

    def layout(self, inputs) -> VisualLayout:
        input_ids = inputs["input_ids"][0].cpu()
        slots = (input_ids == self.video_token_id).nonzero().squeeze(-1)
        h, w = self.frame_grid()
        tiles = int(inputs["pixel_values"].shape[0])
        if slots.numel() != tiles * h * w:
            raise ValueError(
                f"internvl: {slots.numel()} <IMG_CONTEXT> tokens for {tiles} tiles and frames of {h} x {w} tokens "
                f"({tiles * h * w} expected): the processor does not match the model"
            )
        breaks = (slots[1:] != slots[:-1] + 1).nonzero().squeeze(-1) + 1
        blocks = torch.tensor_split(slots, breaks)  # one per <img>...</img>
        runs, end = [], 0
        for block in blocks:
            if block.numel() % (h * w):
                raise ValueError(f"internvl: an <img> block of {block.numel()} tokens is not whole tiles of {h} x {w}")
            kind = "video" if self.is_frame(input_ids, end, int(block[0])) else "image"
            end = int(block[-1]) + 1
            if kind == "video" and runs and runs[-1][0] == "video":  # the next frame of the same video
                _, (t, _, _), positions = runs[-1]
                runs[-1] = ("video", (t + 1, h, w), torch.cat([positions, block]))
            else:
                runs.append((kind, (block.numel() // (h * w), h, w), block))
        return VisualLayout.from_runs(runs)

    def is_frame(self, input_ids: torch.Tensor, after: int, start: int) -> bool:
        """Whether the ``<img>`` block whose first ``<IMG_CONTEXT>`` is at ``start`` is a video frame: the
        processor writes frames as ``FrameK: <img>`` and images as a bare ``<img>`` (the text read is that
        between the previous block, ending before ``after``, and this one). Without the tokenizer
        (an adapter built outside the engine) a one-tile block counts as a frame."""
        if self.tokenizer is None:
            h, w = self.frame_grid()
            end = start + h * w
            return end >= input_ids.numel() or int(input_ids[end]) != self.video_token_id
        before = self.tokenizer.decode(input_ids[after:start].tolist())
        return FRAME_LABEL.search(before) is not None

    def positions(self, inputs) -> torch.Tensor:
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
