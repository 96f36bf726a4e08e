"""The training command end to end on a minimal budget: checkpoints that load with the stock classes,
and stage 3 run alone on saved stage 1-2 checkpoints gives exactly what one full run gives."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm.zoo import CHECKPOINTS
from specvlm.zoo.train import main

TINY_BUDGET = ["--steps", "1", "--vision-steps", "1", "--single-turn-steps", "1", "--batch", "2"]


def _weights(root):
    return {name: load_file(root / CHECKPOINTS[name] / "model.safetensors") for name in CHECKPOINTS}


def test_training_command_writes_loadable_checkpoints_and_stage3_alone_matches(tmp_path):
    full, stage2, resumed = tmp_path / "full", tmp_path / "stage2", tmp_path / "resumed"
    assert main(["--out", str(full), "--save-stage2", str(stage2), *TINY_BUDGET]) == 0
    for root in (full, stage2):
        for name in CHECKPOINTS:
            model = AutoModelForImageTextToText.from_pretrained(root / CHECKPOINTS[name])
            assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
            assert AutoProcessor.from_pretrained(root / CHECKPOINTS[name]).tokenizer.eos_token == "<|im_end|>"
    assert main(["--out", str(resumed), "--stage3-from", str(stage2), *TINY_BUDGET]) == 0
    final, again, before = _weights(full), _weights(resumed), _weights(stage2)
    for name in CHECKPOINTS:
        assert final[name].keys() == again[name].keys()
        assert all(torch.equal(final[name][k], again[name][k]) for k in final[name])
        assert any(not torch.equal(final[name][k], before[name][k]) for k in final[name])  # stage 3 trained
