"""Model references in configs and loading the engine the harness evaluates.

A reference is one of:

* a local path or hub id (passed to ``from_pretrained``);
* ``zoo:<name>``: an embedded trained checkpoint (``specvlm.zoo.checkpoint``);
* ``tiny:<family>[:seed][:layers]``: a tiny random-weight checkpoint of the real classes, built
  offline with ``specvlm.zoo.tiny`` into a cache directory (default ``<output>/../.tiny-cache``) the
  first time it is needed, atomically (concurrent ranks cannot see a half-written checkpoint).

What this module deliberately does not do: download anything itself or change the models beyond
the one thing every method must share (``ignore_eos`` clears the target's EOS for all methods alike).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from specvlm_eval.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32", "float16", "bfloat16"}


def parse_tiny(ref: str) -> tuple[str, int, int]:
    """``tiny:<family>[:seed][:layers]`` -> (family, seed, layers); defaults seed 0, 2 layers."""
    from specvlm.zoo.tiny import FAMILIES

    parts = ref.split(":")[1:]
    if not 1 <= len(parts) <= 3 or parts[0] not in FAMILIES:
        raise ConfigError(f"model reference {ref!r} must look like tiny:<family>[:seed][:layers] with family one of {FAMILIES}")
    try:
        seed = int(parts[1]) if len(parts) > 1 else 0
        layers = int(parts[2]) if len(parts) > 2 else 2
    except ValueError:
        raise ConfigError(f"model reference {ref!r}: seed and layers must be integers") from None
    if seed < 0 or layers < 1:
        raise ConfigError(f"model reference {ref!r}: need seed >= 0 and layers >= 1")
    return parts[0], seed, layers


def tiny_cache_dir(config: ModelConfig, output: Path) -> Path:
    if config.tiny_cache:
        return Path(os.path.expandvars(os.path.expanduser(config.tiny_cache)))
    return output.absolute().parent / ".tiny-cache"


def resolve_ref(ref: str | None, cache: Path) -> str | None:
    """A loadable path or hub id for a config reference (building tiny checkpoints on demand)."""
    if ref is None:
        return None
    if ref.startswith("zoo:"):
        from specvlm import zoo

        name = ref[len("zoo:"):]
        try:
            return str(zoo.checkpoint(name))
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"model reference {ref!r}: {err}") from err
    if ref.startswith("tiny:"):
        family, seed, layers = parse_tiny(ref)
        path = cache / f"{family}-seed{seed}-layers{layers}"
        if not (path / "config.json").is_file():
            _build_tiny(family, seed, layers, path)
        return str(path)
    return os.path.expanduser(ref)


def _build_tiny(family: str, seed: int, layers: int, path: Path) -> None:
    from specvlm.zoo.tiny import TinySpec, save_tiny

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    logger.info("building tiny %s checkpoint (seed %d, %d layers) in %s", family, seed, layers, path)
    save_tiny(TinySpec(family=family, seed=seed, num_layers=layers), tmp)
    try:
        os.rename(tmp, path)
    except OSError:
        if not (path / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process built the same checkpoint first


def device_map_for(config: ModelConfig, local_rank: int):
    """``null`` -> this rank's GPU when CUDA is available (else CPU); anything else as configured. A target sharded
    over processes (``tp_size`` > 1) takes none: transformers puts each rank's shards on its ``LOCAL_RANK`` GPU."""
    import torch

    if config.tp_size > 1:
        return None
    if config.device_map is not None:
        return config.device_map
    if torch.cuda.is_available():
        return {"": f"cuda:{local_rank % torch.cuda.device_count()}"}
    return None


def torch_dtype(name: str | None):
    import torch

    if name is None or name == "auto":
        return name
    return getattr(torch, name)


def load_engine(config: ModelConfig, output: Path, local_rank: int = 0, ignore_eos: bool = False):
    """The :class:`specvlm.SpecVLM` engine for ``config`` (target, optional draft, processor)."""
    from specvlm import SpecVLM

    cache = tiny_cache_dir(config, output)
    target = resolve_ref(config.target, cache)
    draft = resolve_ref(config.draft, cache)
    engine = SpecVLM.from_pretrained(
        target,
        draft=draft,
        torch_dtype=torch_dtype(config.torch_dtype),
        device_map=device_map_for(config, local_rank),
        attn_backend=config.attn_backend,
        compile=config.compile,
        tp_size=config.tp_size if config.tp_size > 1 else None,
    )
    if ignore_eos:
        engine.target.generation_config.eos_token_id = None
    return engine


def model_devices(engine) -> list:
    """Every device holding parameters of the target or the draft."""
    devices = {p.device for p in engine.target.parameters()}
    if engine.draft is not None:
        devices |= {p.device for p in engine.draft.parameters()}
    return sorted(devices, key=str)
