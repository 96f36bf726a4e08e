"""The embedded model zoo: small trained checkpoints shipped inside the package.

``checkpoint("target")`` / ``checkpoint("draft")`` return the directories of the trained tiny
LLaVA-OneVision pair (stock classes, stock processor, word-level tokenizer for the synthetic
video-QA language), loadable with ``from_pretrained``. ``python -m specvlm.zoo.train`` rebuilds them.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = {"target": "specvlm-tiny-target", "draft": "specvlm-tiny-draft"}


def checkpoint(name: str) -> Path:
    """Directory of the embedded checkpoint ``name`` ("target" or "draft")."""
    if name not in CHECKPOINTS:
        raise ValueError(f"unknown zoo checkpoint {name!r}; available: {sorted(CHECKPOINTS)}")
    path = ROOT / CHECKPOINTS[name]
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"the embedded checkpoint {name!r} is missing at {path}; rebuild it with `python -m specvlm.zoo.train`"
        )
    return path


def available() -> list[str]:
    """Names of the embedded checkpoints present in this installation."""
    return [name for name, folder in CHECKPOINTS.items() if (ROOT / folder / "config.json").exists()]
