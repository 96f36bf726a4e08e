"""Video-token pruning for SpecVLM's draft model (pure torch; no transformers).

Does: compute the token budget ``K = floor(N * (1 - drop_rate))``, choose which
of the ``N = T * H * W`` video tokens the draft model keeps with a named
strategy (``verifier_guided`` -- old spelling ``specvlm`` --, ``uniform``,
``random``, ``attention``, ``window``, ``none``), and map the kept tokens to
sequence positions.

Does not: run models, compute attention scores, or touch embeddings.
"""

from specvlm_pruning.budget import budget
from specvlm_pruning.registry import aliases, available, canonical, needs_scores, prune, register, select
from specvlm_pruning.result import PruningResult
from specvlm_pruning.sequence import keep_sequence_indices

# Imported for their side effect: registering the built-in strategies.
from specvlm_pruning import verifier_guided as _verifier_guided  # noqa: E402,F401
from specvlm_pruning import strategies as _strategies  # noqa: E402,F401

__all__ = [
    "PruningResult",
    "aliases",
    "available",
    "budget",
    "canonical",
    "keep_sequence_indices",
    "needs_scores",
    "prune",
    "register",
    "select",
]
