"""The training command end to end on a minimal budget: checkpoints that load with the stock classes,
and stages 3-4 run alone on saved stage 1-2 checkpoints give exactly what one full run gives."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm.zoo import CHECKPOINTS
from specvlm.zoo.train import main

TINY_BUDGET = ["--steps", "1", "--vision-steps", "1", "--single-turn-steps", "1", "--distill-samples", "3", "--batch", "2"]


def _weights(root):
    return {name: load_file(root / CHECKPOINTS[name] / "model.safetensors") for name in CHECKPOINTS}


@pytest.mark.slow  # the training command end to end: about 6 min on 2 cores
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


def _tiny_pair_parts():
    import numpy as np

    from specvlm.zoo import synthetic
    from specvlm.zoo import train

    tokenizer = train.build_tokenizer()
    model, processor = train.build_model(train.DRAFT, tokenizer)
    sample = synthetic.generate_sample(3, num_frames=8, height=train.IMAGE_SIZE, width=train.IMAGE_SIZE)
    return train, tokenizer, model.eval(), processor, sample, np.random.default_rng(0)


def test_packed_turns_see_only_the_video_prefix_at_single_turn_positions():
    """Each turn of a packed training row computes exactly what the single-turn prompt computes alone."""
    train, _, model, processor, sample, rng = _tiny_pair_parts()
    rows = [train.encode(sample, processor, rng, turns=4)]
    ids, labels, branch = rows[0]
    assert branch.unique().tolist() == [0, 1, 2, 3, 4]
    assert (labels[0][branch == 0] == -100).all()
    with torch.no_grad():
        feats = train.video_features(model, train.pixel_values(sample.frames, processor))
        hidden, packed_labels = train.packed_forward(model, rows, feats)
        assert torch.equal(packed_labels[0], labels[0])
        embed = model.get_input_embeddings()
        for turn in range(1, 5):
            index = ((branch == 0) | (branch == turn)).nonzero().squeeze(-1)
            alone = embed(ids[0, index]).clone()
            alone[ids[0, index] == model.config.video_token_id] = feats[0]
            reference = model.model.language_model(inputs_embeds=alone[None]).last_hidden_state[0]
            torch.testing.assert_close(hidden[0, index], reference, rtol=1e-4, atol=1e-5)


def test_probe_scores_attributes_against_the_word_embeddings():
    """A video token that points the way ``red`` + ``square`` + ``large`` do is scored as that object."""
    train, tokenizer, model, _, _, _ = _tiny_pair_parts()
    probe = train.Probe(model.config.text_config.hidden_size, tokenizer)
    weight = model.get_input_embeddings().weight.detach()
    word = {w: weight[tokenizer.convert_tokens_to_ids(w)] for w in ("red", "square", "large", "blue", "circle", "small")}
    feats = torch.stack([word["red"] + word["square"] + word["large"], word["blue"] + word["circle"] + word["small"]])
    with torch.no_grad():
        (colour, shape, size), offset, present = probe(feats, weight)
    names = [list(words) for words in train.PROBE_WORDS]
    picked = [[names[a][int(logits[i, 1:].argmax())] for a, logits in enumerate((colour, shape, size))] for i in range(2)]
    assert picked == [["red", "square", "large"], ["blue", "circle", "small"]]
    assert offset.shape == (2, 2) and present.shape == (2, len(names[0]))


def test_record_gives_the_targets_greedy_output_its_logits_and_the_draft_keep(checkpoints, frames):
    """Stage 4's recording (one scored prefill, SpecVLM decoding, the output fed back in one chunk)
    equals the slow way: stock greedy generate, a full forward over prompt + output, draft_keep."""
    from specvlm import SpecVLM
    from specvlm.zoo.train import record

    pair = checkpoints["llava_onevision"]
    engine = SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], drop_rate=0.5)
    inputs = engine.build_inputs(frames, "Describe the video.")
    prompt = inputs["input_ids"].shape[1]
    for new in (1, 12):
        tokens, teacher, keep = record(engine, inputs, new)
        with torch.no_grad():
            stock = engine.target.generate(**inputs, max_new_tokens=new, do_sample=False, eos_token_id=None)
            assert tokens == stock[0, prompt:].tolist()
            full = engine.target(input_ids=stock, attention_mask=torch.ones_like(stock),
                                 **{k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")})  # fmt: skip
        expected = full.logits[0, prompt - 1 : -1].float()
        assert teacher.shape == expected.shape == (new, engine.target.config.get_text_config().vocab_size)
        torch.testing.assert_close(teacher, expected, rtol=1e-4, atol=1e-4)
        assert torch.equal(keep, engine.draft_keep(inputs))
