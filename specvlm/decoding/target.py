"""The target's side of decoding: a model's decoding state (:class:`DecodingState`) and the target's prefill.

* :class:`DecodingState` — one model's cache and where its decoded tokens are placed; feeds tokens causally or
  under a tree mask (every feed can be rolled back by the next ``cache.keep``);
* :func:`prefill_target` — the target's prefill, in two chunks when the verifier's text-to-video attention
  is scored for pruning (:class:`TargetPrefill`);
* :func:`score_later` — the same scores after a one-chunk prefill (a lazily started draft pays for them
  only when it starts).

What this module deliberately does not do: draft, verify, or choose which video tokens a draft keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from specvlm.attention import AttentionContext, ScoreCapture, causal_context
from specvlm.models import cache as kv
from specvlm.models import ModelAdapter, SideFeatures, VisualLayout


@dataclass
class DecodingState:
    """Decoding state of one model (the target, or a draft): its cache and where its decoded tokens are placed.

    cache: KV cache (prompt [pruned for a draft] + decoded tokens)
    prefix: cache length right after prefill
    next_pos: position id of the first decoded token (same value on every mRoPE axis)
    axes: 1 for 1-D RoPE, 3 for mRoPE
    """

    adapter: ModelAdapter
    cache: DynamicCache
    prefix: int
    next_pos: int
    axes: int
    backend: str = "sdpa"  # a concrete attention backend name (specvlm.attention.resolve_backend)
    compiled: bool = False  # decode-time forwards run through the adapter's compiled step

    @property
    def decoded(self) -> int:
        """Decoded tokens held in the cache."""
        return kv.length(self.cache) - self.prefix

    def append(self, token_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """Feed ``token_ids`` (n,) causally after the cache; returns logits (n or logits_to_keep, V)."""
        n = token_ids.shape[0]
        offsets = self.decoded + torch.arange(n, device=token_ids.device)
        length = kv.length(self.cache)
        ctx = causal_context(n, length + n, self.adapter.device, backend=self.backend)
        return self.feed(token_ids, offsets, ctx, logits_to_keep)

    def feed(
        self, token_ids: torch.Tensor, offsets: torch.Tensor, ctx: AttentionContext, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Feed ``token_ids`` (n,) at positions ``next_pos + offsets`` (n,) under the attention context
        ``ctx`` (what each new token sees of the cache and of the others); returns logits (n or logits_to_keep, V).

        Every such forward may be rolled back by the next ``cache.keep``: the cache records what it needs
        for that first (the states of linear-attention layers, the rows of sliding-window layers)."""
        pos = self.adapter.continuation(self.next_pos, offsets, self.axes).to(self.adapter.device)
        kv.record(self.cache, token_ids.shape[0])
        return self.adapter.forward_ids(token_ids.unsqueeze(0), pos, self.cache, ctx, logits_to_keep, compiled=self.compiled)[0]

    def rollback(self, decoded: int) -> None:
        """Keep only the first ``decoded`` decoded tokens."""
        kv.truncate(self.cache, self.prefix + decoded)


Sequence = DecodingState  # its old name, kept for imports


@dataclass
class TargetPrefill:
    """The target's prefill: its sequence state, last-position logits and the verifier's scores.

    logits: (V,) at the last prompt token
    positions: (P, L) prefill positions of the whole prompt
    scores: (N,) mean text-to-video attention per prunable video token, or None when not captured
    """

    seq: DecodingState
    logits: torch.Tensor
    positions: torch.Tensor
    layout: VisualLayout
    scores: torch.Tensor | None


@torch.no_grad()
def prefill_target(adapter: ModelAdapter, inputs, *, capture_scores: bool, backend: str = "sdpa") -> TargetPrefill:
    """Prefill the target; with ``capture_scores`` run it in two chunks and record the verifier's scores.

    Chunk 1 is every token through the last video token; chunk 2 is the text after it, whose queries'
    attention to the video keys is averaged over layers, heads and text queries (the hook, any backend).
    """
    layout = adapter.layout(inputs)
    positions = adapter.positions(inputs).to(adapter.device)  # (P, L)
    embeds, side = adapter.embed_prompt(inputs)  # (1, L, D), side features (e.g. DeepStack) or None
    length = embeds.shape[1]
    cache = kv.new_cache(adapter.text_config)
    split = layout.last_position + 1
    scores = None
    if capture_scores:
        if split >= length:
            raise ValueError("the prompt has no text after the video, so the verifier's attention cannot be scored")
        head, tail = _split_side(side, split, length)
        adapter.forward(
            embeds[:, :split], positions[:, :split], cache, AttentionContext(backend=backend), logits_to_keep=1, side=head
        )
        capture = ScoreCapture(key_positions=layout.positions.to(adapter.device), group=adapter.tp_group)
        ctx = causal_context(length - split, length, adapter.device, backend=backend, capture=capture)
        logits = adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, logits_to_keep=1, side=tail)
        scores = capture.mean()
    else:
        logits = adapter.forward(embeds, positions, cache, AttentionContext(backend=backend), logits_to_keep=1, side=side)
    seq = DecodingState(adapter, cache, prefix=length, next_pos=int(positions.max()) + 1, axes=positions.shape[0], backend=backend)
    return TargetPrefill(seq=seq, logits=logits[0, -1], positions=positions, layout=layout, scores=scores)


def _split_side(side: SideFeatures | None, split: int, length: int):
    """(side features of prompt positions [0, split), of [split, length)), or (None, None)."""
    if side is None:
        return None, None
    index = torch.arange(length)
    return side.select(index[:split]), side.select(index[split:])


def can_score_later(adapter: ModelAdapter, inputs) -> bool:
    """Whether :func:`score_later` can score ``inputs`` after a one-chunk prefill: the text after the video
    holds no other visual tokens (no images), the family has no side features, and its cache keeps every
    token's rows (no linear-attention state to rewind)."""
    plain_embeds = type(adapter).embed_prompt is ModelAdapter.embed_prompt  # no side features (DeepStack)
    return plain_embeds and not adapter.has_images(inputs) and getattr(adapter, "supports_self_draft", True)


@torch.no_grad()
def score_later(target: TargetPrefill, inputs) -> torch.Tensor:
    """The verifier's scores (N,) for a target prefilled in one chunk (no scores yet), as
    :func:`prefill_target` with ``capture_scores`` records them: the text after the last video token is fed
    once more, over a copy of the cache through that token, and its queries' attention to the video keys
    is averaged over layers, heads and text queries. Costs a forward over those few text tokens; lets a
    lazily started draft pay for scoring only when it starts (:func:`can_score_later` must hold)."""
    target_state = target.seq
    adapter = target_state.adapter
    split = target.layout.last_position + 1
    length = target_state.prefix
    if split >= length:
        raise ValueError("the prompt has no text after the video, so the verifier's attention cannot be scored")
    device = adapter.device
    cache = kv.subset(target_state.cache, torch.arange(split, device=device))
    tail = adapter.embed_tokens(inputs["input_ids"][:, split:length])  # (1, length - split, D): text only
    capture = ScoreCapture(key_positions=target.layout.positions.to(device), group=adapter.tp_group)
    ctx = causal_context(length - split, length, device, backend=target_state.backend, capture=capture)
    adapter.forward(tail, target.positions[:, split:length], cache, ctx, logits_to_keep=1)
    return capture.mean()
