"""Drafters: everything that proposes draft tokens, behind one interface (:class:`Drafter`).

* :mod:`.base` — the interface (``propose``, ``commit``, ``finish``) and what a step tells a drafter;
* :mod:`.model` — a draft model (a separate draft VLM on the pruned or full video, or the target itself);
* :mod:`.layer_skip` — the target drafting for itself with some of its decoder layers;
* :mod:`.prompt_lookup` — n-grams of the context, no model at all;
* :mod:`.lazy` — wraps a drafter so that it is built only once the answer is long enough;
* :mod:`.guard` — wraps a drafter so that the answer turns plain when speculation stops paying.
"""

from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.drafters.guard import Guard, Verdicts
from specvlm.decoding.drafters.layer_skip import LayerSkipDrafter
from specvlm.decoding.drafters.lazy import LazyStart
from specvlm.decoding.drafters.model import (
    ModelDrafter,
    check_self_draft_support,
    check_tree_support,
    is_chain,
    prefill_draft,
)
from specvlm.decoding.drafters.prompt_lookup import PromptLookupDrafter

__all__ = [
    "Drafter",
    "Guard",
    "LayerSkipDrafter",
    "LazyStart",
    "ModelDrafter",
    "PromptLookupDrafter",
    "Step",
    "Verdicts",
    "check_self_draft_support",
    "check_tree_support",
    "is_chain",
    "prefill_draft",
]
