"""Shared fixtures: tiny offline pairs of every family (the two reference families' as ``checkpoints``), the stock
model's greedy reference tokens, synthetic frames and a real mp4."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm.config import DecodingConfig

from specvlm.zoo.demo import synthetic_frames
from specvlm.video import write_video
from tiny_pairs import CORE_FAMILIES as FAMILIES
from tiny_pairs import LAYERS, inputs_digest, save_pair, stock_greedy


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
def pairs(tmp_path_factory):
    """``pairs(family, layers=None, *, max_positions=None, draft_extra=None)`` -> {"target": path, "draft": path}: a
    seed-0 target and a seed-1 draft of ``family`` with (target, draft) decoder ``layers`` (default
    ``tiny_pairs.LAYERS``), saved once per session on first use and shared by every module that asks for it."""
    root = tmp_path_factory.mktemp("pairs")
    saved = {}

    def get(family, layers=None, *, max_positions=None, draft_extra=None):
        layers = tuple(layers or LAYERS[family])
        key = (family, layers, max_positions, tuple(sorted((draft_extra or {}).items())))
        if key not in saved:
            name = "-".join([family, *map(str, layers)] + ([f"ctx{max_positions}"] if max_positions else [])
                            + (["extra"] if draft_extra else []))  # fmt: skip
            saved[key] = save_pair(root / name, family, layers, max_positions=max_positions, draft_extra=draft_extra)
        return saved[key]

    return get


@pytest.fixture(scope="session")
def checkpoints(pairs):
    """{family: {"target": path, "draft": path}}: a 2-layer target and a 1-layer draft per reference family."""
    return {family: pairs(family) for family in FAMILIES}


@pytest.fixture(scope="session")
def stock_reference():
    """``stock_reference(target, inputs, max_new_tokens, **generate_kwargs)`` -> the new tokens of a separately
    loaded stock model's greedy ``generate()`` (stock SDPA attention, EOS disabled unless ``generate_kwargs`` name
    one) for ``inputs``: the reference every lossless test compares with, never our own loop. Each stock model
    loads once and each answer is computed once per intra-op thread count (the one-thread modules compute their
    references as they decode)."""
    models, answers = {}, {}

    def get(target, inputs, max_new_tokens, **generate_kwargs):
        key = (str(target), inputs_digest(inputs), max_new_tokens, repr(sorted(generate_kwargs.items())), torch.get_num_threads())
        if key not in answers:
            if str(target) not in models:
                model = AutoModelForImageTextToText.from_pretrained(target).eval()
                assert model.config.get_text_config()._attn_implementation == "sdpa"
                models[str(target)] = model
            answers[key] = stock_greedy(models[str(target)], inputs, max_new_tokens, **generate_kwargs)
        return list(answers[key])

    return get


@pytest.fixture(scope="session")
def eager_scores():
    """``eager_scores(target, inputs, layout, layers=None)`` -> (scores, output, model): a separately loaded stock
    model with eager attention runs ``inputs`` returning its attention maps, and ``scores`` (N,) is the attention
    of the text after the last visual token to each of ``layout``'s visual tokens, averaged over the layers (those
    whose index ``layers`` holds, when given), the heads and the text queries: what the verifier's captured
    scores must equal."""

    @torch.no_grad()
    def get(target, inputs, layout, layers=None):
        model = AutoModelForImageTextToText.from_pretrained(target, attn_implementation="eager").eval()
        out = model(**inputs, output_attentions=True)
        maps = [a for i, a in enumerate(out.attentions) if layers is None or i in layers]
        split = layout.last_position + 1
        rows = torch.stack([a[0, :, split:, :] for a in maps])  # (layers, heads, text queries, L)
        return rows[..., layout.positions].mean(dim=(0, 1, 2)), out, model

    return get


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
