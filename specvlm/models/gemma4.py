"""Gemma 4 over the stock ``Gemma4ForConditionalGeneration``: per-frame video runs, sliding-window and full
attention, bidirectional vision blocks, per-layer input embeddings, KV-shared layers and logit soft-capping.

Video tokens: the processor writes each frame as ``mm:ss <boi>`` + its soft tokens (``<|video|>``, at most
70 per frame: the vision tower's patches pooled ``pooling_kernel_size`` x ``pooling_kernel_size``) + ``<eoi>``.
The prunable tokens are every ``<|video|>`` position; timestamps and the ``<boi>`` / ``<eoi>`` markers are text
and always kept. When every frame has the same token grid the video is one (T, H, W) run (H, W read from
``video_position_ids``), else one (1, H, W) run per frame. Positions are 1-D (``0..L-1``), as the stock model's.

What the decoder changes, and how this adapter keeps the stock model's exact output:

* **Sliding-window layers** hold only their last ``sliding_window - 1`` rows (the stock
  ``DynamicSlidingWindowLayer``) and attend to them plus the new tokens: a query at cache index i sees the keys
  at indices > i - window. The loop's context describes the full-attention layers (every key); the adapter
  derives the sliding layers' context from it (:meth:`Gemma4Adapter.sliding_context`: the same visibility over
  the last window of keys, intersected with the window) and the attention hook uses it in the layers that
  transformers calls with a ``sliding_window``. Rollback is exact through the cache
  (:mod:`specvlm.models.cache`: every decode-time forward is recorded, the keep crops back to the window).
* **Bidirectional vision blocks** (``use_bidirectional_attention="vision"``, the large models): in the sliding
  layers the soft tokens of one frame see each other in both directions (within the window); full layers stay
  causal. The block of each prompt token is read from the processor's ``mm_token_type_ids`` (as the stock model
  reads it; without them the stock model is causal too) and travels with the token as a side feature, so a
  pruned draft's prefill keeps the blocks of the frames it keeps (among its kept tokens).
* **Media placeholder ids are embedded as the pad token**: the stock model looks up its token embeddings (and
  per-layer embeddings) with the pad id wherever ``input_ids`` hold an image, video or audio placeholder, in the
  prompt and at every decode step, so a placeholder id the model itself generates (a small or random model may)
  enters the next forward as the pad embedding (:meth:`Gemma4Adapter.text_ids`).
* **Per-layer input embeddings** (E-models): the stock model looks them up with the pad id at every media
  position; they travel with their tokens (:class:`Gemma4Side`), so a pruned draft gets exactly its kept
  tokens' rows, and decode-time tokens get their own.
* **KV-shared layers** (E-models) read the keys and values of an earlier layer of the same forward and hold no
  cache rows: nothing to do.
* **Final logit soft-capping** is applied to the head's logits exactly as the stock model does.
* **Scores** for pruning come from the full-attention layers only: a sliding layer's text queries see only the
  last window of the prompt (most of the video is outside it), so the verifier's score of a video token is the
  mean attention over the full-attention layers (KV-shared ones included), their heads and the text queries.
* **Trees are refused**: the stock sliding-window cache layer rolls back only a suffix of the new tokens, and a
  tree's accepted path is not one. Use ``tree="chain"``.
* **Self-drafting is refused**: the target's sliding-window layers have already dropped all but their last
  window of prompt rows, so its cache cannot be restricted to the kept video positions; pass a separate draft
  (e.g. Gemma 4 E2B for the 31B).

Images: each image is ``<boi>`` + its soft tokens (``<|image|>``) + ``<eoi>``, a (1, H, W) run (H, W read from
``image_position_ids``) before, after or without the video, pruned with the video's tokens; in the bidirectional
models an image's soft tokens form one block too. ``use_bidirectional_attention="all"`` (a non-causal encoder
configuration) is refused at load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from specvlm.attention import AttentionContext, additive
from specvlm.models import cache as kv
from specvlm.models.base import ModelAdapter, SideFeatures, VisualLayout, split_runs


@dataclass(frozen=True)
class Gemma4Side(SideFeatures):
    """Gemma 4's per-token side features: the per-layer input embeddings (``features``: (1, L, layers x
    per-layer dim), or (0, L, 0) for a model without them) and the bidirectional vision block of each token.

    blocks: (L,) long, the vision block (frame) of each token, -1 for text; None when the model attends causally
    """

    blocks: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "Gemma4Side":
        base = super().select(index)
        blocks = None if self.blocks is None else self.blocks[index.to(self.blocks.device)]
        return Gemma4Side(mask=base.mask, features=base.features, blocks=blocks)


class Gemma4Adapter(ModelAdapter):
    family = "gemma4"
    model_types = ("gemma4",)
    layer_kinds = ("full_attention", "sliding_attention")
    supports_trees = False
    supports_self_draft = False
    decoding_limits = (
        "Gemma 4's sliding-window cache layers keep only their last window of rows and roll back only a suffix of "
        "new tokens (a tree's accepted path is not one), and they have already dropped the older prompt rows (a "
        "self-draft cannot be restricted to the kept video positions)"
    )

    def __init__(self, model):
        super().__init__(model)
        mode = getattr(self.text_config, "use_bidirectional_attention", None)
        if mode not in (None, "vision"):
            raise ValueError(
                f"gemma4: use_bidirectional_attention={mode!r} makes every layer non-causal, so the model cannot "
                "decode autoregressively; only None and 'vision' are supported"
            )
        self.bidirectional_vision = mode == "vision"
        self.per_layer_dim = int(getattr(self.text_config, "hidden_size_per_layer_input", 0) or 0)
        names = ("image_token_id", "video_token_id", "audio_token_id")
        self.media_ids = tuple(int(t) for t in (getattr(self.config, name, None) for name in names) if t is not None)
        self.pad_id = int(self.text_config.pad_token_id)

    # ---- layout ---------------------------------------------------------------------------------
    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {k: getattr(vision, k) for k in ("patch_size", "pooling_kernel_size")}

    def layout(self, inputs) -> VisualLayout:
        runs = self.video_runs(inputs) if self.has_video(inputs) else []
        if self.has_images(inputs):
            slots = self.image_slots(inputs).cpu()
            grids = self.soft_token_grids(inputs["image_position_ids"])
            runs += split_runs(self.family, "image", slots, [(1, h, w) for h, w in grids])
        return VisualLayout.from_runs(runs)

    def video_runs(self, inputs) -> list:
        """[(kind, grid, positions)] of the video: one (T, H, W) run when every frame has the same soft-token grid,
        else one (1, H, W) run per frame."""
        slots = self.video_slots(inputs).cpu()
        grids = self.soft_token_grids(inputs["video_position_ids"])
        if len(set(grids)) == 1:
            (h, w), t = grids[0], len(grids)
            if t * h * w == slots.numel():
                return [("video", (t, h, w), slots)]
        return split_runs(self.family, "video", slots, [(1, h, w) for h, w in grids])

    def soft_token_grids(self, patch_positions: torch.Tensor) -> list[tuple[int, int]]:
        """(H, W) soft-token grid of every frame or image, from its patch positions (``video_position_ids`` /
        ``image_position_ids``: (frames or images, max_patches, 2) (x, y), (-1, -1) for padding)."""
        k = int(self.config.vision_config.pooling_kernel_size)
        grids = []
        for frame in patch_positions.cpu():
            real = frame[(frame != -1).all(dim=-1)]
            if not real.numel():
                grids.append((0, 0))
                continue
            width, height = int(real[:, 0].max()) + 1, int(real[:, 1].max()) + 1
            h, w = height // k, width // k
            grids.append((h, w) if h * w * k * k == real.shape[0] else (1, real.shape[0] // (k * k)))
        return grids

    def positions(self, inputs) -> torch.Tensor:
        return torch.arange(inputs["input_ids"].shape[1], dtype=torch.long).unsqueeze(0)

    # ---- embeddings -----------------------------------------------------------------------------
    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        vision_dtype = next(self.model.model.vision_tower.parameters()).dtype
        out = self.model.model.get_video_features(
            inputs["pixel_values_videos"].to(self.device, vision_dtype),
            inputs["video_position_ids"].to(self.device),
            num_frames_per_video=inputs["num_frames_per_video"],
            return_dict=True,
        )
        return torch.cat(list(out.pooler_output), dim=0)

    @torch.no_grad()
    def image_features(self, inputs) -> torch.Tensor:
        vision_dtype = next(self.model.model.vision_tower.parameters()).dtype
        out = self.model.model.get_image_features(
            inputs["pixel_values"].to(self.device, vision_dtype), inputs["image_position_ids"].to(self.device), return_dict=True
        )
        return torch.cat(list(out.pooler_output), dim=0)

    def media_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where ``input_ids`` hold an image, video or audio placeholder (the stock model's media mask)."""
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for token in self.media_ids:
            mask |= input_ids == token
        return mask

    def text_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids`` with the pad id at every media placeholder, as the stock model looks up its token (and
        per-layer) embeddings: a placeholder id the model *generates* is embedded as the pad token too."""
        ids = input_ids.to(self.device)
        return torch.where(self.media_mask(ids), self.pad_id, ids)

    def embed_ids(self, inputs) -> torch.Tensor:
        return super().embed_ids({"input_ids": self.text_ids(inputs["input_ids"])})

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return super().embed_tokens(self.text_ids(token_ids))

    def per_layer_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(1, n, layers x per-layer dim) per-layer input embeddings of ``input_ids`` (1, n), with the pad id at
        media positions as the stock model looks them up; (0, n, 0) for a model without them."""
        n = input_ids.shape[-1]
        if not self.per_layer_dim:
            return torch.zeros((0, n, 0), dtype=self.dtype, device=self.device)
        rows = self.language_model().get_per_layer_inputs(self.text_ids(input_ids), None)  # (1, n, layers, dim)
        return rows.reshape(1, n, -1)

    def blocks(self, inputs) -> torch.Tensor | None:
        """(L,) long vision block of each prompt token (-1 for text), exactly as the stock model derives them from
        ``mm_token_type_ids``; None when the model (or the input, without ``mm_token_type_ids``) is causal."""
        types = inputs.get("mm_token_type_ids")
        if not self.bidirectional_vision or types is None:
            return None
        vision = (types[0] == 1) | (types[0] == 2)
        starts = vision.clone()
        starts[1:] &= ~vision[:-1]
        return torch.where(vision, torch.cumsum(starts.long(), 0) - 1, -1).to(self.device)

    def token_side(self, token_ids: torch.Tensor) -> Gemma4Side:
        """Side features of decode-time tokens ``token_ids`` (1, n): their per-layer embeddings, no blocks."""
        n = token_ids.shape[-1]
        return Gemma4Side(mask=torch.ones(n, dtype=torch.bool, device=self.device), features=self.per_layer_inputs(token_ids))

    @torch.no_grad()
    def embed_prompt(self, inputs) -> tuple[torch.Tensor, Gemma4Side]:
        embeds = self.embed(inputs)
        input_ids = inputs["input_ids"]
        side = Gemma4Side(
            mask=torch.ones(input_ids.shape[1], dtype=torch.bool, device=self.device),
            features=self.per_layer_inputs(input_ids),
            blocks=self.blocks(inputs),
        )
        return embeds, side

    def side_kwargs(self, side: SideFeatures) -> dict:
        if not self.per_layer_dim:
            return {}
        n = side.features.shape[1]
        return {"per_layer_inputs": side.features[0].reshape(1, n, self.text_config.num_hidden_layers, self.per_layer_dim)}

    # ---- forward --------------------------------------------------------------------------------
    def sliding_context(self, ctx: AttentionContext, cache: DynamicCache, q_len: int, blocks: torch.Tensor | None) -> AttentionContext | None:
        """The context of the sliding-window layers for a forward of ``q_len`` new tokens under ``ctx`` (which
        describes every key, as the full-attention layers see them): a dense mask over the keys a sliding layer
        holds (its last ``window - 1`` cached rows, fewer early on, plus the new tokens), allowing what ``ctx``
        allows intersected with the window (a query at cache index i sees keys at indices > i - window), and
        with ``blocks`` ((q_len,) the new tokens' vision blocks) also the tokens of the query's own block within
        the window. None when the model has no sliding-window layer."""
        layer = next((layer for layer in cache.layers if kv.layer_kind(layer) == "sliding"), None)
        if layer is None:
            return None
        window = int(layer.sliding_window)
        held = layer.keys.shape[-2] if layer.is_initialized and layer.keys is not None and layer.keys.dim() > 1 else 0
        before = int(layer.cumulative_length)  # tokens cached before this forward
        visible_before = min(held, window - 1)
        kv_len = before + q_len  # keys of the full-attention layers
        device = self.device
        cols = torch.arange(kv_len - visible_before - q_len, kv_len, device=device)
        bias = ctx._bias(q_len, kv_len, slice(None), cols, device)
        allowed = torch.ones(q_len, cols.numel(), dtype=torch.bool, device=device) if bias is None else bias.reshape(q_len, -1) == 0
        rows = before + torch.arange(q_len, device=device)
        in_window = cols[None, :] > rows[:, None] - window
        if blocks is not None:
            b = blocks.to(device)
            same = (b[:, None] == b[None, :]) & (b[:, None] >= 0)  # (q, q): the new tokens' own blocks
            allowed[:, -q_len:] |= same
        return AttentionContext(mask=additive(allowed & in_window, self.dtype)[None, None], backend=ctx.backend)

    def forward(
        self,
        embeds: torch.Tensor,
        pos: torch.Tensor,
        cache: DynamicCache,
        ctx: AttentionContext,
        logits_to_keep: int = 0,
        side: SideFeatures | None = None,
    ) -> torch.Tensor:
        """:meth:`ModelAdapter.forward` with the sliding layers' own context, the per-layer inputs of these tokens
        (``side``: required for a model with per-layer embeddings) and the final logit soft-capping."""
        if self.per_layer_dim and side is None:
            raise ValueError("gemma4: a model with per-layer input embeddings needs the side features of every forward")
        blocks = getattr(side, "blocks", None)
        if blocks is not None and not bool((blocks >= 0).any()):
            blocks = None
        sliding = self.sliding_context(ctx, cache, embeds.shape[1], blocks)
        if sliding is not None:
            ctx = dataclasses.replace(ctx, sliding=sliding)
        logits = super().forward(embeds, pos, cache, ctx, logits_to_keep, side=side)
        cap = getattr(self.text_config, "final_logit_softcapping", None)
        if cap is not None:
            logits = logits / cap
            logits = torch.tanh(logits)
            logits = logits * cap
        return logits

    def forward_ids(self, token_ids, pos, cache, ctx, logits_to_keep: int = 0, compiled: bool = False) -> torch.Tensor:
        if compiled:
            return super().forward_ids(token_ids, pos, cache, ctx, logits_to_keep, compiled=True)
        return self.forward(self.embed_tokens(token_ids), pos, cache, ctx, logits_to_keep, side=self.token_side(token_ids))

    def _step(self, token_ids, pos, cache, ctx) -> torch.Tensor:
        return self.forward(self.embed_tokens(token_ids), pos, cache, ctx, side=self.token_side(token_ids))
