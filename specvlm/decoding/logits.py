"""How the target chooses its next token at one position, exactly as its own ``generate()`` chooses it.

A checkpoint ships a generation config (Qwen2.5-VL-Instruct: ``repetition_penalty`` 1.05, ``do_sample``
with ``top_k`` 1, ...) that stock ``model.generate(**inputs)`` merges with the call's own arguments
and turns into a list of logits processors: transformers' own classes, built by the model's own
``_get_logits_processor``, so that nothing is re-implemented here. :class:`NextTokenRule` applies that
list at any position with that position's own prefix (the prompt ids, the committed tokens and, for a
verified tree node, the drafted tokens on its path), so verification sees at every node exactly the
scores stock decoding would see there: greedy takes their argmax, sampling their softmax.

The draft's proposal distribution q need not match anything (verification corrects it), but the closer
it is to the target's choice the more drafted tokens are accepted: when the processors read the prefix,
the draft's logits at every drafted node go through the same list with that node's own prefix
(:class:`~specvlm.decoding.drafting.DraftRule`, as transformers' assisted decoding processes its
assistant's logits); otherwise the draft applies the prefix-free settings (temperature, top-k, top-p)
through :class:`~specvlm.decoding.sampling.Sampling`.

What this module deliberately does not do: run models, or decide when to stop (the loop does).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch

from specvlm.decoding.sampling import Sampling

#: Generation settings speculation cannot honour: what each would need, for the error message.
UNSUPPORTED = {
    "num_beams": (1, "beam search keeps several hypotheses; speculative decoding follows one"),
    "num_return_sequences": (1, "one sequence per call"),
    "num_beam_groups": (1, "beam search keeps several hypotheses; speculative decoding follows one"),
    "penalty_alpha": (None, "contrastive search re-ranks with hidden states"),
    "guidance_scale": (None, "classifier-free guidance needs a second, unconditional forward"),
    "force_words_ids": (None, "constrained beam search"),
    "constraints": (None, "constrained beam search"),
    "watermarking_config": (None, "watermarking"),
    "dola_layers": (None, "DoLa decoding reads early-exit logits"),
    "prompt_lookup_num_tokens": (None, "prompt-lookup drafting (SpecVLM brings its own draft)"),
    "assistant_early_exit": (None, "early-exit drafting (SpecVLM brings its own draft)"),
}


def merge_generation_config(model, prompt_ids: torch.Tensor, generation_config=None, **kwargs):
    """The generation config stock ``model.generate(input_ids=prompt_ids, generation_config=..., **kwargs)``
    would decode with, prepared as ``generate()`` prepares it (special tokens as tensors, lengths counted
    from the prompt). ``prompt_ids``: (1, L) long.

    Returns ``(config, unused)``: the merged ``GenerationConfig`` and the kwargs that are not generation
    settings. Raises ValueError for what speculative decoding cannot honour, naming the setting.
    """
    from transformers import GenerationConfig

    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise ValueError(
            f"generation_config must be a transformers GenerationConfig, got {type(generation_config).__name__}"
        )
    config, unused = model._prepare_generation_config(copy.deepcopy(generation_config), **kwargs)
    for name, (neutral, why) in UNSUPPORTED.items():
        value = getattr(config, name, None)
        if value is not None and value != neutral and not (name == "guidance_scale" and value == 1):
            raise ValueError(f"{name}={value!r} is not supported with speculative decoding ({why})")
    has_default_max_length = kwargs.get("max_length") is None and config.max_length is not None
    has_default_min_length = kwargs.get("min_length") is None and config.min_length is not None
    model._prepare_special_tokens(config, True, device=prompt_ids.device, batch_size=1)
    config = model._prepare_generated_length(
        generation_config=config,
        has_default_max_length=has_default_max_length,
        has_default_min_length=has_default_min_length,
        model_input_name="input_ids",
        input_ids_length=prompt_ids.shape[-1],
        inputs_tensor=prompt_ids,
    )
    return config, unused


#: transformers' processors whose output does not depend on the tokens before the position.
PREFIX_FREE = frozenset({
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TopHLogitsWarper",
    "TypicalLogitsWarper", "EpsilonLogitsWarper", "EtaLogitsWarper", "LogitNormalization",
    "InfNanRemoveLogitsProcessor", "SuppressTokensLogitsProcessor",
})  # fmt: skip


@dataclass
class NextTokenRule:
    """The target's processed scores at a position, from its own logits processors.

    processors: transformers' ``LogitsProcessorList`` for the merged generation config (may be empty)
    prompt_ids: (1, L) long, the prompt's token ids as stock ``generate()`` sees them
    do_sample: sample from the softmax of the processed scores (else: take their argmax)
    """

    processors: object
    prompt_ids: torch.Tensor
    do_sample: bool

    @classmethod
    def build(cls, model, config, prompt_ids: torch.Tensor, logits_processor=None) -> "NextTokenRule":
        """The rule for ``model`` under the merged generation ``config`` and a (1, L) prompt; ``logits_processor``:
        the caller's own processors (a list), merged with the config's as stock ``generate()`` merges them."""
        from transformers import LogitsProcessorList

        processors = model._get_logits_processor(
            generation_config=config,
            input_ids_seq_length=prompt_ids.shape[-1],
            encoder_input_ids=prompt_ids,
            device=prompt_ids.device,
            logits_processor=LogitsProcessorList(logits_processor or []),
        )
        return cls(processors=processors, prompt_ids=prompt_ids, do_sample=bool(config.do_sample))

    @functools.cached_property
    def reads_prefix(self) -> bool:
        """Whether a processor reads the tokens before the position (repetition penalty, n-gram bans,
        minimum lengths, ...); the sampling warpers (temperature, top-k, top-p, ...) do not, and run
        over every row at once without the drafted tokens."""
        return any(type(p).__name__ not in PREFIX_FREE for p in self.processors)

    def scores(self, logits: torch.Tensor, prefixes: list[list[int]] | None) -> torch.Tensor:
        """Processed float32 scores (n, V) of ``logits`` (n, V); row i is at the position after the prompt
        followed by ``prefixes[i]`` (the committed tokens, then the drafted tokens on the node's path).
        ``prefixes`` may be ``None`` when the rule does not :attr:`reads_prefix`."""
        scores = logits.float()
        if not len(self.processors):
            return scores
        device = self.prompt_ids.device
        if not self.reads_prefix:
            ids = self.prompt_ids.expand(scores.shape[0], -1)
            return self.processors(ids, scores.to(device)).to(logits.device)
        rows = []
        for i, prefix in enumerate(prefixes):
            ids = torch.cat([self.prompt_ids, torch.tensor([prefix], dtype=torch.long, device=device)], dim=-1)
            rows.append(self.processors(ids, scores[i : i + 1].to(device)))
        return torch.cat(rows).to(logits.device)

    def probs(self, logits: torch.Tensor, prefixes: list[list[int]]) -> torch.Tensor:
        """The target's sampling distribution p (n, V) at each row (``do_sample``)."""
        return self.scores(logits, prefixes).softmax(dim=-1)


def call_rule(model, prompt_ids: torch.Tensor, generation_config, max_new_tokens: int, gen_kwargs: dict, settings=()):
    """(the target's next-token rule, the draft's sampling settings or None, EOS ids) for one call of ``model``
    on ``prompt_ids`` (1, L), from the generation config merged as stock ``generate()`` merges it with the call's
    ``gen_kwargs`` (``logits_processor`` included). ``settings``: the caller's own keyword names, named in the
    error for an argument that is neither one of them nor a generation setting."""
    gen_kwargs = dict(gen_kwargs)
    logits_processor = gen_kwargs.pop("logits_processor", None)
    stopping_criteria = gen_kwargs.pop("stopping_criteria", None)
    if stopping_criteria:  # an empty list is stock's default
        raise ValueError(
            "stopping_criteria is not supported: a criterion reads the whole sequence after every token, while a "
            "speculative step commits several at once; stop with eos_token_id or max_new_tokens instead"
        )
    if logits_processor is not None and (
        not isinstance(logits_processor, (list, tuple)) or not all(callable(p) for p in logits_processor)
    ):
        raise ValueError(
            "logits_processor must be a list of transformers LogitsProcessor objects (callables of input_ids and "
            f"scores), got {logits_processor!r:.80}"
        )
    merged, unused = merge_generation_config(model, prompt_ids, generation_config, max_new_tokens=max_new_tokens, **gen_kwargs)
    if unused:
        name = next(iter(unused))
        raise TypeError(
            f"unknown argument {name!r}: neither a decoding setting ({', '.join(settings)}) nor a generation "
            "setting of transformers' GenerationConfig"
        )
    for name in ("stop_strings", "max_time"):
        if getattr(merged, name, None) is not None:
            raise ValueError(f"{name}={getattr(merged, name)!r} is not supported by SpecVLM yet")
    rule = NextTokenRule.build(model, merged, prompt_ids, logits_processor)
    sampling = None
    if rule.do_sample:
        sampling = Sampling(
            temperature=merged.temperature if merged.temperature is not None else 1.0,
            top_k=merged.top_k or 0,
            top_p=merged.top_p if merged.top_p is not None else 1.0,
        )
    eos = merged._eos_token_tensor
    eos_token_ids = set() if eos is None else set(eos.view(-1).tolist())
    return rule, sampling, eos_token_ids
