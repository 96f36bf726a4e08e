"""Acceptance rules: pure functions over draft tokens and target logits.

Greedy verification (this module): the target's greedy token at every verified position is compared
with the draft's proposal; the longest matching prefix is accepted and the target's own token after it
(the *bonus* token) is committed too. The committed tokens are therefore exactly the target's greedy
continuation, whatever the draft proposed: decoding stays lossless.

What this module deliberately does not do: run models, touch caches, or apply logits processors.
"""

from __future__ import annotations

import torch


def greedy_accept_chain(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Tokens committed by one chain verification step.

    draft_tokens: (n,) long, the draft's proposals d_1..d_n (n >= 0)
    target_logits: (n + 1, V) target logits at the pending token and at d_1..d_n
    Returns (a + 1,) long: d_1..d_a followed by the target's greedy token after d_a, where a is the
    length of the longest prefix with d_i == argmax(target_logits[i - 1]).
    """
    n = draft_tokens.shape[0]
    if target_logits.shape[0] != n + 1:
        raise ValueError(f"{n} draft tokens need {n + 1} rows of target logits, got {target_logits.shape[0]}")
    greedy = target_logits.argmax(dim=-1)  # (n + 1,)
    matches = (draft_tokens == greedy[:n]).to(torch.int64).cumprod(dim=0)
    accepted = int(matches.sum())  # the one host synchronisation of the step
    return torch.cat([draft_tokens[:accepted], greedy[accepted : accepted + 1]])
