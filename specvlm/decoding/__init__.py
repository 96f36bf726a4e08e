"""Decoding: the one speculative loop and its parts.

* :mod:`~specvlm.decoding.loop` — prefill (target, draft) and the loop: propose -> verify -> commit;
* :mod:`~specvlm.decoding.drafting` — the draft proposes a chain, a static tree or a dynamic tree;
* :mod:`~specvlm.decoding.trees` — tree shapes, buffers and masks;
* :mod:`~specvlm.decoding.verify` — acceptance rules (greedy, lossless speculative sampling), pure;
* :mod:`~specvlm.decoding.sampling` — temperature / top-k / top-p as transformers applies them.
"""
