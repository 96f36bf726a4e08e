"""Contention for ``specvlm bench --contention``: CPU-bound processes that run beside the timed rounds, so
that the ratios are those of a busy machine.

What this module deliberately does not do: pin processes to cores, measure the load, or time anything.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def busy(processes: int, limit_s: float = 3600.0):
    """``processes`` CPU-bound Python processes (each spinning a loop) running while the block runs: the
    contention of a shared machine. Each also ends by itself after ``limit_s`` seconds, whatever happens here."""
    import subprocess
    import sys

    if processes < 0:
        raise ValueError(f"contention={processes!r} must be >= 0 processes")
    code = f"import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end:\n    pass\n"
    spinning = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in spinning:
            proc.terminate()
        for proc in spinning:
            proc.wait()
