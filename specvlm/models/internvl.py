"""InternVL (HF-native ``-hf`` checkpoints, InternVL2.5 / 3 / 3.5) over the stock ``InternVLForConditionalGeneration``.

Video tokens: every frame is an image. The processor writes the video as ``FrameK: <img>`` + the frame's
``image_seq_length`` ``<IMG_CONTEXT>`` tokens + ``</img>``, one frame per line, and passes the frames as
``pixel_values`` (T, 3, H, W): there is no video token id, the placeholder is the image token id. Each
frame's vision features (CLS dropped) are pixel-shuffled by ``downsample_ratio`` (0.5: 2x2 neighbours
merged) to an (h, w) grid in row-major order and projected. The prunable tokens are all ``<IMG_CONTEXT>``
positions of the prompt, in (t, h, w) row-major order: T runs, not contiguous. The frame labels,
``<img>`` / ``</img>`` and the newlines between runs are text and always kept. Positions are 1-D.

What this adapter deliberately does not do: images next to the video in one prompt (their
``<IMG_CONTEXT>`` tokens would be read as video), or dynamic tiling of frames (the video processor gives
one tile per frame).
"""

from __future__ import annotations

import torch

from specvlm.models.base import ModelAdapter, VideoLayout


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

    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        pixels = inputs["pixel_values"].to(self.device, self.model.model.vision_tower.dtype)
        out = self.model.get_image_features(pixel_values=pixels)  # vision_feature_* from the config
        return out.pooler_output.flatten(0, 1)  # (T * h * w, D)

    def layout(self, inputs) -> VideoLayout:
        input_ids = inputs["input_ids"][0]
        slots = (input_ids == self.video_token_id).nonzero().squeeze(-1).cpu()
        frames = int(inputs["pixel_values"].shape[0])
        h, w = self.frame_grid()
        grid = (frames, h, w)
        n = frames * h * w
        if slots.numel() != n:
            raise ValueError(
                f"internvl: {slots.numel()} <IMG_CONTEXT> tokens for {frames} frames of {h} x {w} tokens ({n} expected): "
                "the processor does not match the model, or the prompt holds an image besides the video"
            )
        return VideoLayout(positions=slots, grid=grid, structural=slots[:0])

    def positions(self, inputs) -> torch.Tensor:
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
