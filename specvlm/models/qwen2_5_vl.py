"""Qwen2.5-VL over the stock ``Qwen2_5_VLForConditionalGeneration``, with its 3-D mRoPE kept exactly.

Video tokens: the vision transformer sees (temporal_patch x patch x patch) cubes and merges 2x2 spatial
neighbours, giving a (t, H / merge, W / merge) grid of tokens in row-major order. Positions are the
stock ``get_rope_index`` output (temporal ids scaled by the video's real fps through
``second_per_grid_ts``), computed from ``mm_token_type_ids`` once per prompt; the stateful
``rope_deltas`` of the stock model are never read or written.

Images: each image is a (1, H / merge, W / merge) run of ``<|image_pad|>`` tokens (``image_grid_thw``), in
the prompt before, after or without the video; image and video runs are pruned together.
"""

from __future__ import annotations

import torch

from specvlm.models.base import ModelAdapter, VisualLayout, split_runs


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

    @torch.no_grad()
    def image_features(self, inputs) -> torch.Tensor:
        pixels = inputs["pixel_values"].to(self.device, self.model.model.visual.dtype)
        out = self.model.get_image_features(pixel_values=pixels, image_grid_thw=inputs["image_grid_thw"].to(self.device))
        return torch.cat(list(out.pooler_output), dim=0)  # (sum of H' * W', D)

    def merged_grids(self, inputs, key: str) -> list[tuple[int, int, int]]:
        """Token grids (t, H / merge, W / merge) of every image (``image_grid_thw``) or video (``video_grid_thw``)."""
        thw = inputs.get(key)
        merge = self.config.vision_config.spatial_merge_size
        return [] if thw is None else [(int(t), int(h) // merge, int(w) // merge) for t, h, w in thw.tolist()]

    def layout(self, inputs) -> VisualLayout:
        runs = split_runs(self.family, "video", self.video_slots(inputs).cpu(), self.merged_grids(inputs, "video_grid_thw"))
        if self.has_images(inputs) or self.image_token_id is not None:
            images = self.image_slots(inputs).cpu()
            if images.numel() or inputs.get("image_grid_thw") is not None:
                runs += split_runs(self.family, "image", images, self.merged_grids(inputs, "image_grid_thw"))
        return VisualLayout.from_runs(runs)

    def positions(self, inputs) -> torch.Tensor:
        if inputs.get("mm_token_type_ids") is None:
            raise ValueError(f"{self.family} inputs need `mm_token_type_ids` (the stock processor returns them)")
        keys = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        extra = {k: inputs[k] for k in keys if inputs.get(k) is not None}
        pos, _ = self.model.model.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], **extra)
        return pos[:, 0]  # (3, L)
