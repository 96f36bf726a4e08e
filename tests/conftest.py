"""Shared fixtures: tiny offline checkpoints of both families and a real mp4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specvlm.config import DecodingConfig

from specvlm.zoo.demo import synthetic_frames
from specvlm.zoo.tiny import TinySpec, save_tiny
from specvlm.video import write_video
from tiny_pairs import CORE_FAMILIES as FAMILIES


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, deselected by default (run them with -m slow)")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "guard: runs with the never-slower guard on, as the library's default is")


@pytest.fixture(autouse=True, scope="session")
def _timing_free_defaults():
    """Three defaults decide from the machine rather than the inputs, so the suite runs without them:

    * the never-slower guard (``never_slower``) decides from wall-clock timings whether an answer keeps drafting,
      so what drafting did in a test (accepted lengths, kept tokens, draft steps) would depend on the machine's
      speed: tests run with ``never_slower=False`` unless marked ``guard`` (tests/decoding/test_drafters.py tests the
      guard on fixed timings and through the engine's default);
    * ``compile="auto"`` compiles a draft's steps once an engine has drafted a few answers (seconds per model
      shape): tests run eagerly unless they ask for a compile mode (tests/decoding/test_lossless.py compiles, and
      tests/decoding/test_drafters.py checks when "auto" compiles);
    * ``overlap="auto"`` tries drafting in a worker process once an engine has drafted a few answers, and keeps
      it where it measured faster: tests draft sequentially unless they ask for it (tests/test_overlap.py).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DecodingConfig.__init__.__kwdefaults__, "never_slower", False)
        patch.setitem(DecodingConfig.__init__.__kwdefaults__, "compile", "off")
        patch.setitem(DecodingConfig.__init__.__kwdefaults__, "overlap", "off")
        yield


@pytest.fixture(autouse=True)
def _library_defaults_when_marked(request, monkeypatch):
    """Tests marked ``guard`` build their engines with the library's own ``never_slower`` default."""
    if request.node.get_closest_marker("guard") is not None:
        monkeypatch.setitem(DecodingConfig.__init__.__kwdefaults__, "never_slower", True)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{family: {"target": path, "draft": path}}: a 2-layer target and a 1-layer draft per family."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for family in FAMILIES:
        out[family] = {
            "target": save_tiny(TinySpec(family=family, seed=0), root / family / "target"),
            "draft": save_tiny(TinySpec(family=family, seed=1, num_layers=1), root / family / "draft"),
        }
    return out


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    """(8, 64, 64, 3) uint8 synthetic frames."""
    return synthetic_frames(num_frames=8, height=64, width=64)


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> str:
    """A real 16-frame mp4 of a moving square."""
    path = tmp_path_factory.mktemp("videos") / "clip.mp4"
    write_video(path, synthetic_frames(num_frames=16, height=64, width=64), fps=8.0)
    return str(path)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module (the pure-torch fallbacks of the hybrid families' kernels are far
    slower with several threads on small CPUs); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
