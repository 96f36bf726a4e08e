"""LLaVA-OneVision-1.5 over the stock ``LlavaOnevision15ForConditionalGeneration`` (model type
``llava_onevision1_5``; ``AutoProcessor`` gives the stock ``Exaone4_5_Processor``).

Video tokens: Qwen2-VL-style inputs (``pixel_values_videos`` patches + ``video_grid_thw``) with a temporal
patch of 1. The RICE vision tower encodes each frame on its own (a CLS token per frame, dropped before
the merger) and merges 2x2 spatial neighbours, giving one contiguous run of (T, H / merge, W / merge)
tokens in row-major order between ``<|vision_start|>`` and ``<|vision_end|>``. Unlike Qwen2-VL, the text
model (Qwen3) uses plain 1-D positions. So this adapter is :class:`Qwen25VLAdapter`'s vision and layout
with 1-D positions.
"""

from __future__ import annotations

import torch

from specvlm.models.qwen2_5_vl import Qwen25VLAdapter


class LlavaOnevision15Adapter(Qwen25VLAdapter):
    family = "llava_onevision1_5"
    model_types = ("llava_onevision1_5",)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size")}

    def positions(self, inputs) -> torch.Tensor:
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
