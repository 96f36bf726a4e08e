"""The SpecVLM loop: prefill -> score -> prune -> draft prefill -> (draft, verify, accept, roll back)*.

One loop for every model family and every method:

* ``ar``: plain greedy decoding (a verification step with zero draft tokens), the fair baseline.
* ``sd``: the draft model sees every video token.
* ``specvlm``: the draft sees only the video tokens kept by verifier-guided pruning.

Invariants kept between steps (``out`` is the list of committed new tokens):
  * the target cache holds the prompt and ``out[:-1]``; ``out[-1]`` is pending (fed at the next step);
  * the draft cache holds its (pruned) prompt and a prefix of ``out``; missing tokens are fed first.
Decoding stops at the first EOS token or at ``max_new_tokens``, exactly where the stock greedy
``generate()`` stops, and every committed token is the target's own greedy token.

What this module deliberately does not do: load models, build processor inputs, or choose pruning
strategies (it receives the kept sequence positions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from specvlm import cache as kv
from specvlm.adapters import ModelAdapter, VideoLayout
from specvlm.attention import AttentionContext, ScoreCapture, causal_mask
from specvlm.stats import GenerationStats
from specvlm.verify import greedy_accept_chain

logger = logging.getLogger(__name__)


@dataclass
class Sequence:
    """Decoding state of one model: its cache and where its decoded tokens are placed.

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

    @property
    def decoded(self) -> int:
        """Decoded tokens held in the cache."""
        return kv.length(self.cache) - self.prefix

    def append(self, token_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """Feed ``token_ids`` (n,) after the cache; returns logits (n or logits_to_keep, V)."""
        n = token_ids.shape[0]
        length = kv.length(self.cache)
        offsets = torch.arange(n, device=token_ids.device)
        pos = self.adapter.continuation(self.next_pos + length - self.prefix, offsets, self.axes)
        mask = None if n == 1 else causal_mask(n, length + n, self.adapter.dtype, self.adapter.device)
        embeds = self.adapter.embed_tokens(token_ids.unsqueeze(0))
        logits = self.adapter.forward(embeds, pos.to(self.adapter.device), self.cache, AttentionContext(mask=mask), logits_to_keep)
        return logits[0]

    def rollback(self, decoded: int) -> None:
        """Keep only the first ``decoded`` decoded tokens."""
        kv.truncate(self.cache, self.prefix + decoded)


@dataclass
class TargetPrefill:
    """The target's prefill: its sequence state, last-position logits and the verifier's scores.

    logits: (V,) at the last prompt token
    positions: (P, L) prefill positions of the whole prompt
    scores: (N,) mean text-to-video attention per prunable video token, or None when not captured
    """

    seq: Sequence
    logits: torch.Tensor
    positions: torch.Tensor
    layout: VideoLayout
    scores: torch.Tensor | None


@torch.no_grad()
def prefill_target(adapter: ModelAdapter, inputs, *, capture_scores: bool) -> TargetPrefill:
    """Prefill the target; with ``capture_scores`` run it in two chunks and record the verifier's scores.

    Chunk 1 is every token through the last video token; chunk 2 is the text after it, whose queries'
    attention to the video keys is averaged over layers, heads and text queries (the hook, SDPA).
    """
    layout = adapter.layout(inputs)
    positions = adapter.positions(inputs).to(adapter.device)  # (P, L)
    embeds = adapter.embed(inputs)  # (1, L, D)
    length = embeds.shape[1]
    cache = DynamicCache(config=adapter.text_config)
    split = layout.last_position + 1
    scores = None
    if capture_scores:
        if split >= length:
            raise ValueError("the prompt has no text after the video, so the verifier's attention cannot be scored")
        adapter.forward(embeds[:, :split], positions[:, :split], cache, AttentionContext(), logits_to_keep=1)
        capture = ScoreCapture(key_positions=layout.positions.to(adapter.device))
        ctx = AttentionContext(mask=causal_mask(length - split, length, adapter.dtype, adapter.device), capture=capture)
        logits = adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, logits_to_keep=1)
        scores = capture.mean()
    else:
        logits = adapter.forward(embeds, positions, cache, AttentionContext(), logits_to_keep=1)
    seq = Sequence(adapter, cache, prefix=length, next_pos=int(positions.max()) + 1, axes=positions.shape[0])
    return TargetPrefill(seq=seq, logits=logits[0, -1], positions=positions, layout=layout, scores=scores)


@torch.no_grad()
def prefill_draft(
    draft: ModelAdapter | None, inputs, target: TargetPrefill, keep: torch.Tensor, *, positions: str = "original"
) -> Sequence:
    """Prefill the draft with only the sequence positions ``keep`` (sorted, long).

    With a separate draft model, its own embeddings (its own visual features) of the kept tokens are
    prefilled at their original positions (``positions="original"``) or re-numbered 0..K-1 as the
    reference implementation does (``positions="compact"``). With ``draft=None`` (self-drafting) the
    target's prefill cache is index-selected at ``keep``: no second prefill.
    """
    tseq = target.seq
    if draft is None:
        if positions != "original":
            raise ValueError(f"positions={positions!r} needs a separate draft model; self-drafting reuses the target's cache")
        cache = kv.subset(tseq.cache, keep.to(tseq.adapter.device))
        return Sequence(tseq.adapter, cache, prefix=keep.numel(), next_pos=tseq.next_pos, axes=tseq.axes)
    keep = keep.to(draft.device)
    embeds = draft.embed(inputs)[:, keep]
    if positions == "original":
        pos = target.positions.to(draft.device)[:, keep]
    elif positions == "compact":
        pos = torch.arange(keep.numel(), device=draft.device).unsqueeze(0).expand(tseq.axes, -1)
    else:
        raise ValueError(f"unknown positions mode {positions!r}; choose 'original' or 'compact'")
    cache = DynamicCache(config=draft.text_config)
    draft.forward(embeds, pos, cache, AttentionContext(), logits_to_keep=1)
    return Sequence(draft, cache, prefix=keep.numel(), next_pos=int(pos.max()) + 1, axes=tseq.axes)


@torch.no_grad()
def propose_chain(draft: Sequence, out: list[int], n: int, vocab: int) -> torch.Tensor:
    """Greedy chain of ``n`` draft tokens after the committed tokens ``out``; returns (n,) long.

    Tokens committed since the draft last ran are fed in one forward first. Only the first ``vocab``
    logits are considered (the vocabulary the target and the draft share).
    """
    device = draft.adapter.device
    missing = torch.tensor(out[draft.decoded :], dtype=torch.long, device=device)
    logits = draft.append(missing, logits_to_keep=1)[-1]
    tokens = [logits[:vocab].argmax()]
    for _ in range(n - 1):
        logits = draft.append(tokens[-1].view(1))[-1]
        tokens.append(logits[:vocab].argmax())
    return torch.stack(tokens)


@torch.no_grad()
def decode(
    target: TargetPrefill,
    draft: Sequence | None,
    stats: GenerationStats,
    *,
    num_draft_tokens: int,
    max_new_tokens: int,
    eos_token_ids: set[int],
    shared_vocab: int,
) -> list[int]:
    """Greedy speculative decoding after prefill; returns the committed new token ids.

    With ``draft=None`` or ``num_draft_tokens=0`` every step is a plain decode step (``ar``).
    """
    tseq = target.seq
    first = int(target.logits.argmax())
    out = [first]
    stats.stopped_by = "eos" if first in eos_token_ids else ("max_new_tokens" if max_new_tokens <= 1 else "")
    while not stats.stopped_by:
        remaining = max_new_tokens - len(out)
        gamma = min(num_draft_tokens, remaining - 1) if draft is not None else 0
        if gamma > 0:
            proposal = propose_chain(draft, out, gamma, shared_vocab).to(tseq.adapter.device)
            stats.draft_steps += gamma
        else:
            proposal = torch.empty(0, dtype=torch.long, device=tseq.adapter.device)
        committed_before = len(out)
        block = torch.cat([torch.tensor([out[-1]], device=tseq.adapter.device), proposal])
        logits = tseq.append(block)  # (gamma + 1, V)
        new = greedy_accept_chain(proposal, logits).tolist()
        accepted = len(new) - 1
        # target cache: keep the pending token and the accepted draft tokens (the bonus token is pending)
        tseq.rollback(committed_before + accepted)
        if gamma > 0:
            # draft cache: the tokens committed before this step + the accepted draft tokens it has seen
            draft.rollback(committed_before + min(accepted, gamma - 1))
        for token in new:
            out.append(token)
            if token in eos_token_ids:
                stats.stopped_by = "eos"
            elif len(out) >= max_new_tokens:
                stats.stopped_by = "max_new_tokens"
            if stats.stopped_by:
                break
        stats.target_steps += 1
        stats.accepted_lengths.append(len(out) - committed_before)
    return out
