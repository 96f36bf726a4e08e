"""The speculative loop: propose -> verify -> commit -> stop, one loop for every drafter, family and method.

Each step of :func:`decode`, as in gpt-fast's speculative loop:

1. **propose**: the drafter proposes a chain or a tree under the pending token, or nothing (a plain step);
   which drafter it is (a draft model, the target's own layers, prompt lookup, a wrapper) the loop never
   knows (:mod:`specvlm.decoding.drafters`);
2. **verify**: the target scores the pending token and every node in one forward (tree mask, depth-based
   positions); greedy or lossless speculative sampling (``specvlm.decoding.verify``) returns the accepted
   path and one bonus token, read to the host once;
3. **commit**: the target's cache keeps exactly the accepted path, the path's tokens and the bonus token are
   appended up to EOS / ``max_new_tokens``, and the drafter is told what was committed (it keeps exactly
   that in its own state);
4. **stop** at the first EOS token or at ``max_new_tokens``, exactly where the stock ``generate()`` stops.

``ar`` (plain decoding, the fair baseline) is the same loop with no drafter.

Invariants kept between steps (``out`` is the list of committed new tokens):
  * the target cache holds the prompt and ``out[:-1]``; ``out[-1]`` is pending (fed at the next step);
  * after a step the target cache keeps exactly the committed path (``cache.keep``), nothing else;
  * the draft tree a step verifies is not modified by verification (the verifiers are pure).
Every committed token is the target's own greedy token (with sampling: distributed exactly as the
target's own sampling).

What this module deliberately does not do: load models, build processor inputs, prefill, choose pruning
strategies or drafters.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import torch

from specvlm.attention import causal_context, tree_context
from specvlm.decoding.drafters import Drafter, Step
from specvlm.decoding.logits import NextTokenRule
from specvlm.decoding.sampling import Sampling
from specvlm.decoding.target import DecodingState, TargetPrefill
from specvlm.decoding.trees import DraftTree
from specvlm.decoding.verify import Verdict, greedy_verify, sample_verify
from specvlm.models import cache as kv
from specvlm.stats import GenerationStats
from specvlm.timing import host_syncs, to_host


@dataclass(frozen=True)
class Stop:
    """Where decoding stops: at the first of ``eos_token_ids`` (kept) or after ``max_new_tokens`` tokens."""

    max_new_tokens: int
    eos_token_ids: frozenset[int] = frozenset()

    def cut(self, tokens: list[int], committed: int) -> tuple[list[int], str | None]:
        """The prefix of ``tokens`` to append after ``committed`` already committed tokens, and why decoding
        stops there: ``"eos"`` (the first EOS token, kept), ``"max_new_tokens"`` (the budget is reached), or
        None (every token kept, decoding continues). EOS wins when both happen at the same token."""
        for i, token in enumerate(tokens):
            if token in self.eos_token_ids:
                return tokens[: i + 1], "eos"
            if committed + i + 1 >= self.max_new_tokens:
                return tokens[: i + 1], "max_new_tokens"
        return tokens, None


@torch.no_grad()
def decode(
    target: TargetPrefill,
    drafter: Drafter | None,
    stop: Stop,
    stats: GenerationStats,
    *,
    rule: NextTokenRule | None = None,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
    on_commit: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Decode after the target's prefill; returns the committed new token ids.

    ``drafter``: proposes each step's draft tokens (``None``: plain decoding). ``rule``: how the target
    chooses each token (its generation config's logits processors, applied at every verified position with
    that position's prefix; ``None``: the raw logits). ``sampling``: ``None`` for greedy decoding, else the
    draft's proposal settings (the target's own distribution comes from ``rule``). ``on_commit`` receives the
    tokens each step commits (the first token on its own), as they are committed (a streamer). Sets
    ``stats.stopped_by`` ("eos" | "max_new_tokens") and ``stats.host_syncs``; the drafter writes its own.
    """
    target_state = target.seq
    out = [_first_token(target, rule, sampling, generator)]  # out[-1] is pending (not yet in the target cache)
    syncs_before = host_syncs()  # the steps' own reads (the first token above comes from the prefill)
    _, why = stop.cut(out, 0)
    if on_commit is not None:
        on_commit(list(out))
    try:
        while why is None:
            started = time.perf_counter()
            before = len(out) - 1  # decoded tokens in the target cache before this step
            remaining = stop.max_new_tokens - len(out)
            tree = drafter.propose(out, remaining - 1) if drafter is not None and remaining > 1 else None
            drafted = tree if tree is not None else _empty_tree(target_state.adapter.device)
            verdict = _verify(target_state, out, drafted, sampling, generator, rule)  # the step's one host read
            start = kv.length(target_state.cache) - drafted.size - 1  # keep the pending (root) token and the accepted nodes
            kv.keep(target_state.cache, start, [0] + [i + 1 for i in verdict.path])
            kept, why = stop.cut(verdict.committed, len(out))
            out.extend(kept)
            if drafter is not None:
                drafter.commit(Step(tree, verdict.path, kept, before, target_state, time.perf_counter() - started))
            if on_commit is not None:
                on_commit(kept)
            stats.record_step(len(kept), len(verdict.path), _tried_depth(drafted, verdict.path))
    except BaseException:
        if drafter is not None:
            drafter.close()  # a worker, threads: released before the error propagates
        raise
    stats.stopped_by = why
    stats.host_syncs = host_syncs() - syncs_before
    if drafter is not None:
        drafter.finish(stats)
    return out


def _first_token(target: TargetPrefill, rule: NextTokenRule | None, sampling: Sampling | None, generator) -> int:
    """The first new token, from the prefill's last-position logits."""
    scores = _target_scores(rule, target.logits[None], [[]])  # (1, V)
    if sampling is None:
        return to_host(scores[0].argmax())
    p = _target_probs(rule, sampling, scores).to(generator.device)
    return to_host(torch.multinomial(p, 1, generator=generator).view(-1))[0]


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


def _verify(state: DecodingState, out: list[int], tree: DraftTree, sampling, generator, rule=None) -> Verdict:
    """One target forward over [root, nodes...] with the tree mask; returns the :class:`Verdict`.

    Does not modify ``tree``: when the draft's vocabulary is narrower than the target's, a padded copy
    of its q (zero probability for the target-only tokens) is verified instead.
    """
    device = state.adapter.device
    ids = torch.cat([torch.tensor([out[-1]], dtype=torch.long, device=device), tree.tokens.to(device)])
    offsets = (state.decoded + torch.cat([torch.zeros(1, dtype=torch.long), tree.depths])).to(device)
    length = kv.length(state.cache)
    if tree.size:
        ctx = tree_context(length, tree.verify_mask().to(device), backend=state.backend)
    else:
        ctx = causal_context(1, length + 1, device, backend=state.backend)
    logits = state.feed(ids, offsets, ctx)  # (n + 1, V)
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
