"""What the decoding loop needs from a model family, over the stock transformers model.

An adapter wraps a loaded stock ``*ForConditionalGeneration`` model (never a forked modeling file) and
exposes: input embeddings with the video features scattered in, where the video tokens are and their
(T, H, W) grid, position ids for any subset of tokens (1-D, or Qwen's 3-D mRoPE), and a forward over
``inputs_embeds`` + explicit ``position_ids`` + explicit mask + cache that returns logits.

Positions are handled as a (P, L) long tensor: P = 1 for 1-D RoPE, P = 3 for mRoPE (temporal, height,
width). Decoding continues from ``max + 1`` of the prefill positions, on every axis, exactly as the
stock models do (for mRoPE this is ``rope_deltas`` made explicit).

Images are runs of the same layout (:class:`VisualRun`): their tokens are pruned with the video's.

What this module deliberately does not do: batching (batch size is 1), or anything about drafting and
verification.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from specvlm.models import cache as kv
from specvlm.attention import AttentionContext

logger = logging.getLogger(__name__)


def _default_stance() -> bool:
    """Whether torch.compile runs under its default stance (a caller's own stance, such as "force_eager",
    is left in charge of a trusted step)."""
    stance = getattr(getattr(torch._dynamo, "eval_frame", None), "_stance", None)
    return getattr(stance, "stance", None) == "default" and not getattr(stance, "skip_guard_eval_unsafe", False)


#: Graphs torch.compile may keep for the decode step (raised to this when a step is compiled; the default,
#: 8, is reached by two models with a few kinds of forward each: one token, a masked chunk, a tree level).
COMPILED_GRAPHS_LIMIT = 64


@dataclass(frozen=True)
class VisualRun:
    """One image or video of the prompt (or one part of an image, e.g. LLaVA-OneVision's base view and its
    high-resolution view): a (T, H, W) grid of prunable tokens in row-major order.

    kind: "image" or "video"
    grid: (T, H, W); a video's T counts frames (or temporal patches), an image's T its tiles
    """

    kind: str
    grid: tuple[int, int, int]

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


@dataclass(frozen=True)
class VisualLayout:
    """Where the visual tokens of one prompt are: its runs (images and videos) in prompt order.

    positions: (N,) long, increasing sequence positions of the prunable visual tokens, run after run
        (each run's tokens in its (t, h, w) row-major order)
    grid: (T, H, W) of a single-run layout (None when there are several runs)
    structural: (S,) long, sequence positions of visual-placeholder tokens that are never pruned (e.g.
        LLaVA-OneVision's newline tokens); the loop treats them like text.
    runs: the :class:`VisualRun` of each image and video; a layout built with only ``grid`` is one video run.
    """

    positions: torch.Tensor
    grid: tuple[int, int, int] | None = None
    structural: torch.Tensor | None = None
    runs: tuple[VisualRun, ...] = ()

    def __post_init__(self):
        if not self.runs:
            if self.grid is None:
                raise ValueError("a VisualLayout needs its grid or its runs")
            object.__setattr__(self, "runs", (VisualRun("video", tuple(self.grid)),))
        elif self.grid is None and len(self.runs) == 1:
            object.__setattr__(self, "grid", self.runs[0].grid)
        if self.structural is None:
            object.__setattr__(self, "structural", self.positions[:0])
        counted = sum(run.num_tokens for run in self.runs)
        if counted != self.positions.numel():
            raise ValueError(f"the visual runs {self.grids} hold {counted} tokens, but {self.positions.numel()} positions were given")

    @classmethod
    def from_runs(cls, runs: list[tuple[str, tuple[int, int, int], torch.Tensor]], structural=None) -> "VisualLayout":
        """A layout from (kind, grid, positions) per run, in any order (sorted here by first position)."""
        if not runs:
            raise ValueError("the prompt holds no image or video tokens")
        runs = sorted(runs, key=lambda run: int(run[2][0]) if run[2].numel() else -1)
        positions = torch.cat([run[2].to(torch.long).cpu() for run in runs])
        if structural is None:
            structural = positions[:0]
        return cls(positions=positions, structural=structural, runs=tuple(VisualRun(kind, tuple(grid)) for kind, grid, _ in runs))

    @property
    def grids(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(run.grid for run in self.runs)

    @property
    def pruning_grid(self):
        """What the pruning strategies take: the (T, H, W) of a single run, or the tuple of every run's grid."""
        return self.runs[0].grid if len(self.runs) == 1 else self.grids

    @property
    def num_tokens(self) -> int:
        return int(self.positions.numel())

    @property
    def last_position(self) -> int:
        """Sequence position of the last visual placeholder token (prunable or structural)."""
        last = int(self.positions.max())
        if self.structural.numel():
            last = max(last, int(self.structural.max()))
        return last


VideoLayout = VisualLayout  # its old name (it holds image runs too), kept for imports


def split_runs(family: str, kind: str, slots: torch.Tensor, grids: list[tuple[int, int, int]]) -> list:
    """[(kind, grid, positions)] for consecutive media of one kind: ``slots`` (their placeholder positions,
    in order) cut into one chunk per grid. Raises when the counts do not match."""
    sizes = [t * h * w for t, h, w in grids]
    if sum(sizes) != slots.numel():
        raise ValueError(
            f"{family}: {slots.numel()} {kind} placeholder tokens for {kind} grids {grids} ({sum(sizes)} expected): "
            "the processor does not match the model"
        )
    return [(kind, grid, chunk) for grid, chunk in zip(grids, torch.split(slots, sizes))]


@dataclass(frozen=True)
class SideFeatures:
    """Per-token features a family adds inside its decoder besides the input embeddings (Qwen3-VL's
    DeepStack: visual features of intermediate vision layers added to the hidden states of the first
    decoder layers at the visual positions). They belong to their tokens: a forward over a subset of
    the prompt's tokens must receive exactly those tokens' features (:meth:`select`).

    mask: (L,) bool, the prompt positions that carry side features
    features: (S, M, D) with M = mask.sum(): S feature sets (one per decoder layer they feed), rows in
        prompt order
    """

    mask: torch.Tensor
    features: torch.Tensor

    def select(self, index: torch.Tensor) -> "SideFeatures":
        """The side features of the prompt positions ``index`` ((n,) long, increasing), in that order."""
        index = index.to(self.mask.device)
        rows = torch.cumsum(self.mask, 0) - 1  # (L,) row of each carrying position in ``features``
        mask = self.mask[index]  # (n,)
        return SideFeatures(mask=mask, features=self.features[:, rows[index][mask].to(self.features.device)])


class ModelAdapter:
    """Family-independent part; subclasses implement the three family hooks at the bottom."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    #: the decoder layer types (``text_config.layer_types``) this family's adapter handles; the cache
    #: operations of each kind live in :mod:`specvlm.models.cache`
    layer_kinds: tuple[str, ...] = ("full_attention",)
    #: whether a tree of draft tokens can be verified exactly in one forward (False: chains only), and
    #: whether the target can draft for itself from its own pruned cache; ``decoding_limits`` says why not
    supports_trees: bool = True
    supports_self_draft: bool = True
    decoding_limits: str = ""

    def __init__(self, model):
        self.model = model
        self.config = model.config
        self.text_config = model.config.get_text_config(decoder=True)
        layer_types = getattr(self.text_config, "layer_types", None) or []
        unknown = sorted(set(layer_types) - set(self.layer_kinds))
        if unknown:
            raise ValueError(
                f"{self.family}: layer types {unknown} are not supported; this family's adapter handles {list(self.layer_kinds)}"
            )
        # transformers 5.24 renamed the text models' ``past_key_values`` argument to ``cache`` (the old
        # name still works there, with a FutureWarning on every call); earlier 5.x only know the old one
        parameters = inspect.signature(self.language_model().forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        # the stock ``get_input_embeddings()`` searches the module tree on every call (about 20 us here,
        # several times per decode step); the module stays the same object when the model moves (build the
        # engine after any resize_token_embeddings, which replaces it)
        self._input_embeddings = model.get_input_embeddings()
        self._compiled = None  # compiled_step(), built on first use

    # ---- properties the loop reads -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._input_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._input_embeddings.weight.dtype

    @property
    def tp_group(self):
        """The process group over which the stock model's layers are sharded (tensor parallelism: every rank holds
        some of each layer's heads), or None for a model held whole by this process."""
        if (getattr(self.model, "tp_size", None) or 1) <= 1:
            return None
        return self.model._device_mesh["tp"].get_group()

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def max_positions(self) -> int | None:
        return getattr(self.text_config, "max_position_embeddings", None)

    @property
    def min_video_frames(self) -> int:
        """The fewest frames a video may have: the temporal patch size where the stock video processor refuses
        a shorter video (:attr:`short_videos_refused`), else 1."""
        if not self.short_videos_refused:
            return 1
        return int(getattr(self.config.vision_config, "temporal_patch_size", 1) or 1)

    def check_video_frames(self, num_frames: int) -> None:
        """Raise ValueError, in the user's terms, when the stock processor cannot take a video of ``num_frames``
        frames (call it before processing: the processor's own message speaks of its internals)."""
        least = self.min_video_frames
        if num_frames < least:
            raise ValueError(
                f"{self.family} needs at least {least} frames per video (temporal patch size {least}: its stock processor "
                f"groups frames into patches of {least} and refuses a shorter video); got num_frames={num_frames}. "
                f"Sample at least {least} frames, or pass a single frame as an image (images=...)"
            )

    @property
    def video_token_id(self) -> int:
        return int(self.config.video_token_id)

    # ---- embeddings ---------------------------------------------------------------------------
    def has_video(self, inputs) -> bool:
        return inputs.get(self.video_input_key) is not None

    def has_images(self, inputs) -> bool:
        return inputs.get(self.image_input_key) is not None

    @torch.no_grad()
    def embed(self, inputs) -> torch.Tensor:
        """(1, L, D) input embeddings of the whole prompt with this model's own visual features (its
        video's and its images') scattered in."""
        embeds = self.scatter_video(inputs, self.video_features(inputs)) if self.has_video(inputs) else self.embed_ids(inputs)
        if self.has_images(inputs):
            self.place(embeds, self.image_slots(inputs), self.image_features(inputs), "image")
        return embeds

    def embed_ids(self, inputs) -> torch.Tensor:
        """(1, L, D) embeddings of the prompt's token ids (placeholders included)."""
        input_ids = inputs["input_ids"].to(self.device)
        if input_ids.shape[0] != 1:
            raise ValueError(f"batch size {input_ids.shape[0]} is not supported; SpecVLM decodes one prompt at a time")
        return self._input_embeddings(input_ids)

    def place(self, embeds: torch.Tensor, slots: torch.Tensor, features: torch.Tensor, kind: str) -> torch.Tensor:
        """Write ``features`` (N, D) into ``embeds`` (1, L, D) at the placeholder positions ``slots`` (N,)."""
        if features.shape[0] != slots.numel():
            raise ValueError(
                f"{self.family} produced {features.shape[0]} {kind} features for {slots.numel()} {kind} placeholder "
                "tokens: the processor and the model's vision configuration do not match"
            )
        embeds[0, slots.to(self.device)] = features.to(embeds.dtype)
        return embeds

    @torch.no_grad()
    def scatter_video(self, inputs, features: torch.Tensor) -> torch.Tensor:
        """(1, L, D) input embeddings of the prompt with ``features`` (N, D) at its video placeholder tokens."""
        return self.place(self.embed_ids(inputs), self.video_slots(inputs), features, "video")

    def video_slots(self, inputs) -> torch.Tensor:
        """(N_slots,) long, sequence positions of the video placeholder tokens (features go there in order);
        families whose video tokens share an id with image tokens (GLM-4V) read ``mm_token_type_ids`` instead."""
        return (inputs["input_ids"][0] == self.video_token_id).nonzero().squeeze(-1)

    def image_slots(self, inputs) -> torch.Tensor:
        """(N_slots,) long, sequence positions of the image placeholder tokens, in order."""
        if self.image_token_id is None:
            raise ValueError(f"{self.family}: the model config names no image token, so it takes no images")
        return (inputs["input_ids"][0] == self.image_token_id).nonzero().squeeze(-1)

    @property
    def image_token_id(self) -> int | None:
        for name in ("image_token_id", "image_token_index"):
            value = getattr(self.config, name, None)
            if value is not None:
                return int(value)
        return None

    def embed_prompt(self, inputs) -> tuple[torch.Tensor, SideFeatures | None]:
        """(:meth:`embed` of the prompt, its :class:`SideFeatures` or None for families without any)."""
        return self.embed(inputs), None

    def embed_kept(self, inputs, keep: torch.Tensor) -> tuple[torch.Tensor, SideFeatures | None]:
        """:meth:`embed_prompt` for a draft's prefill, where only the prompt positions ``keep`` (sorted, long)
        must hold their exact embeddings: a family may skip the visual work that only the other positions
        need (LLaVA-OneVision: the frames without a kept token). Default: the whole :meth:`embed_prompt`."""
        return self.embed_prompt(inputs)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(1, n) token ids -> (1, n, D) embeddings."""
        return self._input_embeddings(token_ids.to(self.device))

    # ---- positions ----------------------------------------------------------------------------
    def as_position_ids(self, pos: torch.Tensor) -> torch.Tensor:
        """(P, n) positions -> the shape the stock text model takes: (1, n) for 1-D, (3, 1, n) for mRoPE."""
        return pos.unsqueeze(1) if pos.shape[0] == 3 else pos

    @staticmethod
    def continuation(start: int, offsets: torch.Tensor, axes: int) -> torch.Tensor:
        """(P, n) positions of new text tokens at ``start + offsets`` on every axis."""
        return (offsets.to(torch.long) + start).unsqueeze(0).expand(axes, -1)

    # ---- forward ------------------------------------------------------------------------------
    def forward(
        self,
        embeds: torch.Tensor,
        pos: torch.Tensor,
        cache: DynamicCache,
        ctx: AttentionContext,
        logits_to_keep: int = 0,
        side: SideFeatures | None = None,
    ) -> torch.Tensor:
        """Run the language model over ``embeds`` (1, n, D) at positions ``pos`` (P, n); returns logits.

        The stock text decoder runs with an explicit mask mapping (so transformers builds none) and the
        hook context; ``logits_to_keep`` = k > 0 returns only the last k rows (1, k, V), 0 returns all.
        ``side``: the side features of exactly these n tokens (:meth:`SideFeatures.select`), if the family has any.
        """
        masks = dict.fromkeys(self.layer_kinds) if self.accepts_mask_mapping else None
        text_model = self._layer_view if self._layer_view is not None else self.language_model()
        out = text_model(
            inputs_embeds=embeds,
            position_ids=self.as_position_ids(pos),
            attention_mask=masks,
            use_cache=True,
            specvlm_ctx=ctx,
            **{self._cache_kwarg: cache},
            **(self.side_kwargs(side) if side is not None else {}),
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.model.lm_head(hidden)

    def forward_ids(
        self,
        token_ids: torch.Tensor,
        pos: torch.Tensor,
        cache: DynamicCache,
        ctx: AttentionContext,
        logits_to_keep: int = 0,
        compiled: bool = False,
    ) -> torch.Tensor:
        """:meth:`forward` over the embeddings of ``token_ids`` (1, n): one decode-time model call.

        ``compiled``: run it through ``torch.compile`` (:meth:`compiled_step`); the result is the same.
        """
        if not compiled:
            return self.forward(self.embed_tokens(token_ids), pos, cache, ctx, logits_to_keep)
        kv.ensure_capacity(cache, token_ids.shape[-1])  # allocation stays outside the compiled graph
        step = self.compiled_step()
        logits = None
        if self.trusted_compiled and _default_stance():
            try:
                with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
                    logits = step(token_ids, pos, cache, ctx)
            except RuntimeError as error:  # a call unlike every graph: torch refuses before anything runs
                if "skip_guard_eval_unsafe" not in str(error):
                    raise
                logger.info("%s: a compiled step needs a graph of its own; its steps are guarded again", self.family)
                self.trust_compiled(False)
        if logits is None:
            logits = step(token_ids, pos, cache, ctx)
        return logits[:, -logits_to_keep:] if logits_to_keep else logits

    def trust_compiled(self, trusted: bool = True) -> None:
        """Whether this adapter's compiled steps skip most of torch.compile's guard evaluation
        (``skip_guard_eval_unsafe``), for a draft whose every kind of decode step was compiled beforehand
        (:func:`~specvlm.decoding.drafters.model.warm_compiled` trusts them once it has built them).

        Each compiled call normally checks some 600 guards (tensor shapes, module attributes, the cache's
        fields) before it runs its graph, about a third of a small draft's step on CPU. Trusted, a call
        checks only the guards that tell its graphs apart (every tensor's shape and type, and whatever
        guard once failed and so compiled another graph), so that a call unlike any seen in the warm-up
        may run a graph built for another. A call that no graph's distinguishing guards admit is refused by
        torch before anything runs; it then runs guarded (compiling its graph) and the adapter's steps stay
        guarded until the next warm-up. Only a draft's steps are trusted: whatever a draft proposes, the
        target verifies every token, so a draft's output never decides an answer's tokens."""
        self.trusted_compiled = trusted

    def _step(self, token_ids: torch.Tensor, pos: torch.Tensor, cache: DynamicCache, ctx: AttentionContext) -> torch.Tensor:
        return self.forward(self.embed_tokens(token_ids), pos, cache, ctx)

    def compiled_step(self):
        """The decode step (embedding lookup, decoder, head; every row's logits) under ``torch.compile``.

        Compiled once per adapter with dynamic shapes (the cache length and the number of new tokens
        vary); a new kind of forward (one token, or several under a mask) compiles a graph on first use.
        """
        if self._compiled is None:
            # every adapter's compiled step shares one code object, whose graphs count against one limit
            if torch._dynamo.config.recompile_limit < COMPILED_GRAPHS_LIMIT:
                torch._dynamo.config.recompile_limit = COMPILED_GRAPHS_LIMIT
            self._compiled = torch.compile(self._step, dynamic=True)
        return self._compiled

    def language_model(self):
        return self.model.model.language_model

    #: whether compiled steps skip most guard evaluation (:meth:`trust_compiled`)
    trusted_compiled = False

    #: the processor's tokenizer, set by the engine (families that read the prompt's text to tell runs apart use it)
    tokenizer = None

    #: the stock text model restricted to some decoder layers (:meth:`with_layers`), or None: all of them
    _layer_view = None

    def with_layers(self, layers) -> "ModelAdapter":
        """A view of this adapter whose forwards run only the decoder layers ``layers`` (increasing
        indices) of the stock text model: embeddings, rotary embedding, final norm and head as usual,
        weights shared, the stock model unmodified. Each layer keeps its own ``layer_idx`` into the
        cache, so a forward leaves the skipped layers' cache rows alone (layer-skipping self-drafting;
        the cache should be a :class:`~specvlm.models.cache.PartialCache` whose ``length_layer`` is one
        of ``layers``). Needs a text model with plain causal attention in every layer (checked at init)."""
        import copy

        text_model = self.language_model()
        decoder = getattr(text_model, "layers", None)
        if not isinstance(decoder, torch.nn.ModuleList):
            raise ValueError(f"{self.family}: the text model has no list of decoder layers, so none can be skipped")
        layers = list(layers)
        if not layers or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= len(decoder):
            raise ValueError(f"layers={layers!r} must be increasing indices in 0..{len(decoder) - 1}")
        view_model = copy.copy(text_model)  # shares parameters, buffers and submodules
        view_model._modules = dict(text_model._modules)
        view_model._modules["layers"] = torch.nn.ModuleList([decoder[i] for i in layers])
        view = copy.copy(self)
        view._layer_view = view_model
        view._compiled = None
        view.trusted_compiled = False
        return view

    # ---- family hooks -------------------------------------------------------------------------
    #: the stock text model takes a {layer type: mask} mapping as ``attention_mask`` (then it builds no mask);
    #: False: it takes a plain mask, and gets None (the hook's context carries the real mask either way)
    accepts_mask_mapping: bool = True
    #: the processor output that holds the video's pixels (InternVL passes its frames as ``pixel_values``)
    video_input_key: str = "pixel_values_videos"
    #: the processor output that holds the images' pixels
    image_input_key: str = "pixel_values"
    #: whether the stock video processor refuses a video shorter than one temporal patch (Qwen3-VL's and GLM-4V's
    #: raise "t:1 must be larger than temporal_factor:2"; Qwen2-VL's and Qwen2.5-VL's repeat the last frame)
    short_videos_refused: bool = False

    def image_features(self, inputs) -> torch.Tensor:
        """(N_features, D) projected features of the prompt's images in placeholder order."""
        raise ValueError(f"{self.family}: images are not supported for this family yet; pass a video only")

    def side_kwargs(self, side: SideFeatures) -> dict:
        """The stock text model's keyword arguments that feed ``side`` (families with side features)."""
        raise NotImplementedError(f"{self.family} has no side features")

    def layout_signature(self) -> dict:
        """Vision settings that determine the video-token layout; target and draft must agree on them."""
        raise NotImplementedError

    def video_features(self, inputs) -> torch.Tensor:
        """(N_features, D) projected visual features in placeholder order."""
        raise NotImplementedError

    def layout(self, inputs) -> VisualLayout:
        raise NotImplementedError

    def positions(self, inputs) -> torch.Tensor:
        """(P, L) prefill positions of the whole prompt, exactly as the stock model computes them."""
        raise NotImplementedError
