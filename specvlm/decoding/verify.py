"""Acceptance rules: pure functions over a draft tree, target logits / probabilities and a generator.

A chain is a tree whose nodes each have one child, so one implementation serves both.

* **Greedy** (:func:`greedy_verify`): walk from the root; at each node move to the child whose token
  equals the target's greedy token there; stop when none does. The committed tokens are the walked
  path plus the target's greedy token at its end (the *bonus* token): exactly the target's greedy
  continuation, whatever the draft proposed.
* **Sampling** (:func:`sample_verify`): recursive rejection sampling over siblings (SpecInfer /
  EAGLE multi-draft; for one child per node it is the standard min(1, p/q) rule). At a node with
  target distribution p and draft distribution q, whose children x_1, x_2, ... were drawn from q one
  after another without replacement: accept x_j with probability min(1, p(x_j) / q(x_j)); on
  rejection set p <- norm(max(0, p - q)), remove x_j from q and renormalise, and try x_{j+1}. If no
  child is accepted the bonus token is drawn from the last p; at a leaf it is drawn from p itself.
  The committed tokens then follow the target's own sampling distribution exactly.

Both functions are pure: they read the tree, the target's rows and (for sampling) the generator's
stream, and write nothing else. Each synchronises with the host once per call (to walk the tree) and
returns what it read in a :class:`Verdict` (accepted path, bonus token, host copy of the tree's
tokens), so the caller needs no second read to know the committed tokens.

What this module deliberately does not do: run models, touch caches, or build trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvlm.timing import to_host
from specvlm.decoding.trees import DraftTree


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one draft tree (host values, read in the verifier's one host sync).

    path: accepted node indices from the root down (each node's parent is the previous entry; [] when
          the root's children were all rejected)
    bonus: the token the target adds after the path's end (its greedy / sampled token there)
    tokens: host copy of the tree's drafted tokens, tokens[i] = ``tree.tokens[i]`` (n,)
    """

    path: list[int]
    bonus: int
    tokens: list[int]

    @property
    def committed(self) -> list[int]:
        """The tokens this step commits: the accepted path's tokens, then the bonus token."""
        return [self.tokens[i] for i in self.path] + [self.bonus]


def _walk(children: list[list[int]], accepted_child: list[int]) -> list[int]:
    """Follow accepted children from the root; ``accepted_child[u]`` is a child slot or -1."""
    path: list[int] = []
    u = 0
    while True:
        j = accepted_child[u]
        if j < 0:
            return path
        node = children[u][j]
        path.append(node)
        u = node + 1


def greedy_verify(tree: DraftTree, target_logits: torch.Tensor) -> Verdict:
    """Greedy acceptance over a draft tree (pure: ``tree`` is not modified).

    target_logits: (n + 1, V) target logits at the root (row 0) and at each node (row i + 1)
    Returns the :class:`Verdict` (accepted node indices from the root down, bonus token, host tokens).
    """
    n = tree.size
    if target_logits.shape[0] != n + 1:
        raise ValueError(f"a {n}-node tree needs {n + 1} rows of target logits, got {target_logits.shape[0]}")
    greedy = target_logits.argmax(dim=-1)  # (n + 1,)
    host = to_host(torch.cat([greedy, tree.tokens.to(greedy.device)]))  # the one host synchronisation
    greedy_h, tokens_h = host[: n + 1], host[n + 1 :]  # (n + 1,) target argmax per row, (n,) drafted tokens
    children = tree.children()
    accepted = [-1] * (n + 1)
    for u in range(n + 1):
        for j, child in enumerate(children[u]):
            if tokens_h[child] == greedy_h[u]:
                accepted[u] = j
                break
    path = _walk(children, accepted)
    end = path[-1] + 1 if path else 0  # row of the path's last node (0 = root)
    return Verdict(path=path, bonus=greedy_h[end], tokens=tokens_h)


def greedy_accept_chain(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Tokens committed by one greedy chain step: d_1..d_a then the target's token after d_a.

    draft_tokens: (n,) long; target_logits: (n + 1, V). Returns (a + 1,) long.
    """
    n = draft_tokens.shape[0]
    if target_logits.shape[0] != n + 1:
        raise ValueError(f"{n} draft tokens need {n + 1} rows of target logits, got {target_logits.shape[0]}")
    tree = DraftTree(
        tokens=draft_tokens,
        parents=torch.arange(n, dtype=torch.long) - 1,
        depths=torch.arange(1, n + 1, dtype=torch.long),
    )
    return torch.tensor(greedy_verify(tree, target_logits).committed, dtype=torch.long, device=draft_tokens.device)


def sample_verify(tree: DraftTree, p: torch.Tensor, generator: torch.Generator) -> Verdict:
    """Recursive rejection sampling over a draft tree (lossless speculative sampling).

    Pure apart from drawing from ``generator``: neither ``tree`` (its ``q`` included) nor ``p`` is modified.

    p: (n + 1, V) target probabilities (processed exactly like ``tree.q``) at the root and each node
    tree.q: (n + 1, V) draft probabilities the children of each row were drawn from (without replacement)
    Returns the :class:`Verdict` (accepted node indices from the root down, bonus token, host tokens).
    """
    n = tree.size
    if p.shape[0] != n + 1:
        raise ValueError(f"a {n}-node tree needs {n + 1} rows of target probabilities, got {p.shape[0]}")
    if n and (tree.q is None or tree.q.shape != p.shape):
        shape = None if tree.q is None else tuple(tree.q.shape)
        raise ValueError(f"sampling verification needs draft probabilities q of shape {tuple(p.shape)}, got {shape}")
    device = p.device
    children = tree.children()
    width = max((len(c) for c in children), default=0)
    rows = torch.arange(n + 1, device=device)
    # candidate tokens per row, padded with -1: (n + 1, width)
    cand = torch.full((n + 1, max(width, 1)), -1, dtype=torch.long, device=device)
    for u, kids in enumerate(children):
        if kids:
            cand[u, : len(kids)] = tree.tokens.to(device)[kids]
    residual = p.float().clone()
    q = tree.q.float().to(device).clone() if n else torch.zeros_like(residual)
    uniforms = torch.rand((n + 1, max(width, 1)), generator=generator, device=generator.device).to(device)
    accepted = torch.full((n + 1,), -1, dtype=torch.long, device=device)
    for j in range(width):
        x = cand[:, j].clamp_min(0)
        qx = q[rows, x]
        px = residual[rows, x]
        open_rows = (cand[:, j] >= 0) & (accepted < 0) & (qx > 0)
        accept = open_rows & (uniforms[:, j] * qx < px)  # u in [0, 1): u = 0 must not accept p(x) = 0
        accepted = torch.where(accept, torch.full_like(accepted, j), accepted)
        reject = (open_rows & ~accept).unsqueeze(-1)
        new_residual = (residual - q).clamp_min(0)
        new_residual = new_residual / new_residual.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        residual = torch.where(reject, new_residual, residual)
        removed = q.scatter(-1, x.unsqueeze(-1), 0.0)
        removed = removed / removed.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        q = torch.where(reject, removed, q)
    bonus = torch.multinomial(residual.to(generator.device), 1, generator=generator).squeeze(-1).to(device)
    # the one host synchronisation: [accepted child slot per row (n + 1), bonus per row (n + 1), tokens (n)]
    host = to_host(torch.cat([accepted, bonus, tree.tokens.to(device)]))
    accepted_h, bonus_h, tokens_h = host[: n + 1], host[n + 1 : 2 * (n + 1)], host[2 * (n + 1) :]
    path = _walk(children, accepted_h)
    end = path[-1] + 1 if path else 0  # row of the path's last node (0 = root)
    return Verdict(path=path, bonus=bonus_h[end], tokens=tokens_h)
