"""Score capture: the verifier's attention from text queries to the video keys, without an L x L matrix.

During the target's text prefill every layer's attention of each text query to each video key is
accumulated here (only the query x captured-key logits are formed, normalised by each row's
log-sum-exp, which the kernel returns or which is computed a block of rows at a time). The mean over
layers, heads and text queries is the verifier's score of each video token (docs/evaluation.md).

What this module deliberately does not do: choose which tokens to keep (``pruning``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specvlm.attention.context import AttentionContext
from specvlm.attention.kernels import scaled_logits

# Rows of query x key float32 logits formed at once when a row log-sum-exp has to be computed
# explicitly (score capture without a backend LSE): bounds the temporary to about 64 MiB.
_LSE_BLOCK_ELEMENTS = 1 << 24


@dataclass
class ScoreCapture:
    """Accumulates the verifier's attention from text queries to selected keys.

    ``total[j]`` is the sum over layers, heads and text queries of the softmax attention probability
    that a text query gives to key ``key_positions[j]``; :meth:`mean` divides by the number of
    (layer, head, query) rows, giving the mean attention per video token.
    """

    key_positions: torch.Tensor  # (N,) long: absolute cache positions of the video keys
    total: torch.Tensor | None = None  # (N,) float32: summed attention
    rows: int = 0  # number of (layer, head, query) rows summed into `total`

    def add(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        mask: torch.Tensor | AttentionContext | None,
        scaling: float,
        lse: torch.Tensor | None = None,
    ) -> None:
        """Accumulate one layer's attention of ``query`` (1, H, q, D) to the captured keys.

        key: (1, H_kv, kv, D), H_kv dividing H (grouped-query heads are matched as ``repeat_kv`` does).
        mask: an additive dense mask (1, 1, q, kv), an :class:`AttentionContext` (its dense, structured or
            plain causal form), or ``None`` (every key visible).
        lse: (1, H, q) natural-log row normaliser over all visible keys in float32 when the kernel produced
            it; otherwise it is computed here, a block of rows at a time.
        Only q x N captured logits (and, without ``lse``, q x kv logits in row blocks) are formed.
        """
        ctx = mask if isinstance(mask, AttentionContext) else (AttentionContext(mask=mask) if mask is not None else None)
        q_len, kv_len = query.shape[2], key.shape[2]
        device = query.device
        cols = self.key_positions.to(device=device, dtype=torch.long)
        logits = scaled_logits(query, key.index_select(2, cols), scaling)  # (1, H, q, N) float32
        if ctx is not None:
            bias = ctx._bias(q_len, kv_len, slice(None), cols, device)
            if bias is not None:
                logits = logits + bias
        if lse is None:
            lse = _row_lse(query, key, ctx, scaling)
        lse = lse.float()
        finite = torch.isfinite(lse)[..., None]
        probs = torch.where(finite, torch.exp(logits - torch.where(finite, lse[..., None], 0.0)), 0.0)
        summed = probs.sum(dim=(0, 1, 2))  # (N,)
        self.total = summed if self.total is None else self.total + summed.to(self.total.device)
        self.rows += probs.shape[0] * probs.shape[1] * probs.shape[2]

    def mean(self) -> torch.Tensor:
        """Mean attention per key over layers, heads and text queries. Shape (N,), float32."""
        if self.total is None or self.rows == 0:
            raise RuntimeError("no attention was captured: the scored forward did not run through the specvlm hook")
        return self.total / self.rows


def _row_lse(query: torch.Tensor, key: torch.Tensor, ctx: AttentionContext | None, scaling: float) -> torch.Tensor:
    """(B, H, q) float32 log-sum-exp of every query row over its visible keys, a block of rows at a time."""
    b, h, q_len, _ = query.shape
    kv_len = key.shape[2]
    step = max(1, _LSE_BLOCK_ELEMENTS // max(1, b * h * kv_len))
    out = []
    for start in range(0, q_len, step):
        rows = slice(start, min(q_len, start + step))
        logits = scaled_logits(query[:, :, rows], key, scaling)
        if ctx is not None:
            bias = ctx._bias(q_len, kv_len, rows, None, query.device)
            if bias is not None:
                logits = logits + bias
        out.append(torch.logsumexp(logits, dim=-1))
    return torch.cat(out, dim=-1)
