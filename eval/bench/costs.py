"""Per-step costs of decoding, measured on prepared decoding Sequences: one forward over a root token plus a
tree's nodes (:func:`forward_cost`), drafting a tree level by level (:func:`draft_cost`), where a step's
time goes by operator group (:func:`step_profile`), the weights a step reads and the multiply-accumulates it
does; the decode speedup those costs project (:func:`project`); and :class:`ForwardClock`, the time spent in
model forwards inside a decode loop.

What this module deliberately does not do: run the decode loop or compare methods (:mod:`specvlm_eval.bench.pair`),
or build the models it times (:mod:`specvlm_eval.bench.shapes`, the engine).
"""

from __future__ import annotations

import statistics
import time

import torch
from specvlm.models import cache as kv
from specvlm.models.base import ModelAdapter
from specvlm.attention import causal_context, tree_context
from specvlm.timing import synchronize
from specvlm.decoding.trees import REFERENCE_25, TreeStructure, chain, from_paths


class ForwardClock:
    """Times the model calls (``forward_ids``: embedding lookup + decoder + head) of the given adapters
    that run inside the decode loop (``specvlm.engine.decode``), synchronising the device around each
    one; prefill forwards are not counted."""

    def __init__(self, adapters):
        self.adapters = [a for a in adapters if a is not None]
        self.seconds = 0.0
        self.decoding = False
        self._restore = []

    def __enter__(self):
        from specvlm import engine as engine_module

        for adapter in self.adapters:
            original = adapter.forward_ids

            def timed(*args, _original=original, _device=adapter.device, **kwargs):
                if not self.decoding:
                    return _original(*args, **kwargs)
                synchronize(_device)
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    synchronize(_device)
                    self.seconds += time.perf_counter() - start

            had_own = "forward_ids" in vars(adapter)
            adapter.forward_ids = timed
            self._restore.append(
                lambda a=adapter, f=original, own=had_own: setattr(a, "forward_ids", f) if own else vars(a).pop("forward_ids")
            )
        loop = engine_module.decode

        def decode(*args, **kwargs):
            self.decoding = True
            try:
                return loop(*args, **kwargs)
            finally:
                self.decoding = False

        engine_module.decode = decode
        self._restore.append(lambda: setattr(engine_module, "decode", loop))
        return self

    def __exit__(self, *exc):
        for restore in reversed(self._restore):
            restore()
        self._restore.clear()

def _median_ms(fn, repeats: int, device) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _step(seq, structure: TreeStructure | None):
    """A closure running one forward of ``seq`` over a root token plus the nodes of ``structure`` under
    its tree mask (``None``: the root alone, a plain decode step), then rolling the cache back."""
    adapter = seq.adapter
    device = adapter.device
    decoded = seq.decoded
    n = 0 if structure is None else structure.parents.numel()
    ids = torch.zeros(n + 1, dtype=torch.long, device=device)
    depths = torch.zeros(1, dtype=torch.long) if structure is None else torch.cat([torch.zeros(1, dtype=torch.long), structure.depths])
    offsets = (decoded + depths).to(device)
    verify_mask = None if structure is None else structure.verify_mask.to(device)

    def run():
        length = kv.length(seq.cache)
        if verify_mask is None:
            ctx = causal_context(1, length + 1, device, backend=seq.backend)
        else:
            ctx = tree_context(length, verify_mask, backend=seq.backend)
        seq.feed(ids, offsets, ctx, logits_to_keep=0)
        seq.rollback(decoded)

    return run


def forward_cost(seq, structure: TreeStructure | None, repeats: int) -> float:
    """Median ms of one forward of ``seq`` (a :class:`~specvlm.decoding.target.DecodingState`) over a root token
    plus the nodes of ``structure`` under its tree mask (``None``: the root alone, a plain decode step); the cache is
    rolled back after each forward."""
    run = _step(seq, structure)
    trusted = seq.adapter.trusted_compiled
    with torch.no_grad():
        run()  # warm-up (a compiled step's first call of this kind builds its graph, guarded)
        seq.adapter.trust_compiled(trusted)  # then timed as the answers ran it
        return _median_ms(run, repeats, seq.adapter.device)


#: Operator groups of :func:`step_profile`: aten operator names containing any of these substrings.
OP_GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention": ("scaled_dot_product", "_efficient_attention", "_flash_attention"),
}


def step_profile(seq, structure: TreeStructure | None, repeats: int) -> dict[str, float]:
    """Where one forward's time goes (:func:`forward_cost`'s step): self CPU time per forward (ms) of the
    operators in each :data:`OP_GROUPS` group and of all other operators, under ``torch.profiler``.

    The profiler adds a little to every operator, so the groups sum to somewhat more than an
    unprofiled step; the shares are what it shows. These are host (CPU) times: on a GPU they are the
    operators' launch costs, not their kernels'.
    """
    from torch.profiler import ProfilerActivity, profile

    run = _step(seq, structure)
    with torch.no_grad():
        run()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                run()
    out = dict.fromkeys([*OP_GROUPS, "other ops"], 0.0)
    for event in prof.key_averages():
        group = next((g for g, names in OP_GROUPS.items() if any(n in event.key for n in names)), "other ops")
        out[group] += event.self_cpu_time_total / 1e3 / repeats  # microseconds -> ms per forward
    return out


def weight_bytes(adapter: ModelAdapter) -> int:
    """Bytes of the weights one decode step reads: the language model's decoder and the LM head (the
    input embedding table only when the head shares it: a step looks up one of its rows)."""
    embedding = {id(p) for p in adapter.language_model().get_input_embeddings().parameters()}
    params = {id(p): p for p in adapter.language_model().parameters() if id(p) not in embedding}
    params.update({id(p): p for p in adapter.model.lm_head.parameters()})
    return sum(p.numel() * p.element_size() for p in params.values())


def level_widths(structure: TreeStructure) -> list[int]:
    """Tokens the draft feeds per level when drafting ``structure``: the root, then each level's nodes
    that have children."""
    has_kids = set(structure.parents.tolist())
    depths = structure.depths.tolist()
    widths = [1]
    for d in range(1, max(depths, default=0)):
        widths.append(sum(1 for i, di in enumerate(depths) if di == d and i in has_kids))
    return [w for w in widths if w]


def draft_cost(seq, structure: TreeStructure, repeats: int) -> float:
    """Median ms of drafting ``structure`` once: one draft forward per level, measured per width."""
    cache: dict[int, float] = {}
    total = 0.0
    for width in level_widths(structure):
        if width not in cache:
            cache[width] = forward_cost(seq, None if width == 1 else TreeStructure.of([-1] * (width - 1)), repeats)
        total += cache[width]
    return total


def decode_macs(text_config, context: int) -> int:
    """Multiply-accumulates of one decode step (one new token) of a Llama/Qwen2-style decoder at
    ``context`` cached tokens: the attention and MLP projections, attention over ``context + 1`` keys,
    and the LM head (embedding lookup, norms and activations are negligible and not counted)."""
    c = text_config
    d, heads, kv_heads = c.hidden_size, c.num_attention_heads, c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or d // heads
    projections = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d
    mlp = 3 * d * c.intermediate_size
    attention = 2 * heads * head_dim * (context + 1)
    return c.num_hidden_layers * (projections + mlp + attention) + d * c.vocab_size


def project(tau: float, plain_ms: float, verify_ms: float, draft_ms: float) -> float:
    """Decode speedup over plain decoding when each step commits ``tau`` tokens on average:
    ``tau * plain / (verify + draft)`` (one target verification plus the drafting per step)."""
    return tau * plain_ms / (verify_ms + draft_ms)


def structures(chain_length: int) -> dict[str, TreeStructure]:
    """The shapes whose verification and drafting the bench times: a chain of ``chain_length`` draft
    tokens and the reference's 25-node tree."""
    shapes = {"chain": chain(chain_length), "reference-25": from_paths(REFERENCE_25)}
    return {name: TreeStructure.of([int(p) for p in shape.parents]) for name, shape in shapes.items()}
