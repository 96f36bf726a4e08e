"""GLM-4.1V, GLM-4.5V and GLM-4.6V over the stock ``Glm4vForConditionalGeneration`` /
``Glm4vMoeForConditionalGeneration`` / ``Glm46VForConditionalGeneration``: like Qwen3-VL, but video tokens are
identified only through ``mm_token_type_ids``.

Video tokens: the vision transformer sees (temporal_patch x patch x patch) cubes and merges 2x2 spatial
neighbours. The prompt holds ``<|begin_of_video|>``, then per temporal patch (2 frames)
``<|begin_of_image|>`` + its H' x W' tokens + ``<|end_of_image|>`` + its timestamp in seconds as text, then
``<|end_of_video|>``. The video tokens carry the *image* token id; only ``mm_token_type_ids`` (2 = video,
set by the processor inside the video markers) tells them from an image's. The prunable tokens are all
positions with type 2, in (t, h, w) row-major order (T runs, not contiguous); the markers and
timestamps are text and always kept. Positions are the stock ``get_rope_index`` output (each temporal
patch its own (1, H', W') grid of the 3-D mRoPE, which rotates half of each head's dimensions), computed
from ``mm_token_type_ids`` once per prompt. No DeepStack.

The stock text model builds its mask from ``attention_mask`` itself (it takes no {layer type: mask}
mapping), so it gets ``None``; the hook's context carries the real mask.
"""

from __future__ import annotations

import torch

from specvlm.models.qwen2_5_vl import Qwen25VLAdapter

#: ``mm_token_type_ids`` values of image and video tokens (0 is text)
IMAGE_TYPE, VIDEO_TYPE = 1, 2


class Glm4vAdapter(Qwen25VLAdapter):
    family = "glm4v"
    model_types = ("glm4v", "glm4v_moe", "glm46v")
    short_videos_refused = True  # its video processor groups frames in temporal patches and refuses fewer
    accepts_mask_mapping = False

    @property
    def video_token_id(self) -> int:
        """The placeholder id of video tokens: GLM-4V's video frames use the image token id."""
        return int(self.config.image_token_id)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size", "temporal_patch_size")}

    def video_slots(self, inputs) -> torch.Tensor:
        types = inputs.get("mm_token_type_ids")
        if types is None:
            raise ValueError(f"{self.family} inputs need `mm_token_type_ids` (the stock processor returns them)")
        return (types[0] == VIDEO_TYPE).nonzero().squeeze(-1)

    def image_slots(self, inputs) -> torch.Tensor:
        types = inputs.get("mm_token_type_ids")
        if types is None:
            raise ValueError(f"{self.family} inputs need `mm_token_type_ids` (the stock processor returns them)")
        return (types[0] == IMAGE_TYPE).nonzero().squeeze(-1)

    def layout(self, inputs):
        if self.has_video(inputs) and self.has_images(inputs):
            raise ValueError(
                f"{self.family}: images and a video in one prompt are not supported: the stock model reads every token "
                "with the image token id (the video's too) as an image token, so it cannot run such a prompt either; "
                "pass the images or the video"
            )
        return super().layout(inputs)
