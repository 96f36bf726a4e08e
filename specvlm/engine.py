"""The Python API: ``SpecVLM.from_pretrained(...)`` and ``engine.generate(video=..., prompt=...)``.

The engine loads the stock target (and optional draft) model and the stock processor, checks that
the pair can work together (same family, same tokenizer, same video-token layout), builds inputs
from a video file or a frames array, and runs the one decoding loop for every method.

What this module deliberately does not do: batching (one prompt at a time) or evaluation bookkeeping.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

import pruning
from pruning.budget import check_drop_rate
from specvlm import attention
from specvlm.attention import BACKENDS, resolve_backend
from specvlm.adapters import adapter_for, family_of
from specvlm import trees
from specvlm.decoding import decode, prefill_draft, prefill_target
from specvlm.drafting import DynamicTree
from specvlm.sampling import Sampling
from specvlm.trees import TreeShape
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.timing import Timer
from specvlm.video import DEFAULT_NUM_FRAMES, Video, from_frames, load_video

logger = logging.getLogger(__name__)

METHODS = ("ar", "sd", "specvlm")
#: What ``DecodingConfig.compile`` may compile: nothing, the draft's decode step, or every decode step.
COMPILE_MODES = ("off", "draft", "all")
POSITION_MODES = ("original", "compact")
#: Chain length (draft tokens per target verification). The best length follows the draft's acceptance
#: rate; the embedded pair decodes fastest at 7 in a sweep of 4-8 (README, Performance).
DEFAULT_NUM_DRAFT_TOKENS = 7


@dataclass(frozen=True)
class DecodingConfig:
    """Validated decoding settings (the paper's names: drop_rate, stage1_mass = lambda)."""

    pruning: str = "specvlm"
    drop_rate: float = 0.9
    stage1_mass: float = 0.4
    num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS
    positions: str = "original"
    seed: int = 0
    window: str = "middle"
    tree: object = "chain"  # "chain" | "specvlm-25" | "dynamic" | list of paths of child ranks
    tree_depth: int = 5
    tree_top_k: int = 8
    tree_total_tokens: int = 25
    attn_backend: str = "auto"  # "auto" | "sdpa" | "cascade" | "flash_attn" (specvlm.attention)
    compile: str = "off"  # "off" | "draft" | "all": decode-time forwards under torch.compile (COMPILE_MODES)

    def __post_init__(self):
        if self.pruning not in pruning.available():
            raise ValueError(f"unknown pruning strategy {self.pruning!r}; available: {pruning.available()}")
        check_drop_rate(self.drop_rate)
        if not 0.0 <= float(self.stage1_mass) <= 1.0:
            raise ValueError(f"stage1_mass={self.stage1_mass!r} is outside the allowed range [0, 1]")
        if isinstance(self.num_draft_tokens, bool) or not isinstance(self.num_draft_tokens, int) or self.num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens={self.num_draft_tokens!r} must be an int >= 1")
        if self.positions not in POSITION_MODES:
            raise ValueError(f"positions={self.positions!r}; choose one of {POSITION_MODES}")
        if not isinstance(self.tree, str):
            object.__setattr__(self, "tree", tuple(tuple(p) for p in self.tree))
        self.tree_shape()  # validates the tree and its parameters
        if self.attn_backend != "auto" and self.attn_backend not in BACKENDS:
            raise ValueError(f"attn_backend={self.attn_backend!r}; choose one of {('auto',) + BACKENDS}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r}; choose one of {COMPILE_MODES}")

    def tree_shape(self) -> TreeShape | DynamicTree:
        """The static shape, or the dynamic-tree settings, this config drafts with."""
        shape = trees.resolve(self.tree, self.num_draft_tokens)
        if shape is None:
            return DynamicTree(depth=self.tree_depth, top_k=self.tree_top_k, total_tokens=self.tree_total_tokens)
        return shape

    def replace(self, **changes) -> "DecodingConfig":
        values = {**self.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        return DecodingConfig(**values)


def check_compiler(device: torch.device, mode: str = "draft") -> None:
    """Raise ValueError, before any work is done, when ``torch.compile`` cannot build kernels for
    ``device`` (it needs a C++ compiler on CPU and Triton on CUDA)."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ValueError(f"compile={mode!r} needs Triton on CUDA (pip install triton); use compile='off'")
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:
        raise ValueError(
            f"compile={mode!r} needs a C++ compiler for torch.compile on {device.type} ({err}); "
            "install one (e.g. g++) or use compile='off'"
        ) from err


def _load_model(path_or_model, torch_dtype, device_map):
    from transformers import AutoModelForImageTextToText

    if isinstance(path_or_model, (str, os.PathLike)):
        model = AutoModelForImageTextToText.from_pretrained(path_or_model, dtype=torch_dtype, device_map=device_map)
    else:
        model = path_or_model
    family_of(model.config)  # raises for unsupported families, listing the supported ones
    model.eval()
    model.set_attn_implementation({"text_config": attention.register()})
    return model


def _load_tokenizer(path_or_model):
    """The draft's own tokenizer when its checkpoint ships one, else None (then only ids are compared)."""
    from transformers import AutoTokenizer

    if not isinstance(path_or_model, (str, os.PathLike)):
        return None
    local = os.path.isdir(path_or_model)
    if local and not any(os.path.exists(os.path.join(path_or_model, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        logger.warning("draft checkpoint %s has no tokenizer files; vocabularies are not compared", path_or_model)
        return None
    return AutoTokenizer.from_pretrained(path_or_model)


def _check_pair(target, draft, target_tokenizer, draft_tokenizer) -> None:
    """Raise at load time if the draft cannot draft for the target, saying what differs."""
    tf, df = family_of(target.config), family_of(draft.config)
    if tf != df:
        raise ValueError(f"target family {tf!r} and draft family {df!r} differ: their video-token layouts are not the same")
    if target.config.video_token_id != draft.config.video_token_id:
        raise ValueError(
            f"video token ids differ: target {target.config.video_token_id}, draft {draft.config.video_token_id}"
        )
    ta, da = adapter_for(target), adapter_for(draft)
    if ta.layout_signature() != da.layout_signature():
        raise ValueError(
            f"video-token layouts differ: target {ta.layout_signature()}, draft {da.layout_signature()}"
        )
    if draft_tokenizer is not None:
        tv, dv = target_tokenizer.get_vocab(), draft_tokenizer.get_vocab()
        if tv != dv:
            only_t = len(set(tv.items()) - set(dv.items()))
            only_d = len(set(dv.items()) - set(tv.items()))
            raise ValueError(
                f"target and draft vocabularies differ ({len(tv)} vs {len(dv)} tokens; {only_t} entries only in the "
                f"target's, {only_d} only in the draft's): the draft's tokens would not mean the same to the target"
            )


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
        if draft is None and self.config.positions != "original":
            raise ValueError(
                f"positions={self.config.positions!r} needs a separate draft model; self-drafting reuses the target's cache"
            )
        self._target = adapter_for(target)
        self._draft = adapter_for(draft) if draft is not None else None
        vocab = self._target.vocab_size if draft is None else min(self._target.vocab_size, self._draft.vocab_size)
        self.shared_vocab = vocab

    @classmethod
    def from_pretrained(
        cls,
        target,
        draft=None,
        pruning: str = "specvlm",
        drop_rate: float = 0.9,
        stage1_mass: float = 0.4,
        num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS,
        torch_dtype=None,
        device_map=None,
        *,
        positions: str = "original",
        processor=None,
        seed: int = 0,
        window: str = "middle",
        tree="chain",
        tree_depth: int = 5,
        tree_top_k: int = 8,
        tree_total_tokens: int = 25,
        attn_backend: str = "auto",
        compile: str = "off",
    ) -> "SpecVLM":
        """Load the target (path or loaded model), an optional draft, and the target's processor.

        ``draft=None`` means self-drafting: the target drafts for itself from its own pruned cache.
        ``tree`` is "chain" (``num_draft_tokens`` deep), "specvlm-25" (the reference's 25-node tree),
        "dynamic" (EAGLE-2 style; ``tree_depth``, ``tree_top_k``, ``tree_total_tokens``) or a list
        of paths of child ranks such as ``[[0], [1], [0, 0]]``. ``attn_backend`` picks the attention
        kernels of the SpecVLM forwards: "auto" (flash_attn or the fused SDPA cascade on CUDA, SDPA on
        CPU), "sdpa", "cascade" or "flash_attn". ``compile`` runs decode-time forwards through
        ``torch.compile``: "off", "draft" (the draft's steps: a small model's step is bound by the
        number of operators, which compiling fuses) or "all" (the target's steps too). The first
        decode of each kind of step compiles it (seconds); outputs are unchanged.
        """
        from transformers import AutoProcessor

        config = DecodingConfig(
            pruning, drop_rate, stage1_mass, num_draft_tokens, positions, seed, window,
            tree, tree_depth, tree_top_k, tree_total_tokens, attn_backend, compile,
        )  # fmt: skip
        if processor is None:
            if not isinstance(target, (str, os.PathLike)):
                raise ValueError("pass `processor=` when `target` is an already loaded model")
            processor = AutoProcessor.from_pretrained(target)
        target_model = _load_model(target, torch_dtype, device_map)
        draft_model = None
        if draft is not None:
            draft_model = _load_model(draft, torch_dtype, device_map)
            draft_tokenizer = _load_tokenizer(draft)
            _check_pair(target_model, draft_model, processor.tokenizer, draft_tokenizer)
        return cls(target_model, processor, draft_model, config)

    # ---- inputs --------------------------------------------------------------------------------
    def load(self, video, *, num_frames: int | None = None, fps: float | None = None) -> Video:
        """A :class:`Video` from a path or a (T, H, W, 3) uint8 frames array / list of frames."""
        if isinstance(video, Video):
            return video
        if isinstance(video, (str, os.PathLike)):
            if num_frames is None and fps is None:
                num_frames = DEFAULT_NUM_FRAMES
            return load_video(video, num_frames=num_frames, fps=fps)
        if isinstance(video, (np.ndarray, torch.Tensor, list, tuple)):
            return from_frames(video, num_frames=num_frames)
        raise TypeError(f"video must be a path, a Video or a (T, H, W, 3) uint8 array, got {type(video).__name__}")

    def build_inputs(self, video, prompt: str, num_frames: int | None = None, fps: float | None = None):
        """The stock processor's output for one video and one user prompt (``target.generate(**inputs)`` accepts it)."""
        clip = self.load(video, num_frames=num_frames, fps=fps)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        if getattr(self.processor, "chat_template", None) is None:
            raise ValueError("the processor has no chat template; pass a checkpoint whose processor defines one")
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return self.processor(
            text=[text],
            videos=[clip.frames],
            video_metadata=[clip.metadata()],
            do_sample_frames=False,
            return_tensors="pt",
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

    def generate(
        self,
        video=None,
        prompt: str | None = None,
        max_new_tokens: int = 256,
        num_frames: int | None = None,
        method: str = "specvlm",
        *,
        inputs=None,
        fps: float | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        ignore_eos: bool = False,
        **overrides,
    ) -> GenerationResult:
        """Generate an answer; ``method`` is "specvlm" (pruned draft), "sd" (full draft) or "ar" (plain).

        ``overrides`` replace decoding settings for this call (pruning, drop_rate, stage1_mass,
        num_draft_tokens, positions, seed, window, tree, tree_depth, tree_top_k, tree_total_tokens,
        attn_backend, compile).
        Pass ``inputs`` (from :meth:`build_inputs`) instead of ``video`` + ``prompt`` to reuse processed
        inputs. ``do_sample=True`` samples with ``temperature`` / ``top_p`` / ``top_k`` from a
        ``torch.Generator`` seeded with ``seed``: the output follows the target's own sampling
        distribution (lossless speculative sampling); greedy output equals the target's greedy output.
        ``ignore_eos=True`` decodes exactly ``max_new_tokens`` tokens (as stock ``generate()`` with
        ``eos_token_id=[]`` would), e.g. for benchmarks.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 1")
        config = self.config.replace(**overrides) if overrides else self.config
        for name, flag in (("do_sample", do_sample), ("ignore_eos", ignore_eos)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}={flag!r} must be True or False")
        sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p) if do_sample else None
        if inputs is None:
            if video is None or prompt is None:
                raise ValueError("pass `video` and `prompt`, or `inputs` from build_inputs()")
            inputs = self.build_inputs(video, prompt, num_frames=num_frames, fps=fps)
        if config.compile != "off":
            check_compiler(self._target.device, config.compile)
        stats = GenerationStats(method=method)
        timer = Timer(self._target.device)
        with timer("prefill"):
            target = self._prefill_target(method, config, inputs)
            self._check_context(target.seq.next_pos, max_new_tokens)
            draft, kept = self._prefill_draft(method, config, inputs, target)
        self._mark_compiled(config, target.seq, draft)
        stats.video_tokens = target.layout.num_tokens
        stats.kept_video_tokens = kept
        stats.prompt_tokens = stats.target_kv_tokens = target.seq.prefix
        stats.draft_kv_tokens = draft.prefix if draft is not None else 0
        generator = None
        if sampling is not None:
            generator = torch.Generator(device=self._target.device).manual_seed(config.seed)
        with timer("decode"):
            tokens = decode(
                target,
                draft,
                stats,
                tree=None if method == "ar" else config.tree_shape(),
                max_new_tokens=max_new_tokens,
                eos_token_ids=set() if ignore_eos else self.eos_token_ids,
                shared_vocab=self.shared_vocab,
                sampling=sampling,
                generator=generator,
            )
        stats.new_tokens = len(tokens)
        stats.prefill_s, stats.decode_s = timer.get("prefill"), timer.get("decode")
        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
        return GenerationResult(token_ids=tokens, text=text, stats=stats)

    @staticmethod
    def _mark_compiled(config, target_seq, draft_seq) -> None:
        """Which decode-time forwards run through the compiled step, per ``config.compile``."""
        target_seq.compiled = config.compile == "all"
        if draft_seq is not None:
            draft_seq.compiled = config.compile != "off"

    def _prefill_draft(self, method, config, inputs, target):
        """(draft sequence or None, kept video tokens) for ``method``."""
        if method == "ar":
            return None, 0
        keep, kept = self._draft_keep(method, config, target)
        draft = prefill_draft(self._draft, inputs, target, keep, positions=config.positions)
        return draft, kept

    def _draft_keep(self, method, config, target) -> tuple[torch.Tensor, int]:
        """(sorted prompt positions the draft is prefilled with, kept video tokens) for "sd" or "specvlm"."""
        layout = target.layout
        length = target.seq.prefix
        if method == "sd":
            return torch.arange(length), layout.num_tokens
        result = pruning.select(
            config.pruning,
            target.scores,
            layout.grid,
            config.drop_rate,
            stage1_mass=config.stage1_mass,
            seed=config.seed,
            window=config.window,
        )
        keep = pruning.keep_sequence_indices(length, layout.positions, result.kept.cpu())
        return keep, int(result.kept.numel())

    def draft_keep(self, inputs, method: str = "specvlm", **overrides) -> torch.Tensor:
        """The sorted prompt positions (long, on CPU) the draft is prefilled with for ``inputs``: every
        text token plus the video tokens ``method`` keeps ("sd": all; "specvlm": the pruning chosen by
        the settings, ``overrides`` as in :meth:`generate`). Runs the target's prefill to score them."""
        if method not in ("sd", "specvlm"):
            raise ValueError(f"draft_keep needs method 'sd' or 'specvlm', got {method!r}")
        config = self.config.replace(**overrides) if overrides else self.config
        return self._draft_keep(method, config, self._prefill_target(method, config, inputs))[0]

    def _prefill_target(self, method, config, inputs):
        """The target's prefill, scoring the video tokens when ``method``'s pruning reads the scores."""
        capture = method == "specvlm" and pruning.needs_scores(config.pruning)
        backend = resolve_backend(config.attn_backend, self._target.device)
        return prefill_target(self._target, inputs, capture_scores=capture, backend=backend)

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
