"""Map kept video-token indices to positions in a model's input sequence.

Does: given the positions of the ``N`` video tokens inside a sequence of length
``seq_len`` and the kept video indices (into ``[0, N)``), return the sorted
sequence positions of every non-video token plus the kept video tokens.

Does not: choose which video tokens to keep, gather embeddings, or rebuild
attention masks / position ids; it only computes indices.
"""

from __future__ import annotations

import numbers

import torch


def _check_index_tensor(name: str, t: object) -> torch.Tensor:
    """Return ``t`` if it is a 1-D integer tensor, else raise ``ValueError``."""
    if (
        not isinstance(t, torch.Tensor)
        or t.dim() != 1
        or t.is_floating_point()
        or t.is_complex()
        or t.dtype == torch.bool
    ):
        desc = (t.dtype, tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a 1-D integer tensor, got {desc}")
    return t


def keep_sequence_indices(
    seq_len: int,
    video_positions: torch.Tensor,  # (N,) long, strictly increasing, in [0, seq_len)
    kept: torch.Tensor,  # (K,) long, unique, in [0, N)
) -> torch.Tensor:
    """Sorted ``(seq_len - N + K,)`` long indices: all non-video positions plus ``video_positions[kept]``.

    The output lives on ``video_positions.device``.

    Raises:
        ValueError: ``seq_len`` is not an int >= 0; ``video_positions`` is out of
            ``[0, seq_len)``, not strictly increasing, or longer than the
            sequence; ``kept`` has duplicates or indices outside ``[0, N)``.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < 0:
        raise ValueError(f"seq_len must be an int >= 0, got {seq_len!r}")
    positions = _check_index_tensor("video_positions", video_positions).long()  # (N,)
    kept_idx = _check_index_tensor("kept", kept).to(positions.device).long()  # (K,)
    n = positions.numel()
    out_of_range = (positions < 0) | (positions >= seq_len)  # (N,)
    if bool(out_of_range.any()):
        raise ValueError(
            f"video_positions must lie in [0, {seq_len}); bad values "
            f"{positions[out_of_range].tolist()}"
        )
    if n > 1 and not bool((positions[1:] > positions[:-1]).all()):
        raise ValueError(f"video_positions must be sorted and unique, got {positions.tolist()}")
    bad_kept = (kept_idx < 0) | (kept_idx >= n)  # (K,)
    if bool(bad_kept.any()):
        raise ValueError(
            f"kept indices must lie in [0, {n}) (N video tokens); bad values "
            f"{kept_idx[bad_kept].tolist()}"
        )
    if torch.unique(kept_idx).numel() != kept_idx.numel():
        raise ValueError(f"kept indices must be unique, got {kept_idx.tolist()}")
    keep = torch.ones(seq_len, dtype=torch.bool, device=positions.device)  # (seq_len,)
    keep[positions] = False
    keep[positions[kept_idx]] = True
    return torch.nonzero(keep).flatten()  # (seq_len - N + K,)
