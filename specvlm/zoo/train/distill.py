"""Stage 4: the draft learns the target's own greedy outputs (:func:`distill_stage`), recorded with
SpecVLM decoding and one stock forward (:func:`record`)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from specvlm.engine import SpecVLM
from specvlm.zoo import synthetic
from specvlm.zoo.train.config import TrainConfig
from specvlm.zoo.train.pair import IMAGE_SIZE, video_features
from specvlm.zoo.train.sequences import packed_forward

logger = logging.getLogger(__name__)


@torch.no_grad()
def record(engine: SpecVLM, inputs, max_new_tokens: int) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """(the target's greedy output, its logits (n, V) float32 over that output, the prompt positions the
    draft keeps under the engine's pruning) for ``inputs``, decoding ``max_new_tokens`` with EOS ignored.

    One scored target prefill gives the kept positions and starts decoding, which runs SpecVLM with the
    engine's draft (lossless: the tokens are the target's greedy tokens). The logits come from one
    stock forward over prompt + output: feeding the output to the decoding cache would be cheaper, but
    its last bits depend on where the cache's buffers happen to lie, and the training run must be
    reproducible to the bit (stages 3-4 alone give what a full run gives).
    """
    prepared = engine.prepare(
        inputs=inputs, max_new_tokens=max_new_tokens, method="specvlm", ignore_eos=True, do_sample=False,
        lazy_draft_after=0, never_slower=False, compile="off",
    )  # fmt: skip
    keep = engine.draft_keep(inputs, "specvlm", target=prepared.target)
    tokens = engine.decode(prepared).token_ids
    prompt = inputs["input_ids"][0]
    ids = torch.cat([prompt, torch.tensor(tokens, dtype=prompt.dtype)])[None]
    full = dict(inputs, input_ids=ids, attention_mask=torch.ones_like(ids))
    teacher = engine.target(**full).logits[0, prompt.numel() - 1 : -1].float()
    return tokens, teacher, keep


def distill_stage(target, draft, processor, config: TrainConfig) -> None:
    """Stage 4: the draft learns the target's own outputs; the target does not change.

    For ``config.distill_samples`` held-in requests (captions and single questions on videos of
    ``config.distill_frames`` frames) the target decodes greedily and its next-token distributions over
    its own output are recorded; the draft's language model (embeddings, layers, head; its vision tower
    and projector stay fixed) is trained to match them (KL divergence), on the video tokens the target's
    ``verifier_guided`` pruning keeps at the default settings for ``config.distill_pruned_share`` of the
    sequences and on the full video otherwise, as it is prefilled at inference. Acceptance is decided
    by agreement with the target, right or wrong, so this is what raises tau. Own seeded generators,
    like stage 3.
    """
    if config.distill_samples < 1 or config.distill_epochs < 1:
        return
    rng = np.random.default_rng(config.seed + 4)
    stock = {m: m.config.get_text_config()._attn_implementation for m in (target, draft)}
    engine = SpecVLM.from_pretrained(target, draft=draft, processor=processor)  # installs the attention hook
    new_caption, new_answer = config.distill_new_tokens
    start = time.perf_counter()
    data = []
    with torch.no_grad():
        for i in range(config.distill_samples):
            frames = int(rng.choice(config.distill_frames))
            sample = synthetic.generate_sample(int(rng.integers(1 << 30)), num_frames=frames, height=IMAGE_SIZE, width=IMAGE_SIZE)
            if rng.random() < config.distill_caption_share:
                prompt, new = synthetic.CAPTION_PROMPT, new_caption
            else:
                q = sample.questions[int(rng.integers(len(sample.questions)))]
                prompt, new = (synthetic.question_prompt(q) if rng.random() < 0.5 else q.question), new_answer
            inputs = engine.build_inputs(sample.frames, prompt)
            tokens, teacher, kept = record(engine, inputs, new)
            prompt_ids = inputs["input_ids"][0]
            ids = torch.cat([prompt_ids, torch.tensor(tokens)])
            row = (ids[None], torch.cat([torch.full_like(prompt_ids, -100), ids[prompt_ids.numel():]])[None],
                   torch.cat([torch.zeros_like(prompt_ids), torch.ones(len(tokens), dtype=torch.long)]))  # fmt: skip
            keep = None
            if rng.random() < config.distill_pruned_share:
                keep = torch.cat([kept, torch.arange(prompt_ids.numel(), ids.numel())])
            feats = video_features(draft, inputs["pixel_values_videos"])[0]
            data.append((row, feats, keep, teacher))
            if i % 100 == 0:
                logger.info("distillation data %d/%d (%.0f s)", i, config.distill_samples, time.perf_counter() - start)
    for model, implementation in stock.items():  # train and save with the stock attention
        model.set_attn_implementation({"text_config": implementation})
    vision = {id(p) for p in draft.model.vision_tower.parameters()} | {id(p) for p in draft.model.multi_modal_projector.parameters()}
    params = [p for p in draft.parameters() if id(p) not in vision]
    optimizer = torch.optim.AdamW(params, lr=config.distill_lr, weight_decay=0.0, betas=(0.9, 0.98))
    per_epoch = max(1, len(data) // config.batch)
    total = config.distill_epochs * per_epoch
    draft.train()
    for step in range(total):
        if step % per_epoch == 0:
            order = rng.permutation(len(data))
        batch = [data[k] for k in order[(step % per_epoch) * config.batch : (step % per_epoch + 1) * config.batch]]
        hidden, labels = packed_forward(draft, [b[0] for b in batch], [b[1] for b in batch], [b[2] for b in batch])
        rows = labels[:, 1:] != -100
        student = draft.lm_head(hidden[:, :-1][rows]).float().log_softmax(-1)
        teacher = torch.cat([b[3] for b in batch]).log_softmax(-1)
        loss = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
        for group in optimizer.param_groups:
            group["lr"] = config.distill_lr * (1 - step / total)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 10 == 0 or step == total - 1:
            logger.info("distillation step %d/%d KL %.3f (%.0f s)", step, total, loss.item(), time.perf_counter() - start)
    draft.eval()
