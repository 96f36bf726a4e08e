"""Qwen3.5 (dense and MoE) over the stock ``Qwen3_5ForConditionalGeneration`` /
``Qwen3_5MoeForConditionalGeneration``: Qwen3-VL's video layout over a hybrid decoder.

Video tokens and positions are Qwen3-VL's (:mod:`specvlm.models.qwen3_vl`): ``<{t:.1f} seconds>``
timestamp text, ``<|vision_start|>``, one tubelet's H' x W' tokens, ``<|vision_end|>`` per temporal patch,
interleaved 3-D mRoPE from the stock ``get_rope_index``; there is no DeepStack.

The decoder: three of every four layers are Gated-DeltaNet linear attention (a causal convolution state
and a recurrent state per layer, ``LinearAttentionLayer`` in the stock ``DynamicCache``), every fourth is
full attention (with an output gate and partial rotary embedding). What that changes for speculation:

* **Rollback** is exact through the cache (:mod:`specvlm.models.cache`): every decode-time forward
  records the recurrent state after each of its tokens, and keeping the committed path restores exactly
  one of them (a full rejection restores the state before the forward's first token).
* **Scores** for pruning come from the full-attention layers only: the linear layers have no attention
  matrix (the hook never sees them), so the verifier's score of a video token is the mean attention over
  the full-attention layers, their heads and the text queries.
* **Trees are refused**: a linear layer takes no attention mask, so the nodes of a tree would all be
  folded into one recurrent state in sequence order. Use ``tree="chain"`` (the default).
* **Self-drafting is refused**: the linear layers' recurrent state after the prompt has already read
  every video token, so a self-draft could not drop any (index-selecting a recurrent state is not
  possible); pass a separate draft (e.g. Qwen3.5-0.8B or -2B).
"""

from __future__ import annotations

from specvlm.models.qwen2_5_vl import Qwen25VLAdapter


class Qwen35Adapter(Qwen25VLAdapter):
    family = "qwen3_5"
    model_types = ("qwen3_5", "qwen3_5_moe")
    short_videos_refused = True  # its video processor groups frames in temporal patches and refuses fewer
    layer_kinds = ("full_attention", "linear_attention")
    supports_trees = False
    supports_self_draft = False
    decoding_limits = (
        "Qwen3.5's Gated-DeltaNet linear-attention layers take no attention mask (a tree's branches would be "
        "mixed into one recurrent state) and their recurrent state after the prompt has read every video token "
        "(a self-draft cannot drop any)"
    )

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "spatial_merge_size", "temporal_patch_size")}
