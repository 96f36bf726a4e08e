"""Qwen2-VL over the stock ``Qwen2VLForConditionalGeneration``: Qwen2.5-VL's layout without fps scaling.

Video tokens are laid out exactly as in Qwen2.5-VL (one run of (t, H / merge, W / merge) tokens in
row-major order between ``<|vision_start|>`` and ``<|vision_end|>``) and positions are the stock 3-D
mRoPE of ``get_rope_index``; the only difference is that Qwen2-VL's temporal position ids advance by
one per temporal patch (no ``tokens_per_second`` / ``second_per_grid_ts`` scaling), which the stock
``get_rope_index`` of the model itself already does. So this adapter is :class:`Qwen25VLAdapter`
with its own family name and layout signature.
"""

from __future__ import annotations

from specvlm.models.qwen2_5_vl import Qwen25VLAdapter


class Qwen2VLAdapter(Qwen25VLAdapter):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size", "temporal_patch_size")}
