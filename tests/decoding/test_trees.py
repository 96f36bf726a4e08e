"""Tree shapes, draft-tree buffers, the tree attention mask and dynamic-tree selection (pure, CPU, fast); then trees
through the engine: what a tree commits per step, the dynamic tree's budget, trees set at load and per call, and the
command line's tree and sampling options. (Every tree kind's output against the stock model: test_lossless.py.)"""

from __future__ import annotations

import math
import random

import pytest
import torch

from specvlm import SpecVLM
from specvlm.attention import tree_mask
from specvlm.decoding.drafting import DynamicTree, _best_first, _Node
from specvlm.decoding.trees import SPECVLM_25, TREE_KINDS, DraftTree, TreeShape, chain, from_paths, resolve
from tiny_pairs import CORE_FAMILIES, eos_free_engine

# ------------------------------------------------------------------------------ from_paths


def test_from_paths_orders_by_depth_then_path_and_builds_buffers():
    shape = from_paths([[0, 0, 0], [1, 0], [1], [0, 1], [0], [0, 0]])
    assert isinstance(shape, TreeShape)
    assert shape.paths == ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))
    assert shape.parents.tolist() == [-1, -1, 0, 0, 1, 2]
    assert shape.ranks.tolist() == [0, 1, 0, 1, 0, 0]
    assert shape.depths.tolist() == [1, 1, 2, 2, 2, 3]
    assert shape.parents.dtype == shape.ranks.dtype == shape.depths.dtype == torch.long
    assert shape.size == 6
    assert shape.depth == 3
    assert shape.level(1) == [0, 1]
    assert shape.level(2) == [2, 3, 4]
    assert shape.level(3) == [5]
    assert shape.max_rank() == 2
    # every parent precedes its child and is the child's path minus its last rank
    for i, path in enumerate(shape.paths):
        parent = int(shape.parents[i])
        if len(path) == 1:
            assert parent == -1
        else:
            assert 0 <= parent < i and shape.paths[parent] == path[:-1]


def test_from_paths_accepts_tuples_and_input_order_does_not_matter():
    a = from_paths([(0,), (1,), (0, 0)])
    b = from_paths([[0, 0], [1], [0]])
    assert a.paths == b.paths
    assert torch.equal(a.parents, b.parents) and torch.equal(a.ranks, b.ranks) and torch.equal(a.depths, b.depths)


@pytest.mark.parametrize(
    "paths, fragment",
    [
        ([[0], [0, 0], [0, 0]], "duplicate"),
        ([[0], [0]], "duplicate"),
        ([[0], []], "empty path"),
        ([[0], [-1]], "[-1]"),
        ([[0], [0, -1]], "[0, -1]"),
        ([[0], [1, 0]], "[1, 0]"),  # parent [1] missing
        ([[0, 0]], "[0, 0]"),  # parent [0] missing
        ([[0], [2]], "[2]"),  # previous sibling [1] missing
        ([[0], [0, 0], [0, 2]], "[0, 2]"),  # previous sibling [0, 1] missing
    ],
)
def test_from_paths_rejects_malformed_trees_naming_the_path(paths, fragment):
    with pytest.raises(ValueError) as info:
        from_paths(paths)
    assert fragment in str(info.value)


def test_from_paths_rejects_an_empty_tree():
    with pytest.raises(ValueError, match="at least one path"):
        from_paths([])


@pytest.mark.parametrize(
    "garbage",
    [
        [["a"]],
        [[0], [None]],
        [0, 1],  # paths that are not sequences
        [[0], [[0]]],  # nested list as a rank
        [[0], [1.5]],  # a float rank must not be truncated to 1
        [[0], [0.0, 0]],
        ["01"],  # a string is not a path of ranks
        None,
    ],
)
def test_from_paths_rejects_non_int_garbage(garbage):
    with pytest.raises(ValueError) as info:
        from_paths(garbage)
    assert repr(garbage) in str(info.value)


# ------------------------------------------------------------------------------ provided shapes


def test_specvlm_25_shape():
    shape = from_paths(SPECVLM_25)
    assert shape.size == 25
    assert shape.depth == 5
    assert [len(shape.level(d)) for d in range(1, 6)] == [4, 8, 8, 3, 2]
    assert shape.paths == SPECVLM_25  # already in (depth, path) order
    assert shape.level(6) == []


def test_resolve_named_trees():
    s25 = resolve("specvlm-25", 5)
    assert s25.paths == from_paths(SPECVLM_25).paths
    assert torch.equal(s25.parents, from_paths(SPECVLM_25).parents)

    c = resolve("chain", 4)
    assert c.size == 4 and c.depth == 4
    assert c.ranks.tolist() == [0, 0, 0, 0]
    assert c.parents.tolist() == [-1, 0, 1, 2]
    assert c.depths.tolist() == [1, 2, 3, 4]
    assert resolve("chain", 1).paths == ((0,),)

    assert resolve("dynamic", 5) is None
    user = resolve([[0], [1], [0, 0]], 99)
    assert user.paths == ((0,), (1,), (0, 0))


def test_resolve_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as info:
        resolve("bogus", 5)
    message = str(info.value)
    assert "bogus" in message
    for kind in TREE_KINDS:
        assert kind in message


@pytest.mark.parametrize("length", [0, -3])
def test_chain_needs_positive_length(length):
    with pytest.raises(ValueError, match=str(length)):
        chain(length)
    with pytest.raises(ValueError):
        resolve("chain", length)


# ------------------------------------------------------------------------------ DraftTree buffers

# root
# ├── 0 ── 3 ── 5
# │    └── 4
# ├── 1
# └── 2 ── 6
HAND_PARENTS = [-1, -1, -1, 0, 0, 3, 2]
HAND_DEPTHS = [1, 1, 1, 2, 2, 3, 2]


def _hand_tree() -> DraftTree:
    return DraftTree(
        tokens=torch.tensor([10, 11, 12, 13, 14, 15, 16]),
        parents=torch.tensor(HAND_PARENTS),
        depths=torch.tensor(HAND_DEPTHS),
    )


def _ancestor_sets():
    out = []
    for i in range(len(HAND_PARENTS)):
        chain_ = {i}
        a = HAND_PARENTS[i]
        while a >= 0:
            chain_.add(a)
            a = HAND_PARENTS[a]
        out.append(chain_)
    return out


def test_ancestors_sees_self_and_ancestors_only():
    tree = _hand_tree()
    anc = tree.ancestors()
    assert anc.shape == (7, 7) and anc.dtype == torch.bool
    expected = torch.zeros(7, 7, dtype=torch.bool)
    for i, seen in enumerate(_ancestor_sets()):
        for j in seen:
            expected[i, j] = True
    assert torch.equal(anc, expected)
    # spot checks: node 5 sees 0, 3, itself; not its uncle 4, not the other subtrees
    assert anc[5].nonzero().flatten().tolist() == [0, 3, 5]
    assert not anc[4, 3] and not anc[3, 4]  # siblings
    assert not anc[6, 0] and not anc[6, 1]  # cousin / uncle
    assert not anc[0, 3]  # a parent does not see its child


def test_verify_mask_adds_the_root():
    tree = _hand_tree()
    mask = tree.verify_mask()
    assert mask.shape == (8, 8) and mask.dtype == torch.bool
    assert mask[:, 0].all()  # everyone sees the root
    assert mask[0].tolist() == [True] + [False] * 7  # the root sees only itself
    assert torch.equal(mask[1:, 1:], tree.ancestors())


def test_children_lists_in_draft_order():
    tree = _hand_tree()
    assert tree.children() == [[0, 1, 2], [3, 4], [], [6], [5], [], [], []]
    assert tree.size == 7
    empty = DraftTree(tokens=torch.zeros(0, dtype=torch.long), parents=torch.zeros(0, dtype=torch.long),
                      depths=torch.zeros(0, dtype=torch.long))
    assert empty.children() == [[]]
    assert empty.verify_mask().tolist() == [[True]]


def test_draft_tree_of_a_static_shape_matches_its_paths():
    shape = from_paths(SPECVLM_25)
    tree = DraftTree(tokens=torch.arange(25), parents=shape.parents, depths=shape.depths)
    kids = tree.children()
    for i, path in enumerate(shape.paths):
        row = 0 if len(path) == 1 else int(shape.parents[i]) + 1
        assert kids[row].index(i) == path[-1]  # rank = position among siblings
    anc = tree.ancestors()
    for i, path in enumerate(shape.paths):
        seen = {shape.paths[j] for j in anc[i].nonzero().flatten().tolist()}
        assert seen == {path[:d] for d in range(1, len(path) + 1)}


# ------------------------------------------------------------------------------ tree_mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prefix", [0, 3])
def test_tree_mask_is_additive_over_prefix_and_tree(dtype, prefix):
    allowed = _hand_tree().verify_mask()
    n1 = allowed.shape[0]
    mask = tree_mask(prefix, allowed, dtype)
    assert mask.shape == (1, 1, n1, prefix + n1)
    assert mask.dtype == dtype
    m = mask[0, 0]
    assert (m[:, :prefix] == 0).all()
    tree_part = m[:, prefix:]
    assert (tree_part[allowed] == 0).all()
    assert (tree_part[~allowed] == torch.finfo(dtype).min).all()
    assert int((m == 0).sum()) == prefix * n1 + int(allowed.sum())


# ------------------------------------------------------------------------------ DynamicTree


def test_dynamic_tree_defaults_and_valid_values():
    assert DynamicTree() == DynamicTree(depth=5, top_k=8, total_tokens=25)
    assert DynamicTree(depth=1, top_k=1, total_tokens=1).total_tokens == 1


@pytest.mark.parametrize("name", ["depth", "top_k", "total_tokens"])
@pytest.mark.parametrize("value", [0, -1, 2.0, 1.5, "3", True, None])
def test_dynamic_tree_rejects_bad_settings(name, value):
    with pytest.raises(ValueError) as info:
        DynamicTree(**{name: value})
    assert f"tree_{name}={value!r}" in str(info.value)


# ------------------------------------------------------------------------------ _best_first


def _pool(child_keys: dict[int, list[float]]):
    """Candidates from {row: [key of each child in rank order]}; rows are node index + 1 (0 = root).

    Rows must be listed so that a row's node exists before the row is expanded.
    """
    nodes: list[_Node] = []
    kids: dict[int, list[int]] = {}
    for row, keys in child_keys.items():
        assert row == 0 or row - 1 < len(nodes)
        depth = 1 if row == 0 else nodes[row - 1].depth + 1
        kids[row] = []
        for rank, key in enumerate(keys):
            kids[row].append(len(nodes))
            nodes.append(_Node(token=100 + len(nodes), parent=row - 1, depth=depth, rank=rank, key=key, cum=key))
    return nodes, kids


def _random_pool(rng: random.Random, greedy: bool):
    """A random candidate pool shaped like the dynamic drafter's: ``top_k`` children per expanded node."""
    k = rng.randint(1, 4)
    depth = rng.randint(1, 4)
    nodes: list[_Node] = []
    kids: dict[int, list[int]] = {}

    def expand(row: int, parent_cum: float, d: int) -> list[int]:
        kids[row] = []
        logp = sorted((math.log(rng.random() + 1e-12) for _ in range(k)), reverse=True)
        for rank, lp in enumerate(logp):
            key = parent_cum + lp if greedy else rng.uniform(-5.0, 5.0)
            kids[row].append(len(nodes))
            nodes.append(_Node(token=rng.randrange(50), parent=row - 1, depth=d, rank=rank, key=key, cum=parent_cum + lp))
        return kids[row]

    frontier = expand(0, 0.0, 1)
    for d in range(2, depth + 1):
        chosen = [i for i in frontier if rng.random() < 0.6] or frontier[:1]
        frontier = [c for i in chosen for c in expand(i + 1, nodes[i].cum, d)]
    return nodes, kids


def _eligible(nodes, kids, selected: set[int]) -> set[int]:
    out = set()
    for i, nd in enumerate(nodes):
        if i in selected:
            continue
        parent_ok = nd.parent < 0 or nd.parent in selected
        sibling_ok = nd.rank == 0 or kids[nd.parent + 1][nd.rank - 1] in selected
        if parent_ok and sibling_ok:
            out.add(i)
    return out


def test_best_first_hand_built():
    # root: 0 (-1.0), 1 (-0.5 but only after 0); node 0: 2 (-0.2), 3 (-3.0); node 1: 4 (-0.9)
    nodes, kids = _pool({0: [-1.0, -0.5], 1: [-0.2, -3.0], 2: [-0.9]})
    assert _best_first(nodes, kids, 1) == [0]
    assert _best_first(nodes, kids, 2) == [0, 2]  # 2 beats its uncle 1 once 0 is in
    assert _best_first(nodes, kids, 3) == [0, 2, 1]
    assert _best_first(nodes, kids, 4) == [0, 2, 1, 4]
    assert _best_first(nodes, kids, 5) == [0, 2, 1, 4, 3]
    assert _best_first(nodes, kids, 50) == [0, 2, 1, 4, 3]  # budget larger than the pool
    assert _best_first(nodes, kids, 0) == []


def test_best_first_never_selects_before_parent_or_previous_sibling():
    # a huge key on a grandchild and on a late sibling must wait for their prerequisites
    nodes, kids = _pool({0: [-5.0, -6.0, 100.0], 1: [-7.0], 4: [50.0]})
    # nodes: 0,1,2 under root; 3 under 0; 4 under 3
    order = _best_first(nodes, kids, 6)
    assert order == [0, 1, 2, 3, 4]
    assert _best_first(nodes, kids, 3) == [0, 1, 2]


def test_best_first_empty_pool():
    assert _best_first([], {}, 5) == []
    assert _best_first([], {0: []}, 5) == []


@pytest.mark.parametrize("greedy", [False, True], ids=["random-keys", "greedy-keys"])
def test_best_first_closure_budget_and_key_order_on_random_pools(greedy):
    rng = random.Random(1234 if greedy else 4321)
    for _ in range(300):
        nodes, kids = _random_pool(rng, greedy)
        budget = rng.randint(1, len(nodes) + 2)
        order = _best_first(nodes, kids, budget)
        assert len(order) == min(budget, len(nodes))
        assert len(set(order)) == len(order)
        selected: set[int] = set()
        for i in order:
            nd = nodes[i]
            assert nd.parent < 0 or nd.parent in selected, "selected before its parent"
            assert nd.rank == 0 or kids[nd.parent + 1][nd.rank - 1] in selected, "selected before its previous sibling"
            # best-first: the pick has the largest key among the nodes eligible at that moment
            eligible = _eligible(nodes, kids, selected)
            assert i in eligible
            assert nd.key == max(nodes[j].key for j in eligible)
            selected.add(i)
        if greedy:
            # keys fall with depth and rank, so best-first is exactly the top-`budget` nodes by key
            top = sorted(range(len(nodes)), key=lambda j: -nodes[j].key)[:budget]
            assert set(order) == set(top)
            assert [nodes[i].key for i in order] == sorted((nodes[i].key for i in order), reverse=True)


# ------------------------------------------------------------------------------ through the engine


ENGINE_MAX_NEW = 40


@pytest.fixture(scope="module")
def self_engines(checkpoints):
    """{family: self-drafting engine with every layer, EOS disabled}."""
    return {
        family: eos_free_engine(paths["target"], tree_top_k=4, tree_total_tokens=16, self_draft_layers="all")
        for family, paths in checkpoints.items()
    }


@pytest.fixture(scope="module")
def references(checkpoints, self_engines, stock_reference, frames):
    """{family: (inputs, stock greedy new tokens)}."""
    out = {}
    for family, engine in self_engines.items():
        inputs = engine.build_inputs(frames, "Describe the video.")
        out[family] = (inputs, stock_reference(checkpoints[family]["target"], inputs, ENGINE_MAX_NEW))
    return out


@pytest.mark.parametrize("family", CORE_FAMILIES)
@pytest.mark.parametrize("method", ["sd", "specvlm"])
def test_self_draft_25_node_tree_commits_depth_plus_one(self_engines, references, family, method):
    inputs, expected = references[family]
    result = self_engines[family].generate(
        inputs=inputs, max_new_tokens=ENGINE_MAX_NEW, method=method, drop_rate=0.0, tree="specvlm-25"
    )
    assert result.token_ids == expected
    depth = max(len(p) for p in SPECVLM_25)
    lengths = result.stats.accepted_lengths
    assert lengths[:-1] == [depth + 1] * (len(lengths) - 1)
    assert result.stats.depth_acceptance_rates == [1.0] * depth


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_dynamic_tree_follows_its_budget(self_engines, references, family):
    inputs, expected = references[family]
    engine = self_engines[family]
    for total, depth in ((4, 2), (12, 4)):
        result = engine.generate(
            inputs=inputs, max_new_tokens=ENGINE_MAX_NEW, drop_rate=0.0, tree="dynamic", tree_total_tokens=total, tree_depth=depth
        )
        assert result.token_ids == expected
        assert max(result.stats.accepted_lengths) <= depth + 1
        assert len(result.stats.depth_acceptance_rates) <= depth


def test_tree_set_at_load_and_overridden_per_call(checkpoints, references):
    inputs, expected = references["llava_onevision"]
    engine = SpecVLM.from_pretrained(
        checkpoints["llava_onevision"]["target"], tree="specvlm-25", drop_rate=0.0, self_draft_layers="all"
    )
    engine.target.generation_config.eos_token_id = None
    tree_run = engine.generate(inputs=inputs, max_new_tokens=ENGINE_MAX_NEW)
    chain_run = engine.generate(inputs=inputs, max_new_tokens=ENGINE_MAX_NEW, tree="chain", num_draft_tokens=3)
    assert tree_run.token_ids == chain_run.token_ids == expected
    assert max(tree_run.stats.accepted_lengths) == 6 and max(chain_run.stats.accepted_lengths) == 4
    with pytest.raises(ValueError, match="previous sibling"):
        engine.generate(inputs=inputs, max_new_tokens=4, tree=[[0], [2]])
    with pytest.raises(ValueError, match="unknown tree"):
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], tree="bushy")


def test_cli_tree_and_sampling_options(checkpoints, video_file, capsys):
    import json

    from specvlm.cli import main

    base = ["generate", "--target", str(checkpoints["qwen2_5_vl"]["target"]), "--video", video_file,
            "--prompt", "What moves?", "--max-new-tokens", "12", "--json"]  # fmt: skip
    assert main(base + ["--method", "ar"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--tree", "[[0],[1],[0,0]]", "--drop-rate", "0.5"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["token_ids"] == plain["token_ids"] and tree["stats"]["target_steps"] >= 1
    sampled_args = base + ["--tree", "specvlm-25", "--do-sample", "--top-p", "0.8", "--seed", "5"]
    assert main(sampled_args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(sampled_args) == 0
    assert json.loads(capsys.readouterr().out)["token_ids"] == first["token_ids"]
