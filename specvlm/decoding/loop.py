"""The SpecVLM loop: prefill -> score -> prune -> draft prefill -> (propose, verify, commit)*.

Each step of :func:`decode`, as in gpt-fast's speculative loop:

1. **propose**: the draft proposes a chain or a tree under the pending token
   (``specvlm.decoding.drafting``);
2. **verify**: the target scores the pending token and every node in one forward (tree mask,
   depth-based positions); greedy or lossless speculative sampling (``specvlm.decoding.verify``)
   returns the accepted path and one bonus token, read to the host once;
3. **commit**: both caches keep exactly the accepted path, the path's tokens and the bonus token are
   appended up to EOS / ``max_new_tokens``, and the stop decision is made (a local value of the loop).

One loop for every model family and every method:

* ``ar``: plain greedy decoding (a verification step with zero draft tokens), the fair baseline.
* ``sd``: the draft model sees every video token.
* ``specvlm``: the draft sees only the video tokens kept by verifier-guided pruning.

A draft may start late (:class:`LazyDraft`): the first tokens are then plain decoding steps and the
draft is prefilled only once the answer is long enough for speculation to pay for it. A self-draft
(no draft model) may skip decoder layers (:mod:`specvlm.decoding.layerskip`); its cache then takes the
target's rows of the committed tokens after every step instead of keeping its own.

Invariants kept between steps (``out`` is the list of committed new tokens):
  * the target cache holds the prompt and ``out[:-1]``; ``out[-1]`` is pending (fed at the next step);
  * the draft cache holds its (pruned) prompt and a prefix of ``out``; missing tokens are fed first;
  * after a step both caches keep exactly the committed path (``cache.keep``), nothing else;
  * the draft tree a step verifies is not modified by verification (the verifiers are pure).
Decoding stops at the first EOS token or at ``max_new_tokens``, exactly where the stock greedy
``generate()`` stops, and every committed token is the target's own greedy token (with sampling:
distributed exactly as the target's own sampling).

What this module deliberately does not do: load models, build processor inputs, or choose pruning
strategies (it receives the kept sequence positions).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
from transformers import DynamicCache

from specvlm.models import cache as kv
from specvlm.models import ModelAdapter, SideFeatures, VideoLayout
from specvlm.attention import AttentionContext, ScoreCapture, causal_context, tree_context
from specvlm.decoding.drafting import DraftRule, DynamicTree, propose
from specvlm.decoding.layerskip import LayerChoice
from specvlm.decoding.sampling import Sampling
from specvlm.stats import GenerationStats
from specvlm.timing import host_syncs, to_host
from specvlm.decoding.trees import DraftTree, TreeShape
from specvlm.decoding.logits import NextTokenRule
from specvlm.decoding.verify import Verdict, greedy_verify, sample_verify

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
    mirrors: bool = False  # a layer-skipping self-draft: after each step its rows of the committed tokens are the target's

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
        capture = ScoreCapture(key_positions=layout.positions.to(adapter.device))
        ctx = causal_context(length - split, length, adapter.device, backend=backend, capture=capture)
        logits = adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, logits_to_keep=1, side=tail)
        scores = capture.mean()
    else:
        logits = adapter.forward(embeds, positions, cache, AttentionContext(backend=backend), logits_to_keep=1, side=side)
    seq = Sequence(adapter, cache, prefix=length, next_pos=int(positions.max()) + 1, axes=positions.shape[0], backend=backend)
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
    tseq = target.seq
    adapter = tseq.adapter
    split = target.layout.last_position + 1
    length = tseq.prefix
    if split >= length:
        raise ValueError("the prompt has no text after the video, so the verifier's attention cannot be scored")
    device = adapter.device
    cache = kv.subset(tseq.cache, torch.arange(split, device=device))
    tail = adapter.embed_tokens(inputs["input_ids"][:, split:length])  # (1, length - split, D): text only
    capture = ScoreCapture(key_positions=target.layout.positions.to(device))
    ctx = causal_context(length - split, length, device, backend=tseq.backend, capture=capture)
    adapter.forward(tail, target.positions[:, split:length], cache, ctx, logits_to_keep=1)
    return capture.mean()


@torch.no_grad()
def prefill_draft(
    draft: ModelAdapter | None,
    inputs,
    target: TargetPrefill,
    keep: torch.Tensor,
    *,
    positions: str = "original",
    mirrors: bool = False,
    vision: str = "all",
) -> Sequence:
    """Prefill the draft with only the sequence positions ``keep`` (sorted, long).

    With a separate draft model, its own embeddings (its own visual features) of the kept tokens are
    prefilled at their original positions (``positions="original"``) or re-numbered 0..K-1 as the
    reference implementation does (``positions="compact"``). With ``draft=None`` (self-drafting) the
    target's cache is index-selected at ``keep`` and at every token it has decoded so far (a lazy
    start): no second prefill; ``mirrors`` marks a layer-skipping self-draft (:attr:`Sequence.mirrors`).
    A separate draft started late catches up on the decoded tokens at its first proposal.
    ``vision``: ``"kept_frames"`` computes the separate draft's visual features only where they are kept
    (:meth:`~specvlm.models.base.ModelAdapter.embed_kept`: e.g. only the frames holding a kept token), ``"all"``
    over the whole video; the kept tokens' embeddings are the same either way.
    """
    tseq = target.seq
    if draft is None:
        check_self_draft_support(tseq.adapter)
        if positions != "original":
            raise ValueError(f"positions={positions!r} needs a separate draft model; self-drafting reuses the target's cache")
        rows = torch.cat([keep.to(torch.long), torch.arange(tseq.prefix, tseq.prefix + tseq.decoded, dtype=torch.long)])
        cache = kv.subset(tseq.cache, rows.to(tseq.adapter.device))
        return Sequence(
            tseq.adapter, cache, prefix=keep.numel(), next_pos=tseq.next_pos, axes=tseq.axes, backend=tseq.backend, mirrors=mirrors
        )
    keep = keep.to(draft.device)
    if vision == "kept_frames":
        embeds, side = draft.embed_kept(inputs, keep)
    elif vision == "all":
        embeds, side = draft.embed_prompt(inputs)
    else:
        raise ValueError(f"unknown draft vision mode {vision!r}; choose 'kept_frames' or 'all'")
    embeds = embeds[:, keep]
    side = side.select(keep) if side is not None else None  # the kept tokens' own side features (DeepStack)
    if positions == "original":
        pos = target.positions.to(draft.device)[:, keep]
    elif positions == "compact":
        pos = torch.arange(keep.numel(), device=draft.device).unsqueeze(0).expand(tseq.axes, -1)
    else:
        raise ValueError(f"unknown positions mode {positions!r}; choose 'original' or 'compact'")
    cache = kv.new_cache(draft.text_config)
    draft.forward(embeds, pos, cache, AttentionContext(backend=tseq.backend), logits_to_keep=1, side=side)
    return Sequence(draft, cache, prefix=keep.numel(), next_pos=int(pos.max()) + 1, axes=tseq.axes, backend=tseq.backend)


@dataclass
class LazyDraft:
    """A draft prefilled on demand: ``start()`` prefills it (at the target's state when called) and
    returns its sequence; the loop calls it once ``after`` tokens are committed and more remain."""

    start: Callable[[], Sequence]
    after: int


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
    rule: NextTokenRule | None = None,
    on_commit: Callable[[list[int]], None] | None = None,
    lazy: LazyDraft | None = None,
    layers: LayerChoice | None = None,
    stop_below: float = 0.0,
) -> list[int]:
    """Speculative decoding after prefill; returns the committed new token ids.

    Each step: 1. the draft proposes a tree under the pending token, 2. the target verifies every node
    in one forward (tree mask, depth-based positions), 3. the accepted path plus one bonus token is
    committed and both caches keep exactly the committed path. With ``draft=None`` or ``tree=None``
    every step is a plain decoding step (``ar``). ``rule`` is how the target chooses each token (its
    generation config's logits processors, applied at every verified position with that position's
    prefix, and at every drafted node to the draft's logits when they read the prefix; ``None``: the raw
    logits); ``sampling`` (the draft's proposal settings) is ``None`` for
    greedy decoding. ``on_commit`` receives the tokens each step commits (the first token on its own),
    as they are committed (a streamer). ``lazy``: with ``draft=None``, a draft to start once
    ``lazy.after`` tokens are committed (plain steps until then; never, for a shorter answer).
    ``layers``: a self-draft's layer subsets (:class:`~specvlm.decoding.layerskip.LayerChoice`), which
    may also choose plain steps. ``stop_below``: adaptive chain length (see ``drafting.propose``).
    Sets ``stats.stopped_by`` ("eos" | "max_new_tokens"), ``stats.host_syncs`` and ``stats.speculation``
    ("on" | "skipped" | "stopped" when there was a draft to run) once, at the end.
    """
    tseq = target.seq
    check_tree_support(tseq.adapter, tree)
    device = tseq.adapter.device
    draft_reads_prefix = rule is not None and rule.reads_prefix  # the draft's logits need the processors too
    # 0. the first new token comes from the prefill's last-position logits
    first_scores = _target_scores(rule, target.logits[None], [[]])  # (1, V)
    if sampling is None:
        first = to_host(first_scores[0].argmax())
    else:
        first_p = _target_probs(rule, sampling, first_scores).to(generator.device)
        first = to_host(torch.multinomial(first_p, 1, generator=generator).view(-1))[0]
    out = [first]  # committed new tokens; out[-1] is pending (not yet in the target cache)
    syncs_before = host_syncs()  # the steps' own reads (the first token above comes from the prefill)
    _, stop = _commit_until_stop([first], 0, eos_token_ids, max_new_tokens)
    if on_commit is not None:
        on_commit([first])
    while stop is None:
        # 1. propose: the draft drafts a tree under the pending token (nothing for ``ar`` or one token left)
        remaining = max_new_tokens - len(out)
        if lazy is not None and remaining > 1 and len(out) >= lazy.after:
            draft, lazy = lazy.start(), None
            stats.draft_start_tokens = len(out)
        proposal = None
        option = None  # the self-draft's layer subset this step (None: every layer, or a plain step)
        drafting = draft is not None and tree is not None and remaining > 1
        if drafting and layers is not None:
            option = layers.next()
            drafting = option is not None
            if drafting:
                layers.use(draft, option)
            elif layers.decided:  # plain decoding pays best: the draft is dropped for the rest of the answer
                draft = None
        started = time.perf_counter()
        before = len(out) - 1  # decoded tokens in the target cache before this step
        if drafting:
            proposal = propose(
                draft,
                out,
                tree,
                vocab=shared_vocab,
                max_depth=remaining - 1,
                sampling=sampling,
                generator=generator,
                rule=DraftRule.after(rule, out, target.logits.shape[-1]) if draft_reads_prefix else None,
                stop_below=stop_below,
            )
            stats.draft_steps += proposal.forwards
        drafted = proposal.tree if proposal is not None else _empty_tree(device)

        # 2. verify: one target forward over [pending, nodes...]; the verdict holds the step's one host read
        verdict = _verify(tseq, out, drafted, sampling, generator, rule)

        # 3. commit: both caches keep exactly the accepted path; append tokens up to EOS / max_new_tokens
        # target cache: keep the pending (root) token and the accepted nodes; the bonus token is pending
        start = kv.length(tseq.cache) - drafted.size - 1
        kv.keep(tseq.cache, start, [0] + [i + 1 for i in verdict.path])
        if draft is not None and draft.mirrors:
            # a layer-skipping self-draft: every layer takes the target's rows of the tokens just committed
            kv.adopt(draft.cache, draft.prefix + before, tseq.cache, tseq.prefix + before, kv.length(tseq.cache))
        elif proposal is not None:
            # draft cache: everything committed before this step + accepted nodes it has already fed
            fed = [proposal.fed[i] for i in verdict.path if proposal.fed[i] >= 0]
            kv.keep(draft.cache, proposal.base, fed)
        if layers is not None:
            layers.record(option, len(verdict.committed), time.perf_counter() - started)
        kept, stop = _commit_until_stop(verdict.committed, len(out), eos_token_ids, max_new_tokens)
        out.extend(kept)
        if on_commit is not None:
            on_commit(kept)
        stats.record_step(len(kept), len(verdict.path), _tried_depth(drafted, verdict.path))
    stats.stopped_by = stop
    stats.host_syncs = host_syncs() - syncs_before
    if lazy is not None:
        stats.speculation = "skipped"  # the answer ended before the draft was started: no draft prefill
    elif layers is not None and layers.decided and layers.chosen is None:
        stats.speculation = "stopped"  # the self-draft's trials found plain decoding fastest
    elif draft is not None or layers is not None:
        stats.speculation = "on"
    if layers is not None and layers.chosen is not None:
        stats.draft_layers = list(layers.chosen)
    return out


def is_chain(tree: TreeShape | DynamicTree | None) -> bool:
    """Whether ``tree`` is a static chain (every node the best child of the previous one)."""
    return isinstance(tree, TreeShape) and all(p == (0,) * len(p) for p in tree.paths)


def check_tree_support(adapter: ModelAdapter, tree: TreeShape | DynamicTree | None) -> None:
    """Raise ValueError when ``adapter``'s family cannot verify ``tree`` exactly (chains always can)."""
    if tree is None or adapter.supports_trees or is_chain(tree):
        return
    shape = "a dynamic tree" if isinstance(tree, DynamicTree) else f"a {tree.size}-node tree"
    raise ValueError(
        f"{adapter.family}: {shape} cannot be verified exactly: {adapter.decoding_limits}; use tree='chain'"
    )


def check_self_draft_support(adapter: ModelAdapter) -> None:
    """Raise ValueError when ``adapter``'s family cannot draft for itself (``draft=None``) exactly."""
    if not adapter.supports_self_draft:
        raise ValueError(
            f"{adapter.family}: self-drafting (draft=None) is not possible: {adapter.decoding_limits}; "
            "pass a separate draft model of the same family"
        )


def _commit_until_stop(
    tokens: list[int], committed: int, eos_token_ids: set[int], max_new_tokens: int
) -> tuple[list[int], str | None]:
    """The prefix of ``tokens`` to append after ``committed`` already committed tokens, and why decoding
    stops there: ``"eos"`` (the first EOS token, kept), ``"max_new_tokens"`` (the budget is reached), or
    None (every token kept, decoding continues). EOS wins when both happen at the same token."""
    for i, token in enumerate(tokens):
        if token in eos_token_ids:
            return tokens[: i + 1], "eos"
        if committed + i + 1 >= max_new_tokens:
            return tokens[: i + 1], "max_new_tokens"
    return tokens, None


def _tried_depth(tree: DraftTree, path: list[int]) -> int:
    """Deepest level at which the target was offered a candidate on ``path``: one more than the path's
    length when its end node (the root for an empty path) has children, else the path's length."""
    if not tree.size:
        return 0
    end = path[-1] if path else -1
    return len(path) + int(bool((tree.parents == end).any()))


def _empty_tree(device) -> DraftTree:
    empty = torch.empty(0, dtype=torch.long)
    return DraftTree(tokens=empty.to(device), parents=empty, depths=empty)


def _target_scores(rule: NextTokenRule | None, logits: torch.Tensor, prefixes: list[list[int]]) -> torch.Tensor:
    """The target's scores (n, V) at positions after the prompt + ``prefixes[i]``: its logits as its
    own ``generate()`` processes them, or the raw logits without a rule."""
    return logits if rule is None else rule.scores(logits, prefixes)


def _target_probs(rule: NextTokenRule | None, sampling: Sampling, scores: torch.Tensor) -> torch.Tensor:
    """The target's sampling distribution p from its scores (the rule's warpers already applied)."""
    return sampling.probs(scores) if rule is None else scores.float().softmax(dim=-1)


def _node_prefixes(out: list[int], tree: DraftTree, tokens: list[int] | None) -> list[list[int]]:
    """[committed tokens] for the root, then for each node the committed tokens and the drafted tokens
    on its path (itself included)."""
    prefixes = [list(out)]
    parents = tree.parents.tolist()
    for i in range(tree.size):
        prefixes.append(prefixes[parents[i] + 1] + [tokens[i]])
    return prefixes


def _verify(tseq: Sequence, out: list[int], tree: DraftTree, sampling, generator, rule=None) -> Verdict:
    """One target forward over [root, nodes...] with the tree mask; returns the :class:`Verdict`.

    Does not modify ``tree``: when the draft's vocabulary is narrower than the target's, a padded copy
    of its q (zero probability for the target-only tokens) is verified instead.
    """
    device = tseq.adapter.device
    ids = torch.cat([torch.tensor([out[-1]], dtype=torch.long, device=device), tree.tokens.to(device)])
    offsets = (tseq.decoded + torch.cat([torch.zeros(1, dtype=torch.long), tree.depths])).to(device)
    length = kv.length(tseq.cache)
    if tree.size:
        ctx = tree_context(length, tree.verify_mask().to(device), backend=tseq.backend)
    else:
        ctx = causal_context(1, length + 1, device, backend=tseq.backend)
    logits = tseq.feed(ids, offsets, ctx)  # (n + 1, V)
    if rule is not None and rule.reads_prefix:
        # the processors read each position's prefix: the drafted tokens on each node's path (one more
        # host read per step, only for such processors)
        drafted = to_host(tree.tokens) if tree.size else []
        logits = rule.scores(logits, _node_prefixes(out, tree, drafted))
    elif rule is not None:
        logits = rule.scores(logits, None)  # prefix-free (sampling warpers) or nothing at all
    if sampling is None:
        return greedy_verify(tree, logits)
    p = _target_probs(rule, sampling, logits)  # (n + 1, V)
    if tree.q is not None and tree.q.shape[-1] < p.shape[-1]:
        padded_q = torch.nn.functional.pad(tree.q, (0, p.shape[-1] - tree.q.shape[-1]))  # (n + 1, V)
        tree = dataclasses.replace(tree, q=padded_q)  # a local copy: the caller's tree keeps its q
    return sample_verify(tree, p, generator)
