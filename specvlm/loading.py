"""Loading a target / draft pair: checks made before anything loads (checkpoint paths, safetensors
headers, device maps, a compiler for ``torch.compile``), the stock model and tokenizer loads, and the
checks that a draft can draft for a target (family, video token, layout, vocabulary).

What this module deliberately does not do: decide how to decode, or keep any state (the engine holds the
loaded models).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

import torch

from specvlm import attention
from specvlm.models import adapter_for, family_of

logger = logging.getLogger(__name__)


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


def has_compiler(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build kernels for ``device`` (:func:`check_compiler` without the error)."""
    try:
        check_compiler(device)
    except ValueError:
        return False
    return True


def check_checkpoint_path(role: str, ref) -> None:
    """Raise ValueError before anything loads when ``ref`` names a local path that is not a checkpoint
    directory (a hub id such as ``org/name`` is left to transformers)."""
    if not isinstance(ref, (str, os.PathLike)):
        return
    path = os.fspath(ref)
    if isinstance(path, str) and path.split(":", 1)[0] in ("zoo", "tiny") and ":" in path:
        raise ValueError(
            f"{role} {path!r} is neither a checkpoint directory nor a hub id: zoo: and tiny: names are resolved by the "
            "command lines and evaluation configs; in Python pass specvlm.zoo.checkpoint(name) or a directory"
        )
    local = os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or os.path.exists(path)
    if not local:
        return
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise ValueError(f"{role} checkpoint {path!r} does not exist (give a checkpoint directory or a hub id such as org/name)")
    if not os.path.isdir(path):
        raise ValueError(f"{role} checkpoint {path!r} is a file; give the checkpoint's directory")
    if not os.path.exists(os.path.join(path, "config.json")):
        raise ValueError(f"{role} checkpoint {path!r} has no config.json: it is not a saved model directory")
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            check_safetensors(role, os.path.join(path, name))


def check_safetensors(role: str, file: str) -> None:
    """Raise ValueError naming ``file`` when its safetensors header is unreadable or does not cover the
    file (truncated, garbage); reads the header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{role} checkpoint file {file!r} is not a readable safetensors file ({err}); it may be truncated "
            "or corrupt: download or save the checkpoint again"
        ) from err


#: The placement strategies ``device_map`` may name (transformers / accelerate).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def check_device_map(device_map) -> None:
    """Raise ValueError before anything loads when ``device_map`` is malformed or names a GPU this machine
    does not have."""
    if device_map is None or (isinstance(device_map, str) and device_map in DEVICE_MAP_STRATEGIES):
        return
    allowed = (
        f"use None (CPU), {', '.join(map(repr, DEVICE_MAP_STRATEGIES))}, 'cpu', 'cuda', 'cuda:N', a GPU index, "
        "a torch.device or a dict of module name -> device"
    )
    values = list(device_map.values()) if isinstance(device_map, dict) else [device_map]
    for value in values:
        if isinstance(value, str) and value == "disk" and isinstance(device_map, dict):
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, torch.device)):
            raise ValueError(f"device_map={device_map!r} is not a device map; {allowed}")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"device_map={device_map!r}: a GPU index must be >= 0; {allowed}")
            device = torch.device("cuda", value)
        else:
            try:
                device = torch.device(value)
            except RuntimeError:
                raise ValueError(f"device_map={device_map!r}: {value!r} is not a device; {allowed}") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(
                    f"device_map={device_map!r} needs a CUDA device, but no CUDA device is available on this machine; "
                    f"use device_map=None or 'cpu' (or 'auto', which places the model on what there is)"
                )
            count = torch.cuda.device_count()
            if device.index is not None and device.index >= count:
                raise ValueError(
                    f"device_map={device_map!r} names CUDA device {device.index}, but this machine has {count} "
                    f"(cuda:0..cuda:{count - 1})"
                )
        elif device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device_map={device_map!r} needs Apple's MPS backend, which is not available; {allowed}")


#: Decoder-layer rules that a stock tensor-parallel plan lacks, per model type: the transformers text config whose
#: ``base_model_tp_plan`` shards the same decoder layer, and where the text model sits in the stock model (the
#: rules are given to ``DistributedConfig(tp_plan=...)``, which takes the full model's module names and keeps the
#: stock rules it does not name). Qwen3-VL's decoder layer is Qwen3's (q / k / v projections colwise with
#: per-head ``q_norm`` / ``k_norm`` over each head's own features, ``o_proj`` rowwise; ``gate_proj`` / ``up_proj``
#: colwise, ``down_proj`` rowwise), but transformers 5.25's ``Qwen3VLTextConfig`` plans only the embeddings.
#: DeepStack's visual features are added to the hidden states between layers, where the rowwise projections have
#: already summed them over the ranks, so they stay whole on every rank like the vision tower.
DECODER_TP_PLANS = {"qwen3_vl": ("Qwen3Config", "model.language_model")}


def tensor_parallel_plan(config) -> dict[str, str] | str | None:
    """The ``tp_plan`` that shards ``config``'s model (for ``DistributedConfig``): ``"auto"`` (transformers' own
    plan) when its stock text config plans the decoder layers, the stock plan's missing decoder rules from
    :data:`DECODER_TP_PLANS` (full-model module names) when that names the model type, else None."""
    stock = getattr(config.get_text_config(decoder=True), "base_model_tp_plan", None) or {}
    if any(name.startswith("layers.") for name in stock):
        return "auto"
    borrowed = DECODER_TP_PLANS.get(config.model_type)
    if borrowed is None:
        return None
    import transformers

    source, text_model = borrowed
    return {f"{text_model}.{name}": style for name, style in getattr(transformers, source).base_model_tp_plan.items()}


def check_tensor_parallel(tp_size, target, device_map) -> None:
    """Raise ValueError, before anything loads, when ``tp_size`` cannot shard ``target`` here: not an int >= 1,
    a ``device_map`` beside it, a process count that is not a multiple of ``tp_size`` (run under ``torchrun
    --nproc_per_node tp_size``; more processes form groups, :func:`tensor_parallel_groups`), a family with no
    tensor-parallel plan for its decoder layers (:func:`tensor_parallel_plan`), or attention or key / value heads
    that ``tp_size`` does not divide (each rank holds whole heads)."""
    if tp_size is None:
        return
    if isinstance(tp_size, bool) or not isinstance(tp_size, int) or tp_size < 1:
        raise ValueError(f"tp_size={tp_size!r} must be an int >= 1")
    if tp_size == 1:
        return
    if device_map is not None:
        raise ValueError(f"tp_size={tp_size} shards every layer over the processes; pass no device_map (got {device_map!r})")
    world = os.environ.get("WORLD_SIZE")
    if world is None or not world.isdigit() or int(world) % tp_size:
        raise ValueError(
            f"tp_size={tp_size} needs {tp_size} processes, one per shard (or a multiple of {tp_size}: groups of "
            f"{tp_size} consecutive ranks, each holding the whole model), and this is "
            f"{'one process' if world is None else f'{world} processes'}: run under `torchrun --nproc_per_node {tp_size}`"
        )
    if isinstance(target, (str, os.PathLike)):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(target)
        family = family_of(config)
        text = config.get_text_config(decoder=True)
        if tensor_parallel_plan(config) is None:
            plan = getattr(text, "base_model_tp_plan", None) or {}
            what = f"shards only {', '.join(sorted(plan))}" if plan else "does not exist"
            raise ValueError(
                f"{family} ({config.model_type}): transformers' tensor-parallel plan for its text model {what}, not "
                f"its decoder layers, and specvlm.loading.DECODER_TP_PLANS has none for it, so tp_size={tp_size} "
                f"cannot split the model; load it whole (device_map) instead"
            )
        heads = {k: getattr(text, k, None) for k in ("num_attention_heads", "num_key_value_heads")}
        if uneven := {k: n for k, n in heads.items() if isinstance(n, int) and n % tp_size}:
            raise ValueError(
                f"{family}: tp_size={tp_size} must divide the text model's heads, each rank holding whole heads, and "
                f"it does not divide {', '.join(f'{k}={n}' for k, n in uneven.items())}; use a tp_size that does"
            )


@contextlib.contextmanager
def tensor_parallel_groups(tp_size: int | None):
    """While loading with ``tp_size`` over more processes than that (data parallel x tensor parallel:
    ``WORLD_SIZE`` = G x ``tp_size``), transformers' device mesh is laid out as G replicas of ``tp_size`` ranks,
    so each group of consecutive ranks ``g * tp_size .. g * tp_size + tp_size - 1`` holds one whole model and the
    model's collectives (its ``tp`` sub-mesh, the engine's ``tp_group``) stay inside the group.

    transformers builds the mesh from the ``DistributedConfig`` and insists that it covers every process, and
    ``from_pretrained`` takes no mesh of its own beside a ``DistributedConfig``; so for this load the mesh is
    built with the replica axis (``dp_replicate_size`` = G) while the model's own config stays tensor parallel
    only (no FSDP). Every process must load at the same time: creating the mesh is collective over all of them.
    """
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialized else int(os.environ.get("WORLD_SIZE") or 1)
    if tp_size is None or tp_size <= 1 or world <= tp_size:
        yield
        return
    from transformers.distributed import mixin

    build = getattr(mixin, "initialize_distributed_mesh", None)
    if build is None:
        import transformers

        raise ValueError(
            f"tp_size={tp_size} over {world} processes (groups of {tp_size}) needs transformers 5.23-5.25's "
            f"initialize_distributed_mesh, which transformers {transformers.__version__} does not have; run "
            f"{tp_size} processes"
        )

    def grouped(config):
        return build(dataclasses.replace(config, dp_replicate_size=world // tp_size))

    mixin.initialize_distributed_mesh = grouped
    try:
        yield
    finally:
        mixin.initialize_distributed_mesh = build


def load_model(path_or_model, torch_dtype, device_map, role: str = "target", tp_size: int | None = None):
    """The stock model (from a path or hub id, or as given) with the attention hook; ``tp_size`` > 1 shards it
    with transformers' own tensor-parallel plan over that many processes (:func:`check_tensor_parallel`; with more
    processes, over this process's group of them: :func:`tensor_parallel_groups`)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText

    if isinstance(path_or_model, (str, os.PathLike)):
        sharding = {}
        if tp_size is not None and tp_size > 1:
            from transformers import AutoConfig, DistributedConfig

            plan = tensor_parallel_plan(AutoConfig.from_pretrained(path_or_model)) or "auto"
            sharding = {"distributed_config": DistributedConfig(tp_size=tp_size, tp_plan=plan)}
        try:
            with tensor_parallel_groups(tp_size):
                model = AutoModelForImageTextToText.from_pretrained(
                    path_or_model, dtype=torch_dtype, device_map=device_map, **sharding
                )
        except SafetensorError as err:  # a hub checkpoint's downloaded file (local ones are checked before loading)
            raise ValueError(
                f"{role} checkpoint {os.fspath(path_or_model)!r} has a weights file that is not a readable safetensors "
                f"file ({err}); it may be truncated or corrupt: download or save the checkpoint again"
            ) from err
    else:
        model = path_or_model
    family_of(model.config)  # raises for unsupported families, listing the supported ones
    model.eval()
    model.set_attn_implementation({"text_config": attention.register()})
    return model


def load_tokenizer(path_or_model):
    """The draft's own tokenizer when its checkpoint ships one, else None (then only ids are compared)."""
    from transformers import AutoTokenizer

    if not isinstance(path_or_model, (str, os.PathLike)):
        return None
    local = os.path.isdir(path_or_model)
    if local and not any(os.path.exists(os.path.join(path_or_model, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        logger.warning("draft checkpoint %s has no tokenizer files; vocabularies are not compared", path_or_model)
        return None
    return AutoTokenizer.from_pretrained(path_or_model)


def check_pair(target, draft, target_tokenizer, draft_tokenizer) -> None:
    """Raise at load time if the draft cannot draft for the target, saying what differs."""
    tf, df = family_of(target.config), family_of(draft.config)
    if tf != df:
        raise ValueError(f"target family {tf!r} and draft family {df!r} differ: their video-token layouts are not the same")
    ta, da = adapter_for(target), adapter_for(draft)
    if ta.video_token_id != da.video_token_id:  # the placeholder id (InternVL's is its image token id)
        raise ValueError(f"video token ids differ: target {ta.video_token_id}, draft {da.video_token_id}")
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
