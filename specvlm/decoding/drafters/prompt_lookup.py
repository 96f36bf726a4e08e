"""Prompt lookup: draft the tokens that followed the latest earlier occurrence of the answer's last n-gram.

Answers often re-read their context: a caption names the objects the question named, a list repeats its own
structure, a multi-turn conversation quotes an earlier turn. Prompt lookup (as transformers'
``prompt_lookup_num_tokens``) finds the latest earlier place in the prompt or the answer where the last
``n`` committed tokens occurred (``n`` from ``max_ngram`` down to ``min_ngram``) and proposes the tokens that
followed it there as a chain. It needs no second model and no forward of its own: a step that finds no match
is a plain step. The target verifies every proposal, so the output is exactly the target's.

When sampling, a proposal is deterministic: its q is one-hot on each drafted token, so the verifier accepts a
token x with probability p(x) and otherwise draws from p with x removed: still exactly the target's
distribution.

The index maps every n-gram of the context to the position after its latest occurrence and is extended by
the committed tokens only (a lookup and an update cost O(max_ngram) dictionary operations, whatever the
context's length).

This file is the worked example of docs/drafters.md: a drafter is a class with ``propose`` and ``commit``.
"""

from __future__ import annotations

import torch

from specvlm.decoding.drafters.base import Drafter
from specvlm.decoding.trees import DraftTree
from specvlm.stats import GenerationStats

#: Longest and shortest n-grams looked up (longest first: a longer match predicts better).
MAX_NGRAM = 3
MIN_NGRAM = 1


class PromptLookupDrafter(Drafter):
    """Drafts a chain of at most ``num_tokens`` tokens copied from the context after the last n-gram's
    latest earlier occurrence.

    context: the prompt's token ids (the context the answer may re-read; visual placeholders included,
        they match no text)
    vocab: the target's vocabulary size (q's width when sampling)
    sampling: whether the verifier samples (then the tree carries one-hot q rows)
    """

    name = "prompt lookup"

    def __init__(
        self,
        context: list[int],
        num_tokens: int,
        *,
        vocab: int,
        sampling: bool = False,
        device: torch.device | str = "cpu",
        max_ngram: int = MAX_NGRAM,
        min_ngram: int = MIN_NGRAM,
    ):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"prompt lookup needs 1 <= min_ngram <= max_ngram, got {min_ngram} and {max_ngram}")
        self.num_tokens = num_tokens
        self.vocab = vocab
        self.sampling = sampling
        self.device = torch.device(device)
        self.ngrams = range(max_ngram, min_ngram - 1, -1)
        self.tokens: list[int] = []  # the context, then the committed tokens indexed so far
        self.index: dict[tuple[int, ...], int] = {}  # n-gram -> position after its latest occurrence in tokens
        self.committed = 0  # committed tokens indexed (every one but the pending token, once proposed after)
        self.proposals = 0  # steps with a match
        self.lookups = 0  # steps that looked one up
        self._extend(list(context))

    def _extend(self, tokens: list[int]) -> None:
        """Append ``tokens`` to the context and index the n-grams that end in them."""
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            for n in self.ngrams:
                if end >= n:
                    self.index[tuple(self.tokens[end - n : end])] = end

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        self._extend(out[self.committed : -1])  # the committed tokens before the pending one join the context
        self.committed = len(out) - 1
        pending = out[-1]  # the n-grams looked up end at the pending token
        self.lookups += 1
        for n in self.ngrams:
            if len(self.tokens) < n:
                continue  # an earlier occurrence needs n indexed tokens
            start = self.index.get((*self.tokens[len(self.tokens) - n + 1 :], pending) if n > 1 else (pending,))
            if start is None:
                continue
            k = min(self.num_tokens, max_depth)
            drafted = self.tokens[start : start + k]
            if len(drafted) < k:  # the occurrence ends right before the pending token, which follows it
                drafted.append(pending)
            self.proposals += 1
            return self._chain(drafted)
        return None

    def _chain(self, drafted: list[int]) -> DraftTree:
        n = len(drafted)
        tokens = torch.tensor(drafted, dtype=torch.long)
        q = None
        if self.sampling:
            q = torch.zeros(n + 1, self.vocab, device=self.device)
            q[torch.arange(n), tokens] = 1.0  # row i: the root's (i = 0) or node i - 1's child, drawn with certainty
        return DraftTree(
            tokens=tokens.to(self.device), parents=torch.arange(-1, n - 1), depths=torch.arange(1, n + 1), q=q
        )

    def finish(self, stats: GenerationStats) -> None:
        stats.speculation = stats.speculation or "on"
