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

Both functions synchronise with the host once per call (to walk the tree) and leave the host copy of
the tree's tokens in ``tree.host_tokens``, so the caller needs no second read.

What this module deliberately does not do: run models, touch caches, or build trees.
"""

from __future__ import annotations

import torch

from specvlm.timing import to_host
from specvlm.trees import DraftTree


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


def greedy_verify(tree: DraftTree, target_logits: torch.Tensor) -> tuple[list[int], int]:
    """Greedy acceptance over a draft tree.

    target_logits: (n + 1, V) target logits at the root (row 0) and at each node (row i + 1)
    Returns (accepted node indices from the root down, bonus token).
    """
    n = tree.size
    if target_logits.shape[0] != n + 1:
        raise ValueError(f"a {n}-node tree needs {n + 1} rows of target logits, got {target_logits.shape[0]}")
    greedy = target_logits.argmax(dim=-1)  # (n + 1,)
    host = to_host(torch.cat([greedy, tree.tokens.to(greedy.device)]))  # the one host synchronisation
    greedy_h, tokens_h = host[: n + 1], host[n + 1 :]
    tree.host_tokens = tokens_h
    children = tree.children()
    accepted = [-1] * (n + 1)
    for u in range(n + 1):
        for j, child in enumerate(children[u]):
            if tokens_h[child] == greedy_h[u]:
                accepted[u] = j
                break
    path = _walk(children, accepted)
    end = path[-1] + 1 if path else 0
    return path, greedy_h[end]


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
    path, bonus = greedy_verify(tree, target_logits)
    return torch.tensor([*draft_tokens[: len(path)].tolist(), bonus], dtype=torch.long, device=draft_tokens.device)


def sample_verify(tree: DraftTree, p: torch.Tensor, generator: torch.Generator) -> tuple[list[int], int]:
    """Recursive rejection sampling over a draft tree (lossless speculative sampling).

    p: (n + 1, V) target probabilities (processed exactly like ``tree.q``) at the root and each node
    tree.q: (n + 1, V) draft probabilities the children of each row were drawn from (without replacement)
    Returns (accepted node indices from the root down, bonus token).
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
    host = to_host(torch.cat([accepted, bonus, tree.tokens.to(device)]))  # the one host synchronisation
    tree.host_tokens = host[2 * (n + 1) :]
    path = _walk(children, host[: n + 1])
    end = path[-1] + 1 if path else 0
    return path, host[n + 1 + end]
