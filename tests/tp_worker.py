"""Run by tests/test_tensor_parallel.py under ``torchrun --nproc_per_node N``: decode one prompt with the target
sharded over the N processes (``tp_size=N``) in every case given, and write rank 0's answers as JSON.

    torchrun --nproc_per_node 2 tests/tp_worker.py TARGET DRAFT OUT.json
"""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist

from specvlm import SpecVLM
from specvlm.zoo.demo import synthetic_frames

#: (name, draft kind, generate settings): every method, a chain and the 25-node tree, separate and self draft
CASES = [
    ("ar", "separate", dict(method="ar")),
    ("sd chain", "separate", dict(method="sd", tree="chain")),
    ("specvlm chain", "separate", dict(method="specvlm", tree="chain")),
    ("specvlm tree", "separate", dict(method="specvlm", tree="specvlm-25")),
    ("specvlm chain, self draft", "self", dict(method="specvlm", tree="chain")),
    ("specvlm tree, self draft", "self", dict(method="specvlm", tree="specvlm-25", self_draft_layers="all")),
    ("sampled specvlm chain", "separate", dict(method="specvlm", tree="chain", do_sample=True, temperature=1.0, seed=3)),
]
MAX_NEW = 24


def main() -> None:
    target, draft, out = sys.argv[1:4]
    world = int(os.environ["WORLD_SIZE"])
    engines = {
        "separate": SpecVLM.from_pretrained(target, draft=draft, tp_size=world, never_slower=False, compile="off"),
        "self": SpecVLM.from_pretrained(target, tp_size=world, never_slower=False, compile="off"),
    }
    for engine in engines.values():
        engine.target.generation_config.eos_token_id = None
    inputs = engines["separate"].build_inputs(synthetic_frames(num_frames=8, height=64, width=64), "Describe the video.")
    results = {}
    for name, kind, settings in CASES:
        adapter = engines[kind].target_adapter
        if (kind == "self" and not adapter.supports_self_draft) or ("tree" in name and not adapter.supports_trees):
            continue  # refused by the family (a hybrid verifies chains with a separate draft only)
        r = engines[kind].generate(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0, **settings)
        results[name] = {"ids": r.token_ids, "kept": r.stats.kept_video_tokens, "tau": r.stats.mean_accepted_tokens}
    keep = engines["separate"].draft_keep(inputs).tolist()
    layers = engines["separate"].target_adapter.language_model().layers
    sharded = sum(type(p).__name__ == "DTensor" for p in layers.parameters())  # parameters split over the ranks
    if int(os.environ["RANK"]) == 0:
        with open(out, "w") as f:
            json.dump({"results": results, "keep": keep, "sharded_parameters": sharded}, f)
    # an orderly end: a process group left to the interpreter's exit now and then aborts a rank there
    # ("terminate called without an active exception"), failing a run whose answers were all written
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
