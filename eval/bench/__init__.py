"""``specvlm bench``: decode speed of every method on the same inputs, in one process, after warm-up.

One module per job:

* :mod:`specvlm_eval.bench.pair`: the CPU bench of a pair (the default): every method, the self-draft and the short
  answers on one held-out synthetic video, in interleaved rounds; its per-step costs at the real contexts;
* :mod:`specvlm_eval.bench.workloads`: what those rounds run (the methods, the self-drafting runs, the short answers);
* :mod:`specvlm_eval.bench.contention`: CPU-bound processes beside the rounds (``--contention``);
* :mod:`specvlm_eval.bench.costs`: per-step costs (plain step, verification, drafting), the operator profile, the
  time inside model forwards, and the speedup those costs project;
* :mod:`specvlm_eval.bench.results` and :mod:`specvlm_eval.bench.report`: the figures and their text report;
* :mod:`specvlm_eval.bench.shapes`: ``--device cuda``, real-shape random-weight text models and their projected speedup.

This package re-exports the public names of its modules.

What this package deliberately does not do: check quality (``python -m specvlm.zoo.evaluate`` does)
or run datasets (``specvlm-eval`` does).
"""

from specvlm_eval.bench.contention import busy
from specvlm_eval.bench.costs import (
    OP_GROUPS,
    ForwardClock,
    decode_macs,
    draft_cost,
    forward_cost,
    level_widths,
    project,
    step_profile,
    structures,
    weight_bytes,
)
from specvlm_eval.bench.pair import bench_pair, bench_sample, fastest, run_answers, run_engine, run_hf_assisted
from specvlm_eval.bench.report import format_report, machine_description
from specvlm_eval.bench.results import BenchReport, RunResult
from specvlm_eval.bench.shapes import REAL_SHAPES, bench_shapes, build_text_model
from specvlm_eval.bench.workloads import (
    ANSWER_MAX_NEW_TOKENS,
    ANSWER_QUESTIONS,
    ANSWER_RUNS,
    RUNS,
    SELF_DRAFT_RUNS,
    WORKLOADS,
)

__all__ = [
    "ANSWER_MAX_NEW_TOKENS", "ANSWER_QUESTIONS", "ANSWER_RUNS", "OP_GROUPS", "REAL_SHAPES", "RUNS", "SELF_DRAFT_RUNS",
    "WORKLOADS", "BenchReport", "ForwardClock", "RunResult", "bench_pair", "bench_sample", "bench_shapes",
    "build_text_model", "busy", "decode_macs", "draft_cost", "fastest", "format_report", "forward_cost",
    "level_widths", "machine_description", "project", "run_answers", "run_engine", "run_hf_assisted",
    "step_profile", "structures", "weight_bytes",
]  # fmt: skip
