"""Acceptance rules on hand-built logits / probabilities: greedy acceptance of a chain, greedy walk of a tree,
recursive rejection sampling, the processed distributions p / q, and sampling without replacement (pure, CPU).

The statistical tests use a fixed seed, so they are deterministic; their tolerances are still set from
the sampling noise of the number of trials (several standard deviations), so that a correct
implementation passes for any seed and a biased one fails.
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from specvlm.decoding.sampling import Sampling, sample_without_replacement
from specvlm.decoding.trees import DraftTree
from specvlm.decoding.verify import Verdict, greedy_accept_chain, greedy_verify, sample_verify

V = 8


# ------------------------------------------------------------------------------ helpers


def _tree(tokens, parents, q=None) -> DraftTree:
    parents = list(parents)
    depths = []
    for par in parents:
        depths.append(1 if par < 0 else depths[par] + 1)
    return DraftTree(
        tokens=torch.as_tensor(tokens, dtype=torch.long),
        parents=torch.tensor(parents, dtype=torch.long),
        depths=torch.tensor(depths, dtype=torch.long),
        q=q,
    )


def _chain(tokens, q=None) -> DraftTree:
    return _tree(tokens, range(-1, len(tokens) - 1), q)


def _outcome(verdict: Verdict) -> tuple[list[int], int]:
    """(accepted path, bonus token) of a verdict."""
    return verdict.path, verdict.bonus


def _argmax_logits(greedy: list[int], vocab: int = V, seed: int = 0) -> torch.Tensor:
    """Random logits whose argmax in row r is greedy[r]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(greedy), vocab, generator=g)
    for row, tok in enumerate(greedy):
        logits[row, tok] = logits[row].max() + 1.0
    return logits


def _dirichlet(shape, seed: int) -> torch.Tensor:
    """Dirichlet(1, ..., 1) rows (normalised Exp(1) draws) from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = -torch.log1p(-torch.rand(*shape, generator=g, dtype=torch.float64))
    return (x / x.sum(-1, keepdim=True)).float()


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a.double() - b.double()).abs().sum())


def _freq(samples, vocab: int = V) -> torch.Tensor:
    return torch.bincount(torch.as_tensor(samples, dtype=torch.long), minlength=vocab).double() / len(samples)


def _tv_tolerance(p: torch.Tensor, n: int, sds: float = 6.0) -> float:
    """Mean + ``sds`` standard deviations of the TV between ``p`` and an n-sample empirical distribution.

    Per token |f_i - p_i| is about half-normal with scale s_i = sqrt(p_i (1 - p_i) / n): mean
    sqrt(2/pi) s_i, variance (1 - 2/pi) s_i^2.
    """
    p = p.double()
    s = (p * (1 - p) / n).sqrt()
    mean = 0.5 * math.sqrt(2 / math.pi) * float(s.sum())
    sd = 0.5 * math.sqrt((1 - 2 / math.pi) * float((s**2).sum()))
    return mean + sds * sd


def _assert_follows(samples, p: torch.Tensor, far_from: torch.Tensor | None = None, label: str = "") -> float:
    """The samples' empirical distribution matches ``p`` (TV and per-token z-scores) and is far from ``far_from``."""
    n = len(samples)
    assert n > 0, label
    f = _freq(samples, p.shape[-1])
    p = p.double()
    tv = _tv(f, p)
    tol = _tv_tolerance(p, n)
    assert tv <= tol, f"{label}: TV {tv:.4f} >= {tol:.4f} over {n} samples\n  got  {f.tolist()}\n  want {p.tolist()}"
    assert (f[p == 0] == 0).all(), f"{label}: tokens with target probability 0 were committed: {f.tolist()}"
    s = (p * (1 - p) / n).sqrt()
    normal = p * n >= 5  # per-token z-scores where the normal approximation holds; TV covers the rest
    z = ((f - p).abs() / s.clamp_min(1e-12))[normal]
    assert z.numel() == 0 or float(z.max()) < 5.0, f"{label}: a token is {float(z.max()):.1f} sd off\n  got  {f.tolist()}\n  want {p.tolist()}"
    if far_from is not None:
        assert _tv(f, far_from) > max(0.1, 2 * tol), f"{label}: indistinguishable from the draft distribution"
    return tv


def _pq(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A target p and a clearly different draft q over V tokens (q puts its large masses where p is small)."""
    p = _dirichlet((V,), seed)
    other = _dirichlet((V,), seed + 1000).sort().values  # ascending
    q = torch.empty(V)
    q[p.argsort(descending=True)] = other  # anti-aligned with p
    q = 0.3 * p + 0.7 * q
    assert _tv(p, q) > 0.3
    return p, q


# ------------------------------------------------------------------------------ greedy_accept_chain


CHAIN_V = 11  # vocabulary of the hand-built chain logits


def _chain_logits(greedy: list[int], vocab: int = CHAIN_V) -> torch.Tensor:
    """(len(greedy), CHAIN_V) logits whose row-wise argmax is ``greedy`` (random elsewhere, clear margin)."""
    gen = torch.Generator().manual_seed(len(greedy))
    out = torch.rand(len(greedy), vocab, generator=gen)
    out[torch.arange(len(greedy)), torch.tensor(greedy)] = 5.0
    return out


def _reference_accept(drafts: list[int], greedy: list[int]) -> list[int]:
    out = []
    for d, g in zip(drafts, greedy):
        if d != g:
            break
        out.append(d)
    return out + [greedy[len(out)]]


def _accept(drafts: list[int], greedy: list[int]) -> list[int]:
    result = greedy_accept_chain(torch.tensor(drafts, dtype=torch.long), _chain_logits(greedy))
    assert result.dtype == torch.long and result.dim() == 1
    return result.tolist()


def test_accept_all_drafts_plus_bonus():
    assert _accept([3, 5, 7], [3, 5, 7, 2]) == [3, 5, 7, 2]


def test_reject_at_first_returns_only_the_targets_token():
    assert _accept([3, 5, 7], [4, 5, 7, 2]) == [4]


def test_reject_in_the_middle():
    # d_3 == greedy[2] again, but nothing after the first mismatch may be accepted
    assert _accept([3, 5, 7], [3, 6, 7, 2]) == [3, 6]
    assert _accept([3, 5, 7], [3, 5, 8, 2]) == [3, 5, 8]


def test_no_drafts_is_a_plain_decoding_step():
    assert _accept([], [9]) == [9]
    empty = torch.empty(0, dtype=torch.long)
    assert greedy_accept_chain(empty, _chain_logits([4])).tolist() == [4]


@pytest.mark.parametrize("n,rows", [(3, 3), (3, 5), (0, 2), (2, 0)])
def test_wrong_number_of_logit_rows(n, rows):
    with pytest.raises(ValueError) as info:
        greedy_accept_chain(torch.zeros(n, dtype=torch.long), torch.zeros(rows, CHAIN_V))
    assert str(info.value) == f"{n} draft tokens need {n + 1} rows of target logits, got {rows}"


def test_accept_matches_reference_on_random_cases():
    gen = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(300):
        n = int(torch.randint(0, 7, (1,), generator=gen))
        greedy = torch.randint(0, 3, (n + 1,), generator=gen).tolist()  # small range: later matches too
        drafts = torch.randint(0, 3, (n,), generator=gen).tolist()
        a = int(torch.randint(0, n + 1, (1,), generator=gen))  # force the first a drafts to match
        drafts[:a] = greedy[:a]
        got = _accept(drafts, greedy)
        assert got == _reference_accept(drafts, greedy), (drafts, greedy)
        assert len(got) >= a + 1
        lengths.add(len(got))
    assert lengths == set(range(1, 8))  # every acceptance length was exercised


def test_accepted_tokens_are_the_targets_greedy_tokens():
    """Lossless: whatever was proposed, the committed tokens are the target's argmax chain prefix."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    greedy = logits.argmax(-1)
    for drafts in (greedy[:5], torch.zeros(5, dtype=torch.long), torch.cat([greedy[:2], greedy[3:6]])):
        out = greedy_accept_chain(drafts, logits)
        assert torch.equal(out, greedy[: out.numel()])


# ------------------------------------------------------------------------------ greedy_verify


def test_greedy_full_accept_of_a_chain():
    tree = _chain([3, 1, 4])
    path, bonus = _outcome(greedy_verify(tree, _argmax_logits([3, 1, 4, 6])))
    assert path == [0, 1, 2]
    assert bonus == 6  # the target's argmax at the last node
    assert greedy_accept_chain(tree.tokens, _argmax_logits([3, 1, 4, 6])).tolist() == [3, 1, 4, 6]


def test_greedy_early_reject_and_partial_accept():
    tree = _chain([3, 1, 4])
    path, bonus = _outcome(greedy_verify(tree, _argmax_logits([2, 1, 4, 6])))
    assert (path, bonus) == ([], 2)  # the target's argmax at the root
    path, bonus = _outcome(greedy_verify(tree, _argmax_logits([3, 1, 5, 6])))
    assert (path, bonus) == ([0, 1], 5)


def _sibling_tree() -> DraftTree:
    # root ── 0 (a=1) ── 3 (5)
    #      ├─ 1 (b=2)
    #      └─ 2 (c=3) ── 4 (4) ── 6 (7)
    #                 └─ 5 (5)
    return _tree([1, 2, 3, 5, 4, 5, 7], [-1, -1, -1, 0, 2, 2, 4])


def test_greedy_falls_through_siblings_and_continues_below():
    tree = _sibling_tree()
    # rows: root, nodes 0..6. The target picks c at the root, then 5 under c (node 5, the second child).
    greedy = [3, 5, 0, 5, 0, 0, 6, 0]
    path, bonus = _outcome(greedy_verify(tree, _argmax_logits(greedy)))
    assert path == [2, 5]
    assert bonus == 6  # node 5 is a leaf: the bonus is the target's argmax at it
    # under c the target wants 4 -> node 4, then 7 -> node 6 (a leaf): bonus from node 6's row
    greedy = [3, 0, 0, 4, 0, 7, 1, 2]
    path, bonus = _outcome(greedy_verify(tree, _argmax_logits(greedy)))
    assert (path, bonus) == ([2, 4, 6], 2)
    # under c the target wants a token no child has: stop at c
    greedy = [3, 5, 0, 6, 7, 0, 1, 2]
    assert _outcome(greedy_verify(tree, _argmax_logits(greedy))) == ([2], 6)
    # the first child wins when it matches; the rows of unvisited nodes do not matter
    greedy = [1, 5, 0, 0, 0, 0, 0, 0]
    assert _outcome(greedy_verify(tree, _argmax_logits(greedy))) == ([0, 3], 0)


def test_greedy_empty_tree_commits_the_root_argmax():
    tree = _tree([], [])
    assert _outcome(greedy_verify(tree, _argmax_logits([5]))) == ([], 5)


@pytest.mark.parametrize("rows", [0, 3, 5])
def test_greedy_wrong_number_of_rows_raises(rows):
    tree = _chain([3, 1, 4])
    with pytest.raises(ValueError, match=f"got {rows}"):
        greedy_verify(tree, torch.zeros(rows, V))
    with pytest.raises(ValueError, match=f"got {rows}"):
        greedy_accept_chain(tree.tokens, torch.zeros(rows, V))


def test_greedy_accept_chain_agrees_with_greedy_verify():
    g = torch.Generator().manual_seed(7)
    lengths = set()
    for _ in range(200):
        n = int(torch.randint(0, 6, (1,), generator=g))
        drafts = torch.randint(0, V, (n,), generator=g)
        greedy = torch.randint(0, V, (n + 1,), generator=g)
        agree = torch.rand(n, generator=g) < 0.75
        greedy[:n] = torch.where(agree, drafts, greedy[:n])
        logits = _argmax_logits(greedy.tolist(), seed=int(torch.randint(0, 1000, (1,), generator=g)))
        path, bonus = _outcome(greedy_verify(_chain(drafts), logits))
        out = greedy_accept_chain(drafts, logits)
        assert out.tolist() == drafts[path].tolist() + [bonus]
        # the committed tokens are the target's greedy continuation along the accepted drafts
        a = len(path)
        assert drafts[:a].tolist() == greedy[:a].tolist()
        assert out[-1] == greedy[a]
        assert a == n or drafts[a] != greedy[a]
        lengths.add(a)
    assert len(lengths) >= 4  # the cases covered early rejects, partial and full accepts


# ------------------------------------------------------------------------------ sample_verify: exact rules


def test_sample_verify_p_equal_q_accepts_every_rank_zero_child():
    rows = _dirichlet((5, V), 11)
    rows[:, :2] = 0.0  # zeros in the support, as after top-k / top-p
    rows = rows / rows.sum(-1, keepdim=True)
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        # a 4-deep chain, each token drawn from its parent's row
        tokens = [int(sample_without_replacement(rows[d], 1, g)) for d in range(4)]
        path, bonus = _outcome(sample_verify(_chain(tokens, q=rows.clone()), rows.clone(), g))
        assert path == [0, 1, 2, 3]
        assert rows[4, bonus] > 0
        # a tree: 3 children of the root (without replacement), 2 under each of the first two
        top = sample_without_replacement(rows[0], 3, g).tolist()
        under0 = sample_without_replacement(rows[1], 2, g).tolist()
        under1 = sample_without_replacement(rows[2], 2, g).tolist()
        tree = _tree(top + under0 + under1, [-1, -1, -1, 0, 0, 1, 1], q=torch.cat([rows[:3], torch.zeros(5, V)]))
        p = torch.cat([rows[:3], rows[:5]])
        path, _ = _outcome(sample_verify(tree, p, g))
        assert path == [0, 3]  # always the rank-0 child, at every level


def test_sample_verify_never_accepts_a_token_the_target_rules_out():
    p = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    q = torch.tensor([0.1, 0.3, 0.1, 0.5, 0.0, 0.0, 0.0, 0.0])  # q(3) = 0.5, p(3) = 0
    residual = (p - q).clamp_min(0)
    residual = residual / residual.sum()  # [0.8, 0, 0.2, 0, ...]
    tree = _tree([3], [-1], q=torch.stack([q, torch.zeros(V)]))
    rows = torch.stack([p, _dirichlet((V,), 3)])
    g = torch.Generator().manual_seed(0)
    bonuses = []
    for _ in range(800):
        path, bonus = _outcome(sample_verify(tree, rows, g))
        assert path == []
        bonuses.append(bonus)
    _assert_follows(bonuses, residual, far_from=p, label="bonus after rejecting a p=0 token")


def test_sample_verify_zero_uniform_does_not_accept_a_p_zero_token(monkeypatch):
    """Acceptance is u < p(x)/q(x) with u in [0, 1): a draw of exactly 0 must not commit a token with p(x) = 0."""
    p = torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0, 0, 0]])
    q = torch.tensor([[0.25, 0.25, 0.5, 0, 0, 0, 0, 0], [0.0] * V])
    tree = _tree([2], [-1], q=q)
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(real_rand(*a, **k)))
    path, bonus = _outcome(sample_verify(tree, p, torch.Generator().manual_seed(0)))
    assert path == [] and bonus in (0, 1)
    # ... while the largest uniform below 1 still accepts a token with p(x) >= q(x)
    top = 1.0 - 2.0**-24
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full_like(real_rand(*a, **k), top))
    same = _tree([1], [-1], q=torch.stack([p[0], torch.zeros(V)]))
    assert _outcome(sample_verify(same, p, torch.Generator().manual_seed(0))) == ([0], 0)


def test_sample_verify_never_accepts_a_child_outside_the_draft_support():
    p = torch.tensor([0.05, 0.05, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0])
    q = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # q(3) = 0: the draft could not propose 3
    leaf = torch.zeros(V)
    g = torch.Generator().manual_seed(1)
    # alone, and as the padding child after a real one (sample_without_replacement pads with q = 0 tokens)
    alone = _tree([3], [-1], q=torch.stack([q, leaf]))
    padded = _tree([0, 3], [-1, -1], q=torch.stack([q, leaf, leaf]))
    after_reject = (p - q).clamp_min(0)
    after_reject /= after_reject.sum()  # [0, 0, 0, 1, 0, ...]
    bonuses = []
    for _ in range(300):
        path, bonus = _outcome(sample_verify(alone, torch.stack([p, p]), g))
        assert path == []
        bonuses.append(bonus)
        path, bonus = _outcome(sample_verify(padded, torch.stack([p, p, p]), g))
        assert path in ([], [0])
        if not path:
            assert bonus == 3  # from the residual after rejecting token 0, never via the q=0 child
    _assert_follows(bonuses, p, label="bonus when the only child has q = 0")  # the residual is still p


def test_sample_verify_empty_tree_draws_from_the_root_row():
    g = torch.Generator().manual_seed(0)
    empty = _tree([], [])  # q may be None when nothing was drafted
    p = torch.zeros(1, V)
    p[0, 6] = 1.0
    assert _outcome(sample_verify(empty, p, g)) == ([], 6)


def test_sample_verify_shape_checks():
    g = torch.Generator().manual_seed(0)
    p = _dirichlet((3, V), 0)
    tokens, parents = [1, 2], [-1, 0]
    with pytest.raises(ValueError, match="draft probabilities q"):
        sample_verify(_tree(tokens, parents, q=None), p, g)
    with pytest.raises(ValueError, match=re.escape("(2, 8)")):
        sample_verify(_tree(tokens, parents, q=p[:2].clone()), p, g)
    with pytest.raises(ValueError, match=re.escape("(3, 7)")):
        sample_verify(_tree(tokens, parents, q=p[:, :7].clone()), p, g)
    with pytest.raises(ValueError, match="got 2"):
        sample_verify(_tree(tokens, parents, q=p.clone()), p[:2], g)
    with pytest.raises(ValueError, match="got 4"):
        sample_verify(_tree(tokens, parents, q=p.clone()), torch.cat([p, p[:1]]), g)


def test_sample_verify_is_deterministic_per_seed():
    q = _dirichlet((7, V), 21)
    p = _dirichlet((7, V), 22)
    tree = _tree([0, 1, 2, 3, 4, 5], [-1, -1, 0, 0, 1, 1], q=q)
    results = []
    for seed in range(30):
        first = sample_verify(tree, p, torch.Generator().manual_seed(seed))
        again = sample_verify(tree, p, torch.Generator().manual_seed(seed))
        assert first == again
        results.append((tuple(first.path), first.bonus))
    assert len(set(results)) > 3


def _snapshot(tree: DraftTree) -> dict:
    return {name: (None if getattr(tree, name) is None else getattr(tree, name).clone()) for name in ("tokens", "parents", "depths", "q")}


def _assert_unchanged(tree: DraftTree, before: dict) -> None:
    for name, value in before.items():
        now = getattr(tree, name)
        if value is None:
            assert now is None, name
        else:
            assert now.dtype == value.dtype and torch.equal(now, value), f"tree.{name} was modified"
    assert set(vars(tree)) == {"tokens", "parents", "depths", "q", "structure"}  # no attribute written onto it


def test_verifiers_are_pure_and_return_what_they_read():
    """greedy_verify / sample_verify leave the tree (tokens, parents, depths, q) and p as they were and
    return the host copy of the drafted tokens in the verdict, which also gives the committed tokens."""
    tree = _sibling_tree()
    before = _snapshot(tree)
    verdict = greedy_verify(tree, _argmax_logits([3, 0, 0, 4, 0, 7, 1, 2]))
    _assert_unchanged(tree, before)
    assert verdict.tokens == tree.tokens.tolist()
    assert verdict.committed == [3, 4, 7, 2]  # nodes 2, 4, 6, then the bonus

    q = _dirichlet((8, V), 31)
    p = _dirichlet((8, V), 32)
    tree = _tree([1, 2, 3, 5, 4, 5, 7], [-1, -1, -1, 0, 2, 2, 4], q=q)
    before, p_before = _snapshot(tree), p.clone()
    for seed in range(20):
        verdict = sample_verify(tree, p, torch.Generator().manual_seed(seed))
        _assert_unchanged(tree, before)
        assert torch.equal(p, p_before)
        assert verdict.tokens == tree.tokens.tolist()
        assert verdict.committed == [verdict.tokens[i] for i in verdict.path] + [verdict.bonus]
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.bonus = 0


def test_verifiers_read_the_host_once():
    from specvlm.timing import host_syncs

    tree = _sibling_tree()
    before = host_syncs()
    greedy_verify(tree, _argmax_logits([3, 0, 0, 4, 0, 7, 1, 2]))
    assert host_syncs() - before == 1
    tree = _tree([1, 2, 3], [-1, -1, 0], q=_dirichlet((4, V), 5))
    before = host_syncs()
    sample_verify(tree, _dirichlet((4, V), 6), torch.Generator().manual_seed(0))
    assert host_syncs() - before == 1


# ------------------------------------------------------------------------------ sample_verify: distributions


def _first_token_single_level(p_root, q_root, child_row, m, trials, seed):
    """Run ``trials`` steps on a root with m children drawn from q_root; return (first tokens, bonuses after a leaf)."""
    g = torch.Generator().manual_seed(seed)
    kids = sample_without_replacement(q_root.expand(trials, V).contiguous(), m, g)  # fresh children per trial
    q_rows = torch.cat([q_root[None], torch.zeros(m, V)])
    p_rows = torch.cat([p_root[None], child_row.expand(m, V)])
    parents = torch.full((m,), -1, dtype=torch.long)
    depths = torch.ones(m, dtype=torch.long)
    firsts, after_leaf = [], []
    for i in range(trials):
        tokens = kids[i]
        path, bonus = _outcome(sample_verify(DraftTree(tokens=tokens, parents=parents, depths=depths, q=q_rows), p_rows, g))
        assert len(path) <= 1
        if path:
            firsts.append(int(tokens[path[0]]))
            after_leaf.append(bonus)
        else:
            firsts.append(bonus)
    return firsts, after_leaf


# A draft that piles its mass on one token the target finds only moderately likely, with a thin tail:
# most steps reject the first child, so errors in the sibling recursion (q not renormalised after a
# removal, the residual computed from the wrong q, one uniform shared by all siblings) shift the committed
# distribution by several tolerances at this number of trials, unlike with two random Dirichlet rows.
PEAKED_P = torch.tensor([0.3, 0.1, 0.1, 0.02, 0.01, 0.05, 0.2, 0.22])
PEAKED_Q = torch.tensor([0.0, 0.01, 0.0, 0.0, 0.01, 0.0, 0.06, 0.92])


@pytest.mark.parametrize("kind, m", [("dirichlet", 1), ("dirichlet", 2), ("dirichlet", 3), ("peaked", 3)])
def test_sample_verify_first_token_follows_target(kind, m):
    if kind == "dirichlet":
        p, q = _pq(seed=40 + m)
        trials = 1500
    else:
        p, q = PEAKED_P, PEAKED_Q
        trials = 2000
    child_row = _dirichlet((V,), 99)
    firsts, after_leaf = _first_token_single_level(p, q, child_row, m, trials=trials, seed=m)
    _assert_follows(firsts, p, far_from=q, label=f"first token, {m} children ({kind})")
    # accepting a leaf commits a bonus token from the leaf's own target row
    assert len(after_leaf) > 200
    _assert_follows(after_leaf, child_row, label="bonus after an accepted leaf")


def test_sample_verify_follows_top_p_processed_target():
    g = torch.Generator().manual_seed(5)
    target_logits = torch.randn(V, generator=g)
    draft_logits = torch.randn(V, generator=g)
    sampling = Sampling(top_p=0.8)
    p, q = sampling.probs(target_logits), sampling.probs(draft_logits)
    raw = torch.softmax(target_logits, -1)
    assert (p == 0).any() and (q == 0).any()  # top-p cut something on both sides
    firsts, _ = _first_token_single_level(p, q, p, 2, trials=1500, seed=50)
    _assert_follows(firsts, p, far_from=q, label="top-p")
    assert _tv(_freq(firsts), raw) > 0.5 * _tv(p, raw)  # and it is p after top-p, not the raw softmax


def test_sample_verify_two_levels_follow_target_conditionals():
    """Root with 2 children, each with 2 children drawn from that child's draft row; Markov p and q tables."""
    trials = 3000
    p_root, q_root = _pq(seed=60)
    p_next = _dirichlet((V, V), 61)  # target distribution after token t: p_next[t]
    q_next = 0.4 * p_next + 0.6 * _dirichlet((V, V), 62)
    g = torch.Generator().manual_seed(63)
    kids = sample_without_replacement(q_root.expand(trials, V).contiguous(), 2, g)  # (trials, 2)
    grand = sample_without_replacement(q_next[kids].reshape(-1, V), 2, g).reshape(trials, 4)
    tokens = torch.cat([kids, grand], dim=1)  # nodes 0, 1 under the root; 2, 3 under 0; 4, 5 under 1
    parents = torch.tensor([-1, -1, 0, 0, 1, 1])
    depths = torch.tensor([1, 1, 2, 2, 2, 2])
    q_rows = torch.cat([q_root.expand(trials, 1, V), q_next[kids], torch.zeros(trials, 4, V)], dim=1)
    p_rows = torch.cat([p_root.expand(trials, 1, V), p_next[tokens]], dim=1)
    firsts = []
    seconds: dict[int, list[int]] = {t: [] for t in range(V)}
    for i in range(trials):
        path, bonus = _outcome(sample_verify(DraftTree(tokens=tokens[i], parents=parents, depths=depths, q=q_rows[i]), p_rows[i], g))
        toks = tokens[i].tolist()
        if len(path) >= 1:
            assert path[0] in (0, 1)
        if len(path) == 2:
            assert parents[path[1]] == path[0]
        committed = [toks[n] for n in path] + [bonus]
        firsts.append(committed[0])
        if len(committed) >= 2:
            seconds[committed[0]].append(committed[1])
    _assert_follows(firsts, p_root, far_from=q_root, label="first token of a two-level tree")
    # given the first token t (accepted from the tree), the second follows the target's row after t
    checked = 0
    for t in sorted(seconds, key=lambda t: -len(seconds[t]))[:3]:
        assert len(seconds[t]) >= 300
        _assert_follows(seconds[t], p_next[t], far_from=q_next[t], label=f"second token after {t}")
        checked += 1
    assert checked == 3


# ------------------------------------------------------------------------------ Sampling.probs


def test_temperature_is_softmax_of_scaled_logits():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(0)) * 3
    for t in (0.3, 1.0, 2.5):
        got = Sampling(temperature=t).probs(logits)
        assert got.dtype == torch.float32 and got.shape == logits.shape
        torch.testing.assert_close(got, torch.softmax(logits / t, -1), rtol=0, atol=1e-7)
    assert not torch.allclose(Sampling(temperature=0.3).probs(logits), Sampling(temperature=2.5).probs(logits))


def test_top_k_keeps_exactly_k_tokens():
    logits = torch.randn(4, 20, generator=torch.Generator().manual_seed(1))
    for k in (1, 3, 7):
        probs = Sampling(top_k=k).probs(logits)
        assert ((probs > 0).sum(-1) == k).all()
        top = torch.topk(logits, k, -1).indices
        assert ((probs > 0) == torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top, True)).all()
        expected = torch.softmax(logits.masked_fill(probs == 0, -math.inf), -1)
        torch.testing.assert_close(probs, expected, rtol=0, atol=1e-7)
    # 0 and k >= V disable it
    torch.testing.assert_close(Sampling(top_k=0).probs(logits), torch.softmax(logits, -1))
    torch.testing.assert_close(Sampling(top_k=20).probs(logits), torch.softmax(logits, -1))
    torch.testing.assert_close(Sampling(top_k=50).probs(logits), torch.softmax(logits, -1))
    # ties at the k-th value are kept (as in transformers)
    tied = torch.tensor([0.0, 2.0, 2.0, 1.0])
    assert (Sampling(top_k=2).probs(tied) > 0).tolist() == [False, True, True, False]


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([0.25, 0.05, 0.6, 0.1])
    logits = probs.log()

    def kept(top_p):
        return (Sampling(top_p=top_p).probs(logits) > 0).tolist()

    assert kept(0.8) == [True, False, True, False]  # 0.6 + 0.25 = 0.85 >= 0.8; 0.6 alone is not
    assert kept(0.9) == [True, False, True, True]  # 0.95
    assert kept(0.97) == [True, True, True, True]
    assert kept(0.5) == [False, False, True, False]  # the top token alone already reaches 0.5
    assert kept(1e-9) == [False, False, True, False]  # always keep the most likely token
    torch.testing.assert_close(Sampling(top_p=0.8).probs(logits), torch.tensor([0.25, 0, 0.6, 0]) / 0.85)
    # mass exactly equal to top_p is enough (0.25 / 0.5 / 0.25 are exact in float32): the top token alone
    exact = torch.tensor([0.0, math.log(2.0), 0.0])
    assert (Sampling(top_p=0.5).probs(exact) > 0).tolist() == [False, True, False]
    assert int((Sampling(top_p=0.75).probs(exact) > 0).sum()) == 2
    ids = torch.zeros(1, 1, dtype=torch.long)
    for top_p in (0.5, 0.75):
        warped = TopPLogitsWarper(top_p)(ids, exact[None].clone())
        assert torch.equal(Sampling(top_p=top_p).probs(exact) > 0, torch.isfinite(warped[0]))
    torch.testing.assert_close(Sampling(top_p=1.0).probs(logits), probs)
    # the always-keep rule, row by row, even when the cumulative mass rounds below 1
    many = torch.randn(64, 1000, generator=torch.Generator().manual_seed(2)) * 4
    tiny = Sampling(top_p=1e-9).probs(many)
    assert torch.isfinite(tiny).all()
    assert torch.equal(tiny, torch.nn.functional.one_hot(many.argmax(-1), 1000).float())


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 0, 1.0), (0.7, 5, 0.9), (1.3, 0, 0.8), (1.0, 3, 1.0), (0.5, 0, 0.95), (2.0, 20, 0.5), (0.9, 1, 0.3)],
)
def test_probs_match_transformers_warpers(temperature, top_k, top_p):
    logits = torch.randn(6, 257, generator=torch.Generator().manual_seed(int(temperature * 10) + top_k)) * 3
    ids = torch.zeros(6, 1, dtype=torch.long)
    scores = logits.clone()
    scores = TemperatureLogitsWarper(float(temperature))(ids, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(ids, scores)
    expected = torch.softmax(scores, -1)
    got = Sampling(temperature=temperature, top_k=top_k, top_p=top_p).probs(logits)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(got > 0, expected > 0)


@pytest.mark.parametrize(
    "kwargs, shown",
    [
        ({"temperature": 0}, "temperature=0"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"temperature": float("inf")}, "temperature=inf"),
        ({"temperature": "1"}, "temperature='1'"),
        ({"top_k": -1}, "top_k=-1"),
        ({"top_k": 1.5}, "top_k=1.5"),
        ({"top_k": True}, "top_k=True"),
        ({"top_p": 0}, "top_p=0"),
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_p": -0.1}, "top_p=-0.1"),
        ({"top_p": float("nan")}, "top_p=nan"),
    ],
)
def test_invalid_sampling_settings_raise_naming_the_value(kwargs, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        Sampling(**kwargs)


# ------------------------------------------------------------------------------ sample_without_replacement


def test_sample_without_replacement_distinct_tokens_in_support():
    q = _dirichlet((200, V), 70)
    q[:, 5:] = 0.0  # support of 5 tokens
    q = q / q.sum(-1, keepdim=True)
    g = torch.Generator().manual_seed(0)
    for k in (1, 3, 5):
        tokens = sample_without_replacement(q, k, g)
        assert tokens.shape == (200, k) and tokens.dtype == torch.long
        assert all(len(set(row)) == k for row in tokens.tolist())
        assert (q.gather(-1, tokens) > 0).all()
    # beyond the support: the support first, then distinct zero-probability padding
    tokens = sample_without_replacement(q, 7, g)
    assert all(len(set(row)) == 7 for row in tokens.tolist())
    assert (q.gather(-1, tokens[:, :5]) > 0).all() and (q.gather(-1, tokens[:, 5:]) == 0).all()
    # same seed -> same draws; the global RNG plays no part
    torch.manual_seed(1)
    a = sample_without_replacement(q, 3, torch.Generator().manual_seed(9))
    torch.manual_seed(2)
    b = sample_without_replacement(q, 3, torch.Generator().manual_seed(9))
    assert torch.equal(a, b)


def test_sample_without_replacement_marginals():
    n = 40000
    q = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.08, 0.04, 0.03, 0.0])
    draws = sample_without_replacement(q.expand(n, V).contiguous(), 3, torch.Generator().manual_seed(3))
    first, second = draws[:, 0], draws[:, 1]
    _assert_follows(first.tolist(), q, label="first draw")
    # the second draw given the first is q without the first token, renormalised
    for a in (0, 1, 2):
        rest = q.clone()
        rest[a] = 0
        rest /= rest.sum()
        _assert_follows(second[first == a].tolist(), rest, far_from=q, label=f"second draw after {a}")
    # and its marginal is sum_a q(a) q(b) / (1 - q(a)), b != a
    qd = q.double()
    marginal = (qd[:, None] * qd[None, :] / (1 - qd[:, None])).fill_diagonal_(0).sum(0)
    _assert_follows(second.tolist(), marginal.float(), label="second draw marginal")
