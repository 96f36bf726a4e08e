"""Memory before loading: what a target / draft pair needs at a number of frames and a dtype.

:func:`estimate` adds up, per model, from the config's shapes alone (nothing is downloaded or loaded):

* weights: the parameter count, by the stock model's own arithmetic (:func:`parameter_counts`), times the
  dtype's bytes;
* the KV cache: ``2 x layers x kv_heads x head_dim x bytes`` per token, over the prompt, the new tokens and
  one verification's tree (the draft's prompt holds only the video tokens it keeps);
* the score capture (target): the block-bounded temporaries of :mod:`specvlm.attention.capture`;
* the prefill activations: the prompt's embeddings plus the largest one-layer temporaries (decoder or
  vision tower), a fused attention kernel assumed (no query x key matrix);
* tree masks and logits of one verification (and one drafting step).

The total is summed as if everything were alive at once (an upper bound: the capture and the prefill
temporaries are gone before the first verification). GPUs: the total over a GPU's memory less a headroom
(CUDA context, allocator fragmentation, kernel workspaces), with ``device_map="auto"`` (whole layers per GPU),
and with tensor parallelism (the target's decoder layers and KV cache split, everything else whole on every
GPU, the draft included). docs/models.md writes the arithmetic out.

Model shapes come from a local checkpoint directory's ``config.json`` (read by transformers, offline), a
transformers config or a dict in its format, or :data:`KNOWN_CONFIGS` for the checkpoints the packaged
experiment files name. Families: :data:`FAMILIES`.

What this module deliberately does not do: load, download or place anything.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from specvlm_pruning.budget import budget, check_drop_rate
from specvlm.attention.capture import _CAPTURE_BLOCK_ELEMENTS, _LSE_BLOCK_ELEMENTS
from specvlm.config import DEFAULT_MAX_NEW_TOKENS, DecodingConfig

logger = logging.getLogger(__name__)

GIB = 1 << 30
#: Bytes per weight / activation element of each dtype the estimate takes.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: The families whose parameter arithmetic is written out here.
FAMILIES = ("llava_onevision", "qwen2_5_vl")
#: A GPU's memory (GiB) and the share of it kept free when none is given.
DEFAULT_GPU_MEMORY_GIB = 80.0
DEFAULT_HEADROOM = 0.10
#: Text tokens around the video (chat template, system turn, question) when none are given.
DEFAULT_TEXT_TOKENS = 256
#: float32 (query x captured key) temporaries alive at once in ``ScoreCapture.add``: the logits, the logits
#: plus the mask's bias, their exponential and the masked probabilities.
CAPTURE_LIVE_BLOCKS = 4
#: Qwen2.5-VL: most pixels per frame of the stock ``Qwen2VLVideoProcessor`` (``size["longest_edge"]``).
QWEN_VIDEO_MAX_PIXELS = 28 * 28 * 768

_SIGLIP = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 26, "num_attention_heads": 16,
           "image_size": 384, "patch_size": 14, "num_channels": 3, "vision_use_head": False}  # fmt: skip
_QWEN25_VISION = {"depth": 32, "hidden_size": 1280, "num_heads": 16, "in_channels": 3, "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip


def _text(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict:
    """A published ``text_config``'s shape values (untied embeddings, as every checkpoint below has)."""
    return {"hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
            "tie_word_embeddings": False}  # fmt: skip


_LLAVA_OV = {"model_type": "llava_onevision", "vision_feature_layer": -1, "multimodal_projector_bias": True,
             "vision_config": _SIGLIP}  # fmt: skip

#: The shape values of the published ``config.json`` of the checkpoints the packaged experiment files name
#: (only the keys the arithmetic reads), so that their estimate needs no download.
KNOWN_CONFIGS = {
    "llava-hf/llava-onevision-qwen2-72b-ov-hf": {**_LLAVA_OV, "text_config": _text(8192, 29568, 80, 64, 8, 152128)},
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": {**_LLAVA_OV, "text_config": _text(3584, 18944, 28, 28, 4, 152128)},
    "Qwen/Qwen2.5-VL-32B-Instruct": {
        "model_type": "qwen2_5_vl", "text_config": _text(5120, 27648, 64, 40, 8, 152064),
        "vision_config": {**_QWEN25_VISION, "intermediate_size": 3456, "out_hidden_size": 5120},
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "model_type": "qwen2_5_vl", "text_config": _text(3584, 18944, 28, 28, 4, 152064),
        "vision_config": {**_QWEN25_VISION, "intermediate_size": 3420, "out_hidden_size": 3584},
    },
}  # fmt: skip


def _count(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelShape:
    """The numbers the estimate reads from one model's config."""

    name: str
    family: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool
    vision: dict  # the vision config's values (family-specific keys)
    projector_bias: bool = True
    feature_layers: int = 1  # vision layers concatenated into the projector (LLaVA-OneVision)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """One token's keys and values over every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes


def _value(config: dict, sub: str | None, key: str, name: str, default=None):
    section = config.get(sub) if sub else config
    if isinstance(section, dict) and section.get(key) is not None:
        return section[key]
    if sub == "text_config" and config.get(key) is not None:  # older flat configs keep the text values on top
        return config[key]
    if default is not None:
        return default
    raise ValueError(f"{name}: its config has no {sub + '.' if sub else ''}{key}; the estimate needs it")


def shape_of(config, name: str | None = None) -> ModelShape:
    """A :class:`ModelShape` from a transformers config or a dict in its format (``config.json``'s)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise ValueError(f"a model config must be a transformers config or a dict, got {type(config).__name__}")
    name = name or config.get("_name_or_path") or "model"
    family = config.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"{name}: no memory arithmetic for model_type {family!r}; written for {', '.join(FAMILIES)}")

    def text(key, default=None):
        return _value(config, "text_config", key, name, default)

    heads = _count(text("num_attention_heads"), f"{name}: num_attention_heads")
    hidden = _count(text("hidden_size"), f"{name}: hidden_size")
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ValueError(f"{name}: its config has no vision_config; the estimate needs it")
    layer = config.get("vision_feature_layer", -1)
    return ModelShape(
        name=name,
        family=family,
        hidden_size=hidden,
        intermediate_size=_count(text("intermediate_size"), f"{name}: intermediate_size"),
        num_layers=_count(text("num_hidden_layers"), f"{name}: num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=_count(text("num_key_value_heads", heads), f"{name}: num_key_value_heads"),
        head_dim=_count(text("head_dim", hidden // heads), f"{name}: head_dim"),
        vocab_size=_count(text("vocab_size"), f"{name}: vocab_size"),
        tie_embeddings=bool(_value(config, "text_config", "tie_word_embeddings", name, False)),
        vision=dict(vision),
        projector_bias=bool(config.get("multimodal_projector_bias", True)),
        feature_layers=1 if isinstance(layer, int) else len(layer),
    )


def load_shape(ref) -> ModelShape:
    """A model's shape from ``ref``: a :class:`ModelShape`, a transformers config or dict, a local checkpoint
    directory (its ``config.json``, read offline) or a name in :data:`KNOWN_CONFIGS`."""
    if isinstance(ref, ModelShape):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        return shape_of(ref)
    path = os.fspath(ref)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"{path!r} is a directory without a config.json; give a checkpoint directory")
        from transformers import AutoConfig

        return shape_of(AutoConfig.from_pretrained(path, local_files_only=True), name=path)
    if path in KNOWN_CONFIGS:
        return shape_of(KNOWN_CONFIGS[path], name=path)
    raise ValueError(
        f"no config for {path!r}: it is neither a local checkpoint directory nor a checkpoint whose shapes are known "
        f"offline ({', '.join(KNOWN_CONFIGS)}); download its config.json into a directory and give that directory"
    )


# ---------------------------------------------------------------------------------------- parameter arithmetic


def _decoder_layer_params(s: ModelShape) -> int:
    """One Qwen2 decoder layer: q, k, v with biases, o without; gate, up, down; two RMSNorms."""
    h, d = s.hidden_size, s.head_dim
    q, kv = s.num_heads * d, s.num_kv_heads * d
    return (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * s.intermediate_size + 2 * h


def _siglip_params(v: dict, hidden: int, bias: bool, feature_layers: int) -> int:
    """SigLIP vision tower (+ its attention-pooling head when ``vision_use_head``), the two-layer projector
    and the learned newline token of LLaVA-OneVision."""
    d, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    embeddings = v.get("num_channels", 3) * p * p * d + d + (v["image_size"] // p) ** 2 * d
    layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d
    tower = embeddings + v["num_hidden_layers"] * layer + 2 * d
    if v.get("vision_use_head", False):
        tower += d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * i + i) + (i * d + d)
    projector = d * feature_layers * hidden + hidden * hidden + (2 * hidden if bias else 0)
    return tower + projector + hidden


def _qwen25_vision_params(v: dict) -> int:
    """Qwen2.5-VL vision tower: Conv3d patches (no bias), blocks of RMSNorms, qkv / proj and a gated MLP with
    biases, then the patch merger (RMSNorm, two linear layers over merge x merge patches)."""
    d, i, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    patches = v.get("in_channels", 3) * v["temporal_patch_size"] * p * p * d
    block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * (d * i + i) + (i * d + d)
    merged = d * v["spatial_merge_size"] ** 2
    merger = d + (merged * merged + merged) + (merged * v["out_hidden_size"] + v["out_hidden_size"])
    return patches + v["depth"] * block + merger


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by part: ``embeddings``, ``decoder_layers`` (final norm included), ``lm_head`` (0 when tied)
    and ``vision`` (tower, projector or merger, and any learned separator)."""
    s = shape
    vision = (_siglip_params(s.vision, s.hidden_size, s.projector_bias, s.feature_layers)
              if s.family == "llava_onevision" else _qwen25_vision_params(s.vision))  # fmt: skip
    return {
        "embeddings": s.vocab_size * s.hidden_size,
        "decoder_layers": s.num_layers * _decoder_layer_params(s) + s.hidden_size,
        "lm_head": 0 if s.tie_embeddings else s.vocab_size * s.hidden_size,
        "vision": vision,
    }


# ---------------------------------------------------------------------------------------- tokens and activations


@dataclass(frozen=True)
class VideoTokens:
    """A video's tokens in the prompt: ``prunable`` grid tokens plus ``structural`` ones (always kept), laid out
    as ``steps`` groups of ``frames_per_step`` frames (a temporal patch; 1 where each frame stands alone) of
    ``per_step`` tokens each."""

    prunable: int
    structural: int
    per_step: int
    frames_per_step: int
    steps: int
    vision_patches: int  # patches the vision tower encodes (before pooling or merging)

    @property
    def total(self) -> int:
        return self.prunable + self.structural


def video_tokens(shape: ModelShape, frames: int, frame_tokens: int | None = None) -> VideoTokens:
    """The video tokens of ``frames`` frames as the family's processor lays them out.

    LLaVA-OneVision: ``ceil((image_size // patch_size) / 2)`` squared per frame (the 2x2 pooled grid), then one
    newline token. Qwen2.5-VL: frames go in temporal patches of ``temporal_patch_size`` (an odd count is padded),
    at most ``QWEN_VIDEO_MAX_PIXELS / (patch x merge)^2`` tokens per patch (the stock video processor's cap; a
    smaller video gives fewer). ``frame_tokens`` replaces the family's count per frame (per temporal patch
    where frames are grouped).
    """
    v = shape.vision
    if shape.family == "llava_onevision":
        side = v["image_size"] // v["patch_size"]
        per_frame = frame_tokens or math.ceil(side / 2) ** 2
        return VideoTokens(frames * per_frame, 1, per_frame, 1, frames, frames * side * side)
    tp, factor = v["temporal_patch_size"], v["patch_size"] * v["spatial_merge_size"]
    per_patch = frame_tokens or QWEN_VIDEO_MAX_PIXELS // (factor * factor)
    steps = math.ceil(frames / tp)
    return VideoTokens(steps * per_patch, 0, per_patch, tp, steps, steps * per_patch * v["spatial_merge_size"] ** 2)


def _vision_peak(shape: ModelShape, patches: int, dtype_bytes: int) -> int:
    """The vision tower's largest one-layer temporaries: input, normed input and attention output, and the MLP's
    intermediates (two for SigLIP's fc1 / GELU, three for Qwen2.5-VL's gate / up / product)."""
    v = shape.vision
    mlp = 2 if shape.family == "llava_onevision" else 3
    return patches * (3 * v["hidden_size"] + mlp * v["intermediate_size"]) * dtype_bytes


def _decoder_peak(shape: ModelShape, tokens: int, dtype_bytes: int) -> int:
    """One decoder layer's largest temporaries over ``tokens``: the residual and normed hidden states, q / k / v
    and the MLP's gate, up and product."""
    s = shape
    per_token = 2 * s.hidden_size + (s.num_heads + 2 * s.num_kv_heads) * s.head_dim + 3 * s.intermediate_size
    return tokens * per_token * dtype_bytes


def capture_bytes(shape: ModelShape, video: int, text_after: int, kv_len: int, dtype_bytes: int) -> int:
    """The score capture's peak over one layer, as :class:`~specvlm.attention.capture.ScoreCapture` forms it:
    the captured keys, :data:`CAPTURE_LIVE_BLOCKS` float32 blocks of (heads x rows x video) values, rows chosen
    so a block holds at most ``_CAPTURE_BLOCK_ELEMENTS``, and one log-sum-exp block of at most
    ``_LSE_BLOCK_ELEMENTS`` (heads x rows x keys) values."""
    h = shape.num_heads
    if video == 0 or text_after == 0:
        return 0
    rows = min(text_after, max(1, _CAPTURE_BLOCK_ELEMENTS // (h * video)))
    lse_rows = min(rows, max(1, _LSE_BLOCK_ELEMENTS // (h * kv_len)))
    keys = shape.num_kv_heads * video * shape.head_dim * dtype_bytes
    return keys + 4 * (CAPTURE_LIVE_BLOCKS * h * rows * video + h * lse_rows * kv_len)


def tree_mask_bytes(shape: ModelShape, queries: int, kv_len: int, dtype_bytes: int) -> int:
    """One verification's masks: the boolean (queries x keys) mask, its additive form in the dtype and, with
    grouped heads, its copy tiled over the group (the folded kernel's)."""
    groups = shape.num_heads // shape.num_kv_heads
    copies = 1 + (groups if groups > 1 else 0)
    return queries * kv_len * (1 + copies * dtype_bytes)


# ---------------------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class ModelMemory:
    """One model's share of the estimate, in bytes (``kv_tokens``: the KV cache's length in tokens)."""

    name: str
    role: str  # "target", "draft" or "self-draft"
    parameters: int
    weights: int
    kv_cache: int
    kv_tokens: int
    capture: int
    prefill: int
    tree_masks: int
    logits: int
    sharded: int  # what tensor parallelism splits over the GPUs: decoder-layer weights and the KV cache

    ITEMS = ("weights", "kv_cache", "capture", "prefill", "tree_masks", "logits")

    @property
    def total(self) -> int:
        return sum(getattr(self, item) for item in self.ITEMS)


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate of a pair (:func:`estimate`); byte counts, the settings it assumed and the GPUs it needs."""

    target: ModelMemory
    draft: ModelMemory
    frames: int
    dtype: str
    video_tokens: int
    per_step: int  # video tokens per frame, or per temporal patch of frames_per_step frames
    frames_per_step: int
    structural_tokens: int
    kept_video_tokens: int
    drop_rate: float
    text_tokens: int
    max_new_tokens: int
    tree_nodes: int
    gpu_memory_gib: float
    headroom: float
    sd_extra: int  # the draft's KV cache over every video token (method sd) less over the kept ones
    target_heads: tuple[int, int] = (1, 1)  # the target's query and key/value heads (tensor-parallel sizes)

    @property
    def total(self) -> int:
        return self.target.total + self.draft.total

    @property
    def usable_per_gpu(self) -> int:
        """Bytes of one GPU the estimate fills: its memory less the headroom."""
        return int(self.gpu_memory_gib * GIB * (1 - self.headroom))

    @property
    def gpus(self) -> int:
        """GPUs with ``device_map="auto"``: whole layers per GPU, the total spread over them."""
        return max(1, math.ceil(self.total / self.usable_per_gpu))

    def per_gpu_tp(self, n: int) -> int:
        """Bytes per GPU with the target sharded over ``n`` GPUs (the draft and the rest whole on each)."""
        return self.total - self.target.sharded + math.ceil(self.target.sharded / n)

    def tp_options(self, limit: int = 64) -> list[int]:
        """Tensor-parallel sizes the target's heads allow: ``n`` divides its query and key/value heads."""
        t = self.target_heads
        return [n for n in range(1, limit + 1) if t[0] % n == 0 and t[1] % n == 0]

    @property
    def tp_gpus(self) -> int | None:
        """The fewest GPUs with tensor parallelism (None: no allowed size fits)."""
        return next((n for n in self.tp_options() if self.per_gpu_tp(n) <= self.usable_per_gpu), None)

    def lines(self) -> list[str]:
        """The estimate as a readable table (what ``specvlm memory`` prints)."""
        t, d = self.target, self.draft
        unit = GIB if self.total >= GIB else 1 << 20  # GiB, or MiB for small models

        def size(n: int) -> str:
            return _gib(n, unit)

        structural = f" + {self.structural_tokens}" if self.structural_tokens else ""
        steps = math.ceil(self.frames / self.frames_per_step)
        layout = f"{self.frames} frames"
        if self.frames_per_step > 1:
            layout = f"{steps} patches of {self.frames_per_step} frames"
        out = [
            f"memory estimate, {self.dtype}, {self.frames} frames",
            f"  target {t.name}",
            f"  {d.role:6s} {d.name}",
            f"video tokens {self.video_tokens:,} ({layout} x {self.per_step}{structural}); the draft keeps "
            f"{self.kept_video_tokens:,} (drop_rate {self.drop_rate:g}); text {self.text_tokens}, new tokens "
            f"{self.max_new_tokens}, tree {self.tree_nodes} nodes",
            "",
            f"{'':22s}{'target':>12s}{'draft':>12s}{'total':>12s}",
            f"{'parameters':22s}{_billions(t.parameters):>12s}{_billions(d.parameters):>12s}"
            f"{_billions(t.parameters + d.parameters):>12s}",
        ]
        labels = {"weights": "weights", "kv_cache": "KV cache", "capture": "score capture",
                  "prefill": "prefill activations", "tree_masks": "tree masks", "logits": "logits"}  # fmt: skip
        for item in ModelMemory.ITEMS:
            a, b = getattr(t, item), getattr(d, item)
            out.append(f"{labels[item]:22s}{size(a):>12s}{size(b):>12s}{size(a + b):>12s}")
        out.append(f"{'total':22s}{size(t.total):>12s}{size(d.total):>12s}{size(self.total):>12s}")
        out.append(f"  (KV cache tokens: target {t.kv_tokens:,}, draft {d.kv_tokens:,})")
        out.append("")
        usable = _gib(self.usable_per_gpu)
        free = f"{self.headroom:.0%} kept free"
        out.append(f"GPUs needed, {self.gpu_memory_gib:g} GiB GPUs, {free} ({usable} usable each):")
        out.append(f"  device_map=\"auto\" (whole layers per GPU): {self.gpus}")
        tp = self.tp_gpus
        if tp is None:
            out.append(f"  tensor parallelism: does not fit on up to {self.tp_options()[-1]} GPUs")
        elif tp == 1:
            out.append("  tensor parallelism: not needed (one GPU holds it all)")
        else:
            out.append(f"  tensor parallelism (--tp {tp}, the draft whole on every GPU): {tp}, "
                       f"{size(self.per_gpu_tp(tp))} per GPU")  # fmt: skip
        if self.sd_extra:
            out.append(f"method sd (its draft sees every video token) needs {size(self.sd_extra)} more")
        return out

    def to_dict(self) -> dict:
        """The estimate as plain data (bytes), for ``--json``."""
        models = {}
        for key, m in (("target", self.target), ("draft", self.draft)):
            models[key] = {"name": m.name, "role": m.role, "parameters": m.parameters, "kv_tokens": m.kv_tokens,
                           "total": m.total, **{item: getattr(m, item) for item in ModelMemory.ITEMS}}  # fmt: skip
        settings = ("frames", "dtype", "video_tokens", "per_step", "frames_per_step", "structural_tokens",
                    "kept_video_tokens", "drop_rate", "text_tokens", "max_new_tokens", "tree_nodes", "gpu_memory_gib",
                    "headroom", "sd_extra")  # fmt: skip
        tp = self.tp_gpus
        return {**{k: getattr(self, k) for k in settings}, **models, "total": self.total,
                "usable_per_gpu": self.usable_per_gpu, "gpus_device_map": self.gpus, "gpus_tensor_parallel": tp,
                "per_gpu_tensor_parallel": self.per_gpu_tp(tp) if tp else None}  # fmt: skip


def _gib(n: int, unit: int = GIB) -> str:
    return f"{n / unit:.2f} {'GiB' if unit == GIB else 'MiB'}" if n else "-"


def _billions(n: int) -> str:
    return (f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M") if n else "-"


def _model_memory(shape, role, *, video: VideoTokens, kept: int, text_tokens, max_new_tokens, queries,
                  dtype_bytes, own_weights: bool) -> ModelMemory:  # fmt: skip
    """One model's share: the target (``kept`` = every video token), a draft, or the self-draft (no weights of
    its own, no prefill: its cache is the target's restricted to the kept tokens)."""
    counts = parameter_counts(shape)
    params = sum(counts.values()) if own_weights else 0
    prompt = kept + video.structural + text_tokens
    kv_tokens = prompt + max_new_tokens + queries
    prefill = 0
    if own_weights:
        vision = _vision_peak(shape, video.vision_patches, dtype_bytes)
        prefill = prompt * shape.hidden_size * dtype_bytes + max(vision, _decoder_peak(shape, prompt, dtype_bytes))
    capture = 0
    if role == "target":
        capture = capture_bytes(shape, video.prunable, text_tokens, prompt, dtype_bytes)
    kv = kv_tokens * shape.kv_bytes_per_token(dtype_bytes)
    layers = counts["decoder_layers"] * dtype_bytes if own_weights else 0
    return ModelMemory(
        name=shape.name,
        role=role,
        parameters=params,
        weights=params * dtype_bytes,
        kv_cache=kv,
        kv_tokens=kv_tokens,
        capture=capture,
        prefill=prefill,
        tree_masks=tree_mask_bytes(shape, queries, kv_tokens, dtype_bytes),
        logits=queries * shape.vocab_size * (dtype_bytes + 4),  # the model's logits and their float32 copy
        sharded=layers + kv if role == "target" else 0,
    )


def estimate(
    target,
    draft=None,
    *,
    frames: int,
    dtype: str = "bfloat16",
    text_tokens: int = DEFAULT_TEXT_TOKENS,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    drop_rate: float | None = None,
    tree_nodes: int | None = None,
    frame_tokens: int | None = None,
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB,
    headroom: float = DEFAULT_HEADROOM,
) -> MemoryEstimate:
    """Estimate the GPU memory of ``target`` verifying ``draft`` (None: the target drafts for itself) on a video
    of ``frames`` frames in ``dtype``, before anything is downloaded or loaded.

    ``target`` / ``draft``: a local checkpoint directory, a name in :data:`KNOWN_CONFIGS`, a transformers config,
    a dict in ``config.json``'s format or a :class:`ModelShape`. ``text_tokens``: the prompt's text around the
    video (all counted as after the video, where the score capture reads it). ``tree_nodes``: the draft tokens
    one verification checks (a chain's length or a tree's nodes). The draft keeps
    ``max(1, floor(N x (1 - drop_rate)))`` of the N video tokens (``specvlm_pruning.budget``). ``drop_rate`` and
    ``tree_nodes`` default to :class:`~specvlm.config.DecodingConfig`'s (:func:`verified_nodes`).
    Raises ValueError naming a bad value, an unknown checkpoint or an unknown family.
    """
    defaults = DecodingConfig()
    drop_rate = defaults.drop_rate if drop_rate is None else drop_rate
    tree_nodes = verified_nodes(defaults) if tree_nodes is None else tree_nodes
    _count(frames, "frames")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    _count(text_tokens, "text_tokens", 0)
    _count(max_new_tokens, "max_new_tokens")
    _count(tree_nodes, "tree_nodes")
    if frame_tokens is not None:
        _count(frame_tokens, "frame_tokens")
    check_drop_rate(drop_rate)
    for what, value in (("gpu_memory_gib", gpu_memory_gib), ("headroom", headroom)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{what} must be a number, got {value!r}")
    if gpu_memory_gib <= 0:
        raise ValueError(f"gpu_memory_gib must be > 0 (GiB per GPU), got {gpu_memory_gib!r}")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1) (the share of each GPU kept free), got {headroom!r}")
    t_shape = load_shape(target)
    d_shape = load_shape(draft) if draft is not None else t_shape
    if d_shape.family != t_shape.family:
        raise ValueError(f"the draft's family {d_shape.family} is not the target's {t_shape.family}: a pair shares its "
                         "family, vocabulary and video layout")  # fmt: skip
    video = video_tokens(t_shape, frames, frame_tokens)
    draft_video = video_tokens(d_shape, frames, frame_tokens)
    if draft_video.total != video.total:
        raise ValueError(f"the draft lays out {draft_video.total} video tokens, the target {video.total}: "
                         "a pair must share its video layout")  # fmt: skip
    kept = budget(video.prunable, drop_rate)
    bytes_ = DTYPE_BYTES[dtype]
    common = dict(video=video, text_tokens=text_tokens, max_new_tokens=max_new_tokens,
                  queries=tree_nodes + 1, dtype_bytes=bytes_)  # fmt: skip
    t = _model_memory(t_shape, "target", kept=video.prunable, own_weights=True, **common)
    role = "draft" if draft is not None else "self-draft"
    d = _model_memory(d_shape, role, kept=kept, own_weights=draft is not None, **common)
    logger.info("memory estimate of %s + %s at %d frames: %.2f GiB", t.name, d.name, frames, (t.total + d.total) / GIB)
    result = MemoryEstimate(
        target=t, draft=d, frames=frames, dtype=dtype, video_tokens=video.total, per_step=video.per_step,
        frames_per_step=video.frames_per_step,
        structural_tokens=video.structural, kept_video_tokens=kept + video.structural, drop_rate=drop_rate,
        text_tokens=text_tokens, max_new_tokens=max_new_tokens, tree_nodes=tree_nodes,
        gpu_memory_gib=float(gpu_memory_gib), headroom=float(headroom),
        sd_extra=(video.prunable - kept) * d_shape.kv_bytes_per_token(bytes_) if draft is not None else 0,
        target_heads=(t_shape.num_heads, t_shape.num_kv_heads),
    )  # fmt: skip
    return result


def verified_nodes(config: DecodingConfig) -> int:
    """Draft tokens one verification checks under a :class:`specvlm.config.DecodingConfig`: a static tree's nodes
    (a chain's length), or a dynamic tree's ``tree_total_tokens``."""
    shape = config.tree_shape()
    return shape.size if hasattr(shape, "size") else shape.total_tokens
