"""Shared fixtures: tiny offline checkpoints of both families and a real mp4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from specvlm.zoo.demo import synthetic_frames
from specvlm.zoo.tiny import TinySpec, save_tiny
from specvlm.video import write_video

FAMILIES = ("llava_onevision", "qwen2_5_vl")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, deselected by default (run them with -m slow)")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")


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
