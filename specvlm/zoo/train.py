"""Train the embedded tiny target/draft pair on the synthetic video-QA task (CPU, fixed seed).

    python -m specvlm.zoo.train [--out DIR] [--steps N] [--seed S]

Both models are stock ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower, Qwen2 text
model) with a stock ``LlavaOnevisionProcessor`` and a word-level tokenizer over the generator's
closed vocabulary. Each training sequence is one synthetic video followed by several user/assistant
turns in random order (the detailed caption and multiple-choice questions); the loss covers the
assistant answers only. Single-turn prompts, as used at inference, are the case where the first turn
follows the video directly. The draft is trained on the same batches, and on a share of them sees
only a random subset of the video tokens at their original positions, as it will after pruning.

What this module deliberately does not do: use GPUs, mixed precision or any data besides the
synthetic generator.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specvlm import synthetic
from specvlm.tiny import TinySpec, llava_onevision
from specvlm.zoo import CHECKPOINTS, ROOT

logger = logging.getLogger(__name__)

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
ROLES = ("user", "assistant")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video> "
    "{% elif c['type'] == 'image' %}<image> {% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


IMAGE_SIZE = 64  # frames are generated at this resolution: the processor's resize is the identity
PATCH_SIZE = 8  # 8 x 8 patches, pooled to 4 x 4 = 16 video tokens per frame
_COMMON = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_heads=4, vision_mlp_ratio=4, max_positions=4096)
TARGET = TinySpec(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768,
                  vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip
DRAFT = TinySpec(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=384,
                 vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    seed: int = 0
    lr: float = 2e-3
    warmup: int = 200
    frames_choices: tuple[int, ...] = (8, 16, 16)  # drawn uniformly
    turns: int = 8  # caption + questions per sequence
    draft_pruned_share: float = 0.5  # share of steps where the draft sees a subset of the video tokens
    draft_keep_min: float = 0.05
    draft_keep_max: float = 0.3


def build_tokenizer():
    """Word-level tokenizer: the synthetic vocabulary, chat roles and special tokens (stock fast tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIALS) + list(ROLES) + list(synthetic.VOCABULARY) + ["<unk>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    return fast


def build_model(spec: TinySpec, tokenizer):
    """(stock LLaVA-OneVision model, stock processor) with the word-level tokenizer and chat template."""
    model, processor = llava_onevision(spec, tokenizer, chat_template=CHAT_TEMPLATE)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def pixel_values(frames: np.ndarray, processor) -> torch.Tensor:
    """(T, H, W, 3) uint8 at IMAGE_SIZE -> (1, T, 3, H, W), exactly as the stock video processor makes it."""
    vp = processor.video_processor
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(vp.image_mean)[:, None, None]
    std = torch.tensor(vp.image_std)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)


def conversation(sample, rng: np.random.Generator, turns: int) -> list[tuple[str, str]]:
    """(user text, assistant text) turns: the caption and questions in random order."""
    pairs = [(synthetic.CAPTION_PROMPT, sample.caption)]
    pairs += [(synthetic.question_prompt(q), q.answer_letter) for q in sample.questions]
    order = rng.permutation(len(pairs))[:turns]
    return [pairs[i] for i in order]


def encode(sample, processor, rng, turns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (1, L), labels (1, L)) for one multi-turn sequence; labels are -100 outside answers."""
    tok = processor.tokenizer
    frames = sample.frames.shape[0]
    side = math.ceil((IMAGE_SIZE // PATCH_SIZE) / 2)
    video = ["<video>"] * (frames * side * side + 1)
    ids: list[int] = []
    labels: list[int] = []

    def add(words: list[str], train: bool) -> None:
        new = tok.convert_tokens_to_ids(words)
        ids.extend(new)
        labels.extend(new if train else [-100] * len(new))

    for i, (user, answer) in enumerate(conversation(sample, rng, turns)):
        add(["<|im_start|>", "user"] + (video if i == 0 else []) + user.split() + ["<|im_end|>", "<|im_start|>", "assistant"], False)
        add(answer.split() + ["<|im_end|>"], True)
    unknown = tok.convert_tokens_to_ids("<unk>")
    if unknown in ids:
        raise ValueError("a training text contains a word outside the synthetic vocabulary")
    return torch.tensor([ids]), torch.tensor([labels])


def lm_loss(model, input_ids, labels, pixels, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token loss; with ``keep`` (sorted positions) only those tokens are fed, at their original positions."""
    embeds = model.get_input_embeddings()(input_ids)
    feats = model.get_video_features(pixel_values_videos=pixels).pooler_output.flatten(0, 1)
    slots = (input_ids[0] == model.config.video_token_id).nonzero().squeeze(-1)
    embeds = embeds.clone()
    embeds[0, slots] = feats
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
    if keep is not None:
        embeds, positions, labels = embeds[:, keep], positions[:, keep], labels[:, keep]
    hidden = model.model.language_model(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    logits = model.lm_head(hidden[:, :-1]).float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def draft_subset(input_ids: torch.Tensor, video_token_id: int, keep_share: float, gen: torch.Generator) -> torch.Tensor:
    """Sorted positions: every non-video token plus a random ``keep_share`` of the video tokens."""
    is_video = input_ids[0] == video_token_id
    video = is_video.nonzero().squeeze(-1)
    k = max(1, int(video.numel() * keep_share))
    chosen = video[torch.randperm(video.numel(), generator=gen)[:k]]
    return torch.cat([(~is_video).nonzero().squeeze(-1), chosen]).sort().values


def train(out: Path, config: TrainConfig) -> dict:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    tokenizer = build_tokenizer()
    target, processor = build_model(TARGET, tokenizer)
    draft, _ = build_model(DRAFT, tokenizer)
    params = list(target.parameters()) + list(draft.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
        return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    target.train()
    draft.train()
    start = time.perf_counter()
    history = []
    for step in range(config.steps):
        frames = int(rng.choice(config.frames_choices))
        sample = synthetic.generate_sample(
            int(rng.integers(1 << 30)), num_frames=frames, height=IMAGE_SIZE, width=IMAGE_SIZE
        )
        input_ids, labels = encode(sample, processor, rng, config.turns)
        pixels = pixel_values(sample.frames, processor)
        loss_t = lm_loss(target, input_ids, labels, pixels)
        keep = None
        if rng.random() < config.draft_pruned_share:
            share = float(rng.uniform(config.draft_keep_min, config.draft_keep_max))
            keep = draft_subset(input_ids, draft.config.video_token_id, share, gen)
        loss_d = lm_loss(draft, input_ids, labels, pixels, keep)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        (loss_t + loss_d).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append((float(loss_t), float(loss_d)))
        if step % 50 == 0 or step == config.steps - 1:
            recent = np.mean(history[-50:], axis=0)
            logger.info(
                "step %d/%d loss target %.3f draft %.3f (%.0f s)",
                step, config.steps, recent[0], recent[1], time.perf_counter() - start,
            )  # fmt: skip
    target.eval()
    draft.eval()
    for name, model in (("target", target), ("draft", draft)):
        path = out / CHECKPOINTS[name]
        model.save_pretrained(path)
        processor.save_pretrained(path)
    return {"seconds": time.perf_counter() - start, "final_loss": np.mean(history[-50:], axis=0).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.zoo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write the checkpoints (default: the package)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = train(args.out, TrainConfig(steps=args.steps, seed=args.seed))
    logger.info("done in %.0f s; final losses %s", report["seconds"], report["final_loss"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
