"""``specvlm bench``: decode speed of every method on the same inputs, in one process, after warm-up.

CPU mode (default) runs the embedded trained pair (or ``--target``/``--draft``) on one held-out
synthetic video with at least ``--min-video-tokens`` video tokens:

* ``ar`` (plain greedy decoding through the same loop), ``sd`` (chain draft on the full video),
  ``specvlm`` with a chain and with the 25-node tree (pruned draft), and transformers' assisted
  generation (``hf-assisted``: ``target.generate(assistant_model=draft)``, a constant number of
  assistant tokens equal to the engine's chain length);
* the self-draft (``self-draft``: the same target with ``draft=None``, default settings: layer skipping,
  ``"auto"``) on the same video;
* a short-answer workload (``answers:*``): :data:`ANSWER_QUESTIONS` multiple-choice questions about the
  same video, EOS on, each answer a few tokens, with ``ar``, ``specvlm`` (chain) and the self-draft;
* decode speedups as ratios over ``ar`` and over ``hf-assisted``, end-to-end speedups and time to first
  token over ``ar``'s (the answers' over ``answers:ar``), tau, token identity with ``ar``;
* per-step costs at the real contexts: one plain step at context L, target verification of n tokens at
  L (chain and tree), one draft step at the pruned context;
* framework overhead: the share of decode time spent outside model forwards (every adapter forward
  is timed; the rest of the loop is overhead).

``hf-assisted`` cannot report its prefill separately, so its decode time is its end-to-end time minus
the time of a one-token ``generate`` of the target and of the draft (the prefills it performs).

``--device cuda`` instead builds real-shape random-weight text models (default: a Qwen2-7B-shaped
target and a Qwen2-0.5B-shaped draft, bf16), prefills ``--context`` tokens, and reports the per-step
costs and the decode speedup projected from ``--tau`` (see :func:`project`).

What this module deliberately does not do: check quality (``python -m specvlm.zoo.evaluate`` does)
or run datasets (``specvlm-eval`` does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from specvlm.models import cache as kv
from specvlm.models.base import ModelAdapter
from specvlm.attention import causal_context, tree_context
from specvlm.config import DEFAULT_NUM_DRAFT_TOKENS
from specvlm.timing import Timer, synchronize
from specvlm.decoding.trees import SPECVLM_25, TreeStructure, chain, from_paths

from eval.methods import generation_settings

logger = logging.getLogger(__name__)

RUNS = {  # name -> engine.generate settings
    "ar": dict(method="ar"),
    "sd": dict(method="sd", tree="chain"),
    "specvlm-chain": dict(method="specvlm", tree="chain"),
    "specvlm-eager": dict(method="specvlm", tree="chain", compile="off"),  # what compiling the draft's steps buys
    "specvlm-unguarded": dict(method="specvlm", tree="chain", never_slower=False),  # what the guard saves (or costs)
    "specvlm-tree": dict(method="specvlm", tree="specvlm-25"),
    "lookup": dict(method="lookup"),  # prompt lookup: n-grams of the context, no draft model
    "self-draft": dict(method="specvlm", tree="chain"),  # on the self-drafting engine (draft=None)
}
#: Runs on the self-drafting engine: the bench's target with ``draft=None`` and the engine's settings.
SELF_DRAFT_RUNS = ("self-draft",)
#: The short-answer workload: run name -> the :data:`RUNS` entry it runs, over every question.
ANSWER_RUNS = {"answers:ar": "ar", "answers:specvlm": "specvlm-chain", "answers:self-draft": "self-draft"}
#: What ``bench_pair`` can run: the caption runs (every method on one long answer, EOS ignored), the
#: self-draft on that caption, and the short answers.
WORKLOADS = ("caption", "self-draft", "answers")
#: Multiple-choice questions of the bench video the short-answer workload asks (the issue's four).
ANSWER_QUESTIONS = 4
#: Token budget of a short answer; the answers end at EOS (an option letter and a few words) well before.
ANSWER_MAX_NEW_TOKENS = 32


@dataclass
class RunResult:
    name: str
    decode_s: float
    new_tokens: int
    tau: float | None
    identical_to_ar: bool
    divergence: dict | None = None  # specvlm.audit's classification of a run that differs from ar's tokens
    forward_s: float | None = None  # time inside model forwards during decoding
    host_syncs_per_step: float | None = None
    target_steps: int | None = None
    decode_runs_s: list[float] = field(default_factory=list)  # every timed run; ``decode_s`` is the fastest
    e2e_s: float | None = None  # prefill + decode (fastest timed run); hf-assisted: its whole generate()
    ttft_s: float | None = None  # time to first token (fastest timed run); None for hf-assisted
    answers: int | None = None  # short-answer runs: answers summed in this run
    skipped: int | None = None  # short-answer runs: answers whose lazily started draft was never prefilled
    plain_runs: int = 0  # timed runs the never-slower guard turned plain (in the answer, or by a remembered verdict)
    timed_runs: int = 0  # timed runs (answers of a short-answer run count one each)

    @property
    def spread(self) -> float | None:
        """Slowest timed run over the fastest, minus one (run-to-run variation of the decode time)."""
        if len(self.decode_runs_s) < 2 or min(self.decode_runs_s) <= 0:
            return None
        return max(self.decode_runs_s) / min(self.decode_runs_s) - 1.0

    @property
    def overhead(self) -> float | None:
        """Share of decode time outside model forwards."""
        if self.forward_s is None or not self.decode_s:
            return None
        return max(0.0, 1.0 - self.forward_s / self.decode_s)


@dataclass
class BenchReport:
    machine: str
    settings: dict
    runs: dict[str, RunResult] = field(default_factory=dict)
    step_costs_ms: dict[str, float] = field(default_factory=dict)
    draft_over_target: dict[str, float] = field(default_factory=dict)  # per-token decode cost ratios
    step_profile_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # step -> operator group -> ms
    weight_mb: dict[str, float] = field(default_factory=dict)  # model -> MB of weights read per decode step

    def speedups(self) -> dict[str, dict[str, float]]:
        """Decode-time ratios: baseline time / run time, for baselines ``ar`` and ``hf-assisted`` (the
        short answers' baseline is ``answers:ar``)."""
        out = {}
        for base in ("ar", "hf-assisted"):
            if base in self.runs:
                ref = self.runs[base].decode_s
                out[base] = {
                    n: ref / r.decode_s
                    for n, r in self.runs.items()
                    if n != base and r.decode_s > 0 and not n.startswith("answers:")
                }
        if "answers:ar" in self.runs:
            ref = self.runs["answers:ar"].decode_s
            out["answers:ar"] = {n: ref / r.decode_s for n, r in self.runs.items() if n in ANSWER_RUNS and r.decode_s > 0}
        return out

    def over_ar(self, name: str, metric: str) -> float | None:
        """``metric`` ("e2e": ar's end-to-end time / the run's; "ttft": the run's time to first token /
        ar's) of run ``name`` against its workload's ``ar`` run; None where a time is missing."""
        base = self.runs.get("answers:ar" if name in ANSWER_RUNS else "ar")
        run = self.runs[name]
        if base is None:
            return None
        if metric == "e2e":
            return base.e2e_s / run.e2e_s if base.e2e_s and run.e2e_s else None
        return run.ttft_s / base.ttft_s if base.ttft_s and run.ttft_s is not None else None

    def to_dict(self) -> dict:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "runs": {n: {**asdict(r), "overhead": r.overhead, "spread": r.spread} for n, r in self.runs.items()},
            "speedup_over": self.speedups(),
            "e2e_speedup_over_ar": {n: self.over_ar(n, "e2e") for n in self.runs},
            "ttft_over_ar": {n: self.over_ar(n, "ttft") for n in self.runs},
            "step_costs_ms": self.step_costs_ms,
            "draft_over_target": self.draft_over_target,
            "step_profile_ms": self.step_profile_ms,
            "weight_mb": self.weight_mb,
        }


def machine_description(device: torch.device) -> str:
    import os
    import platform

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


class _ForwardClock:
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


def bench_sample(engine, min_video_tokens: int, seed: int):
    """A held-out synthetic video with at least ``min_video_tokens`` video tokens, and its inputs."""
    from specvlm.zoo import synthetic

    side = engine.target.config.vision_config.image_size
    per_frame = engine.build_inputs(
        synthetic.generate_sample(seed, num_frames=synthetic.MIN_NUM_FRAMES, height=side, width=side).frames,
        synthetic.CAPTION_PROMPT,
    )
    layout = engine.target_adapter.layout(per_frame)
    frames = max(synthetic.MIN_NUM_FRAMES, -(-min_video_tokens * synthetic.MIN_NUM_FRAMES // layout.num_tokens))
    sample = synthetic.generate_sample(seed, num_frames=frames, height=side, width=side, min_objects=4)
    inputs = engine.build_inputs(sample.frames, synthetic.CAPTION_PROMPT, num_frames=frames)
    return sample, inputs


def run_engine(
    engine, inputs, name: str, max_new_tokens: int, drop_rate: float, ar_ids=None, ignore_eos: bool = True
) -> tuple[RunResult, list[int]]:
    settings = dict(RUNS[name])
    if settings["method"] == "specvlm":
        settings["drop_rate"] = drop_rate
    adapters = [engine.target_adapter] + ([engine.draft_adapter] if engine.draft_adapter is not None and name != "ar" else [])
    with _ForwardClock(adapters) as clock:
        result = engine.generate(
            inputs=inputs, max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, do_sample=False, **settings
        )
    s = result.stats
    forward_s = clock.seconds
    run = RunResult(
        name=name,
        decode_s=s.decode_s,
        new_tokens=s.new_tokens,
        tau=s.mean_accepted_tokens if s.accepted_lengths else None,
        identical_to_ar=ar_ids is None or result.token_ids == ar_ids,
        forward_s=forward_s,
        host_syncs_per_step=s.host_syncs / max(s.target_steps, 1),
        target_steps=s.target_steps,
        e2e_s=s.e2e_s,
        ttft_s=s.ttft_s,
        skipped=int(s.speculation_skipped),
        plain_runs=int(s.speculation in ("fell_back", "remembered_plain")),
        timed_runs=1,
    )
    return run, result.token_ids


def run_answers(engine, questions: list, name: str, drop_rate: float, ar_ids=None) -> tuple[RunResult, list[list[int]]]:
    """Short-answer run ``name`` (an :data:`ANSWER_RUNS` key) over every prepared question's inputs, EOS on:
    times and tokens summed over the answers (tau: over every verification step); identical when every
    answer equals ``ar_ids``' (the ``answers:ar`` run's answers)."""
    runs, ids = [], []
    for inputs in questions:
        run, tokens = run_engine(engine, inputs, ANSWER_RUNS[name], ANSWER_MAX_NEW_TOKENS, drop_rate, ignore_eos=False)
        runs.append(run)
        ids.append(tokens)
    steps = sum(r.target_steps or 0 for r in runs)
    total = RunResult(
        name=name,
        decode_s=sum(r.decode_s for r in runs),
        new_tokens=sum(r.new_tokens for r in runs),
        tau=sum(r.new_tokens - 1 for r in runs) / steps if steps else None,  # the first token is the prefill's
        identical_to_ar=ar_ids is None or ids == ar_ids,
        forward_s=sum(r.forward_s or 0.0 for r in runs),
        host_syncs_per_step=sum((r.host_syncs_per_step or 0) * (r.target_steps or 0) for r in runs) / max(steps, 1),
        target_steps=steps,
        e2e_s=sum(r.e2e_s for r in runs),
        ttft_s=sum(r.ttft_s for r in runs),
        answers=len(runs),
        skipped=sum(r.skipped or 0 for r in runs),
        plain_runs=sum(r.plain_runs for r in runs),
        timed_runs=len(runs),
    )
    return total, ids


def _classify(engine, inputs, ar_ids: list[int], name: str, max_new_tokens: int, drop_rate: float) -> dict:
    """A run that differs from ar's tokens: a near-tie of the target's scores or a mismatch (specvlm.audit)."""
    if name == "hf-assisted":
        ids = run_hf_assisted(engine, inputs, max_new_tokens, ar_ids, return_ids=True)
    else:
        _, ids = run_engine(engine, inputs, name, max_new_tokens, drop_rate, ar_ids)
    verdict = engine.audit(inputs, ar_ids, ids, do_sample=False, max_new_tokens=max_new_tokens)
    (logger.error if verdict.verdict == "mismatch" else logger.warning)("%s differs from ar: %s", name, verdict)
    return verdict.to_dict()


def run_hf_assisted(engine, inputs, max_new_tokens: int, ar_ids, return_ids: bool = False):
    """transformers' assisted generation with the engine's draft, proposing a constant
    ``engine.config.num_draft_tokens`` tokens per step (the engine's chain length)."""
    target, draft = engine.target, engine.draft
    batch = inputs.to(target.device)
    prompt_len = int(batch["input_ids"].shape[1])
    gc = draft.generation_config
    saved = (gc.num_assistant_tokens, gc.num_assistant_tokens_schedule)
    gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = engine.config.num_draft_tokens, "constant"
    timer = Timer(target.device)
    common = dict(do_sample=False, eos_token_id=[], pad_token_id=target.generation_config.pad_token_id)
    try:
        with torch.no_grad():
            with timer("prefill_target"):
                target.generate(**batch, max_new_tokens=1, **common)
            with timer("prefill_draft"):
                draft.generate(**batch, max_new_tokens=1, **common)
            with timer("assisted"):
                out = target.generate(**batch, assistant_model=draft, max_new_tokens=max_new_tokens, **common)
    finally:
        gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = saved
    ids = out[0, prompt_len:].tolist()
    if return_ids:
        return ids
    decode = timer.get("assisted") - timer.get("prefill_target") - timer.get("prefill_draft")
    return RunResult(
        name="hf-assisted", decode_s=decode, new_tokens=len(ids), tau=None, identical_to_ar=ids == ar_ids,
        e2e_s=timer.get("assisted"),
    )  # fmt: skip


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
    """Median ms of one forward of ``seq`` (a decoding Sequence) over a root token plus the nodes of
    ``structure`` under its tree mask (``None``: the root alone, a plain decode step); the cache is
    rolled back after each forward."""
    run = _step(seq, structure)
    with torch.no_grad():
        run()  # warm-up
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
    shapes = {"chain": chain(chain_length), "specvlm-25": from_paths(SPECVLM_25)}
    return {name: TreeStructure.of([int(p) for p in shape.parents]) for name, shape in shapes.items()}


# ---------------------------------------------------------------------------------------------- CPU / trained pair


def fastest(runs: list[RunResult]) -> RunResult:
    """The fastest of ``runs`` (at least one), carrying every run's decode time in ``decode_runs_s``."""
    if not runs:
        raise ValueError("need at least one timed run (repeats >= 1)")
    best = min(runs, key=lambda r: r.decode_s)
    best.decode_runs_s = [r.decode_s for r in runs]
    for metric in ("e2e_s", "ttft_s"):  # each time its own fastest run, as the decode time
        times = [getattr(r, metric) for r in runs if getattr(r, metric) is not None]
        setattr(best, metric, min(times) if times else None)
    return best


def _rounds(engine, own, names, timed, inputs, questions, max_new_tokens, drop_rate, repeats) -> list[int] | None:
    """A warm-up round, then ``repeats`` rounds of every run in ``names`` in turn (appended to ``timed``);
    returns the caption's ``ar`` ids (the warm-up round's: the reference every later run is held to)."""
    ar_ids = answer_ids = None
    for attempt in range(repeats + 1):
        for name in names:
            runner = own if name in SELF_DRAFT_RUNS or ANSWER_RUNS.get(name) in SELF_DRAFT_RUNS else engine
            if name == "hf-assisted":
                run = run_hf_assisted(engine, inputs, max_new_tokens, ar_ids)
            elif name in ANSWER_RUNS:
                run, ids = run_answers(runner, questions, name, drop_rate, answer_ids)
                if name == "answers:ar" and answer_ids is None:
                    answer_ids = ids
                    run.identical_to_ar = True
            else:
                run, ids = run_engine(runner, inputs, name, max_new_tokens, drop_rate, ar_ids)
                if name == "ar":  # the warm-up round's ids are the reference every later run is held to
                    if ar_ids is None:
                        ar_ids = ids
                    run.identical_to_ar = ids == ar_ids
            if attempt:
                timed[name].append(run)
    return ar_ids


@contextlib.contextmanager
def busy(processes: int, limit_s: float = 3600.0):
    """``processes`` CPU-bound Python processes (each spinning a loop) running while the block runs: the
    contention of a shared machine. Each also ends by itself after ``limit_s`` seconds, whatever happens here."""
    import subprocess
    import sys

    if processes < 0:
        raise ValueError(f"contention={processes!r} must be >= 0 processes")
    code = f"import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end:\n    pass\n"
    spinning = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in spinning:
            proc.terminate()
        for proc in spinning:
            proc.wait()


def bench_pair(
    engine,
    *,
    max_new_tokens: int = 128,
    min_video_tokens: int = 1024,
    drop_rate: float = 0.9,
    repeats: int = 3,
    seed: int = 1 << 30,
    hf_assisted: bool = True,
    profile: bool = False,
    workloads: tuple[str, ...] = WORKLOADS,
    contention: int = 0,
) -> BenchReport:
    """Every method on one held-out video: a warm-up round, then ``repeats`` rounds of every method in
    turn; each method's fastest run counts, and it is identical only when every run was. ``profile``:
    also break the plain step, the chain verification and the draft step down by operator group
    (:func:`step_profile`) and report the weights each model reads per decode step. ``workloads``: which
    of :data:`WORKLOADS` run (the caption's ``ar`` runs with any of the first two). ``contention``: that many
    CPU-bound processes run beside every round (:func:`busy`), so that the ratios are those of a busy machine;
    the per-step costs are measured after they stop."""
    from specvlm import SpecVLM
    from specvlm.zoo import synthetic

    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown or not workloads:
        raise ValueError(f"workloads={list(workloads)!r}; choose one or more of {', '.join(WORKLOADS)}")
    if engine.draft is None:
        raise ValueError("the bench needs a separate draft model (sd, specvlm chain/tree and hf-assisted use it)")
    sample, inputs = bench_sample(engine, min_video_tokens, seed)
    own = SpecVLM(engine.target, engine.processor, draft=None, config=engine.config)  # the self-draft, same weights
    questions = [
        engine.build_inputs(sample.frames, synthetic.question_prompt(q), num_frames=len(sample.frames))
        for q in sample.questions[:ANSWER_QUESTIONS]
    ] if "answers" in workloads else []  # fmt: skip
    report = BenchReport(
        machine=machine_description(engine.target_adapter.device),
        settings=dict(max_new_tokens=max_new_tokens, drop_rate=drop_rate, repeats=repeats, seed=seed,
                      num_draft_tokens=engine.config.num_draft_tokens, ignore_eos=True, compile=engine.config.compile,
                      contention=contention),
    )  # fmt: skip
    # Rounds: every method once per round, the first round warming up. Interleaving the methods means a
    # slow spell of the machine hits them all alike instead of one method's consecutive runs.
    names = []
    if "caption" in workloads or "self-draft" in workloads:
        names.append("ar")
    if "caption" in workloads:
        names += [n for n in RUNS if n != "ar" and n not in SELF_DRAFT_RUNS] + (["hf-assisted"] if hf_assisted else [])
    if "self-draft" in workloads:
        names += list(SELF_DRAFT_RUNS)
    if "answers" in workloads:
        names += list(ANSWER_RUNS)
    report.settings["workloads"] = list(workloads)
    if questions:
        report.settings["answers"] = dict(questions=len(questions), max_new_tokens=ANSWER_MAX_NEW_TOKENS, eos=True)
    timed: dict[str, list[RunResult]] = {name: [] for name in names}
    report.settings["generation"] = {**generation_settings(engine, max_new_tokens), "eos_token_id": None}
    with busy(contention):
        ar_ids = _rounds(engine, own, names, timed, inputs, questions, max_new_tokens, drop_rate, repeats)
    for name in names:
        best = fastest(timed[name])
        best.identical_to_ar = all(r.identical_to_ar for r in timed[name])
        best.plain_runs, best.timed_runs = sum(r.plain_runs for r in timed[name]), sum(r.timed_runs for r in timed[name])
        if not best.identical_to_ar and name not in ANSWER_RUNS:
            runner = own if name in SELF_DRAFT_RUNS else engine
            best.divergence = _classify(runner, inputs, ar_ids, name, max_new_tokens, drop_rate)
        report.runs[name] = best
        logger.info("%s: decode %.3f s, tau %s", name, best.decode_s, best.tau)

    # per-step costs at the real contexts (first decoded position), medians of at least 30 forwards
    target = engine.prefill_target(inputs, "specvlm", drop_rate=drop_rate)
    draft_seq = engine.prefill_draft(inputs, target, "specvlm", drop_rate=drop_rate)
    full_seq = engine.prefill_draft(inputs, target, "sd")
    target.seq.compiled = engine.config.compile == "all"
    draft_seq.compiled = full_seq.compiled = engine.draft_compiled  # the steps as the timed runs ran them
    n = max(30, 10 * repeats)
    shapes = structures(engine.config.num_draft_tokens)
    costs = {"context_target": target.seq.prefix, "context_draft_pruned": draft_seq.prefix, "video_tokens": target.layout.num_tokens}
    costs["plain_step"] = forward_cost(target.seq, None, n)
    for name, st in shapes.items():
        costs[f"verify_{name}_{st.parents.numel() + 1}_tokens"] = forward_cost(target.seq, st, n)
    costs["draft_step_pruned"] = forward_cost(draft_seq, None, n)
    costs["draft_step_full"] = forward_cost(full_seq, None, n)
    for name, st in shapes.items():
        costs[f"draft_{name}_pruned"] = draft_cost(draft_seq, st, n)
    report.step_costs_ms = costs
    context = target.seq.prefix
    report.draft_over_target = {
        "time": costs["draft_step_full"] / costs["plain_step"],
        "arithmetic": decode_macs(engine.draft.config.get_text_config(), context)
        / decode_macs(engine.target.config.get_text_config(), context),
    }
    if not profile:
        return report
    chain_name = f"verify_chain_{shapes['chain'].parents.numel() + 1}_tokens"
    report.step_profile_ms = {
        "plain_step": step_profile(target.seq, None, n),
        chain_name: step_profile(target.seq, shapes["chain"], n),
        "draft_step_pruned": step_profile(draft_seq, None, n),
    }
    report.weight_mb = {"target": weight_bytes(target.seq.adapter) / 2**20, "draft": weight_bytes(draft_seq.adapter) / 2**20}
    return report


def _verdict(run: RunResult) -> str:
    """The identical column: True, or False with the divergence's class (a mismatch is a bug) and margin."""
    if run.identical_to_ar:
        return "True"
    d = run.divergence or {}
    verdict = d.get("verdict", "unclassified")
    if d.get("margin") is None:
        return f"False ({verdict})"
    return f"False ({verdict} at token {d['position']}: margin {d['margin']:.3g}, tolerance {d['tolerance']:.3g})"


def format_report(report: BenchReport) -> str:
    lines = [f"machine: {report.machine}", f"settings: {json.dumps(report.settings)}", ""]
    if report.settings.get("contention"):
        lines.insert(2, f"contention: {report.settings['contention']} CPU-bound processes ran beside every timed run")
    lines.append("plain: timed runs the never-slower guard decoded plainly (fell back in the answer, or a remembered verdict)")
    lines.append(
        f"{'method':<15}{'decode s':>10}{'spread':>8}{'tokens':>8}{'tau':>7}{'x ar':>8}{'x hf':>8}{'e2e x ar':>10}"
        f"{'TTFT/ar':>9}{'overhead':>10}{'syncs/step':>12}{'plain':>7}  identical"
    )
    speed = report.speedups()

    def ratio(value) -> str:
        return f"{value:.2f}" if value is not None else "-"

    for name, r in report.runs.items():
        if name in ANSWER_RUNS:
            continue
        over_ar = speed.get("ar", {}).get(name, 1.0 if name == "ar" else float("nan"))
        over_hf = speed.get("hf-assisted", {}).get(name, 1.0 if name == "hf-assisted" else float("nan"))
        tau = f"{r.tau:.2f}" if r.tau is not None else "-"
        overhead = f"{100 * r.overhead:.1f}%" if r.overhead is not None else "-"
        syncs = f"{r.host_syncs_per_step:.2f}" if r.host_syncs_per_step is not None else "-"
        spread = f"+{100 * r.spread:.0f}%" if r.spread is not None else "-"
        lines.append(
            f"{name:<15}{r.decode_s:>10.3f}{spread:>8}{r.new_tokens:>8}{tau:>7}{over_ar:>8.2f}{over_hf:>8.2f}"
            f"{ratio(report.over_ar(name, 'e2e')):>10}{ratio(report.over_ar(name, 'ttft')):>9}{overhead:>10}{syncs:>12}"
            f"{f'{r.plain_runs}/{r.timed_runs}':>7}  {_verdict(r)}"
        )
    answers = [name for name in report.runs if name in ANSWER_RUNS]
    if answers:
        lines.append("")
        lines.append(
            f"short answers ({report.runs[answers[0]].answers} multiple-choice questions about the same video, EOS on; "
            "times summed over the answers):"
        )
        lines.append(f"{'method':<20}{'e2e s':>8}{'TTFT s':>8}{'decode s':>10}{'tokens':>8}{'e2e x ar':>10}{'TTFT/ar':>9}{'decode x ar':>13}{'draft skipped':>15}  identical")
        for name in answers:
            r = report.runs[name]
            decode = report.runs["answers:ar"].decode_s / r.decode_s if "answers:ar" in report.runs and r.decode_s else None
            lines.append(
                f"{name:<20}{r.e2e_s:>8.3f}{r.ttft_s:>8.3f}{r.decode_s:>10.3f}{r.new_tokens:>8}{ratio(report.over_ar(name, 'e2e')):>10}"
                f"{ratio(report.over_ar(name, 'ttft')):>9}{ratio(decode):>13}{f'{r.skipped}/{r.answers}':>15}  {r.identical_to_ar}"
            )
    lines.append("")
    lines.append("per-step costs (ms, medians): " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in report.step_costs_ms.items()))
    if report.draft_over_target:
        ratio = report.draft_over_target
        lines.append(
            f"draft decode step / target decode step at the target's context: {100 * ratio['time']:.0f}% of the time, "
            f"{100 * ratio['arithmetic']:.1f}% of the multiply-accumulates"
        )
    if report.step_profile_ms:
        lines.append("where a step's time goes (ms per forward, operators' self time under torch.profiler):")
        for step, groups in report.step_profile_ms.items():
            total = sum(groups.values())
            parts = ", ".join(f"{g} {ms:.2f} ({100 * ms / total:.0f}%)" for g, ms in groups.items())
            lines.append(f"  {step}: {parts}")
    if report.weight_mb:
        text = ", ".join(f"{m} {mb:.1f} MB" for m, mb in report.weight_mb.items())
        plain = report.step_profile_ms.get("plain_step", {}).get("matmul")
        if plain and "target" in report.weight_mb:
            rate = report.weight_mb["target"] * 2**20 / (plain / 1e3) / 1e9
            text += f" (the target's, over its plain step's matmul time: {rate:.1f} GB/s)"
        lines.append("weights read per decode step: " + text)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- real shapes (GPU)

REAL_SHAPES = {  # text decoders of real checkpoints (random weights: costs depend on shapes only)
    # Qwen2 family: LLaVA-OneVision 72B/7B/0.5B, Qwen2-VL, Qwen2.5-VL 7B / 3B drafts
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064),
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=152064),
    # Qwen3 family (q/k norms, head_dim 128): Qwen3-VL 32B / 8B / 2B; InternVL3.5-38B (Qwen3-32B) / -1B (Qwen3-0.6B)
    "qwen3-32b": dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                      num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}  # fmt: skip


class _TextAdapter(ModelAdapter):
    """The model adapter for a stock text-only causal LM: the decode loop's interface, no video hooks."""

    family = "text"

    def language_model(self):
        return self.model.model


def build_text_model(shape: str, device, dtype):
    """A stock ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM`` (``qwen3-*`` shapes) with random weights of the
    named shape, using the specvlm attention hook."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from specvlm.attention import register

    if shape not in REAL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(REAL_SHAPES)}")
    config_class, model_class = (Qwen3Config, Qwen3ForCausalLM) if shape.startswith("qwen3") else (Qwen2Config, Qwen2ForCausalLM)
    config = config_class(**REAL_SHAPES[shape], max_position_embeddings=65536, tie_word_embeddings=False)
    config._attn_implementation = register()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _prefilled(model, context: int, chunk: int = 4096):
    """A decoding Sequence over ``context`` random-embedding tokens (prefilled in chunks)."""
    from specvlm.attention import AttentionContext, resolve_backend
    from specvlm.decoding.loop import Sequence

    adapter = _TextAdapter(model)
    backend = resolve_backend("auto", adapter.device)
    cache = kv.new_cache(model.config)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for start in range(0, context, chunk):
            n = min(chunk, context - start)
            embeds = torch.randn(1, n, hidden, device=adapter.device, dtype=adapter.dtype) * 0.02
            pos = torch.arange(start, start + n, device=adapter.device).unsqueeze(0)
            ctx = AttentionContext(backend=backend) if start == 0 else causal_context(n, start + n, adapter.device, backend=backend)
            adapter.forward(embeds, pos, cache, ctx, logits_to_keep=1)
    return Sequence(adapter, cache, prefix=context, next_pos=context, axes=1, backend=backend)


def bench_shapes(
    target_shape: str = "qwen2-7b",
    draft_shape: str = "qwen2-0.5b",
    *,
    context: int = 16384,
    keep: float = 0.1,
    tau: float = 4.0,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    repeats: int = 20,
    chain_length: int = DEFAULT_NUM_DRAFT_TOKENS,
) -> dict:
    """Per-step costs of real-shape random-weight models at ``context`` tokens (the draft at
    ``keep * context``) and the decode speedup they project for ``tau`` tokens per step (a chain of
    ``chain_length`` draft tokens, and the 25-node tree)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep!r} must be in (0, 1]")
    shapes = structures(chain_length)
    out: dict = {"target": target_shape, "draft": draft_shape, "context": context, "draft_context": max(1, int(context * keep)),
                 "dtype": str(dtype).replace("torch.", ""), "device": device, "tau": tau}  # fmt: skip
    target = build_text_model(target_shape, device, dtype)
    seq = _prefilled(target, context)
    costs = {"plain_step": forward_cost(seq, None, repeats)}
    for name, st in shapes.items():
        costs[f"verify_{name}_{st.parents.numel() + 1}_tokens"] = forward_cost(seq, st, repeats)
    del seq, target
    if device == "cuda":
        torch.cuda.empty_cache()
    draft = build_text_model(draft_shape, device, dtype)
    dseq = _prefilled(draft, out["draft_context"])
    costs["draft_step"] = forward_cost(dseq, None, repeats)
    for name, st in shapes.items():
        costs[f"draft_{name}"] = draft_cost(dseq, st, repeats)
    out["step_costs_ms"] = costs
    out["verify_tree_over_plain"] = costs["verify_specvlm-25_26_tokens"] / costs["plain_step"]
    out["projected_speedup"] = {
        name: project(tau, costs["plain_step"], costs[f"verify_{name}_{st.parents.numel() + 1}_tokens"], costs[f"draft_{name}"])
        for name, st in shapes.items()
    }
    return out
