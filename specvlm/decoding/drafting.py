"""Drafting: the draft model proposes a tree of tokens under the pending token, one forward per level.

One interface, :func:`propose`, for every shape:

* a static :class:`~specvlm.decoding.trees.TreeShape` (``chain``, ``reference-25``, user paths): the children of
  a node are its draft's top-ranked tokens (greedy) or tokens drawn one after another without
  replacement from the draft distribution q (sampling), as many as the shape asks for;
* a dynamic tree (EAGLE-2 style, :class:`DynamicTree`): at every level the ``top_k`` best frontier
  nodes are expanded with ``top_k`` children each; after ``depth`` levels the best ``total_tokens``
  nodes are kept, best-first, so that a kept node's parent and earlier siblings are kept too.
  Greedy ranks nodes by cumulative draft log-probability. Sampling ranks a node only by quantities
  fixed before it was drawn (its parent's cumulative log-probability and the draft mass its earlier
  siblings left), so which candidates are verified never depends on their own values and recursive
  rejection sampling stays exactly lossless.

The draft cache receives the tokens committed since the last step, then the nodes it expands (the
nodes whose children it computes), each attending to the prefix and its own ancestors.

When the target's generation config holds logits processors that read the tokens before a position
(repetition penalty, n-gram bans, minimum lengths, ...), the draft's logits at every node are processed
by the same processors with that node's own prefix (prompt, committed tokens, the node's path), as
transformers' assisted decoding processes its assistant's: the draft then proposes what the target will
choose, not what the raw draft prefers. A :class:`DraftRule` carries them.

Adaptive chain length (``stop_below`` > 0, chains only): after each drafted token the draft's own
probability of it is read; below ``stop_below`` the chain ends there (that token is still verified),
since the tokens after a doubtful one would likely be rejected and drafting them costs forwards. The
draft's choice of where to stop depends only on its own values, so verification stays lossless.

Host reads: a static shape is planned once (masks, index tensors, fed offsets) and drafted with device
operations only, so its tokens reach the host first in the verifier's single read of the step. A
dynamic tree ranks candidates on the host, one read per level.

What this module deliberately does not do: verify, or touch the target.
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass

import torch

from specvlm.models import cache as kv
from specvlm.attention import AttentionContext
from specvlm.decoding.logits import NextTokenRule
from specvlm.decoding.sampling import Sampling, sample_without_replacement
from specvlm.timing import to_host
from specvlm.decoding.trees import DraftTree, TreeShape, TreeStructure


@dataclass(frozen=True)
class DynamicTree:
    """EAGLE-2 style dynamic tree settings."""

    depth: int = 5
    top_k: int = 8
    total_tokens: int = 25

    def __post_init__(self):
        for name in ("depth", "top_k", "total_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"tree_{name}={value!r} must be an int >= 1")


@dataclass(frozen=True)
class DraftRule:
    """The target's prefix-dependent logits processors, applied to the draft's logits.

    rule: the target's :class:`~specvlm.decoding.logits.NextTokenRule` (it :attr:`reads_prefix`)
    committed: (1, C) long, the prompt ids followed by every committed token (the pending root last)
    width: the target's vocabulary size; draft logits are padded to it with -inf (tokens the draft
        cannot propose), so that processors indexing target-only token ids (in the prefix, an EOS id,
        a banned word) see the vocabulary they were built for
    """

    rule: NextTokenRule
    committed: torch.Tensor
    width: int

    @classmethod
    def after(cls, rule: NextTokenRule, out: list[int], width: int) -> "DraftRule":
        """The draft rule for a step whose committed tokens (after the prompt) are ``out``."""
        ids = torch.tensor([out], dtype=torch.long, device=rule.prompt_ids.device)
        return cls(rule=rule, committed=torch.cat([rule.prompt_ids, ids], dim=-1), width=width)

    def scores(self, logits: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """(r, vocab) processed float32 scores of the draft ``logits`` (r, vocab); row i is at the position
        after the committed tokens and ``paths[i]`` ((r, d) long, the drafted tokens on the row's path)."""
        rows, vocab = logits.shape
        device = self.committed.device
        padded = torch.nn.functional.pad(logits.float(), (0, max(self.width - vocab, 0)), value=-math.inf)
        ids = torch.cat([self.committed.expand(rows, -1), paths.to(device)], dim=-1)
        return self.rule.processors(ids, padded.to(device))[:, :vocab].to(logits.device)


#: The proposal distribution over processed scores: their softmax, nothing more (the rule's own warpers
#: already applied temperature, top-k, top-p).
_PLAIN = Sampling()


@dataclass
class Proposal:
    """A proposed tree plus where its expanded nodes sit in the draft cache.

    base: draft cache length before the first expanded node (prefix + every committed token)
    fed: (n,) list, column offset after ``base`` of each node in the draft cache, -1 if not fed
    forwards: draft forwards this proposal ran (the catch-up/root forward plus one per expanded level)
    """

    tree: DraftTree
    base: int
    fed: list[int]
    forwards: int


@dataclass
class _Node:
    token: int
    parent: int  # candidate index, -1 for the root's children
    depth: int
    rank: int  # position among its siblings
    key: float  # selection score
    cum: float  # cumulative draft log-probability including this node


def _children(logits: torch.Tensor, k: int, sampling: Sampling | None, generator):
    """(rows, V) draft logits -> (tokens (rows, k), q (rows, V) or None, log q of tokens (rows, k))."""
    if sampling is None:
        logp = torch.log_softmax(logits.float(), dim=-1)
        top = torch.topk(logp, k, dim=-1)
        return top.indices, None, top.values
    q = sampling.probs(logits)
    tokens = sample_without_replacement(q, k, generator)
    return tokens, q, torch.log(q.gather(-1, tokens))


def _top_children(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(rows, k) each row's k top-ranked tokens: greedy static drafting needs no log-probabilities."""
    return logits.argmax(-1, keepdim=True) if k == 1 else logits.topk(k, dim=-1).indices


def _ancestor_block(parents: list[int], fed: list[int], nodes: list[int], fed_before: int) -> torch.Tensor:
    """(len(nodes), fed_before + len(nodes)) bool: which fed tree nodes each of ``nodes`` sees (its fed
    ancestors and itself) when they are fed after ``fed_before`` others; records their ``fed`` offsets."""
    local = torch.zeros(len(nodes), fed_before + len(nodes), dtype=torch.bool)
    for row, node in enumerate(nodes):
        a = parents[node]
        while a >= 0:
            local[row, fed[a]] = True
            a = parents[a]
        local[row, fed_before + row] = True
        fed[node] = fed_before + row
    return local


def _feed_nodes(draft, base: int, fed: list[int], parents: list[int], nodes: list[int], tokens: list[int], depth: int):
    """Feed ``nodes`` (all at ``depth``) to the draft; each sees the prefix, its fed ancestors and itself."""
    n = len(nodes)
    local = _ancestor_block(parents, fed, nodes, kv.length(draft.cache) - base)
    device = draft.adapter.device
    ctx = AttentionContext(prefix=base, local=local.to(device), backend=draft.backend)
    ids = torch.tensor([tokens[i] for i in nodes], dtype=torch.long, device=device)
    offsets = torch.full((n,), base - draft.prefix - 1 + depth, dtype=torch.long, device=device)  # root + depth
    return draft.feed(ids, offsets, ctx)  # (n, V)


@torch.no_grad()
def propose(
    draft,
    out: list[int],
    shape: TreeShape | DynamicTree,
    *,
    vocab: int,
    max_depth: int,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
    rule: DraftRule | None = None,
    stop_below: float = 0.0,
) -> Proposal:
    """Propose a tree of draft tokens after the committed tokens ``out`` (``out[-1]`` is the root).

    Only the first ``vocab`` logits (the vocabulary shared with the target) are used; the tree is cut
    at ``max_depth`` levels so that no step drafts past ``max_new_tokens``. ``rule``: the target's
    prefix-dependent processors for the draft's logits at every node (then, when sampling, q is the
    softmax of the processed scores: the rule's own warpers replace ``sampling``'s). ``stop_below``: a
    chain ends after a token the draft gives less probability than this (one host read per token).
    """
    device = draft.adapter.device
    missing = torch.tensor(out[draft.decoded :], dtype=torch.long, device=device)
    root_logits = draft.append(missing, logits_to_keep=1)[-1:, :vocab]  # (1, vocab)
    base = kv.length(draft.cache)
    if rule is not None:
        root_logits = rule.scores(root_logits, torch.empty(1, 0, dtype=torch.long))
        sampling = _PLAIN if sampling is not None else None
    if isinstance(shape, DynamicTree):
        return _propose_dynamic(draft, base, root_logits, shape, max_depth, sampling, generator, vocab, rule)
    stop = stop_below if stop_below > 0 and all(p == (0,) * len(p) for p in shape.paths) else 0.0  # chains only
    return _propose_static(draft, base, root_logits, shape, max_depth, sampling, generator, vocab, rule, stop)


@dataclass(frozen=True)
class _Level:
    """One level of a static shape: which children it draws and which of its nodes are then fed."""

    nodes: torch.Tensor  # (m,) node indices at this depth
    src_row: torch.Tensor  # (m,) row of the previous feed's logits holding each node's parent
    rank: torch.Tensor  # (m,) each node's rank among its siblings
    width: int  # children drawn per parent row
    rows: torch.Tensor  # (r,) tree rows (parent + 1) of the logits rows, for the draft distribution q
    paths: torch.Tensor  # (r, depth - 1) node indices on each logits row's path (root first), for a DraftRule
    expand: torch.Tensor  # (e,) nodes of this level that have children, fed after the level is drawn
    fed_before: int  # nodes fed to the draft cache before this level's expanded nodes
    local: torch.Tensor | None  # (e, fed_before + e) bool: each expanded node sees its fed ancestors and
    # itself; None where that is every fed key (a chain): the forward then needs no mask at all


@dataclass(frozen=True)
class _StaticPlan:
    structure: TreeStructure
    levels: tuple[_Level, ...]
    fed: tuple[int, ...]


@functools.lru_cache(maxsize=64)
def _static_plan(paths: tuple[tuple[int, ...], ...], max_depth: int, device: str) -> _StaticPlan:
    """Everything about drafting a static shape that does not depend on the drafted tokens (host work, once)."""
    paths = tuple(p for p in paths if len(p) <= max_depth)
    index = {p: i for i, p in enumerate(paths)}
    parents = [index[p[:-1]] if len(p) > 1 else -1 for p in paths]
    has_kids = set(parents)
    fed = [-1] * len(paths)
    levels = []
    prev_expand = [-1]  # the root's logits row
    count = 0
    for depth in range(1, max((len(p) for p in paths), default=0) + 1):
        nodes = [i for i, p in enumerate(paths) if len(p) == depth]
        expand = [i for i in nodes if i in has_kids]
        local = _ancestor_block(parents, fed, expand, count)
        as_long = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        row_paths = [_path_nodes(parents, e) for e in prev_expand]
        levels.append(
            _Level(
                nodes=as_long(nodes),
                src_row=as_long([prev_expand.index(parents[i]) for i in nodes]),
                rank=as_long([paths[i][-1] for i in nodes]),
                width=max(paths[i][-1] for i in nodes) + 1,
                rows=as_long([e + 1 for e in prev_expand]),
                paths=as_long(row_paths).view(len(prev_expand), depth - 1),
                expand=as_long(expand),
                fed_before=count,
                local=None if bool(local.all()) else local.to(device),
            )
        )
        count += len(expand)
        prev_expand = expand
    return _StaticPlan(structure=TreeStructure.of(parents), levels=tuple(levels), fed=tuple(fed))


def _path_nodes(parents: list[int], node: int) -> list[int]:
    """The nodes from the root's first child down to ``node`` (empty for the root itself, -1)."""
    path = []
    while node >= 0:
        path.append(node)
        node = parents[node]
    return path[::-1]


def _propose_static(
    draft, base, root_logits, shape: TreeShape, max_depth, sampling, generator, vocab, rule=None, stop_below: float = 0.0
) -> Proposal:
    """Draft a static shape level by level without reading anything back to the host (but one read per
    level for a chain that stops early below ``stop_below``)."""
    device = root_logits.device
    plan = _static_plan(shape.paths, max_depth, str(device))
    n = len(plan.fed)
    tokens = torch.zeros(n, dtype=torch.long, device=device)
    q_full = torch.zeros(n + 1, vocab, device=device) if sampling is not None else None
    logits = root_logits  # rows: the previous level's expanded nodes (the root first)
    forwards = 1
    for depth, level in enumerate(plan.levels, start=1):
        if sampling is None:
            picked, q = _top_children(logits, level.width), None
        else:
            picked, q, _ = _children(logits, level.width, sampling, generator)
        tokens[level.nodes] = picked[level.src_row, level.rank]
        if q_full is not None:
            q_full[level.rows] = q
        if stop_below and level.expand.numel():
            confidence = (q if q is not None else logits.float().softmax(-1)).gather(-1, picked[:, :1])
            if to_host(confidence.view(-1))[0] < stop_below:  # a doubtful token: verify it, draft no further
                plan = _static_plan(shape.paths, depth, str(device))
                n = len(plan.fed)
                tokens, q_full = tokens[:n], q_full[: n + 1] if q_full is not None else None
                break
        if level.expand.numel():
            forwards += 1
            offsets = torch.full((level.expand.numel(),), base - draft.prefix - 1 + depth, dtype=torch.long, device=device)
            if level.local is None:  # every key visible: plain attention over the whole cache
                ctx = AttentionContext(prefix=base + level.fed_before + level.expand.numel(), backend=draft.backend)
            else:
                ctx = AttentionContext(prefix=base, local=level.local, backend=draft.backend)
            logits = draft.feed(tokens[level.expand], offsets, ctx)[:, :vocab]
            if rule is not None:
                nxt = plan.levels[depth]  # a level that expands nodes always has a next level
                logits = rule.scores(logits, tokens[nxt.paths])
    tree = DraftTree(
        tokens=tokens, parents=plan.structure.parents, depths=plan.structure.depths, q=q_full, structure=plan.structure
    )
    return Proposal(tree=tree, base=base, fed=list(plan.fed), forwards=forwards)


def _propose_dynamic(draft, base, root_logits, spec: DynamicTree, max_depth, sampling, generator, vocab, rule=None) -> Proposal:
    depth_limit = min(spec.depth, max_depth)
    k = min(spec.top_k, vocab)
    nodes: list[_Node] = []
    fed_all: list[int] = []
    q_all: dict[int, torch.Tensor] = {}  # candidate index + 1 -> q row (0 = root)
    kids: dict[int, list[int]] = {}

    def add_children(row: int, parent_cum: float, depth: int, tokens, logq, q) -> None:
        if q is not None:
            q_all[row] = q
        kids[row] = []
        used = 0.0
        for rank, (token, lq) in enumerate(zip(tokens, logq)):
            if sampling is None:
                key = parent_cum + lq
            else:
                key = parent_cum + math.log(max(1.0 - used, 1e-30))
                used += math.exp(lq)
            kids[row].append(len(nodes))
            nodes.append(_Node(token=token, parent=row - 1, depth=depth, rank=rank, key=key, cum=parent_cum + lq))
            fed_all.append(-1)

    tokens, q, logq = _children(root_logits, k, sampling, generator)
    host = to_host(torch.stack([tokens[0].double(), logq[0].double()]))  # one host read per level
    add_children(0, 0.0, 1, [int(t) for t in host[0]], host[1], None if q is None else q[0])
    frontier = list(kids[0])
    forwards = 1
    for depth in range(1, depth_limit):
        frontier = sorted(frontier, key=lambda i: -nodes[i].key)[:k]
        if not frontier:
            break
        parents = [nd.parent for nd in nodes]
        toks = [nd.token for nd in nodes]
        logits = _feed_nodes(draft, base, fed_all, parents, frontier, toks, depth)[:, :vocab]
        if rule is not None:
            paths = [[toks[i] for i in _path_nodes(parents, node)] for node in frontier]
            logits = rule.scores(logits, torch.tensor(paths, dtype=torch.long))
        forwards += 1
        tokens, q, logq = _children(logits, k, sampling, generator)
        host = to_host(torch.stack([tokens.double(), logq.double()]))  # one host read per level
        tokens, logq = [[int(t) for t in row] for row in host[0]], host[1]
        nxt = []
        for r_idx, node in enumerate(frontier):
            add_children(node + 1, nodes[node].cum, depth + 1, tokens[r_idx], logq[r_idx], None if q is None else q[r_idx])
            nxt.extend(kids[node + 1])
        frontier = nxt
    selected = _best_first(nodes, kids, spec.total_tokens)
    order = sorted(selected, key=lambda i: (nodes[i].depth, i))
    new_index = {old: new for new, old in enumerate(order)}
    tokens_sel = [nodes[i].token for i in order]
    parents_sel = [new_index[nodes[i].parent] if nodes[i].parent >= 0 else -1 for i in order]
    fed_sel = [fed_all[i] for i in order]
    q_rows = [q_all.get(0)] + [q_all.get(i + 1) for i in order]
    tree = _tree(tokens_sel, parents_sel, q_rows, sampling, vocab, root_logits.device)
    return Proposal(tree=tree, base=base, fed=fed_sel, forwards=forwards)


def _best_first(nodes: list[_Node], kids: dict[int, list[int]], budget: int) -> list[int]:
    """Select up to ``budget`` nodes by key, only once their parent and previous sibling are selected."""
    heap: list[tuple[float, int]] = []
    if kids.get(0):
        first = kids[0][0]
        heap.append((-nodes[first].key, first))
    selected: list[int] = []
    while heap and len(selected) < budget:
        _, i = heapq.heappop(heap)
        selected.append(i)
        siblings = kids[nodes[i].parent + 1]
        if nodes[i].rank + 1 < len(siblings):
            nxt = siblings[nodes[i].rank + 1]
            heapq.heappush(heap, (-nodes[nxt].key, nxt))
        if kids.get(i + 1):
            child = kids[i + 1][0]
            heapq.heappush(heap, (-nodes[child].key, child))
    return selected


def _tree(tokens, parents, q_rows, sampling, vocab, device) -> DraftTree:
    parents_t = torch.tensor(parents, dtype=torch.long)
    depths = [1] * len(parents)
    for i, p in enumerate(parents):
        if p >= 0:
            depths[i] = depths[p] + 1
    q = None
    if sampling is not None:
        zeros = torch.zeros(vocab, device=device)
        q = torch.stack([row if row is not None else zeros for row in q_rows])
    return DraftTree(
        tokens=torch.tensor(tokens, dtype=torch.long, device=device),
        parents=parents_t,
        depths=torch.tensor(depths, dtype=torch.long),
        q=q,
    )
