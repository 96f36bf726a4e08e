"""The training run: stage 1 (the target's vision tower learns the dense probe), stage 2 (both models learn
language modelling on packed multi-turn sequences, the probe loss kept) and stage 3 (single-turn
requests on short and long videos), then stage 4 (:mod:`specvlm.zoo.train.distill`) and the written
checkpoints (:func:`train`); :func:`single_turn_stage` alone for ``--stage3-from``.

What this module deliberately does not do: use GPUs, mixed precision or any data besides the
synthetic generator.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from specvlm.zoo import synthetic
from specvlm.zoo.train.config import TrainConfig
from specvlm.zoo.train.distill import distill_stage
from specvlm.zoo.train.pair import (
    DRAFT,
    GRID,
    IMAGE_SIZE,
    TARGET,
    build_model,
    build_tokenizer,
    pixel_values,
    save,
    video_features,
)
from specvlm.zoo.train.probe import Probe, aux_loss, cell_targets
from specvlm.zoo.train.sequences import draft_subset, encode, lm_loss

logger = logging.getLogger(__name__)

PROBE_SEED = (1 << 30) + (1 << 20)  # held-out seeds for the in-training check, apart from evaluation's


@torch.no_grad()
def probe_accuracy(model, processor, samples) -> float:
    """Teacher-forced multiple-choice accuracy on ``samples``: each question alone after its video,
    counted correct when every token of its spoken answer is the model's top choice."""
    tok = processor.tokenizer
    video = ["<video>"] * (GRID * GRID * samples[0].frames.shape[0] + 1)
    correct = total = 0
    for sample in samples:
        feats = video_features(model, pixel_values(sample.frames, processor))[0]
        for q in sample.questions:
            prompt = ["<|im_start|>", "user"] + video + synthetic.question_prompt(q).split()
            prompt += ["<|im_end|>", "<|im_start|>", "assistant"]
            answer = tok.convert_tokens_to_ids(synthetic.spoken_answer(q).split())
            ids = torch.tensor([tok.convert_tokens_to_ids(prompt) + answer])
            embeds = model.get_input_embeddings()(ids).clone()
            embeds[0, 2 : 2 + len(video)] = feats
            hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state
            guesses = model.lm_head(hidden[0, len(prompt) - 1 : -1]).argmax(-1)
            correct += int(guesses.tolist() == answer)
            total += 1
    return correct / max(total, 1)


def lm_step(target, draft, processor, optimizer, params, samples, config, rng, gen, lr, heads=None, caption_first=0.0):
    """One optimiser step of both models on a batch of multi-turn sequences (one per sample, all with
    the same frame count); ``caption_first``: the share of sequences that are the single-turn caption
    request. Returns the (target, draft, probe) losses."""
    rows = [encode(s, processor, rng, config.turns, bool(rng.random() < caption_first)) for s in samples]
    pixels = torch.cat([pixel_values(s.frames, processor) for s in samples])
    feats_t, feats_d = video_features(target, pixels), video_features(draft, pixels)
    loss_t = lm_loss(target, rows, feats_t)
    targets = [cell_targets(s) for s in samples]
    keeps = []
    for (input_ids, _, _), cells in zip(rows, targets):
        keep = None
        if rng.random() < config.draft_pruned_share:
            share = float(rng.uniform(config.draft_keep_min, config.draft_keep_max))
            keep = draft_subset(input_ids, draft.config.video_token_id, share, gen, cells["present"].any(-1))
        keeps.append(keep)
    loss_d = lm_loss(draft, rows, feats_d, keeps)
    aux = torch.zeros(())
    if heads is not None:
        for b, cells in enumerate(targets):
            aux = aux + aux_loss(heads[target], target, feats_t[b], cells) + aux_loss(heads[draft], draft, feats_d[b], cells)
        aux = aux / len(samples)
    for group, scale in zip(optimizer.param_groups, (config.vision_lr_scale, 1.0)):
        group["lr"] = scale * lr
    optimizer.zero_grad(set_to_none=True)
    (loss_t + loss_d + config.aux_weight * aux).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return loss_t.item(), loss_d.item(), aux.item()


def _param_groups(target, draft, extra=()):
    """(vision tower parameters, the rest) of both models, plus ``extra`` in the rest."""
    vision = [p for m in (target, draft) for p in m.model.vision_tower.parameters()]
    vision_ids = {id(p) for p in vision}
    rest = [p for m in (target, draft) for p in m.parameters() if id(p) not in vision_ids] + list(extra)
    return vision, rest


def single_turn_stage(target, draft, processor, config: TrainConfig) -> None:
    """Stage 3: a short pass where half the sequences are the caption request alone, on short and long
    videos (``config.single_turn_frames``): stage 2 only sees 8 and 16 frames.

    It draws from its own seeded generators, so running it on saved stage-2 checkpoints
    (``--stage3-from``) gives what one full run gives.
    """
    rng = np.random.default_rng(config.seed + 3)
    gen = torch.Generator().manual_seed(config.seed + 3)
    vision, rest = _param_groups(target, draft)
    optimizer = torch.optim.AdamW([{"params": vision}, {"params": rest}], weight_decay=0.01, betas=(0.9, 0.98))
    target.train()
    draft.train()
    start = time.perf_counter()
    history = []
    for step in range(config.single_turn_steps):
        frames = int(rng.choice(config.single_turn_frames))
        samples = [
            synthetic.generate_sample(int(rng.integers(1 << 30)), num_frames=frames, height=IMAGE_SIZE, width=IMAGE_SIZE)
            for _ in range(config.batch)
        ]
        lr = config.single_turn_lr * (1 - step / max(config.single_turn_steps, 1))
        history.append(lm_step(target, draft, processor, optimizer, vision + rest, samples, config, rng, gen, lr, caption_first=0.5))
        if step % 10 == 0 or step == config.single_turn_steps - 1:
            recent = np.mean(history[-50:], axis=0)
            logger.info("single-turn step %d/%d loss target %.3f draft %.3f (%.0f s)",
                        step, config.single_turn_steps, recent[0], recent[1], time.perf_counter() - start)  # fmt: skip
    target.eval()
    draft.eval()


def train(out: Path, config: TrainConfig, save_stage2: Path | None = None) -> dict:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    tokenizer = build_tokenizer()
    target, processor = build_model(TARGET, tokenizer)
    draft, _ = build_model(DRAFT, tokenizer)
    heads = {m: Probe(m.config.text_config.hidden_size, tokenizer) for m in (target, draft)}
    vision, rest = _param_groups(target, draft, [p for h in heads.values() for p in h.parameters()])
    params = vision + rest
    optimizer = torch.optim.AdamW(
        [{"params": vision}, {"params": rest}],
        lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98),
    )  # fmt: skip
    held_out = [
        synthetic.generate_sample(PROBE_SEED + i, num_frames=16, height=IMAGE_SIZE, width=IMAGE_SIZE) for i in range(3)
    ]

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
        return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    def draw(frames: int):
        return synthetic.generate_sample(int(rng.integers(1 << 30)), num_frames=frames, height=IMAGE_SIZE, width=IMAGE_SIZE)

    target.train()
    draft.train()
    start = time.perf_counter()
    for step in range(config.vision_steps):  # stage 1: the target's vision tower and projector learn the scene
        batch = [draw(min(config.frames_choices)) for _ in range(config.vision_batch)]
        loss = sum(
            aux_loss(heads[target], target, video_features(target, pixel_values(s.frames, processor))[0], cell_targets(s))
            for s in batch
        ) / len(batch)
        for group in optimizer.param_groups:
            group["lr"] = config.vision_lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 100 == 0 or step == config.vision_steps - 1:
            logger.info("vision step %d/%d probe loss %.3f (%.0f s)", step, config.vision_steps, loss.item(), time.perf_counter() - start)
    # the draft starts from the same (identically shaped) vision tower; both keep training separately
    draft.model.vision_tower.load_state_dict(target.model.vision_tower.state_dict())

    history = []
    for step in range(config.steps):  # stage 2: language modelling on the video, probe loss kept
        frames = int(rng.choice(config.frames_choices))
        samples = [draw(frames) for _ in range(config.batch)]
        losses = lm_step(target, draft, processor, optimizer, params, samples, config, rng, gen, lr_at(step), heads)
        history.append(losses)
        if step % 10 == 0 or step == config.steps - 1:
            recent = np.mean(history[-50:], axis=0)
            logger.info(
                "step %d/%d loss target %.3f draft %.3f probe %.3f (%.0f s)",
                step, config.steps, *recent, time.perf_counter() - start,
            )  # fmt: skip
        if config.probe_every and (step + 1) % config.probe_every == 0:
            target.eval()
            draft.eval()
            logger.info(
                "held-out multiple-choice accuracy (teacher-forced): target %.3f draft %.3f",
                probe_accuracy(target, processor, held_out), probe_accuracy(draft, processor, held_out),
            )  # fmt: skip
            target.train()
            draft.train()
    if save_stage2 is not None:
        save(save_stage2, target, draft, processor)
        logger.info("stage 1-2 checkpoints written to %s", save_stage2)
    single_turn_stage(target, draft, processor, config)
    distill_stage(target, draft, processor, config)
    save(out, target, draft, processor)
    return {"seconds": time.perf_counter() - start, "final_loss": np.mean(history[-50:], axis=0).tolist()}
