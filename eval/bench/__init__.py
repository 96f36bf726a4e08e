"""``specvlm bench``: decode speed of every method on the same inputs, in one process, after warm-up.

The bench lives in :mod:`eval.bench.pair`; this package re-exports its public names.
"""

from eval.bench.pair import (
    ANSWER_MAX_NEW_TOKENS,
    ANSWER_QUESTIONS,
    ANSWER_RUNS,
    OP_GROUPS,
    REAL_SHAPES,
    RUNS,
    SELF_DRAFT_RUNS,
    WORKLOADS,
    BenchReport,
    RunResult,
    bench_pair,
    bench_sample,
    bench_shapes,
    build_text_model,
    busy,
    decode_macs,
    draft_cost,
    fastest,
    format_report,
    forward_cost,
    level_widths,
    machine_description,
    project,
    run_answers,
    run_engine,
    run_hf_assisted,
    step_profile,
    structures,
    weight_bytes,
)

__all__ = [
    "ANSWER_MAX_NEW_TOKENS", "ANSWER_QUESTIONS", "ANSWER_RUNS", "OP_GROUPS", "REAL_SHAPES", "RUNS", "SELF_DRAFT_RUNS",
    "WORKLOADS", "BenchReport", "RunResult", "bench_pair", "bench_sample", "bench_shapes", "build_text_model", "busy",
    "decode_macs", "draft_cost", "fastest", "format_report", "forward_cost", "level_widths", "machine_description",
    "project", "run_answers", "run_engine", "run_hf_assisted", "step_profile", "structures", "weight_bytes",
]  # fmt: skip
