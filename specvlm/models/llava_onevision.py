"""LLaVA-OneVision over the stock ``LlavaOnevisionForConditionalGeneration``.

Video tokens: every frame is encoded by the vision tower, projected and 2x2 bilinearly pooled to an
(h, w) grid; the frames' grids are concatenated in time and one learned newline token follows.
The grid (T, h, w) is prunable; the newline token is structural and always kept. Positions are 1-D.
"""

from __future__ import annotations

import math

import torch

from specvlm.models.base import ModelAdapter, VideoLayout


class LlavaOnevisionAdapter(ModelAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {"image_size": vision.image_size, "patch_size": vision.patch_size}

    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        pixels = inputs["pixel_values_videos"].to(self.device, self.dtype)
        out = self.model.get_video_features(pixel_values_videos=pixels)
        return out.pooler_output.flatten(0, 1)  # (T * h * w + 1, D)

    def layout(self, inputs) -> VideoLayout:
        input_ids = inputs["input_ids"][0]
        slots = (input_ids == self.video_token_id).nonzero().squeeze(-1).cpu()
        frames = int(inputs["pixel_values_videos"].shape[1])
        vision = self.config.vision_config
        side = math.ceil((vision.image_size // vision.patch_size) / 2)
        grid = (frames, side, side)
        n = frames * side * side
        if slots.numel() != n + 1:
            raise ValueError(
                f"llava_onevision: {slots.numel()} video placeholder tokens for a {grid} grid plus one newline token "
                f"({n + 1} expected): the processor does not match the model"
            )
        return VideoLayout(positions=slots[:n], grid=grid, structural=slots[n:])

    def positions(self, inputs) -> torch.Tensor:
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
