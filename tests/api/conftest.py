"""Fixtures the API and command-line tests share: the LLaVA-OneVision tiny pair, and a guard that fails a test
when any model starts to load (bad input must be refused before)."""

from __future__ import annotations

import pytest
import transformers


@pytest.fixture(scope="module")
def pair(checkpoints):
    return checkpoints["llava_onevision"]


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any model weights (or a processor) start to load."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", refuse)
