"""Qwen2.5-VL over the stock ``Qwen2_5_VLForConditionalGeneration``, with its 3-D mRoPE kept exactly.

Video tokens: the vision transformer sees (temporal_patch x patch x patch) cubes and merges 2x2 spatial
neighbours, giving a (t, H / merge, W / merge) grid of tokens in row-major order. Positions are the
stock ``get_rope_index`` output (temporal ids scaled by the video's real fps through
``second_per_grid_ts``), computed from ``mm_token_type_ids`` once per prompt; the stateful
``rope_deltas`` of the stock model are never read or written.
"""

from __future__ import annotations

import torch

from specvlm.models.base import ModelAdapter, VideoLayout


class Qwen25VLAdapter(ModelAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size", "temporal_patch_size", "tokens_per_second")}

    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        pixels = inputs["pixel_values_videos"].to(self.device, self.model.model.visual.dtype)
        out = self.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=inputs["video_grid_thw"].to(self.device))
        return torch.cat(list(out.pooler_output), dim=0)  # (t * H' * W', D)

    def layout(self, inputs) -> VideoLayout:
        input_ids = inputs["input_ids"][0]
        slots = (input_ids == self.video_token_id).nonzero().squeeze(-1).cpu()
        thw = inputs["video_grid_thw"]
        if thw.shape[0] != 1:
            raise ValueError(f"{self.family}: {thw.shape[0]} videos in one prompt; exactly one is supported")
        merge = self.config.vision_config.spatial_merge_size
        t, h, w = (int(x) for x in thw[0])
        grid = (t, h // merge, w // merge)
        n = grid[0] * grid[1] * grid[2]
        if slots.numel() != n:
            raise ValueError(
                f"{self.family}: {slots.numel()} video placeholder tokens for a {grid} grid ({n} expected): "
                "the processor does not match the model"
            )
        return VideoLayout(positions=slots, grid=grid, structural=slots[:0])

    def positions(self, inputs) -> torch.Tensor:
        if inputs.get("mm_token_type_ids") is None:
            raise ValueError(f"{self.family} inputs need `mm_token_type_ids` (the stock processor returns them)")
        extra = {k: inputs[k] for k in ("video_grid_thw", "second_per_grid_ts", "attention_mask") if inputs.get(k) is not None}
        pos, _ = self.model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], **extra)
        return pos[:, 0]  # (3, L)
