"""Run one method on one prepared sample and turn what happened into a result row's metrics.

``ar`` / ``sd`` / ``specvlm`` go through ``engine.generate`` (one decoding loop for all of them, so
the baseline is measured fairly). ``hf-assisted`` is the peer users would reach for: transformers'
own ``engine.target.generate(**inputs, assistant_model=engine.draft, do_sample=False, ...)``, timed
as one call with the same device-aware timer. Every method gets the same processed inputs (same
frames), the same ``max_new_tokens`` and the same stopping rule (the target's EOS, or none when the
config sets ``ignore_eos``), greedy.

What this module deliberately does not do: catch errors (the runner decides which become error rows)
or aggregate anything.
"""

from __future__ import annotations

import logging

import torch

from specvlm_eval.config import MethodSpec
from specvlm_eval.metrics import PeakMemory

logger = logging.getLogger(__name__)


#: What eval passes to every method's generation (greedy), merged into the checkpoint's generation config.
PASSED_GENERATION = {"do_sample": False}
#: The merged generation settings every result row records (``generation_settings``).
RECORDED_GENERATION = (
    "do_sample", "max_new_tokens", "eos_token_id", "temperature", "top_k", "top_p", "min_p", "typical_p",
    "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "sequence_bias", "min_new_tokens", "min_length", "forced_bos_token_id",
    "forced_eos_token_id", "exponential_decay_length_penalty", "renormalize_logits", "remove_invalid_values", "num_beams",
)  # fmt: skip
#: Settings that only shape sampling: they do not change greedy outputs (``do_sample`` false).
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


class MethodUnavailable(RuntimeError):
    """The method cannot run with this model setup (recorded as an error row saying why)."""


def _jsonable(value):
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def generation_settings(engine, max_new_tokens: int) -> dict:
    """The effective generation settings of every method's call: what eval passes (greedy, the token cap)
    merged as stock ``generate()`` merges it with the checkpoint's own ``generation_config`` (whose
    ``repetition_penalty``, n-gram bans, minimum lengths, EOS ids apply to every method alike)."""
    from specvlm.decoding.logits import merge_generation_config

    target = engine.target
    passed = {**PASSED_GENERATION, "max_new_tokens": max_new_tokens}
    try:
        prompt = torch.zeros((1, 1), dtype=torch.long, device=target.device)
        merged, _ = merge_generation_config(target, prompt, None, **passed)
    except Exception as err:  # noqa: BLE001 - generate() reports it per row; record the checkpoint's own values
        logger.debug("merging the generation config failed (%s); recording the checkpoint's values", err)
        merged = target.generation_config
    out = {name: _jsonable(getattr(merged, name, None)) for name in RECORDED_GENERATION}
    out.update(passed)
    return out


def run_method(engine, spec: MethodSpec, inputs, max_new_tokens: int, devices) -> dict:
    """Generate once with ``spec`` and return the row's output and metric fields."""
    if spec.name == "hf-assisted":
        return _hf_assisted(engine, spec, inputs, max_new_tokens, devices)
    with PeakMemory(devices) as mem:
        result = engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method=spec.name, do_sample=False,
                                 **spec.options)  # fmt: skip
    s = result.stats
    has_draft = spec.name != "ar"
    return {
        "token_ids": list(result.token_ids),
        "text": result.text,
        "new_tokens": s.new_tokens,
        "stopped_by": s.stopped_by,
        "prefill_s": s.prefill_s,
        "decode_s": s.decode_s,
        "e2e_s": s.e2e_s,
        "ttft_s": s.ttft_s,
        "tpot_s": s.tpot_s,
        "tokens_per_s": s.new_tokens / s.e2e_s if s.e2e_s else None,
        "target_steps": s.target_steps,
        "committed_tokens": sum(s.accepted_lengths),
        "tau": s.mean_accepted_tokens if s.accepted_lengths else None,
        "tau_minus_1": s.mean_accepted_draft_tokens if s.accepted_lengths else None,
        "accepted_length_histogram": {str(k): v for k, v in s.accepted_length_histogram.items()},
        "depth_acceptance_rates": s.depth_acceptance_rates,
        "visual_tokens": s.visual_tokens,
        "kept_visual_tokens": s.kept_visual_tokens if has_draft else None,
        "target_kv_tokens": s.target_kv_tokens,
        "draft_kv_tokens": s.draft_kv_tokens if has_draft else None,
        "draft_kv_fraction": s.draft_kv_fraction if has_draft else None,
        "peak_memory_bytes": mem.bytes,
        "peak_memory_kind": mem.kind,
        "timing_split_observable": True,
    }


def _hf_assisted(engine, spec: MethodSpec, inputs, max_new_tokens: int, devices) -> dict:
    from specvlm.timing import Timer

    if engine.draft is None:
        raise MethodUnavailable(
            "hf-assisted needs a separate draft model as assistant_model, but model.draft is null (self-drafting)"
        )
    target, draft = engine.target, engine.draft
    batch = inputs.to(target.device)
    prompt_len = int(batch["input_ids"].shape[1])
    eos = target.generation_config.eos_token_id
    kwargs = dict(assistant_model=draft, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos)
    saved = None
    n = dict(spec.settings).get("num_draft_tokens")
    if n is not None:  # a fixed number of assistant tokens per step instead of transformers' heuristic
        gc = draft.generation_config
        saved = (gc.num_assistant_tokens, gc.num_assistant_tokens_schedule)
        gc.num_assistant_tokens, gc.num_assistant_tokens_schedule = n, "constant"
    timer = Timer(target.device)
    try:
        with PeakMemory(devices) as mem, torch.no_grad(), timer("generate"):
            out = target.generate(**batch, **kwargs)
    finally:
        if saved is not None:
            draft.generation_config.num_assistant_tokens, draft.generation_config.num_assistant_tokens_schedule = saved
    ids = out[0, prompt_len:].tolist()
    eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
    e2e = timer.get("generate")
    return {
        "token_ids": ids,
        "text": engine.processor.tokenizer.decode(ids, skip_special_tokens=True),
        "new_tokens": len(ids),
        "stopped_by": "eos" if ids and ids[-1] in eos_ids else "max_new_tokens",
        "prefill_s": None,
        "decode_s": None,
        "e2e_s": e2e,
        "ttft_s": None,
        "tpot_s": None,
        "tokens_per_s": len(ids) / e2e if e2e else None,
        "target_steps": None,
        "committed_tokens": None,
        "tau": None,
        "tau_minus_1": None,
        "accepted_length_histogram": None,
        "depth_acceptance_rates": None,
        "visual_tokens": None,
        "kept_visual_tokens": None,
        "target_kv_tokens": None,
        "draft_kv_tokens": None,
        "draft_kv_fraction": None,
        "peak_memory_bytes": mem.bytes,
        "peak_memory_kind": mem.kind,
        "timing_split_observable": False,
    }
