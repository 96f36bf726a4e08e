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
# Rows of query x captured-key float32 logits (and probabilities) formed at once: about 64 MiB each, whatever
# the number of heads, text queries and video tokens (a 72B target's 64 heads x 200 text queries x 25k video
# tokens would otherwise form about 1.3 GB per temporary).
_CAPTURE_BLOCK_ELEMENTS = 1 << 24


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
    #: the tensor-parallel process group whose ranks each hold some of the heads (None: every head is here);
    #: :meth:`mean` sums ``total`` and ``rows`` over it, so every rank scores (and keeps) the same tokens
    group: object = None

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
        Logits are formed a block of query rows at a time: at most :data:`_CAPTURE_BLOCK_ELEMENTS` query x
        captured-key values (and, without ``lse``, :data:`_LSE_BLOCK_ELEMENTS` query x key values) at once.
        """
        ctx = mask if isinstance(mask, AttentionContext) else (AttentionContext(mask=mask) if mask is not None else None)
        b, h, q_len, _ = query.shape
        kv_len = key.shape[2]
        device = query.device
        cols = self.key_positions.to(device=device, dtype=torch.long)
        captured = key.index_select(2, cols)  # (1, H_kv, N, D)
        # a block of query rows at a time: the (1, H, rows, N) float32 temporaries stay within the bound
        step = max(1, _CAPTURE_BLOCK_ELEMENTS // max(1, b * h * cols.numel()))
        summed = None
        for start in range(0, q_len, step):
            rows = slice(start, min(q_len, start + step))
            logits = scaled_logits(query[:, :, rows], captured, scaling)  # (1, H, r, N) float32
            if ctx is not None:
                bias = ctx._bias(q_len, kv_len, rows, cols, device)
                if bias is not None:
                    logits = logits + bias
            block_lse = (lse[..., rows] if lse is not None else _row_lse(query, key, ctx, scaling, rows)).float()
            finite = torch.isfinite(block_lse)[..., None]
            probs = torch.where(finite, torch.exp(logits - torch.where(finite, block_lse[..., None], 0.0)), 0.0)
            part = probs.sum(dim=(0, 1, 2))  # (N,)
            summed = part if summed is None else summed + part
        self.total = summed if self.total is None else self.total + summed.to(self.total.device)
        self.rows += b * h * q_len

    def mean(self) -> torch.Tensor:
        """Mean attention per key over layers, heads and text queries. Shape (N,), float32."""
        if self.total is None or self.rows == 0:
            raise RuntimeError("no attention was captured: the scored forward did not run through the specvlm hook")
        if self.group is None:
            return self.total / self.rows
        import torch.distributed as dist

        summed = torch.cat([self.total.float(), torch.tensor([float(self.rows)], device=self.total.device)])
        dist.all_reduce(summed, op=dist.ReduceOp.SUM, group=self.group)  # every rank's heads
        return summed[:-1] / summed[-1]


def _row_lse(
    query: torch.Tensor, key: torch.Tensor, ctx: AttentionContext | None, scaling: float, rows: slice = slice(None)
) -> torch.Tensor:
    """(B, H, r) float32 log-sum-exp of the query rows ``rows`` over their visible keys, a block of rows at a time."""
    b, h, q_len, _ = query.shape
    kv_len = key.shape[2]
    first, last, _ = rows.indices(q_len)
    step = max(1, _LSE_BLOCK_ELEMENTS // max(1, b * h * kv_len))
    out = []
    for start in range(first, last, step):
        block = slice(start, min(last, start + step))
        logits = scaled_logits(query[:, :, block], key, scaling)
        if ctx is not None:
            bias = ctx._bias(q_len, kv_len, block, None, query.device)
            if bias is not None:
                logits = logits + bias
        out.append(torch.logsumexp(logits, dim=-1))
    return torch.cat(out, dim=-1)
