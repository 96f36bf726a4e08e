"""The Python API: ``SpecVLM.from_pretrained(...)`` and ``engine.generate(video=..., prompt=...)``.

The engine loads the stock target (and optional draft) model and the stock processor, checks that
the pair can work together (same family, same tokenizer, same video-token layout; ``specvlm.loading``),
builds inputs from a video file, a frames array, images or a conversation (``specvlm.conversation``),
and runs the one decoding loop for every method.

What this module deliberately does not do: batching (one prompt at a time) or evaluation bookkeeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

import pruning
from specvlm.attention import resolve_backend
from specvlm.audit import Divergence, classify, extend_inputs
from specvlm.config import METHODS, NAMES, DecodingConfig, check_names, describe
from specvlm.conversation import fill_media, media_conversation
from specvlm.decoding.logits import NextTokenRule, merge_generation_config
from specvlm.decoding.layerskip import AUTO_STOP_BELOW, LayerChoice, LayerMemory, candidates
from specvlm.decoding.loop import (
    LazyDraft,
    can_score_later,
    score_later,
    check_self_draft_support,
    check_tree_support,
    decode,
    prefill_draft,
    prefill_target,
)
from specvlm.decoding.sampling import Sampling
from specvlm.decoding.trees import TreeShape, check_vocab
from specvlm.models import adapter_for
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.timing import Timer
from specvlm.images import load_images
from specvlm.loading import check_checkpoint_path, check_compiler, check_device_map, check_pair, load_model, load_tokenizer
from specvlm.video import DEFAULT_NUM_FRAMES, Video, from_frames, load_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a method does, resolved once per call from its name and the settings.

    ``sd`` is ``specvlm`` whose pruning keeps every video token (the ``none`` strategy).
    """

    method: str
    drafts: bool  # a draft proposes tokens (sd, specvlm); ar decodes with the target alone
    pruning: str | None  # the strategy choosing the draft's video tokens ("none": all of them); None without a draft
    capture_scores: bool  # the target's prefill records the verifier's text-to-video attention

    @classmethod
    def resolve(cls, method: str, config: DecodingConfig) -> "Plan":
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if method == "ar":
            return cls(method, drafts=False, pruning=None, capture_scores=False)
        strategy = "none" if method == "sd" else config.pruning
        return cls(method, drafts=True, pruning=strategy, capture_scores=pruning.needs_scores(strategy))

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
        self._target = adapter_for(target)
        self._draft = adapter_for(draft) if draft is not None else None
        self._layer_memory = LayerMemory()  # self_draft_layers="auto": measurements per workload (self_draft_memory)
        for adapter in (self._target, self._draft):
            if adapter is not None:
                adapter.tokenizer = getattr(processor, "tokenizer", None)
        vocab = self._target.vocab_size if draft is None else min(self._target.vocab_size, self._draft.vocab_size)
        self.shared_vocab = vocab
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
        cls, target, draft=None, *, torch_dtype=None, device_map=None, processor=None, **settings
    ) -> "SpecVLM":
        """Load the target (path or loaded model), an optional draft, and the target's processor.

        ``draft=None`` means self-drafting: the target drafts for itself from its own pruned cache.
        ``processor`` is needed when ``target`` is an already loaded model. The other keywords are
        decoding settings, the defaults of every :meth:`generate` call (unknown names raise TypeError):

        {settings}
        """
        from transformers import AutoProcessor

        check_names(settings)
        config = DecodingConfig(**settings)
        check_device_map(device_map)
        for role, ref in (("target", target), ("draft", draft)):
            check_checkpoint_path(role, ref)
        if processor is None:
            if not isinstance(target, (str, os.PathLike)):
                raise ValueError("pass `processor=` when `target` is an already loaded model")
            processor = AutoProcessor.from_pretrained(target)
        target_model = load_model(target, torch_dtype, device_map, "target")
        draft_model = None
        if draft is not None:
            draft_model = load_model(draft, torch_dtype, device_map, "draft")
            draft_tokenizer = load_tokenizer(draft)
            check_pair(target_model, draft_model, processor.tokenizer, draft_tokenizer)
        return cls(target_model, processor, draft_model, config)

    # ---- inputs --------------------------------------------------------------------------------
    def load(
        self, video, *, num_frames: int | None = None, fps: float | None = None, max_frames: int | None = None
    ) -> Video:
        """A :class:`Video` from a path or a (T, H, W, 3) uint8 frames array / list of frames.

        ``max_frames`` caps the frames sampled (with ``fps``: uniform over the clip when the rate gives more).
        """
        if isinstance(video, Video):
            return video
        if isinstance(video, (str, os.PathLike)):
            if num_frames is None and fps is None:
                num_frames = DEFAULT_NUM_FRAMES
            return load_video(video, num_frames=num_frames, fps=fps, max_frames=max_frames)
        if isinstance(video, (np.ndarray, torch.Tensor, list, tuple)):
            return from_frames(video, num_frames=num_frames, max_frames=max_frames)
        raise TypeError(f"video must be a path, a Video or a (T, H, W, 3) uint8 array, got {type(video).__name__}")

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
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError("the processor has no chat template; pass a checkpoint whose processor defines one")
        if images is not None and not isinstance(images, (list, tuple)):
            images = [images]
        if messages is not None:
            if prompt is not None:
                raise ValueError("pass `prompt` or `messages`, not both")
            messages, videos, image_sources = media_conversation(messages)
            videos = fill_media("video", videos, None if video is None else [video])
            image_sources = fill_media("image", image_sources, images)
            video = videos[0] if videos else None
            images = image_sources or None
            for turn in messages:
                content = turn["content"]
                texts = [content] if isinstance(content, str) else [e.get("text", "") for e in content if isinstance(e, dict)]
                for text in texts:
                    self._check_no_placeholder(text)
        else:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
            self._check_no_placeholder(prompt)
            if video is None and images is None:
                raise ValueError("pass `video` and / or `images` with `prompt`")
            content = [{"type": "image"} for _ in images or []] + ([{"type": "video"}] if video is not None else [])
            messages = [{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}]
        pictures = load_images(images) if images is not None else None
        clip = self.load(video, num_frames=num_frames, fps=fps, max_frames=max_frames) if video is not None else None
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        kwargs = {}
        if clip is not None:
            kwargs.update(
                videos=[clip.frames],
                video_metadata=[clip.metadata()],
                do_sample_frames=False,
                # frames are always (T, H, W, 3): the processor would guess channels-first for a height of 1 or 3
                videos_kwargs={"input_data_format": "channels_last"},
            )
        if pictures is not None:
            # one prompt: its images as one nested list (LLaVA-OneVision then counts them per prompt)
            kwargs.update(images=[pictures], images_kwargs={"input_data_format": "channels_last"})
        return self.processor(text=[text], return_tensors="pt", **kwargs)

    def _check_no_placeholder(self, text) -> None:
        """Raise when ``text`` holds the processor's image or video placeholder: the processor would
        expand it into visual tokens with no pixels behind them."""
        if not isinstance(text, str):
            return
        for name in ("video_token", "image_token"):
            token = getattr(self.processor, name, None)
            if isinstance(token, str) and token and token in text:
                raise ValueError(
                    f"the prompt contains the processor's {name.replace('_', ' ')} {token!r}; the video is placed by "
                    "the chat template, so write the text without it"
                )

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
        max_new_tokens: int = 256,
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
        streamer=None,
        **kwargs,
    ) -> GenerationResult:
        """Generate an answer; ``method`` is "specvlm" (pruned draft), "sd" (full draft) or "ar" (plain).

        The tokens are exactly those of ``engine.target.generate(**inputs, max_new_tokens=...)`` with the
        same generation arguments: the checkpoint's generation config (``target.generation_config``),
        a per-call ``generation_config`` and stock keyword arguments (``do_sample``, ``temperature``,
        ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``, ``no_repeat_ngram_size``,
        ``min_new_tokens``, ``bad_words_ids``, ``suppress_tokens``, ``eos_token_id``, ...) merge as stock
        ``generate()`` merges them, and its logits processors (transformers' own) are applied at every
        verified position with that position's own prefix. Sampling is lossless speculative sampling:
        the output follows the target's own distribution; all randomness comes from a
        ``torch.Generator`` seeded with ``seed``. What speculation cannot honour (``num_beams > 1``,
        ``num_return_sequences > 1``, guidance, constraints, ...) raises ValueError before any work.
        ``messages`` is a conversation in the transformers chat format with at most one video entry and any
        number of image entries (see :meth:`build_inputs`), instead of ``prompt``; ``images`` (one or a list)
        go with ``prompt`` beside or instead of ``video``, and their tokens are pruned with the video's. Pass ``inputs`` (from :meth:`build_inputs`) instead
        of ``video`` + ``prompt`` to reuse processed inputs; ``num_frames``, ``fps`` and ``max_frames`` sample the
        video (see :meth:`load`). ``ignore_eos=True`` decodes exactly ``max_new_tokens`` tokens (as stock ``generate()``
        with ``eos_token_id=[]`` would), e.g. for benchmarks. ``streamer`` (any transformers
        ``BaseStreamer``, e.g. ``TextStreamer`` or ``TextIteratorStreamer``) receives the prompt ids once,
        then each step's committed tokens as they are committed, then ``end()``.

        Other keywords are decoding settings for this call (unknown names raise TypeError):

        {settings}
        """
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
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
        if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise ValueError(f"streamer must have put() and end() (a transformers BaseStreamer), got {type(streamer).__name__}")
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
        if "input_ids" not in inputs or not (self._target.has_video(inputs) or self._target.has_images(inputs)):
            missing = "input_ids" if "input_ids" not in inputs else f"{self._target.video_input_key!r} or {self._target.image_input_key!r}"
            raise ValueError(
                f"inputs has no {missing}; pass the processor's output for a prompt with a video or images (engine.build_inputs)"
            )
        rule, sampling, eos_token_ids = self._next_token_rule(inputs, generation_config, max_new_tokens, gen_kwargs)
        self._check_context(int(self._target.positions(inputs).max()) + 1, max_new_tokens)  # before any prefill
        if ignore_eos:
            eos_token_ids = set()
        if config.compile != "off":
            check_compiler(self._target.device, config.compile)
        stats = GenerationStats(method=method)
        timer = Timer(self._target.device)
        if plan.drafts:
            self._check_positions(config, self._draft)  # before any prefill, even when a lazy draft never starts
            check_tree_support(self._target, config.tree_shape())  # a hybrid family verifies chains only
            if self._draft is None:
                check_self_draft_support(self._target)
        layers = self._layer_choice(plan, config, int(inputs["input_ids"].shape[-1]))  # before any prefill: a bad layer index raises here
        if layers is not None and layers.decided and layers.chosen is None:
            # a remembered verdict for plain decoding: this answer decodes as `ar` does, with no draft prefill
            # and no scoring, so that a self-draft that cannot pay costs nothing
            plan = dataclasses.replace(plan, drafts=False, capture_scores=False)
        after = config.lazy_draft_after if plan.drafts else 0
        if after and not eos_token_ids:  # nothing can end the answer early: it is max_new_tokens long
            # long enough to pay: the draft starts right after the first token (which the target's prefill
            # gives), so the first token is out as soon as plain decoding's would be
            after = 1 if max_new_tokens > after else after

        # a lazily started draft's pruning is scored when it starts, so a short answer's prefill is the plain one
        score_late = bool(after) and plan.capture_scores and can_score_later(self._target, inputs)

        def start_draft():
            with timer("draft_prefill"):
                if score_late:
                    target.scores = score_later(target, inputs)
                draft, kept = self._prefill_draft(plan, config, inputs, target, mirrors=layers is not None)
            self._mark_compiled(config, target.seq, draft)
            stats.kept_video_tokens, stats.draft_kv_tokens = kept, draft.prefix
            return draft

        with timer("prefill"):
            target = self._prefill_target(dataclasses.replace(plan, capture_scores=False) if score_late else plan, config, inputs)
            draft = start_draft() if plan.drafts and not after else None
        self._mark_compiled(config, target.seq, draft)
        lazy = LazyDraft(start_draft, after) if plan.drafts and after else None
        stats.video_tokens = target.layout.num_tokens
        stats.prompt_tokens = stats.target_kv_tokens = target.seq.prefix
        generator = None
        if sampling is not None:
            generator = torch.Generator(device=self._target.device).manual_seed(config.seed)
        on_commit = None
        if streamer is not None:
            streamer.put(rule.prompt_ids.cpu())
            on_commit = lambda kept: streamer.put(torch.tensor([kept], dtype=torch.long))  # noqa: E731
        with timer("decode"), _ending(streamer):
            tokens = decode(
                target,
                draft,
                stats,
                tree=config.tree_shape() if plan.drafts else None,
                max_new_tokens=max_new_tokens,
                eos_token_ids=eos_token_ids,
                shared_vocab=self.shared_vocab,
                sampling=sampling,
                generator=generator,
                rule=rule,
                on_commit=on_commit,
                lazy=lazy,
                layers=layers,
                stop_below=self._stop_below(config, layers),
            )
        stats.new_tokens = len(tokens)
        stats.draft_prefill_s = timer.get("draft_prefill")
        late = stats.draft_prefill_s if lazy is not None else 0.0  # a lazy draft's prefill ran inside decode
        stats.prefill_s, stats.decode_s = timer.get("prefill") + late, timer.get("decode") - late
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        return GenerationResult(token_ids=tokens, text=text, stats=stats)

    def _next_token_rule(self, inputs, generation_config, max_new_tokens: int, gen_kwargs: dict):
        """(the target's next-token rule, the draft's sampling settings or None, EOS ids) for one call,
        from the generation config merged as stock ``generate()`` merges it."""
        if "input_ids" not in inputs:
            raise ValueError("inputs has no 'input_ids'; pass the processor's output (engine.build_inputs)")
        prompt_ids = inputs["input_ids"].to(self._target.device)
        merged, unused = merge_generation_config(
            self.target, prompt_ids, generation_config, max_new_tokens=max_new_tokens, **gen_kwargs
        )
        if unused:
            name = next(iter(unused))
            raise TypeError(
                f"unknown argument {name!r}: neither a decoding setting ({', '.join(NAMES)}) nor a generation "
                "setting of transformers' GenerationConfig"
            )
        for name in ("stop_strings", "max_time"):
            if getattr(merged, name, None) is not None:
                raise ValueError(f"{name}={getattr(merged, name)!r} is not supported by SpecVLM yet")
        rule = NextTokenRule.build(self.target, merged, prompt_ids)
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

    @staticmethod
    def _mark_compiled(config, target_seq, draft_seq) -> None:
        """Which decode-time forwards run through the compiled step, per ``config.compile``."""
        target_seq.compiled = config.compile == "all"
        if draft_seq is not None:
            draft_seq.compiled = config.compile != "off"

    def _prefill_draft(self, plan: Plan, config: DecodingConfig, inputs, target, mirrors: bool = False):
        """(draft sequence or None, kept video tokens) for ``plan``; ``mirrors``: a layer-skipping self-draft."""
        if not plan.drafts:
            return None, 0
        keep, kept = self._draft_keep(plan, config, target)
        draft = prefill_draft(
            self._draft, inputs, target, keep, positions=config.positions, mirrors=mirrors, vision=config.draft_vision
        )
        return draft, kept

    @staticmethod
    def _stop_below(config: DecodingConfig, layers: LayerChoice | None) -> float:
        """``draft_stop_below`` resolved: 'auto' stops a layer-skipping self-draft's chains early."""
        if config.draft_stop_below != "auto":
            return float(config.draft_stop_below)
        return AUTO_STOP_BELOW if layers is not None else 0.0

    def _layer_choice(self, plan: Plan, config: DecodingConfig, prompt_tokens: int = 0) -> LayerChoice | None:
        """A self-draft's decoder-layer subsets (``self_draft_layers``), or None: a separate draft, no draft,
        or every layer (``"all"``; also ``"auto"`` for a text model whose layers cannot be skipped)."""
        if not plan.drafts or self._draft is not None:
            return None
        setting = config.self_draft_layers
        options = candidates(setting, self._target.text_config.num_hidden_layers)
        if options is None:
            return None
        memory = None
        if setting == "auto" and config.self_draft_memory:
            # a workload: the prompt's length (to a power of two: it sets the steps' attention cost), what the
            # draft sees and what a step drafts
            workload = (prompt_tokens.bit_length(), plan.pruning, config.drop_rate, str(config.tree),
                        config.num_draft_tokens, config.draft_stop_below)  # fmt: skip
            memory = self._layer_memory.table(workload)
        try:
            return LayerChoice(self._target, options, auto=setting == "auto", memory=memory)
        except ValueError as err:
            if setting != "auto":
                raise
            logger.info("self-drafting with every layer: %s", err)
            return None

    def _draft_keep(self, plan: Plan, config: DecodingConfig, target) -> tuple[torch.Tensor, int]:
        """(sorted prompt positions the draft is prefilled with, kept video tokens) for a drafting plan."""
        layout = target.layout
        result = pruning.select(
            plan.pruning,
            target.scores,
            layout.pruning_grid,
            config.drop_rate,
            stage1_mass=config.stage1_mass,
            seed=config.seed,
            window=config.window,
        )
        keep = pruning.keep_sequence_indices(target.seq.prefix, layout.positions, result.kept.cpu())
        return keep, int(result.kept.numel())

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
            device = self._target.device
            extended = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extend_inputs(inputs, expected[:i]).items()
            }
            logits = self.target(**extended, logits_to_keep=1).logits[0, -1:]  # (1, V)
            return rule.scores(logits, [expected[:i]])[0]

        return classify(expected, got, scores_at, self.target.dtype)

    def draft_keep(self, inputs, method: str = "specvlm", **overrides) -> torch.Tensor:
        """The sorted prompt positions (long, on CPU) the draft is prefilled with for ``inputs``: every
        text token plus the video tokens ``method`` keeps ("sd": all; "specvlm": the pruning chosen by
        the settings, ``overrides`` as in :meth:`generate`). Runs the target's prefill to score them."""
        if method not in ("sd", "specvlm"):
            raise ValueError(f"draft_keep needs method 'sd' or 'specvlm', got {method!r}")
        config = self.config.replace(**overrides) if overrides else self.config
        plan = Plan.resolve(method, config)
        return self._draft_keep(plan, config, self._prefill_target(plan, config, inputs))[0]

    def _prefill_target(self, plan: Plan, config: DecodingConfig, inputs):
        """The target's prefill, scoring the video tokens when the plan's pruning reads the scores."""
        backend = resolve_backend(config.attn_backend, self._target.device)
        return prefill_target(self._target, inputs, capture_scores=plan.capture_scores, backend=backend)

    def _check_context(self, next_pos: int, max_new_tokens: int) -> None:
        """Raise before decoding if a position id would pass the target's ``max_position_embeddings``.

        Draft tokens never go past the last committed token (the loop drafts at most
        ``remaining - 1`` tokens), so the highest position fed is ``next_pos + max_new_tokens - 2``.
        """
        limit = self._target.max_positions
        last = next_pos + max_new_tokens - 2
        if limit is not None and last >= limit:
            raise ValueError(
                f"context overflow: the prompt ends at position {next_pos - 1} and max_new_tokens={max_new_tokens} "
                f"would feed position {last}, beyond the target's max_position_embeddings={limit} "
                f"(positions 0..{limit - 1}); use fewer frames or a smaller max_new_tokens"
            )
