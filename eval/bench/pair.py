"""``specvlm bench`` on a pair (CPU mode, the default): decode speed of every method on the same inputs, in
one process, after warm-up.

It runs the embedded trained pair (or ``--target``/``--draft``) on one held-out synthetic video with at
least ``--min-video-tokens`` video tokens:

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

What this module deliberately does not do: check quality (``python -m specvlm.zoo.evaluate`` does)
or run datasets (``specvlm-eval`` does).
"""

from __future__ import annotations

import logging

import torch
from specvlm.decoding.drafters.overlap import TRIALS
from specvlm.adaptation import COMPILE_AFTER_ANSWERS
from specvlm.timing import Timer

from specvlm_eval.bench.contention import busy
from specvlm_eval.bench.costs import ForwardClock, decode_macs, draft_cost, forward_cost, step_profile, structures, weight_bytes
from specvlm_eval.bench.report import machine_description
from specvlm_eval.bench.results import BenchReport, RunResult
from specvlm_eval.bench.workloads import ANSWER_MAX_NEW_TOKENS, ANSWER_QUESTIONS, ANSWER_RUNS, RUNS, SELF_DRAFT_RUNS, WORKLOADS
from specvlm_eval.methods import generation_settings

logger = logging.getLogger(__name__)


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
    with ForwardClock(adapters) as clock:
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
        overlap_runs=int(s.overlap),
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
        overlap_runs=sum(r.overlap_runs for r in runs),
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


def _round(engine, own, names, inputs, questions, max_new_tokens, drop_rate, refs: dict) -> dict[str, RunResult]:
    """Every run in ``names`` once, in turn. ``refs`` holds the tokens every later run is held to: the caption's
    ``ar`` ids (``"caption"``) and the short answers' (``"answers"``), set by the first round that runs them."""
    runs = {}
    for name in names:
        runner = own if name in SELF_DRAFT_RUNS or ANSWER_RUNS.get(name) in SELF_DRAFT_RUNS else engine
        if name == "hf-assisted":
            run = run_hf_assisted(engine, inputs, max_new_tokens, refs.get("caption"))
        elif name in ANSWER_RUNS:
            run, ids = run_answers(runner, questions, name, drop_rate, refs.get("answers"))
            if name == "answers:ar":
                refs.setdefault("answers", ids)
                run.identical_to_ar = ids == refs["answers"]
        else:
            run, ids = run_engine(runner, inputs, name, max_new_tokens, drop_rate, refs.get("caption"))
            if name == "ar":
                refs.setdefault("caption", ids)
                run.identical_to_ar = ids == refs["caption"]
        runs[name] = run
    return runs


def _auto_rows(names) -> list[str]:
    """The runs of ``names`` whose overlap the engine decides (``overlap="auto"``): every run on the bench's
    engine that leaves ``overlap`` to the engine and drafts a chain with the draft model."""
    rows = []
    for name in names:
        settings = RUNS.get(ANSWER_RUNS.get(name, name))
        if settings is None or name in SELF_DRAFT_RUNS or ANSWER_RUNS.get(name) in SELF_DRAFT_RUNS:
            continue
        if "overlap" not in settings and settings["method"] in ("sd", "specvlm") and settings.get("tree") == "chain":
            rows.append(name)
    return rows


def settle(engine, names, inputs, questions, max_new_tokens, drop_rate, passes: int = COMPILE_AFTER_ANSWERS + 2 * TRIALS) -> int:
    """Untimed answers of the runs whose overlap the engine decides (:func:`_auto_rows`), a pass of each in turn,
    until ``overlap="auto"`` has decided every workload it tried (at most ``passes`` passes: the engine tries
    overlap once it has drafted :data:`COMPILE_AFTER_ANSWERS` answers, then :data:`TRIALS` answers each way).
    The timed rounds then measure what the engine settled on, as a repeated workload runs. Returns the answers
    it ran."""
    rows, answers = (_auto_rows(names) if engine.config.overlap == "auto" else []), 0
    for _ in range(passes if rows else 0):
        keys = engine.overlap_choice.keys()
        if keys and all(engine.overlap_choice.decided(k) is not None for k in keys):
            break
        for name in rows:
            if name in ANSWER_RUNS:
                answers += run_answers(engine, questions, name, drop_rate)[0].answers
            else:
                run_engine(engine, inputs, name, max_new_tokens, drop_rate)
                answers += 1
    return answers


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
    """Every method on one held-out video: a warm-up round, untimed answers until ``overlap="auto"`` has
    decided (:func:`settle`), then ``repeats`` rounds of every method in turn (every other round in reverse
    order); each method's fastest run counts, and it is identical only when every run was. ``profile``: also break the plain step, the chain verification and the draft step down by operator group
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
    # Rounds: every method once per round, the first round warming up, then the answers that let overlap="auto"
    # settle (:func:`settle`). Interleaving the methods means a slow spell of the machine hits them all alike
    # instead of one method's consecutive runs.
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
    refs: dict = {}  # the warm-up round's ar tokens: the reference every later run is held to
    with busy(contention):
        _round(engine, own, names, inputs, questions, max_new_tokens, drop_rate, refs)  # warm-up (and compiles)
        report.settings["settle_answers"] = settle(engine, names, inputs, questions, max_new_tokens, drop_rate)
        for i in range(repeats):
            # every other round in reverse order: no run always follows the same one, so that what its place
            # costs or gives (a warm cache, the load the run before leaves) falls on every run alike
            order = names if i % 2 == 0 else names[::-1]
            for name, run in _round(engine, own, order, inputs, questions, max_new_tokens, drop_rate, refs).items():
                timed[name].append(run)
    ar_ids = refs.get("caption")
    for name in names:
        best = fastest(timed[name])
        best.identical_to_ar = all(r.identical_to_ar for r in timed[name])
        best.plain_runs, best.timed_runs = sum(r.plain_runs for r in timed[name]), sum(r.timed_runs for r in timed[name])
        best.overlap_runs = sum(r.overlap_runs for r in timed[name])
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
