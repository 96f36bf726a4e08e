"""Behavioural tests for the ``pruning`` package (budget, strategies, sequence mapping)."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction

import pytest
import torch

import specvlm_pruning as pruning
from specvlm_pruning import (
    PruningResult,
    available,
    budget,
    keep_sequence_indices,
    prune,
    register,
    select,
)
from specvlm_pruning import registry as registry_module

ALL_STRATEGIES = ["attention", "none", "random", "uniform", "verifier_guided", "window"]
SCORE_STRATEGIES = ["attention", "verifier_guided"]
CASES = [  # (grid, drop_rate)
    ((1, 1, 1), 0.0),
    ((1, 1, 1), 0.9),
    ((1, 2, 5), 0.6),
    ((2, 3, 4), 0.0),
    ((2, 3, 4), 0.5),
    ((4, 6, 6), 0.9),
    ((3, 5, 7), 0.999),
]
FIXED_SEED = 1234


def make_scores(n: int, seed: int = FIXED_SEED, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen).to(dtype)  # (N,)


def evenly(r: int, c: int) -> list[int]:
    return [math.floor((i + 0.5) * r / c) for i in range(c)]


def expected_len(strategy: str, n: int, drop_rate: float) -> int:
    return n if strategy == "none" else budget(n, drop_rate)


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("n", "drop_rate", "k"),
    [
        (100, 0.9, 10),  # naive float gives 9
        (1000, 0.9, 100),  # naive float gives 99
        (50, 0.8, 10),  # naive float gives 9
        (100, 0.0, 100),
        (100, 0, 100),
        (10, 0.5, 5),
        (7, 0.3, 4),
        (3, 0.5, 1),
        (1568, 0.9, 156),
        (100, 0.75, 25),
        (100, 0.99, 1),
        (10, 0.99, 1),  # floor(0.1) == 0 -> at least 1
        (1, 0.0, 1),
        (1, 0.5, 1),
        (1000, 0.999, 1),
        (10**6, 0.9999999, 1),
        (100, Fraction(1, 3), 66),
        (100, Decimal("0.35"), 65),
    ],
)
def test_budget_exact(n, drop_rate, k):
    assert budget(n, drop_rate) == k


def test_budget_at_least_one_and_monotone():
    for n in range(1, 60):
        ks = [budget(n, r / 20) for r in range(20)]
        assert all(k >= 1 for k in ks)
        assert ks[0] == n
        assert ks == sorted(ks, reverse=True)


@pytest.mark.parametrize(
    "bad", [-0.1, 1, 1.0, 1.5, float("nan"), float("inf"), -float("inf"), "0.5", None, True]
)
def test_budget_bad_drop_rate(bad):
    with pytest.raises(ValueError) as err:
        budget(100, bad)
    assert "[0, 1)" in str(err.value)
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("bad_n", [0, -3, 2.5, True, None])
def test_budget_bad_n(bad_n):
    with pytest.raises(ValueError, match=f"N={bad_n!r}"):
        budget(bad_n, 0.5)


# --------------------------------------------------------------- registry and API


def test_available_lists_builtins_sorted():
    assert available() == ALL_STRATEGIES
    assert set(pruning.__all__) >= {
        "budget", "prune", "select", "available", "register", "PruningResult",
        "keep_sequence_indices",
    }


def test_unknown_strategy_lists_available():
    with pytest.raises(ValueError) as err:
        select("nope", None, (1, 2, 2), 0.5)
    for name in ALL_STRATEGIES:
        assert name in str(err.value)


def test_register_duplicate_raises():
    with pytest.raises(ValueError, match="uniform"):
        register("uniform")


def test_register_custom_strategy(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    calls = {}

    @register("first_k")
    def first_k(scores, grid, k, *, stage1_mass, seed, window):
        calls.update(grid=grid, k=k, stage1_mass=stage1_mass, seed=seed, window=window)
        kept = torch.arange(k)
        return PruningResult(kept=kept, stage1=kept[:0], budget=k)

    assert "first_k" in available() and available() == sorted(available())
    assert prune("first_k", None, [2, 2, 5], 0.5, seed=7).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert calls == dict(grid=(2, 2, 5), k=10, stage1_mass=0.4, seed=7, window="middle")
    with pytest.raises(ValueError, match="first_k"):
        register("first_k")


def test_select_rejects_out_of_range_strategy_output(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register("broken")
    def broken(scores, grid, k, *, stage1_mass, seed, window):
        kept = torch.arange(k) + 100
        return PruningResult(kept=kept, stage1=kept[:0], budget=k)

    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        select("broken", None, (1, 2, 2), 0.5)


def test_pruning_result_invariants():
    ok = PruningResult(kept=torch.tensor([1, 3]), stage1=torch.tensor([3]), budget=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.budget = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="sorted"):
        PruningResult(kept=torch.tensor([3, 1]), stage1=torch.tensor([], dtype=torch.long), budget=2)
    with pytest.raises(ValueError, match="budget"):
        PruningResult(kept=torch.tensor([1, 3]), stage1=torch.tensor([], dtype=torch.long), budget=3)
    with pytest.raises(ValueError, match="subset"):
        PruningResult(kept=torch.tensor([1, 3]), stage1=torch.tensor([2]), budget=2)
    with pytest.raises(ValueError, match="long"):
        PruningResult(kept=torch.tensor([1.0, 3.0]), stage1=torch.tensor([], dtype=torch.long), budget=2)


@pytest.mark.parametrize(
    "bad_grid", [(0, 2, 2), (1, 2), (1, 2, 3, 4), (1, 2, -1), (1.0, 2, 2), (True, 2, 2), None, "abc"]
)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_bad_grid_raises(strategy, bad_grid):
    with pytest.raises(ValueError, match="grid"):
        select(strategy, torch.ones(4), bad_grid, 0.5)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("bad", [-0.5, 1.0, float("nan"), "x"])
def test_every_strategy_validates_drop_rate(strategy, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        select(strategy, torch.ones(8), (2, 2, 2), bad)


# ---------------------------------------------------------- properties of all strategies


@pytest.mark.parametrize(("grid", "drop_rate"), CASES)
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_strategy_output_contract(strategy, grid, drop_rate):
    n = grid[0] * grid[1] * grid[2]
    scores = make_scores(n)
    scores_before = scores.clone()
    grid_list = list(grid)
    result = select(strategy, scores, grid_list, drop_rate)
    kept = result.kept

    assert isinstance(result, PruningResult)
    assert kept.dtype == torch.long and kept.dim() == 1
    assert kept.device == scores.device
    assert kept.numel() == result.budget == expected_len(strategy, n, drop_rate)
    assert bool((kept[1:] > kept[:-1]).all())  # sorted and unique
    assert int(kept.min()) >= 0 and int(kept.max()) < n
    assert result.stage1.dtype == torch.long
    assert set(result.stage1.tolist()) <= set(kept.tolist())
    if strategy != "verifier_guided":
        assert result.stage1.numel() == 0
    # caller's inputs untouched
    assert torch.equal(scores, scores_before) and scores.dtype == scores_before.dtype
    assert grid_list == list(grid)
    # prune is select(...).kept and is deterministic
    assert torch.equal(prune(strategy, scores, grid, drop_rate), kept)


@pytest.mark.parametrize("strategy", sorted(set(ALL_STRATEGIES) - set(SCORE_STRATEGIES)))
def test_scoreless_strategies_accept_none_and_return_cpu(strategy):
    kept = prune(strategy, None, (2, 3, 4), 0.5)
    assert kept.device == torch.device("cpu") and kept.dtype == torch.long
    assert kept.numel() == expected_len(strategy, 24, 0.5)
    assert torch.equal(kept, prune(strategy, make_scores(24), (2, 3, 4), 0.5))


@pytest.mark.parametrize("strategy", SCORE_STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_score_strategies_accept_float_dtypes(strategy, dtype):
    scores64 = torch.tensor([0.5, 4.0, 0.25, 2.0, 0.0, 1.0, 0.125, 3.0])  # exact in every dtype
    scores = scores64.to(dtype)
    before = scores.clone()
    kept = prune(strategy, scores, (1, 2, 4), 0.5)
    assert kept.dtype == torch.long
    assert torch.equal(kept, prune(strategy, scores64, (1, 2, 4), 0.5))
    assert torch.equal(scores, before) and scores.dtype == dtype


@pytest.mark.parametrize("strategy", SCORE_STRATEGIES)
def test_score_validation(strategy):
    grid = (1, 2, 3)
    with pytest.raises(ValueError, match="None"):
        select(strategy, None, grid, 0.5)
    with pytest.raises(ValueError) as err:
        select(strategy, torch.ones(5), grid, 0.5)
    assert "5" in str(err.value) and "6" in str(err.value)
    for bad_value in (float("nan"), float("inf"), -float("inf")):
        scores = torch.ones(6)
        scores[2] = bad_value
        with pytest.raises(ValueError, match="finite"):
            select(strategy, scores, grid, 0.5)
    with pytest.raises(ValueError, match="negative"):
        select(strategy, torch.tensor([1.0, 2.0, -0.1, 0.0, 1.0, 1.0]), grid, 0.5)
    with pytest.raises(ValueError, match="1-D"):
        select(strategy, torch.ones(2, 3), grid, 0.5)
    with pytest.raises(ValueError, match="floating"):
        select(strategy, torch.ones(6, dtype=torch.long), grid, 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
def test_output_follows_scores_device(strategy):
    scores_cpu = make_scores(60)
    scores = scores_cpu.cuda()
    result = select(strategy, scores, (3, 4, 5), 0.7)
    assert result.kept.device == scores.device and result.stage1.device == scores.device
    assert torch.equal(result.kept.cpu(), prune(strategy, scores_cpu, (3, 4, 5), 0.7))
    positions = torch.arange(5, 65, device=scores.device)
    out = keep_sequence_indices(70, positions, result.kept)
    assert out.device == scores.device


# ------------------------------------------------------------------------- specvlm


def test_specvlm_one_dominant_token():
    scores = torch.zeros(10)
    scores[2] = 10.0
    result = select("specvlm", scores, (1, 2, 5), 0.6)  # K = 4
    assert result.budget == 4
    assert result.stage1.tolist() == [2]
    remaining = [i for i in range(10) if i != 2]
    stage2 = [remaining[p] for p in evenly(9, 3)]  # positions 1, 4, 7 -> tokens 1, 5, 8
    assert stage2 == [1, 5, 8]
    assert result.kept.tolist() == sorted([2] + stage2)


def test_specvlm_threshold_reached_exactly():
    scores = torch.tensor([1.0, 4.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0])  # total 8
    # lambda = 0.75 -> threshold 6 == 4 + 2, reached exactly by {1, 3}
    result = select("specvlm", scores, (1, 1, 8), 0.5, stage1_mass=0.75)  # K = 4
    assert result.stage1.tolist() == [1, 3]
    remaining = [0, 2, 4, 5, 6, 7]
    assert result.kept.tolist() == sorted([1, 3] + [remaining[p] for p in evenly(6, 2)])
    assert result.kept.tolist() == [1, 2, 3, 6]
    # just above the threshold needs one more token; the tie 0 vs 2 goes to the lower index
    above = select("specvlm", scores, (1, 1, 8), 0.5, stage1_mass=0.76)
    assert above.stage1.tolist() == [0, 1, 3]
    # lambda = 0.5 -> threshold 4 reached exactly by the single top token
    assert select("specvlm", scores, (1, 1, 8), 0.5, stage1_mass=0.5).stage1.tolist() == [1]


def test_specvlm_stage1_capped_at_budget_for_flat_mass():
    scores = torch.ones(20)
    result = select("specvlm", scores, (1, 4, 5), 0.8, stage1_mass=0.4)  # K = 4, needs 8 tokens
    assert result.budget == 4
    assert result.stage1.tolist() == result.kept.tolist() == [0, 1, 2, 3]  # stable ties


@pytest.mark.parametrize("scores", [make_scores(30), torch.zeros(30)])
def test_specvlm_zero_stage1_equals_uniform(scores):
    stage1_mass = 0.0 if scores.any() else 0.4  # zero total mass -> empty Stage I too
    result = select("specvlm", scores, (2, 3, 5), 0.7, stage1_mass=stage1_mass)
    assert result.stage1.numel() == 0
    assert torch.equal(result.kept, prune("uniform", None, (2, 3, 5), 0.7))


def test_specvlm_full_mass_takes_all_positive_tokens():
    scores = torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    result = select("specvlm", scores, (1, 1, 10), 0.5, stage1_mass=1.0)  # K = 5
    assert result.stage1.tolist() == [1, 4, 7]
    assert result.kept.numel() == 5


def test_specvlm_no_drop_keeps_everything():
    result = select("specvlm", make_scores(12), (1, 3, 4), 0.0)
    assert result.kept.tolist() == list(range(12))


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), "0.4", None, True])
def test_specvlm_bad_stage1_mass(bad):
    with pytest.raises(ValueError, match=r"stage1_mass.*\[0, 1\]"):
        select("specvlm", torch.ones(8), (1, 2, 4), 0.5, stage1_mass=bad)


def test_specvlm_randomized_two_stage_properties():
    torch.manual_seed(FIXED_SEED)
    for trial in range(40):
        grid = tuple(int(x) for x in torch.randint(1, 6, (3,)))
        n = grid[0] * grid[1] * grid[2]
        drop_rate = float(torch.randint(0, 100, ()).item()) / 100
        stage1_mass = float(torch.rand(()).item())
        scores = torch.rand(n) ** 4  # skewed, like attention mass
        if trial % 5 == 0:
            scores = torch.randint(0, 3, (n,)).float()  # many ties
        k = budget(n, drop_rate)
        result = select("specvlm", scores, grid, drop_rate, stage1_mass=stage1_mass)
        kept, stage1 = result.kept.tolist(), result.stage1.tolist()
        m = len(stage1)
        assert len(kept) == k and m <= k

        s = scores.double()
        total = float(s.sum())
        order = torch.argsort(s, descending=True, stable=True).tolist()
        # Stage I is exactly the stable top-m set ...
        assert stage1 == sorted(order[:m])
        mass = float(s[order[:m]].sum()) if m else 0.0
        threshold = stage1_mass * total
        # ... and the smallest one reaching the threshold (unless capped at K)
        if m < k:
            assert mass >= threshold - 1e-9 * total
        if m > 0:
            assert float(s[order[: m - 1]].sum()) < threshold + 1e-9 * total

        # Stage II: evenly spaced over the remaining tokens in flattened order
        remaining = [i for i in range(n) if i not in set(stage1)]
        stage2 = sorted(set(kept) - set(stage1))
        assert stage2 == [remaining[p] for p in evenly(len(remaining), k - m)]


def test_specvlm_deterministic_with_ties():
    scores = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0, 1.0, 0.0, 0.0, 2.0, 1.0])
    first = select("specvlm", scores, (1, 2, 5), 0.6, stage1_mass=0.5)  # K = 4, total 12, need 6
    assert first.stage1.tolist() == [1, 2, 4]  # lowest indices among the tied 2.0s
    again = select("specvlm", scores, (1, 2, 5), 0.6, stage1_mass=0.5)
    assert torch.equal(first.kept, again.kept) and torch.equal(first.stage1, again.stage1)


# -------------------------------------------------------------------- baselines


def test_uniform_hand_built():
    assert prune("uniform", None, (1, 2, 5), 0.6).tolist() == [1, 3, 6, 8]  # K = 4 of 10
    assert prune("uniform", None, (1, 1, 7), 0.0).tolist() == list(range(7))
    assert prune("uniform", None, (1, 1, 9), 0.9).tolist() == [4]  # K = 1: the centre


def test_uniform_evenly_spaced_property():
    for n in range(1, 40):
        for k in range(1, n + 1):
            drop_rate = Fraction(n - k, n)  # budget(n, drop_rate) == k exactly
            kept = prune("uniform", None, (1, 1, n), drop_rate).tolist()
            assert kept == evenly(n, k)
            gaps = [b - a for a, b in zip(kept, kept[1:])]
            assert not gaps or max(gaps) - min(gaps) <= 1


def test_attention_is_top_k():
    scores = make_scores(60)
    for drop_rate in (0.0, 0.5, 0.9, 0.99):
        k = budget(60, drop_rate)
        kept = prune("attention", scores, (3, 4, 5), drop_rate)
        assert set(kept.tolist()) == set(torch.topk(scores, k).indices.tolist())
    ties = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5, 2.0])
    assert prune("attention", ties, (1, 2, 3), 0.5).tolist() == [0, 1, 5]


def test_random_seeded_determinism():
    rng_state = torch.get_rng_state()
    a = prune("random", None, (4, 10, 25), 0.9, seed=0)
    b = prune("random", None, (4, 10, 25), 0.9, seed=0)
    c = prune("random", None, (4, 10, 25), 0.9, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    # independent of the scores and of their presence
    assert torch.equal(a, prune("random", make_scores(1000), (4, 10, 25), 0.9, seed=0))


def test_random_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        select("random", None, (1, 2, 2), 0.5, seed=1.5)


@pytest.mark.parametrize(
    ("window", "expected"),
    [("front", [0, 1, 2, 3]), ("middle", [3, 4, 5, 6]), ("back", [6, 7, 8, 9])],
)
def test_window_spans(window, expected):
    assert prune("window", None, (1, 2, 5), 0.6, window=window).tolist() == expected  # K = 4


def test_window_middle_odd_gap_and_default():
    # N = 9, K = 4 -> start (9 - 4) // 2 == 2
    assert prune("window", None, (1, 3, 3), Fraction(5, 9)).tolist() == [2, 3, 4, 5]


def test_window_bad_choice_lists_choices():
    with pytest.raises(ValueError) as err:
        select("window", None, (1, 2, 5), 0.6, window="centre")
    for choice in ("front", "middle", "back", "centre"):
        assert choice in str(err.value)


def test_none_keeps_all():
    result = select("none", None, (2, 3, 4), 0.9)
    assert result.kept.tolist() == list(range(24)) and result.budget == 24


# ------------------------------------------------------------ keep_sequence_indices


def test_keep_sequence_indices_hand_built():
    positions = torch.arange(3, 9)  # (6,) video tokens at 3..8 in a sequence of 12
    out = keep_sequence_indices(12, positions, torch.tensor([0, 2, 5]))
    assert out.dtype == torch.long
    assert out.tolist() == [0, 1, 2, 3, 5, 8, 9, 10, 11]
    assert keep_sequence_indices(12, positions, torch.tensor([], dtype=torch.long)).tolist() == [
        0, 1, 2, 9, 10, 11,
    ]
    # int32 inputs are accepted, unsorted kept is fine, inputs untouched
    pos32, kept32 = positions.int(), torch.tensor([5, 0], dtype=torch.int32)
    pos_before, kept_before = pos32.clone(), kept32.clone()
    assert keep_sequence_indices(12, pos32, kept32).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert torch.equal(pos32, pos_before) and torch.equal(kept32, kept_before)


def test_keep_sequence_indices_randomized():
    gen = torch.Generator().manual_seed(FIXED_SEED)
    for _ in range(25):
        seq_len = int(torch.randint(1, 80, (), generator=gen))
        n = int(torch.randint(1, seq_len + 1, (), generator=gen))
        positions, _ = torch.sort(torch.randperm(seq_len, generator=gen)[:n])  # (N,)
        kept = prune("random", None, (1, 1, n), 0.5, seed=int(torch.randint(0, 99, (), generator=gen)))
        out = keep_sequence_indices(seq_len, positions, kept).tolist()
        video = set(positions.tolist())
        assert out == sorted(set(out))
        assert set(range(seq_len)) - video <= set(out)  # every non-video token
        assert set(out) & video == set(positions[kept].tolist())  # exactly the kept video ones
        assert len(out) == seq_len - n + kept.numel()


def test_keep_sequence_indices_validation():
    positions = torch.tensor([2, 3, 4])
    with pytest.raises(ValueError, match="12"):
        keep_sequence_indices(10, torch.tensor([2, 3, 12]), torch.tensor([0]))
    with pytest.raises(ValueError, match="-1"):
        keep_sequence_indices(10, torch.tensor([-1, 3, 4]), torch.tensor([0]))
    with pytest.raises(ValueError, match="sorted"):
        keep_sequence_indices(10, torch.tensor([4, 3, 2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="unique"):
        keep_sequence_indices(10, torch.tensor([2, 2, 4]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\b3\b"):
        keep_sequence_indices(10, positions, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="-2"):
        keep_sequence_indices(10, positions, torch.tensor([-2]))
    with pytest.raises(ValueError, match="unique"):
        keep_sequence_indices(10, positions, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="integer"):
        keep_sequence_indices(10, positions.float(), torch.tensor([0]))
    with pytest.raises(ValueError, match="seq_len"):
        keep_sequence_indices(-1, positions, torch.tensor([0]))
