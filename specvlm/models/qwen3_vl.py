"""Qwen3-VL (dense and MoE) over the stock ``Qwen3VLForConditionalGeneration`` /
``Qwen3VLMoeForConditionalGeneration``: interleaved timestamps, interleaved 3-D mRoPE and DeepStack.

Video tokens: the vision transformer sees (temporal_patch x patch x patch) cubes and merges 2x2 spatial
neighbours, as in Qwen2.5-VL, but the prompt interleaves the video with text: each temporal patch
(a 2-frame tubelet) is ``<{t:.1f} seconds>`` timestamp text, ``<|vision_start|>``, its H' x W' tokens
and ``<|vision_end|>``. The prunable tokens are all video placeholder positions, in (t, h, w) row-major
order (not contiguous); the timestamps and vision start / end tokens are text and always kept. Time lives
only in the timestamp text: positions are the stock ``get_rope_index`` output (each tubelet is its own
(1, H', W') grid in the interleaved mRoPE), computed from ``mm_token_type_ids`` once per prompt.

DeepStack: the vision tower also returns features of intermediate layers, which the stock text model
adds to the hidden states of its first decoder layers at the visual positions. They are the prompt's
:class:`~specvlm.models.base.SideFeatures`: every forward over prompt tokens (the target's prefill
chunks, a separate draft's pruned prefill) receives exactly its own visual tokens' DeepStack features.
A self-draft needs nothing: it index-selects the target's cache, where DeepStack is already applied.
Images carry DeepStack features too: the side features hold one row per visual token (image or video) in
prompt order, as the stock model joins them.

The stock text model builds its mask from ``attention_mask`` itself (it takes no {layer type: mask}
mapping), so it gets ``None``; the hook's context carries the real mask.
"""

from __future__ import annotations

import torch

from specvlm.models.base import SideFeatures
from specvlm.models.qwen2_5_vl import Qwen25VLAdapter


class Qwen3VLAdapter(Qwen25VLAdapter):
    family = "qwen3_vl"
    model_types = ("qwen3_vl", "qwen3_vl_moe")
    short_videos_refused = True  # its video processor groups frames in temporal patches and refuses fewer
    accepts_mask_mapping = False

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size", "temporal_patch_size")}

    @torch.no_grad()
    def vision(self, inputs, kind: str = "video") -> tuple[torch.Tensor, torch.Tensor]:
        """((N, D) projected features, (S, N, D) DeepStack features) of the prompt's video or images
        (``kind``), both in placeholder order."""
        if kind == "video":
            pixels = inputs["pixel_values_videos"].to(self.device, self.model.model.visual.dtype)
            out = self.model.get_video_features(pixel_values_videos=pixels, video_grid_thw=inputs["video_grid_thw"].to(self.device))
        else:
            pixels = inputs["pixel_values"].to(self.device, self.model.model.visual.dtype)
            out = self.model.get_image_features(pixel_values=pixels, image_grid_thw=inputs["image_grid_thw"].to(self.device))
        features = torch.cat(list(out.pooler_output), dim=0)  # (N, D)
        deepstack = [torch.cat(list(per_layer), dim=0) for per_layer in out.deepstack_features]
        if not deepstack:
            return features, features.new_zeros((0, *features.shape))
        return features, torch.stack(deepstack)  # (S, N, D)

    def video_features(self, inputs) -> torch.Tensor:
        return self.vision(inputs)[0]

    def image_features(self, inputs) -> torch.Tensor:
        return self.vision(inputs, "image")[0]

    @torch.no_grad()
    def embed(self, inputs) -> torch.Tensor:
        return self.embed_prompt(inputs)[0]

    @torch.no_grad()
    def embed_prompt(self, inputs) -> tuple[torch.Tensor, SideFeatures]:
        """The prompt's embeddings and DeepStack features: one row per visual token (images' and video's), in
        prompt order, as the stock model joins them."""
        embeds = self.embed_ids(inputs)
        length = embeds.shape[1]
        mask = torch.zeros(length, dtype=torch.bool, device=self.device)
        parts = []
        for kind, present, slots_of in (("image", self.has_images, self.image_slots), ("video", self.has_video, self.video_slots)):
            if not present(inputs):
                continue
            features, deepstack = self.vision(inputs, kind)
            slots = slots_of(inputs).to(self.device)
            self.place(embeds, slots, features, kind)
            mask[slots] = True
            parts.append((slots, deepstack))
        layers = max((d.shape[0] for _, d in parts), default=0)
        rows = torch.cumsum(mask, 0) - 1  # row of each visual position among all visual positions
        joint = embeds.new_zeros((layers, int(mask.sum()), embeds.shape[-1]))
        for slots, deepstack in parts:
            if deepstack.shape[0]:
                joint[:, rows[slots]] = deepstack.to(embeds.dtype)
        return embeds, SideFeatures(mask=mask, features=joint)

    def side_kwargs(self, side: SideFeatures) -> dict:
        if not side.features.shape[0] or not bool(side.mask.any()):
            return {}  # no DeepStack layers, or no visual token among these positions
        return {"visual_pos_masks": side.mask.unsqueeze(0), "deepstack_visual_embeds": list(side.features)}
