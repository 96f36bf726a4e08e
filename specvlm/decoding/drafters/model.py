"""A draft model as a drafter: a separate draft VLM (on the pruned or the full video) or the target itself.

* :func:`prefill_draft` — the draft's prefill with only the kept prompt positions (a separate model's own
  visual features of the kept tokens), or, drafting for itself, the target's cache restricted to them;
* :class:`ModelDrafter` — drafts a chain, a static tree or a dynamic tree with that model
  (:func:`specvlm.decoding.drafting.propose`) and keeps exactly the committed tokens in its cache.

What this module deliberately does not do: choose the kept positions (pruning), or skip layers
(:mod:`.layer_skip`).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from specvlm.attention import AttentionContext
from specvlm.decoding.drafting import DraftRule, DynamicTree, Proposal, propose
from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.logits import NextTokenRule
from specvlm.decoding.sampling import Sampling
from specvlm.decoding.target import DecodingState, TargetPrefill
from specvlm.decoding.trees import DraftTree, TreeShape
from specvlm.models import ModelAdapter
from specvlm.models import cache as kv
from specvlm.stats import GenerationStats


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


@torch.no_grad()
def prefill_draft(
    draft: ModelAdapter | None,
    inputs,
    target: TargetPrefill,
    keep: torch.Tensor,
    *,
    positions: str = "original",
    vision: str = "all",
) -> DecodingState:
    """Prefill the draft with only the sequence positions ``keep`` (sorted, long).

    With a separate draft model, its own embeddings (its own visual features) of the kept tokens are
    prefilled at their original positions (``positions="original"``) or re-numbered 0..K-1 as the
    reference implementation does (``positions="compact"``). With ``draft=None`` (self-drafting) the
    target's cache is index-selected at ``keep`` and at every token it has decoded so far (a lazy
    start): no second prefill.
    A separate draft started late catches up on the decoded tokens at its first proposal.
    ``vision``: ``"kept_frames"`` computes the separate draft's visual features only where they are kept
    (:meth:`~specvlm.models.base.ModelAdapter.embed_kept`: e.g. only the frames holding a kept token), ``"all"``
    over the whole video; the kept tokens' embeddings are the same either way.
    """
    target_state = target.seq
    if draft is None:
        check_self_draft_support(target_state.adapter)
        if positions != "original":
            raise ValueError(f"positions={positions!r} needs a separate draft model; self-drafting reuses the target's cache")
        rows = torch.cat([keep.to(torch.long), torch.arange(target_state.prefix, target_state.prefix + target_state.decoded, dtype=torch.long)])
        cache = kv.subset(target_state.cache, rows.to(target_state.adapter.device))
        return DecodingState(target_state.adapter, cache, prefix=keep.numel(), next_pos=target_state.next_pos, axes=target_state.axes, backend=target_state.backend)
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
        pos = torch.arange(keep.numel(), device=draft.device).unsqueeze(0).expand(target_state.axes, -1)
    else:
        raise ValueError(f"unknown positions mode {positions!r}; choose 'original' or 'compact'")
    cache = kv.new_cache(draft.text_config)
    draft.forward(embeds, pos, cache, AttentionContext(backend=target_state.backend), logits_to_keep=1, side=side)
    return DecodingState(draft, cache, prefix=keep.numel(), next_pos=int(pos.max()) + 1, axes=target_state.axes, backend=target_state.backend)


@torch.no_grad()
def warm_compiled(seq: DecodingState, shape: TreeShape | DynamicTree, vocab: int, steps: int = 3) -> None:
    """Build the compiled graphs a draft's decode steps use (``torch.compile`` compiles on first use): draft
    ``steps`` proposals of ``shape`` on a scratch copy of ``seq``'s cache, catching up 1, 2, ... tokens as the
    real steps do, so that no decoding step of an answer waits for a compile. ``seq`` is left unchanged.

    The warm-up runs under torch.compile's full guards, so that every kind of step compiles its graph; after
    it, the draft's compiled steps are trusted (:meth:`~specvlm.models.base.ModelAdapter.trust_compiled`)."""
    scratch = dataclasses.replace(seq, cache=copy.deepcopy(seq.cache), compiled=True)  # the same cache classes
    seq.adapter.trust_compiled(False)
    out = [0]
    for step in range(1, steps + 1):
        out = out + [0] * step  # ``step`` tokens committed since the last proposal: a catch-up of that many
        proposal = propose(scratch, out, shape, vocab=vocab, max_depth=shape.depth)
        kv.keep(scratch.cache, proposal.base, [])
    seq.adapter.trust_compiled()


class ModelDrafter(Drafter):
    """A draft model's sequence drafting ``shape`` (a static shape or a dynamic tree) under the pending token.

    vocab: the vocabulary shared with the target (only those logits are drafted from)
    width: the target's vocabulary size (a :class:`DraftRule` pads the draft's logits to it)
    rule: the target's next-token rule; when its processors read the prefix, the draft's logits at every
        node are processed by them with the node's own prefix (:class:`DraftRule`)
    sampling / generator: the proposal settings when sampling (``None``: greedy drafting)
    stop_below: adaptive chain length (:func:`specvlm.decoding.drafting.propose`)
    """

    name = "draft model"

    def __init__(
        self,
        seq: DecodingState,
        shape: TreeShape | DynamicTree,
        *,
        vocab: int,
        width: int,
        rule: NextTokenRule | None = None,
        sampling: Sampling | None = None,
        generator: torch.Generator | None = None,
        stop_below: float = 0.0,
    ):
        check_tree_support(seq.adapter, shape)
        self.seq = seq
        self.shape = shape
        self.vocab = vocab
        self.width = width
        self.rule = rule if rule is not None and rule.reads_prefix else None
        self.sampling = sampling
        self.generator = generator
        self.stop_below = stop_below
        self.forwards = 0  # draft forwards run (catch-up/root forwards and one per expanded level)
        self._proposal: Proposal | None = None

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        rule = DraftRule.after(self.rule, out, self.width) if self.rule is not None else None
        self._proposal = propose(
            self.seq, out, self.shape, vocab=self.vocab, max_depth=max_depth, sampling=self.sampling,
            generator=self.generator, rule=rule, stop_below=self.stop_below,
        )  # fmt: skip
        self.forwards += self._proposal.forwards
        return self._proposal.tree

    def commit(self, step: Step) -> None:
        """The draft cache keeps everything committed before the step and the accepted nodes it has fed
        (a plain step leaves it alone: the next proposal feeds the missing tokens first)."""
        proposal, self._proposal = self._proposal, None
        if proposal is not None and step.tree is not None:
            fed = [proposal.fed[i] for i in step.path if proposal.fed[i] >= 0]
            kv.keep(self.seq.cache, proposal.base, fed)

    def finish(self, stats: GenerationStats) -> None:
        stats.draft_steps += self.forwards
        stats.speculation = stats.speculation or "on"
