"""The Python API: ``SpecVLM.from_pretrained(...)`` and ``engine.generate(video=..., prompt=...)``.

The engine loads the stock target (and optional draft) model and the stock processor, checks that
the pair can work together (same family, same tokenizer, same video-token layout; ``specvlm.loading``),
builds inputs from a video file, a frames array, images or a conversation (``specvlm.inputs``), and runs
one pipeline for every method: validate -> :meth:`SpecVLM.prepare` (the target's prefill, scoring, pruning,
the drafter) -> :meth:`SpecVLM.decode` (``specvlm.decoding.loop``) -> the result. A call's plan and
prepared answer are :mod:`specvlm.plan`'s; what the engine learns across answers (the guard's verdicts,
compiled draft steps, overlapped drafting) is :mod:`specvlm.adaptation`'s.

What this module deliberately does not do: batching (one prompt at a time) or evaluation bookkeeping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os

import torch

import specvlm_pruning as pruning
from specvlm.adaptation import Adaptation
from specvlm.attention import resolve_backend
from specvlm.audit import Divergence, classify, extend_inputs
from specvlm.config import DEFAULT_MAX_NEW_TOKENS, NAMES, DecodingConfig, check_names, describe
from specvlm.decoding.drafters import (
    Drafter,
    Guard,
    LayerSkipDrafter,
    LazyStart,
    ModelDrafter,
    PromptLookupDrafter,
    Verdicts,
    check_self_draft_support,
    check_tree_support,
    prefill_draft,
)
from specvlm.decoding.drafters.overlap import DraftWorker, OverlapChoice, OverlapDrafter
from specvlm.decoding.layerskip import AUTO_STOP_BELOW, LayerChoice, LayerMemory, candidates
from specvlm.decoding.logits import call_rule
from specvlm.decoding.loop import Stop, decode
from specvlm.decoding.target import DecodingState, TargetPrefill, can_score_later, prefill_target, score_later
from specvlm.decoding.trees import TreeShape, check_vocab
from specvlm.loading import (
    check_checkpoint_path,
    check_compiler,
    check_device_map,
    check_pair,
    check_tensor_parallel,
    load_model,
    load_tokenizer,
)
from specvlm.models import adapter_for
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.timing import Timer
from specvlm.plan import Plan, Prepared
from specvlm.inputs import build_inputs, load_clip
from specvlm.video import Video

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _ending(streamer):
    """Call ``streamer.end()`` when decoding finishes, also after an error (a consumer never waits forever)."""
    try:
        yield
    finally:
        if streamer is not None:
            streamer.end()


def _document_settings(fn):
    """Fill ``{settings}`` in ``fn``'s docstring with the decoding settings (specvlm.config)."""
    fn.__doc__ = fn.__doc__.replace("{settings}", describe().replace("\n", "\n    ").lstrip())
    return fn


class SpecVLM:
    """Lossless speculative decoding for video LLMs with a draft that sees a pruned video.

    ``engine.target`` / ``engine.draft`` are the stock transformers models (``draft`` is ``None`` when
    the target drafts for itself) and ``engine.processor`` the stock processor.
    """

    def __init__(self, target, processor, draft=None, config: DecodingConfig | None = None):
        self.target = target
        self.draft = draft
        self.processor = processor
        self.config = config or DecodingConfig()
        self._check_positions(self.config, draft)
        #: the adapters the loop runs (:mod:`specvlm.models`): the stock models behind one family-independent API
        self.target_adapter = adapter_for(target)
        self.draft_adapter = adapter_for(draft) if draft is not None else None
        for adapter in (self.target_adapter, self.draft_adapter):
            if adapter is not None:
                adapter.tokenizer = getattr(processor, "tokenizer", None)
        vocab = self.target_adapter.vocab_size if draft is None else min(self.target_adapter.vocab_size, self.draft_adapter.vocab_size)
        self.shared_vocab = vocab
        #: what the engine learns across answers (:mod:`specvlm.adaptation`): the guard's verdicts, the
        #: self-draft's layer trials, compiled draft steps, overlapped drafting and its worker
        self.adaptation = Adaptation(self.target_adapter, self.draft_adapter, vocab)
        self._check_tree(self.config)

    @staticmethod
    def _check_positions(config: DecodingConfig, draft) -> None:
        """Compact draft positions need a separate draft model (a self-draft reuses the target's cache)."""
        if draft is None and config.positions != "original":
            raise ValueError(
                f"positions={config.positions!r} needs a separate draft model; self-drafting reuses the target's cache"
            )

    def _check_tree(self, config: DecodingConfig) -> None:
        """Raise ValueError when the config's static tree asks for more siblings than the vocabulary has."""
        shape = config.tree_shape()
        if isinstance(shape, TreeShape):
            check_vocab(shape, self.shared_vocab)

    @classmethod
    @_document_settings
    def from_pretrained(
        cls, target, draft=None, *, dtype=None, torch_dtype=None, device_map=None, processor=None, tp_size=None, **settings
    ) -> "SpecVLM":
        """Load the target (path or loaded model), an optional draft, and the target's processor.

        ``draft=None`` means self-drafting: the target drafts for itself from its own pruned cache.
        ``dtype`` (transformers 5's name; ``torch_dtype`` is its older spelling) and ``device_map`` are passed
        to the stock ``from_pretrained`` of both models. ``tp_size`` = N > 1 shards the target over N processes
        with transformers' own tensor-parallel plan (run under ``torchrun --nproc_per_node N``; every process
        runs the same loop and takes the same decisions, the verifier's scores summed over the processes'
        heads); the draft, small, is held whole by every process.
        ``processor`` is needed when ``target`` is an already loaded model. The other keywords are
        decoding settings, the defaults of every :meth:`generate` call (unknown names raise TypeError):

        {settings}
        """
        from transformers import AutoProcessor

        check_names(settings)
        config = DecodingConfig(**settings)
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass only dtype")
        dtype = dtype if dtype is not None else torch_dtype
        check_device_map(device_map)
        for role, ref in (("target", target), ("draft", draft)):
            check_checkpoint_path(role, ref)
        check_tensor_parallel(tp_size, target, device_map)
        if processor is None:
            if not isinstance(target, (str, os.PathLike)):
                raise ValueError("pass `processor=` when `target` is an already loaded model")
            processor = AutoProcessor.from_pretrained(target)
        target_model = load_model(target, dtype, device_map, "target", tp_size=tp_size)
        draft_model = None
        if draft is not None:
            if tp_size is not None and tp_size > 1 and torch.cuda.is_available():  # beside this rank's target shards
                device_map = {"": torch.device("cuda", torch.cuda.current_device())}
            draft_model = load_model(draft, dtype, device_map, "draft")
            draft_tokenizer = load_tokenizer(draft)
            check_pair(target_model, draft_model, processor.tokenizer, draft_tokenizer)
        return cls(target_model, processor, draft_model, config)

    # ---- inputs (specvlm.inputs) -----------------------------------------------------------------
    def load(
        self, video, *, num_frames: int | None = None, fps: float | None = None, max_frames: int | None = None
    ) -> Video:
        """A :class:`Video` from a path or a (T, H, W, 3) uint8 frames array / list of frames.

        ``max_frames`` caps the frames sampled (with ``fps``: uniform over the clip when the rate gives more).
        """
        return load_clip(video, num_frames=num_frames, fps=fps, max_frames=max_frames)

    def build_inputs(
        self,
        video=None,
        prompt: str | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        *,
        messages: list | None = None,
        max_frames: int | None = None,
        images=None,
    ):
        """The stock processor's output for a video and / or images with one user prompt, or for a
        conversation (``target.generate(**inputs)`` accepts it).

        ``images``: one image or a list (paths, PIL images or (H, W, 3) uint8 arrays); with ``prompt``
        they come before the video in the user turn. ``messages`` is a conversation in the transformers
        chat format (a system turn, earlier user / assistant turns, ...) holding at most one video entry,
        ``{"type": "video", "video": path or frames}`` (``"path"`` / ``"url"`` to a local file also work),
        and any number of image entries, ``{"type": "image", "image": path, PIL image or array}``; entries
        naming no source take ``video`` / ``images`` in order. Pass either ``prompt`` or ``messages``.
        ``max_frames`` caps the frames sampled (see :meth:`load`).
        """
        return build_inputs(
            self.processor, self.target_adapter, video, prompt, num_frames, fps,
            messages=messages, max_frames=max_frames, images=images,
        )  # fmt: skip

    # ---- generation ----------------------------------------------------------------------------
    @property
    def eos_token_ids(self) -> set[int]:
        """The ids stock greedy ``generate()`` stops at: ``target.generation_config.eos_token_id``.

        ``None`` means no EOS (decode to ``max_new_tokens``), exactly as in stock ``generate()``; there
        is deliberately no fallback to the tokenizer's EOS, which would stop earlier than the stock model.
        """
        eos = self.target.generation_config.eos_token_id
        return set([eos] if isinstance(eos, int) else (eos or []))

    @_document_settings
    def generate(
        self,
        video=None,
        prompt: str | None = None,
        max_new_tokens: int | None = None,
        num_frames: int | None = None,
        method: str = "specvlm",
        *,
        streamer=None,
        **kwargs,
    ) -> GenerationResult:
        """Generate an answer; ``method`` is "specvlm" (pruned draft), "sd" (full draft), "lookup" (prompt
        lookup: n-grams of the context, no draft model) or "ar" (plain).

        The tokens are exactly those of ``engine.target.generate(**inputs, max_new_tokens=...)`` with the
        same generation arguments: the checkpoint's generation config (``target.generation_config``),
        a per-call ``generation_config`` and stock keyword arguments (``do_sample``, ``temperature``,
        ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``no_repeat_ngram_size``,
        ``min_new_tokens``, ``bad_words_ids``, ``suppress_tokens``, ``eos_token_id``, ``logits_processor``,
        ...) merge as stock ``generate()`` merges them, and the logits processors are applied at every
        verified position with that position's own prefix. ``max_new_tokens``: the keyword when given, else
        the per-call ``generation_config``'s, else the checkpoint's, else
        :data:`DEFAULT_MAX_NEW_TOKENS`. Sampling is lossless speculative sampling:
        the output follows the target's own distribution; all randomness comes from a
        ``torch.Generator`` seeded with ``seed``. What speculation cannot honour (``num_beams > 1``,
        ``num_return_sequences > 1``, guidance, constraints, ``stopping_criteria``, ...) raises ValueError
        before any work.
        ``messages`` is a conversation in the transformers chat format with at most one video entry and any
        number of image entries (see :meth:`build_inputs`), instead of ``prompt``; ``images`` (one or a list)
        go with ``prompt`` beside or instead of ``video``, and their tokens are pruned with the video's. Pass
        ``inputs`` (from :meth:`build_inputs`) instead of ``video`` + ``prompt`` to reuse processed inputs;
        ``num_frames``, ``fps`` and ``max_frames`` sample the video (see :meth:`load`). ``ignore_eos=True``
        decodes exactly ``max_new_tokens`` tokens (as stock ``generate()`` with ``eos_token_id=[]`` would),
        e.g. for benchmarks. ``streamer`` (any transformers ``BaseStreamer``, e.g. ``TextStreamer`` or
        ``TextIteratorStreamer``) receives the prompt ids once, then each step's committed tokens as they are
        committed, then ``end()``.

        It runs :meth:`prepare` (validation, the target's prefill, scoring, pruning, the drafter) and then
        :meth:`decode`. Other keywords are decoding settings for this call (unknown names raise TypeError):

        {settings}
        """
        if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise ValueError(f"streamer must have put() and end() (a transformers BaseStreamer), got {type(streamer).__name__}")
        prepared = self.prepare(video, prompt, max_new_tokens, num_frames, method, **kwargs)
        return self.decode(prepared, streamer=streamer)

    def prepare(
        self,
        video=None,
        prompt: str | None = None,
        max_new_tokens: int | None = None,
        num_frames: int | None = None,
        method: str = "specvlm",
        *,
        inputs=None,
        messages: list | None = None,
        images=None,
        fps: float | None = None,
        max_frames: int | None = None,
        generation_config=None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        ignore_eos: bool = False,
        **kwargs,
    ) -> Prepared:
        """Everything before decoding, for the arguments of :meth:`generate`: validation (every bad argument
        raises before any model runs), the inputs, the target's prefill, the verifier's scores and the
        drafter (a lazily started one prefills later, inside :meth:`decode`). The bench, training and the
        tests use it to run the same pipeline as :meth:`generate` step by step."""
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1):
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        overrides = {k: v for k, v in kwargs.items() if k in NAMES}
        gen_kwargs = {k: v for k, v in kwargs.items() if k not in NAMES}
        sampling_kwargs = {"do_sample": do_sample, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        gen_kwargs.update({k: v for k, v in sampling_kwargs.items() if v is not None})
        config = self.config.replace(**overrides) if overrides else self.config
        plan = Plan.resolve(method, config)
        if plan.drafts:
            self._check_tree(config)
        if not isinstance(ignore_eos, bool):
            raise ValueError(f"ignore_eos={ignore_eos!r} must be True or False")
        if do_sample is not None and not isinstance(do_sample, bool):
            raise ValueError(f"do_sample={do_sample!r} must be True or False")
        if inputs is None:
            if messages is None and (prompt is None or (video is None and images is None)):
                raise ValueError(
                    "pass `video` and / or `images` with `prompt`, `messages` (a conversation), or `inputs` from build_inputs()"
                )
            inputs = self.build_inputs(
                video, prompt, num_frames=num_frames, fps=fps, messages=messages, max_frames=max_frames, images=images
            )
        elif messages is not None or prompt is not None or images is not None:
            raise ValueError("pass `inputs` or a prompt / `messages`, not both")
        if "input_ids" not in inputs or not (self.target_adapter.has_video(inputs) or self.target_adapter.has_images(inputs)):
            missing = "input_ids" if "input_ids" not in inputs else f"{self.target_adapter.video_input_key!r} or {self.target_adapter.image_input_key!r}"
            raise ValueError(
                f"inputs has no {missing}; pass the processor's output for a prompt with a video or images (engine.build_inputs)"
            )
        max_new_tokens = self._max_new_tokens(max_new_tokens, generation_config)
        rule, sampling, eos_token_ids = self._next_token_rule(inputs, generation_config, max_new_tokens, gen_kwargs)
        self._check_context(int(self.target_adapter.positions(inputs).max()) + 1, max_new_tokens)  # before any prefill
        if ignore_eos:
            eos_token_ids = set()
        if config.compile not in ("off", "auto"):
            check_compiler(self.target_adapter.device, config.compile)
        if plan.drafts and plan.method != "lookup":
            self._check_positions(config, self.draft_adapter)  # before any prefill, even when a lazy draft never starts
            check_tree_support(self.target_adapter, config.tree_shape())  # a hybrid family verifies chains only
            if self.draft_adapter is None:
                check_self_draft_support(self.target_adapter)
        stats = GenerationStats(method=method)
        layers = self._layer_choice(plan, config, int(inputs["input_ids"].shape[-1]))  # before any prefill: a bad layer index raises here
        overlap_key = self.adaptation.overlap(plan, config, layers, sampling, rule, inputs, stats)  # "on" raises here
        # drafting overlapped and sequentially are two ways with verdicts of their own (a busy machine can
        # defeat one and not the other)
        workload = self.adaptation.workload(plan, config, inputs, overlapped=stats.overlap)
        overlap_trial = None if overlap_key is None else (overlap_key, stats.overlap)
        if plan.drafts and self.adaptation.remembered_plain(layers, workload):
            # a remembered verdict for plain decoding: this answer decodes as `ar` does, with no draft prefill
            # and no scoring, so that speculation that cannot pay costs nothing (an overlap="auto" trial's way
            # then measures plain decoding's rate: what that way gives this workload now)
            plan = dataclasses.replace(plan, drafts=False, capture_scores=False)
            stats.speculation = "remembered_plain"
            stats.overlap = False
        timer = Timer(self.target_adapter.device)
        generator = None
        if sampling is not None:
            generator = torch.Generator(device=self.target_adapter.device).manual_seed(config.seed)
        prepared = Prepared(
            inputs=inputs, method=method, config=config, plan=plan, target=None, drafter=None,
            stop=Stop(max_new_tokens, frozenset(eos_token_ids)), rule=rule, sampling=sampling, generator=generator,
            stats=stats, timer=timer, workload=workload, overlap_trial=overlap_trial,
        )  # fmt: skip
        after = self._lazy_after(plan, config, prepared.stop)
        # a lazily started draft's pruning is scored when it starts, so a short answer's prefill is the plain one
        score_late = bool(after) and plan.capture_scores and can_score_later(self.target_adapter, inputs)
        with timer("prefill"):
            prefill_plan = dataclasses.replace(plan, capture_scores=False) if score_late else plan
            prepared.target = self._prefill_target(prefill_plan, config, inputs)
            self._compile_target(config, prepared.target.seq)
            stats.visual_tokens = prepared.target.layout.num_tokens
            stats.prompt_tokens = stats.target_kv_tokens = prepared.target.seq.prefix
            if plan.drafts:
                start = functools.partial(self._start_drafter, prepared, layers, score_late)
                drafter = LazyStart(start, after) if after else start()
                # the guard decides on each rank's own step times: sharded, ranks could part ways (and their collectives)
                if config.never_slower and self.target_adapter.tp_group is None:
                    drafter = Guard(drafter, plain_rate=self.adaptation.verdicts.plain_rate(workload))
                prepared.drafter = drafter
        return prepared

    def decode(self, prepared: Prepared, *, streamer=None) -> GenerationResult:
        """Decode a :meth:`prepare`-d answer: the speculative loop with its drafter (plain decoding without one).
        ``prepared.drafter`` may be replaced by any :class:`~specvlm.decoding.drafters.Drafter` before."""
        if not isinstance(prepared, Prepared):
            raise ValueError(f"decode() takes what prepare() returns, got {type(prepared).__name__}")
        if prepared.decoded:
            raise ValueError("this prepared answer was decoded already (its caches hold the answer); call prepare() again")
        drafter = prepared.drafter
        if drafter is not None and not all(callable(getattr(drafter, name, None)) for name in ("propose", "commit", "finish")):
            raise ValueError(
                f"prepared.drafter must be a specvlm.decoding.drafters.Drafter (propose, commit, finish) or None, "
                f"got {type(drafter).__name__}"
            )
        prepared.decoded = True
        stats, timer = prepared.stats, prepared.timer
        on_commit = None
        if streamer is not None:
            streamer.put(prepared.rule.prompt_ids.cpu())
            on_commit = lambda kept: streamer.put(torch.tensor([kept], dtype=torch.long))  # noqa: E731
        with timer("decode"), _ending(streamer):
            tokens = decode(
                prepared.target, prepared.drafter, prepared.stop, stats, rule=prepared.rule, sampling=prepared.sampling,
                generator=prepared.generator, on_commit=on_commit,
            )  # fmt: skip
        stats.new_tokens = len(tokens)
        stats.draft_prefill_s, stats.compile_s = timer.get("draft_prefill"), timer.get("compile")
        stats.prefill_s, stats.decode_s = timer.get("prefill"), timer.get("decode")
        # the draft's prefill counts as prefill wherever it ran (a lazy start's ran inside decode); a one-time
        # compile counts as neither
        if stats.draft_start_tokens:
            stats.prefill_s += stats.draft_prefill_s
            stats.decode_s -= stats.draft_prefill_s + stats.compile_s
        else:
            stats.prefill_s -= stats.compile_s
        self.adaptation.record(prepared, prepared.drafter if isinstance(prepared.drafter, Guard) else None)
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        return GenerationResult(token_ids=tokens, text=text, stats=stats)

    def forget(self) -> None:
        """Forget every measurement and verdict remembered across answers (the next answers decide afresh)."""
        self.adaptation.forget()

    @property
    def layer_memory(self) -> LayerMemory:
        """The self-draft's layer trials per workload (``self_draft_memory``)."""
        return self.adaptation.layer_memory

    @property
    def verdicts(self) -> Verdicts:
        """The never-slower guard's verdicts per workload."""
        return self.adaptation.verdicts

    @property
    def overlap_choice(self) -> OverlapChoice:
        """``overlap="auto"``: per workload, whether drafting overlapped measured faster than sequentially."""
        return self.adaptation.overlap_choice

    @property
    def draft_compiled(self) -> bool:
        """Whether the separate draft's decode steps now run compiled (``compile``; "auto" compiles them once
        this engine has drafted :data:`~specvlm.adaptation.COMPILE_AFTER_ANSWERS` answers)."""
        return self.adaptation.draft_compiled

    # ---- the pipeline's parts ------------------------------------------------------------------
    def _max_new_tokens(self, max_new_tokens: int | None, generation_config) -> int:
        """The answer's length budget: the keyword, else a per-call generation config's, else the
        checkpoint's, else :data:`DEFAULT_MAX_NEW_TOKENS`."""
        if max_new_tokens is not None:
            return max_new_tokens
        for config in (generation_config, self.target.generation_config):
            value = getattr(config, "max_new_tokens", None)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"generation_config.max_new_tokens={value!r} must be an int >= 1")
                return value
        return DEFAULT_MAX_NEW_TOKENS

    @staticmethod
    def _lazy_after(plan: Plan, config: DecodingConfig, stop: Stop) -> int:
        """Committed tokens before a lazily started drafter starts (0: it is built with the prefill)."""
        after = config.lazy_draft_after if plan.drafts and plan.method != "lookup" else 0
        if after and not stop.eos_token_ids:  # nothing can end the answer early: it is max_new_tokens long
            # long enough to pay: the draft starts right after the first token (which the target's prefill
            # gives), so the first token is out as soon as plain decoding's would be
            after = 1 if stop.max_new_tokens > after else after
        return after

    def _start_drafter(self, prepared: Prepared, layers: LayerChoice | None, score_late: bool) -> Drafter:
        """The drafter of a prepared answer, built at the target's state when called (prefill or lazy start)."""
        plan, config, target = prepared.plan, prepared.config, prepared.target
        settings = dict(
            vocab=self.shared_vocab, width=target.logits.shape[-1], rule=prepared.rule, sampling=prepared.sampling,
            generator=prepared.generator,
        )  # fmt: skip
        shape = config.tree_shape()
        if plan.method == "lookup":
            context = prepared.rule.prompt_ids[0].tolist()
            return PromptLookupDrafter(
                context, config.num_draft_tokens, vocab=target.logits.shape[-1], sampling=prepared.sampling is not None,
                device=self.target_adapter.device,
            )  # fmt: skip
        with prepared.timer("draft_prefill"):
            if score_late:
                target.scores = score_later(target, prepared.inputs)
            keep, kept = self._select(plan, config, target)
            seq = prefill_draft(self.draft_adapter, prepared.inputs, target, keep, positions=config.positions, vision=config.draft_vision)
        prepared.stats.kept_visual_tokens, prepared.stats.draft_kv_tokens = kept, seq.prefix
        stop_below = self._stop_below(config, layers)
        if layers is not None:
            return LayerSkipDrafter(seq, shape, layers, stop_below=stop_below, **settings)
        if self.adaptation.compile_draft(config, seq, prepared.sampling, prepared.timer):
            seq.compiled = True
        drafter = ModelDrafter(seq, shape, stop_below=stop_below, **settings)
        if prepared.stats.overlap:
            return OverlapDrafter(drafter, worker=self.adaptation.worker(seq, shape, prepared.timer))
        return drafter

    @property
    def draft_worker(self) -> DraftWorker | None:
        """The worker that drafts this engine's overlapped answers (``overlap``); None until one has run."""
        return self.adaptation.draft_worker

    def close(self) -> None:
        """End the engine's draft worker (``overlap``), if it started one; a later overlapped answer starts another."""
        self.adaptation.close()

    def _compile_target(self, config: DecodingConfig, seq) -> None:
        """``compile="all"``: the target's decode-time forwards run through its compiled step."""
        seq.compiled = config.compile == "all"

    def _next_token_rule(self, inputs, generation_config, max_new_tokens: int, gen_kwargs: dict):
        """(the target's next-token rule, the draft's sampling settings or None, EOS ids) for one call."""
        if "input_ids" not in inputs:
            raise ValueError("inputs has no 'input_ids'; pass the processor's output (engine.build_inputs)")
        prompt_ids = inputs["input_ids"].to(self.target_adapter.device)
        return call_rule(self.target, prompt_ids, generation_config, max_new_tokens, gen_kwargs, settings=NAMES)

    @staticmethod
    def _stop_below(config: DecodingConfig, layers: LayerChoice | None) -> float:
        """``draft_stop_below`` resolved: 'auto' stops a layer-skipping self-draft's chains early."""
        if config.draft_stop_below != "auto":
            return float(config.draft_stop_below)
        return AUTO_STOP_BELOW if layers is not None else 0.0

    def _layer_choice(self, plan: Plan, config: DecodingConfig, prompt_tokens: int = 0) -> LayerChoice | None:
        """A self-draft's decoder-layer subsets (``self_draft_layers``), or None: a separate draft, no draft,
        or every layer (``"all"``; also ``"auto"`` for a text model whose layers cannot be skipped)."""
        if not plan.drafts or plan.method == "lookup" or self.draft_adapter is not None:
            return None
        setting = config.self_draft_layers
        options = candidates(setting, self.target_adapter.text_config.num_hidden_layers)
        if options is None:
            return None
        memory = None
        if setting == "auto" and config.self_draft_memory:
            # a workload: the prompt's length (to a power of two: it sets the steps' attention cost), what the
            # draft sees and what a step drafts
            workload = (prompt_tokens.bit_length(), plan.pruning, config.drop_rate, str(config.tree),
                        config.num_draft_tokens, config.draft_stop_below)  # fmt: skip
            memory = self.adaptation.layer_memory.table(workload)
        try:
            return LayerChoice(self.target_adapter, options, auto=setting == "auto", memory=memory)
        except ValueError as err:
            if setting != "auto":
                raise
            logger.info("self-drafting with every layer: %s", err)
            return None

    @torch.no_grad()
    def audit(self, inputs, expected, got, *, generation_config=None, **generation_kwargs) -> Divergence:
        """Classify the tokens ``got`` against reference tokens ``expected`` for the same ``inputs`` and
        generation settings (the target's own ``generate()``, or an ``ar`` run): identical, a near-tie of
        the reference's scores at the first difference, or a mismatch (a bug); see :mod:`specvlm.audit`.

        The reference's scores at the first difference come from one target forward over the prompt and
        the tokens before it, processed by the generation config's processors as ``generate()`` would.
        Only a divergence costs that forward."""
        expected, got = [int(t) for t in expected], [int(t) for t in got]
        max_new_tokens = generation_kwargs.pop("max_new_tokens", None) or max(len(expected), 1)

        def scores_at(i: int) -> torch.Tensor:
            rule, _, _ = self._next_token_rule(inputs, generation_config, max_new_tokens, generation_kwargs)
            device = self.target_adapter.device
            extended = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extend_inputs(inputs, expected[:i]).items()
            }
            logits = self.target(**extended, logits_to_keep=1).logits[0, -1:]  # (1, V)
            return rule.scores(logits, [expected[:i]])[0]

        return classify(expected, got, scores_at, self.target.dtype)

    def draft_keep(self, inputs, method: str = "specvlm", *, target: TargetPrefill | None = None, **overrides) -> torch.Tensor:
        """The sorted prompt positions (long, on CPU) the draft is prefilled with for ``inputs``: every text token
        plus the visual tokens ``method`` keeps ("sd": all; "specvlm": the pruning chosen by the settings,
        ``overrides`` as in :meth:`generate`). Runs the target's prefill to score them unless ``target`` (a scored
        :meth:`prefill_target`) is given."""
        if method not in ("sd", "specvlm"):
            raise ValueError(f"draft_keep needs method 'sd' or 'specvlm', got {method!r}")
        config = self.config.replace(**overrides) if overrides else self.config
        plan = Plan.resolve(method, config)
        if target is None:
            target = self._prefill_target(plan, config, inputs)
        return self._select(plan, config, target)[0]

    @staticmethod
    def _select(plan: Plan, config: DecodingConfig, target: TargetPrefill) -> tuple[torch.Tensor, int]:
        """(sorted prompt positions the draft is prefilled with, visual tokens kept) under ``plan``'s pruning."""
        result = pruning.select(
            plan.pruning,
            target.scores,
            target.layout.pruning_grid,
            config.drop_rate,
            stage1_mass=config.stage1_mass,
            seed=config.seed,
            window=config.window,
        )
        keep = pruning.keep_sequence_indices(target.seq.prefix, target.layout.positions, result.kept.cpu())
        return keep, int(result.kept.numel())

    def prefill_target(self, inputs, method: str = "specvlm", **overrides) -> TargetPrefill:
        """The target's prefill of ``inputs`` as ``method`` runs it (scoring the video tokens when its pruning
        reads the scores), with the settings' attention backend."""
        config = self.config.replace(**overrides) if overrides else self.config
        return self._prefill_target(Plan.resolve(method, config), config, inputs)

    def prefill_draft(self, inputs, target: TargetPrefill, method: str = "specvlm", **overrides) -> DecodingState:
        """The draft's sequence for ``inputs`` after the target's prefill ``target``: a separate draft prefilled
        with the positions ``method`` keeps (:meth:`draft_keep`), or the target's own cache restricted to them
        (``draft=None``)."""
        config = self.config.replace(**overrides) if overrides else self.config
        keep, _ = self._select(Plan.resolve(method, config), config, target)
        return prefill_draft(self.draft_adapter, inputs, target, keep, positions=config.positions, vision=config.draft_vision)

    def _prefill_target(self, plan: Plan, config: DecodingConfig, inputs):
        """The target's prefill, scoring the video tokens when the plan's pruning reads the scores."""
        backend = resolve_backend(config.attn_backend, self.target_adapter.device)
        return prefill_target(self.target_adapter, inputs, capture_scores=plan.capture_scores, backend=backend)

    def _check_context(self, next_pos: int, max_new_tokens: int) -> None:
        """Raise before decoding if a position id would pass the target's ``max_position_embeddings``.

        Draft tokens never go past the last committed token (the loop drafts at most
        ``remaining - 1`` tokens), so the highest position fed is ``next_pos + max_new_tokens - 2``.
        """
        limit = self.target_adapter.max_positions
        last = next_pos + max_new_tokens - 2
        if limit is not None and last >= limit:
            raise ValueError(
                f"context overflow: the prompt ends at position {next_pos - 1} and max_new_tokens={max_new_tokens} "
                f"would feed position {last}, beyond the target's max_position_embeddings={limit} "
                f"(positions 0..{limit - 1}); use fewer frames or a smaller max_new_tokens"
            )
