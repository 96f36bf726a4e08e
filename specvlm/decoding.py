"""The SpecVLM loop: prefill -> score -> prune -> draft prefill -> (draft, verify, accept, roll back)*.

Drafting proposes a chain or a tree (``specvlm.drafting``), verification is greedy or lossless
speculative sampling (``specvlm.verify``).

One loop for every model family and every method:

* ``ar``: plain greedy decoding (a verification step with zero draft tokens), the fair baseline.
* ``sd``: the draft model sees every video token.
* ``specvlm``: the draft sees only the video tokens kept by verifier-guided pruning.

Invariants kept between steps (``out`` is the list of committed new tokens):
  * the target cache holds the prompt and ``out[:-1]``; ``out[-1]`` is pending (fed at the next step);
  * the draft cache holds its (pruned) prompt and a prefix of ``out``; missing tokens are fed first;
  * after a step both caches keep exactly the committed path (``cache.keep``), nothing else.
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
from specvlm.attention import AttentionContext, ScoreCapture, causal_context, tree_context
from specvlm.drafting import DynamicTree, propose
from specvlm.sampling import Sampling
from specvlm.stats import GenerationStats
from specvlm.timing import host_syncs, to_host
from specvlm.trees import DraftTree, TreeShape
from specvlm.verify import greedy_verify, sample_verify

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
        ``ctx`` (what each new token sees of the cache and of the others); returns logits (n or logits_to_keep, V)."""
        pos = self.adapter.continuation(self.next_pos, offsets, self.axes).to(self.adapter.device)
        return self.adapter.forward_ids(token_ids.unsqueeze(0), pos, self.cache, ctx, logits_to_keep, compiled=self.compiled)[0]

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
def prefill_target(adapter: ModelAdapter, inputs, *, capture_scores: bool, backend: str = "sdpa") -> TargetPrefill:
    """Prefill the target; with ``capture_scores`` run it in two chunks and record the verifier's scores.

    Chunk 1 is every token through the last video token; chunk 2 is the text after it, whose queries'
    attention to the video keys is averaged over layers, heads and text queries (the hook, any backend).
    """
    layout = adapter.layout(inputs)
    positions = adapter.positions(inputs).to(adapter.device)  # (P, L)
    embeds = adapter.embed(inputs)  # (1, L, D)
    length = embeds.shape[1]
    cache = kv.new_cache(adapter.text_config)
    split = layout.last_position + 1
    scores = None
    if capture_scores:
        if split >= length:
            raise ValueError("the prompt has no text after the video, so the verifier's attention cannot be scored")
        adapter.forward(embeds[:, :split], positions[:, :split], cache, AttentionContext(backend=backend), logits_to_keep=1)
        capture = ScoreCapture(key_positions=layout.positions.to(adapter.device))
        ctx = causal_context(length - split, length, adapter.device, backend=backend, capture=capture)
        logits = adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, logits_to_keep=1)
        scores = capture.mean()
    else:
        logits = adapter.forward(embeds, positions, cache, AttentionContext(backend=backend), logits_to_keep=1)
    seq = Sequence(adapter, cache, prefix=length, next_pos=int(positions.max()) + 1, axes=positions.shape[0], backend=backend)
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
        return Sequence(tseq.adapter, cache, prefix=keep.numel(), next_pos=tseq.next_pos, axes=tseq.axes, backend=tseq.backend)
    keep = keep.to(draft.device)
    embeds = draft.embed(inputs)[:, keep]
    if positions == "original":
        pos = target.positions.to(draft.device)[:, keep]
    elif positions == "compact":
        pos = torch.arange(keep.numel(), device=draft.device).unsqueeze(0).expand(tseq.axes, -1)
    else:
        raise ValueError(f"unknown positions mode {positions!r}; choose 'original' or 'compact'")
    cache = kv.new_cache(draft.text_config)
    draft.forward(embeds, pos, cache, AttentionContext(backend=tseq.backend), logits_to_keep=1)
    return Sequence(draft, cache, prefix=keep.numel(), next_pos=int(pos.max()) + 1, axes=tseq.axes, backend=tseq.backend)


@torch.no_grad()
def decode(
    target: TargetPrefill,
    draft: Sequence | None,
    stats: GenerationStats,
    *,
    tree: TreeShape | DynamicTree | None,
    max_new_tokens: int,
    eos_token_ids: set[int],
    shared_vocab: int,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Speculative decoding after prefill; returns the committed new token ids.

    Each step: the draft proposes a tree under the pending token, the target verifies every node in
    one forward (tree mask, depth-based positions), the accepted path plus one bonus token is
    committed, and both caches keep exactly the committed path. With ``draft=None`` or ``tree=None``
    every step is a plain decoding step (``ar``). ``sampling=None`` is greedy decoding.
    """
    tseq = target.seq
    device = tseq.adapter.device
    if sampling is None:
        first = to_host(target.logits.argmax())
    else:
        first_p = sampling.probs(target.logits[None]).to(generator.device)
        first = to_host(torch.multinomial(first_p, 1, generator=generator).view(-1))[0]
    out = [first]
    syncs_before = host_syncs()  # the steps' own reads (the first token above comes from the prefill)
    stats.stopped_by = "eos" if first in eos_token_ids else ("max_new_tokens" if max_new_tokens <= 1 else "")
    while not stats.stopped_by:
        remaining = max_new_tokens - len(out)
        proposal = None
        if draft is not None and tree is not None and remaining > 1:
            proposal = propose(
                draft, out, tree, vocab=shared_vocab, max_depth=remaining - 1, sampling=sampling, generator=generator
            )
            stats.draft_steps += proposal.forwards
        drafted = proposal.tree if proposal is not None else _empty_tree(device, sampling, shared_vocab)
        path, bonus = _verify(tseq, out[-1], drafted, sampling, generator)
        committed_before = len(out)
        # target cache: keep the pending (root) token and the accepted nodes; the bonus token is pending
        start = kv.length(tseq.cache) - drafted.size - 1
        kv.keep(tseq.cache, start, [0] + [i + 1 for i in path])
        if proposal is not None:
            # draft cache: everything committed before this step + accepted nodes it has already fed
            fed = [proposal.fed[i] for i in path if proposal.fed[i] >= 0]
            kv.keep(draft.cache, proposal.base, fed)
        new = [drafted.host_tokens[i] for i in path] + [bonus]
        for token in new:
            out.append(token)
            if token in eos_token_ids:
                stats.stopped_by = "eos"
            elif len(out) >= max_new_tokens:
                stats.stopped_by = "max_new_tokens"
            if stats.stopped_by:
                break
        end = path[-1] if path else -1
        reachable = len(path) + int(bool((drafted.parents == end).any())) if drafted.size else 0
        stats.record_step(len(out) - committed_before, len(path), reachable)
    stats.host_syncs = host_syncs() - syncs_before
    return out


def _empty_tree(device, sampling, vocab) -> DraftTree:
    empty = torch.empty(0, dtype=torch.long)
    return DraftTree(tokens=empty.to(device), parents=empty, depths=empty)


def _verify(tseq: Sequence, root: int, tree: DraftTree, sampling, generator) -> tuple[list[int], int]:
    """One target forward over [root, nodes...] with the tree mask; returns (accepted path, bonus)."""
    device = tseq.adapter.device
    ids = torch.cat([torch.tensor([root], dtype=torch.long, device=device), tree.tokens.to(device)])
    offsets = (tseq.decoded + torch.cat([torch.zeros(1, dtype=torch.long), tree.depths])).to(device)
    length = kv.length(tseq.cache)
    if tree.size:
        ctx = tree_context(length, tree.verify_mask().to(device), backend=tseq.backend)
    else:
        ctx = causal_context(1, length + 1, device, backend=tseq.backend)
    logits = tseq.feed(ids, offsets, ctx)  # (n + 1, V)
    if sampling is None:
        return greedy_verify(tree, logits)
    p = sampling.probs(logits)
    if tree.q is not None and tree.q.shape[-1] < p.shape[-1]:
        tree.q = torch.nn.functional.pad(tree.q, (0, p.shape[-1] - tree.q.shape[-1]))
    return sample_verify(tree, p, generator)
