"""Device-aware timing and host synchronisation accounting.

* :class:`Timer` synchronises the device only at the edges of a measured region.
* :func:`to_host` is the one way the decode loop reads device values on the host; it counts the
  reads (:func:`host_syncs`), so that "one host synchronisation per step" is measured, not assumed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Accumulates wall-clock seconds of named regions; ``with timer("decode"): ...``."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def get(self, name: str) -> float:
        return self.seconds.get(name, 0.0)


_HOST_SYNCS = 0


def to_host(tensor: torch.Tensor) -> list:
    """``tensor.tolist()``, counted as one host synchronisation."""
    global _HOST_SYNCS
    _HOST_SYNCS += 1
    return tensor.tolist()


def host_syncs() -> int:
    """Device-to-host reads made through :func:`to_host` so far in this process."""
    return _HOST_SYNCS
