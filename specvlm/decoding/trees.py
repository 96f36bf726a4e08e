"""Draft trees: static shapes given as paths of child ranks, and the buffers verification needs.

A tree is a list of paths from the root, each a tuple of child ranks: ``(0,)`` is the root's best
child, ``(0, 1)`` the second-best child of that node, and so on. The root itself is the pending token
(the last committed token), which both models feed at the start of a step. Every prefix of a path
must be in the tree; node order is (depth, path), so parents always precede their children.

Provided shapes: ``chain`` (depth = ``num_draft_tokens``), ``reference-25`` (the reference implementation's
static tree: 25 nodes, depth 5, level sizes 4/8/8/3/2; its old spelling ``specvlm-25`` is still accepted,
see :func:`canonical`), and any user-supplied list of paths. Dynamic trees are
built during drafting (``specvlm.decoding.drafting``) and described with the same :class:`DraftTree` buffers.

What this module deliberately does not do: run models or pick tokens.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

#: The reference implementation's static tree (``tree="reference-25"``).
REFERENCE_25: tuple[tuple[int, ...], ...] = (
    (0,), (1,), (2,), (3,),
    (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2),
    (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)  # fmt: skip

SPECVLM_25 = REFERENCE_25  # its old name, kept for imports

TREE_KINDS = ("chain", "reference-25", "dynamic")
#: Old spellings of tree names that are still accepted: {old: name}.
TREE_ALIASES = {"specvlm-25": "reference-25"}


def canonical(tree):
    """``tree`` under its current name: an old spelling (:data:`TREE_ALIASES`) gives the name it stands
    for; anything else (a name, paths, an unknown value) is returned unchanged."""
    return TREE_ALIASES.get(tree, tree) if isinstance(tree, str) else tree


@dataclass(frozen=True)
class TreeShape:
    """A static tree. Nodes are indexed 0..n-1 in (depth, path) order.

    parents: (n,) long, parent node index, -1 for children of the root
    ranks: (n,) long, child rank under the parent
    depths: (n,) long, 1 for children of the root
    """

    paths: tuple[tuple[int, ...], ...]
    parents: torch.Tensor
    ranks: torch.Tensor
    depths: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def depth(self) -> int:
        return max(len(p) for p in self.paths)

    def level(self, depth: int) -> list[int]:
        """Node indices at ``depth`` (1-based), in order."""
        return [i for i, p in enumerate(self.paths) if len(p) == depth]

    def max_rank(self) -> int:
        return int(self.ranks.max()) + 1


def _show(paths) -> str:
    """``paths`` as the JSON-like text a user writes (lists, not tuples)."""
    if isinstance(paths, (list, tuple)):
        return "[" + ", ".join(_show(p) for p in paths) + "]"
    return repr(paths)


#: The expected format of a user-supplied tree, for error messages.
TREE_FORMAT = "a list of paths, each a list of child ranks (ints >= 0), e.g. [[0], [1], [0, 0]]"


def from_paths(paths) -> TreeShape:
    """Validate and order a list of paths; raises ValueError naming the offending path."""
    try:
        normalised = [tuple(operator.index(r) for r in p) for p in paths]  # no silent int(1.5), int("1")
    except (TypeError, ValueError) as err:
        raise ValueError(f"tree={_show(paths)} is not {TREE_FORMAT}") from err
    if not normalised:
        raise ValueError(f"tree=[] is empty: a tree needs at least one path ({TREE_FORMAT})")
    if len(set(normalised)) != len(normalised):
        raise ValueError(f"duplicate paths in tree={_show(paths)}")
    present = set(normalised)
    for p in normalised:
        if not p:
            raise ValueError("tree: the empty path is the root (the pending token); do not list it")
        if any(r < 0 for r in p):
            raise ValueError(f"tree path {list(p)} has a negative child rank")
        if p[:-1] and p[:-1] not in present:
            raise ValueError(f"tree path {list(p)} needs its parent {list(p[:-1])} in the tree")
        if p[-1] > 0 and p[:-1] + (p[-1] - 1,) not in present:
            raise ValueError(f"tree path {list(p)} needs its previous sibling {list(p[:-1] + (p[-1] - 1,))} in the tree")
    ordered = tuple(sorted(normalised, key=lambda p: (len(p), p)))
    index = {p: i for i, p in enumerate(ordered)}
    parents = torch.tensor([index[p[:-1]] if len(p) > 1 else -1 for p in ordered], dtype=torch.long)
    ranks = torch.tensor([p[-1] for p in ordered], dtype=torch.long)
    depths = torch.tensor([len(p) for p in ordered], dtype=torch.long)
    return TreeShape(paths=ordered, parents=parents, ranks=ranks, depths=depths)


def chain(length: int) -> TreeShape:
    """A chain of ``length`` nodes: each node is the best child of the previous one."""
    if length < 1:
        raise ValueError(f"a chain needs length >= 1, got {length}")
    return from_paths([(0,) * d for d in range(1, length + 1)])


def resolve(tree, num_draft_tokens: int) -> TreeShape | None:
    """A static :class:`TreeShape` for ``tree`` (a name, an old spelling of one, or paths); ``None`` for
    ``"dynamic"`` (built while drafting)."""
    tree = canonical(tree)
    if isinstance(tree, str):
        if tree == "chain":
            return chain(num_draft_tokens)
        if tree == "reference-25":
            return from_paths(REFERENCE_25)
        if tree == "dynamic":
            return None
        raise ValueError(f"unknown tree {tree!r}; choose one of {', '.join(map(repr, TREE_KINDS))} or give {TREE_FORMAT}")
    return from_paths(tree)


def check_vocab(shape: TreeShape, vocab_size: int) -> None:
    """Raise ValueError when a node of ``shape`` has more children than the vocabulary has tokens
    (siblings are distinct tokens, so a node has at most ``vocab_size`` children)."""
    siblings = shape.max_rank()
    if siblings > vocab_size:
        raise ValueError(
            f"tree has {siblings} siblings under one node, more than the vocabulary's {vocab_size} tokens; "
            f"give at most {vocab_size} children per node (child ranks 0..{vocab_size - 1})"
        )


@dataclass
class DraftTree:
    """The tokens the draft proposed in one step, as a tree under the pending (root) token.

    tokens: (n,) long, draft token of each node
    parents: (n,) long, parent node index, -1 for children of the root
    depths: (n,) long, 1 for children of the root
    q: (n + 1, V) float or None: the draft's (processed) distribution at the root (row 0) and at each
       node (row i + 1), from which that node's children were drawn; only kept when sampling
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    depths: torch.Tensor
    q: torch.Tensor | None = None
    structure: "TreeStructure | None" = None  # precomputed masks/children of a static shape

    @property
    def size(self) -> int:
        return int(self.tokens.numel())

    def ancestors(self) -> torch.Tensor:
        """(n, n) bool: [i, j] is True when node j is node i or one of its ancestors."""
        n = self.size
        allowed = torch.eye(n, dtype=torch.bool)
        parents = self.parents.tolist()
        for i in range(n):
            if parents[i] >= 0:
                allowed[i] |= allowed[parents[i]]
        return allowed

    def verify_mask(self) -> torch.Tensor:
        """(n + 1, n + 1) bool over [root, nodes...]: every node sees the root and its ancestors."""
        if self.structure is not None:
            return self.structure.verify_mask
        n = self.size
        allowed = torch.zeros(n + 1, n + 1, dtype=torch.bool)
        allowed[:, 0] = True
        allowed[1:, 1:] = self.ancestors()
        return allowed

    def children(self) -> list[list[int]]:
        """children[u] for u in 0..n (0 = root, i + 1 = node i): child node indices in draft order."""
        if self.structure is not None:
            return self.structure.children
        out: list[list[int]] = [[] for _ in range(self.size + 1)]
        for i, parent in enumerate(self.parents.tolist()):
            out[parent + 1].append(i)
        return out


@dataclass(frozen=True)
class TreeStructure:
    """Host-side structure of a tree whose shape is known before drafting (computed once per shape)."""

    parents: torch.Tensor
    depths: torch.Tensor
    verify_mask: torch.Tensor
    children: list[list[int]]

    @classmethod
    def of(cls, parents: list[int]) -> "TreeStructure":
        depths = [1] * len(parents)
        for i, p in enumerate(parents):
            if p >= 0:
                depths[i] = depths[p] + 1
        tree = DraftTree(
            tokens=torch.zeros(len(parents), dtype=torch.long),
            parents=torch.tensor(parents, dtype=torch.long),
            depths=torch.tensor(depths, dtype=torch.long),
        )
        return cls(parents=tree.parents, depths=tree.depths, verify_mask=tree.verify_mask(), children=tree.children())
