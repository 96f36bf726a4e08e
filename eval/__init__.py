"""The SpecVLM evaluation harness: a benchmark x method matrix from a YAML config.

    specvlm-eval tiny --limit 2                       # or: python -m specvlm_eval configs/tiny.yaml
    specvlm-eval synthetic --set generation.max_new_tokens=64 --output runs/synth

Modules: ``config`` (typed, validated YAML), ``datasets`` (local benchmark layouts -> samples),
``models`` (model references, engine loading), ``methods`` (ar / sd / specvlm / hf-assisted on one
sample), ``metrics`` (definitions and aggregation), ``results`` (durable, resumable JSONL),
``distributed`` (ranks, sharding, barrier), ``runner`` (the loop), ``report`` (tables and plots),
``cli``, and ``bench`` (``specvlm bench``: decode speed of every method in one process). Layering:
``eval`` imports the core and the zoo; in ``specvlm`` only the command line imports ``eval``
(tests/test_layout.py checks it).
"""

from specvlm_eval.config import ConfigError, EvalConfig, load_config
from specvlm_eval.runner import RunOutcome, run

__all__ = ["ConfigError", "EvalConfig", "RunOutcome", "load_config", "run"]
