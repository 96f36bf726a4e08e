"""Train the embedded tiny target/draft pair on the synthetic video-QA task (CPU, fixed seed).

    python -m specvlm.zoo.train [--out DIR] [--steps N] [--vision-steps N] [--single-turn-steps N]
                                [--distill-samples N] [--batch B] [--seed S]
                                [--save-stage2 DIR] [--stage3-from DIR]

Both models are stock ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower, Qwen2 text
model) with a stock ``LlavaOnevisionProcessor`` and a word-level tokenizer over the generator's
closed vocabulary. Four stages:

1. the target's vision tower and projector learn a dense per-cell probe of the scene (which object's
   centre lies in each video-token cell: colour, shape, size, position in the cell; which colours
   cover it) through a training-only head (:class:`Probe`) that scores colour, shape and size against
   the language model's own embeddings of those words, so a video token showing a red square points
   the way the words ``red`` and ``square`` do; the draft then starts from the same vision tower;
2. both models learn language modelling, a batch of packed sequences per optimiser step: one video
   followed by several turns, questions in multiple-choice form (with the lettered options) or open
   form and the caption, where each turn sees only the video and itself, at the positions it would
   have alone (:func:`encode`, :func:`branch_mask`), so that every turn is the single-turn request the
   pair answers at inference and no answer can be read from another turn's text; every answer is the
   question's key followed by the correct option (:func:`synthetic.spoken_answer`: "what shape is the
   red object ?" -> "red square"), so the answer word is looked up in the video from the token just
   written (an answer word right after the question's closing tokens needs a second hop a small model
   does not learn at this budget); the probe loss is kept and the vision towers train at a tenth of
   the learning rate; the draft sees, half the time, only a random, object-biased subset of the video
   tokens at their original positions, as after pruning;
3. a short pass in which half the sequences are the caption request alone, on videos of 8, 16, 32 and
   64 frames: the long ones (1,024 video tokens) teach both models to read a video at the length the
   bench uses, where a pair trained on short clips only loses its captions;
4. the draft alone learns the target's own greedy outputs (captions and answers), matching the
   target's next-token distributions on the video tokens the target's pruning keeps, as it drafts at
   inference (:func:`distill_stage`): acceptance is agreement with the target, right or wrong.

The loss covers the assistant answers only (stage 4: the target's outputs). ``--save-stage2 DIR`` also
writes the checkpoints as they are after stages 1-2; ``--stage3-from DIR`` runs stages 3-4 alone on
such checkpoints (they draw from their own seeded generators, so the result is the same as one full
run's).

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

from specvlm.zoo import synthetic
from specvlm.engine import SpecVLM
from specvlm.zoo.tiny import TinySpec, llava_onevision
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


PROBE_SEED = (1 << 30) + (1 << 20)  # held-out seeds for the in-training check, apart from evaluation's
IMAGE_SIZE = 64  # frames are generated at this resolution: the processor's resize is the identity
PATCH_SIZE = 8  # 8 x 8 patches, pooled to 4 x 4 = 16 video tokens per frame
GRID = math.ceil((IMAGE_SIZE // PATCH_SIZE) / 2)  # pooled video tokens per frame side
_COMMON = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_heads=4, vision_mlp_ratio=4, max_positions=4096)
TARGET = TinySpec(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768,
                  vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip
DRAFT = TinySpec(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=384,
                 vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 420  # stage 2 (360 before: docs/zoo.md says what the longer stage changed)
    batch: int = 16  # sequences per optimiser step (stages 2 and 3)
    seed: int = 0
    lr: float = 3e-3
    warmup: int = 50
    frames_choices: tuple[int, ...] = (8, 16)  # drawn uniformly, one per batch
    turns: int = 10  # questions + the caption per sequence
    draft_pruned_share: float = 0.5  # share of sequences where the draft sees a subset of the video tokens
    draft_keep_min: float = 0.05
    draft_keep_max: float = 0.3
    vision_steps: int = 1500  # stage 1: the target's vision tower learns the per-cell probe alone
    vision_batch: int = 4
    vision_lr: float = 1e-3
    aux_weight: float = 0.5  # vision probe loss weight during stage 2
    vision_lr_scale: float = 0.1  # stage 2: the vision towers move slowly, keeping what stage 1 taught them
    probe_every: int = 100  # held-out multiple-choice check interval (0: never)
    single_turn_steps: int = 60  # stage 3
    single_turn_lr: float = 1e-3
    single_turn_frames: tuple[int, ...] = (8, 16, 32, 64)  # stage 3 adds longer videos (64 frames: 1,024 video tokens)
    distill_samples: int = 800  # stage 4: the target's own outputs the draft learns from
    distill_epochs: int = 6
    distill_lr: float = 1e-3
    distill_frames: tuple[int, ...] = (8, 16, 64)
    distill_caption_share: float = 0.7  # the rest are single questions
    distill_new_tokens: tuple[int, int] = (128, 16)  # target tokens per caption / per answer (EOS ignored)
    distill_pruned_share: float = 0.75  # share of sequences where the draft sees what the target's pruning keeps


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


def conversation(sample, rng: np.random.Generator, turns: int, caption_first: bool = False) -> list[tuple[str, str]]:
    """(user text, assistant text) turns: questions in random order, then the caption.

    Each question appears in its multiple-choice form (with the lettered options) or, as often, in its
    open form (the question alone); either way the answer is :func:`synthetic.spoken_answer`, the
    question's key followed by the correct option. ``caption_first``: the caption request alone.
    """
    if caption_first:
        return [(synthetic.CAPTION_PROMPT, sample.caption)]
    pool = [(synthetic.question_prompt(q), synthetic.spoken_answer(q)) for q in sample.questions]
    pool += [(q.question, synthetic.spoken_answer(q)) for q in sample.questions]
    order = rng.permutation(len(pool))[: turns - 1]
    return [pool[i] for i in order] + [(synthetic.CAPTION_PROMPT, sample.caption)]


def encode(sample, processor, rng, turns: int, caption_first: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids (1, L), labels (1, L), branch (L,)) for one packed sequence; labels are -100 outside answers.

    The sequence is the video prefix (``<|im_start|> user`` and the video tokens) followed by the turns,
    each one the rest of a single-turn prompt (question, end of turn, assistant header) and its answer.
    ``branch`` is 0 on the prefix and k on turn k: :func:`packed_forward` lets each turn see only the prefix
    and itself, at the positions it would have alone, so every turn is exactly the single-turn request
    the pair answers at inference and no answer can be read from another turn's text.
    """
    tok = processor.tokenizer
    frames = sample.frames.shape[0]
    video = ["<video>"] * (frames * GRID * GRID + 1)
    ids: list[int] = []
    labels: list[int] = []
    branch: list[int] = []

    def add(words: list[str], train: bool, turn: int) -> None:
        new = tok.convert_tokens_to_ids(words)
        ids.extend(new)
        labels.extend(new if train else [-100] * len(new))
        branch.extend([turn] * len(new))

    add(["<|im_start|>", "user"] + video, False, 0)
    for turn, (user, answer) in enumerate(conversation(sample, rng, turns, caption_first), start=1):
        add(user.split() + ["<|im_end|>", "<|im_start|>", "assistant"], False, turn)
        add(answer.split() + ["<|im_end|>"], True, turn)
    unknown = tok.convert_tokens_to_ids("<unk>")
    if unknown in ids:
        raise ValueError("a training text contains a word outside the synthetic vocabulary")
    return torch.tensor([ids]), torch.tensor([labels]), torch.tensor(branch)


def branch_positions(branch: torch.Tensor) -> torch.Tensor:
    """(L,) position ids of a packed sequence: the prefix (branch 0) counts from 0 and every turn
    continues from the end of the prefix, as if it were the only turn."""
    positions = torch.arange(branch.numel())
    prefix = int((branch == 0).sum())
    for turn in branch.unique().tolist():
        if turn > 0:
            members = branch == turn
            positions[members] = prefix + torch.arange(int(members.sum()))
    return positions


def branch_mask(branch: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool attention mask for packed rows ``branch`` (B, L): causal in packed order, and a
    token sees the prefix (branch 0) and its own turn only. Padding (branch -1) sees the prefix and
    padding and is never seen by a real token (it comes after them)."""
    length = branch.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same = (branch[:, :, None] == branch[:, None, :]) | (branch[:, None, :] == 0)
    return (causal & same)[:, None]


PROBE_WORDS = (tuple(synthetic.COLOURS), synthetic.SHAPES, synthetic.SIZES)  # scored against the word embeddings


class Probe(torch.nn.Module):
    """Training-only dense probe of one model's video tokens (:func:`aux_loss`).

    Colour, shape and size are scored against the language model's own input embeddings of the words
    that name them (cosine similarity times a learned scale), so a video token that shows a red square
    points the way the words ``red`` and ``square`` do: the language model can find the object a
    question names by matching the question's words, as it matches repeated words in text. A linear
    head gives the rest: "no object" for each of the three, the object's offset in the cell, and which
    colours cover the cell.
    """

    def __init__(self, hidden_size: int, tokenizer):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, len(PROBE_WORDS) + 2 + len(synthetic.COLOURS))
        self.scale = torch.nn.Parameter(torch.tensor(10.0))
        for a, words in enumerate(PROBE_WORDS):
            self.register_buffer(f"word_ids_{a}", torch.tensor(tokenizer.convert_tokens_to_ids(list(words))), persistent=False)

    def forward(self, feats: torch.Tensor, embedding: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """(logits per attribute (N, 1 + classes), offsets (N, 2), colours-present logits (N, colours)) for
        video tokens ``feats`` (N, hidden), given the language model's input ``embedding`` weight."""
        free = self.linear(feats).float()
        unit = torch.nn.functional.normalize(feats.float(), dim=-1)
        n = len(PROBE_WORDS)
        logits = []
        for a in range(n):
            words = torch.nn.functional.normalize(embedding[getattr(self, f"word_ids_{a}")].float(), dim=-1)
            logits.append(torch.cat([free[:, a : a + 1], self.scale * unit @ words.T], dim=-1))
        return logits, free[:, n : n + 2], free[:, n + 2 :]


def centre_cell(obj, frame: int, height: int, width: int) -> tuple[int, int, int]:
    """(row, column, video token index) of the GRID x GRID cell that holds ``obj``'s centre in ``frame``
    (tokens frame-major, then row-major over the cells, as :func:`video_features` orders them)."""
    x, y = obj.position(frame)
    row, col = min(int(y // (height / GRID)), GRID - 1), min(int(x // (width / GRID)), GRID - 1)
    return row, col, (frame * GRID + row) * GRID + col


def cell_targets(sample) -> dict[str, torch.Tensor]:
    """Per video token (frame-major, then row-major over the GRID x GRID cells) ground truth for the vision probe.

    ``colour``/``shape``/``size``: class + 1 of the object whose centre lies in the cell (0: none);
    ``offset``: that centre's position inside the cell in [-1, 1]^2; ``present``: which colours cover
    any pixel of the cell.
    """
    frames = sample.frames
    t, height, width, _ = frames.shape
    cell_h, cell_w = height / GRID, width / GRID
    n = t * GRID * GRID
    colour = torch.zeros(n, dtype=torch.long)
    shape = torch.full((n,), -100, dtype=torch.long)
    size = torch.full((n,), -100, dtype=torch.long)
    offset = torch.zeros(n, 2)
    present = torch.zeros(n, len(synthetic.COLOURS))
    colours = list(synthetic.COLOURS)
    for obj in sample.objects:
        for k in range(obj.start, min(obj.end, t)):
            x, y = obj.position(k)
            row, col, i = centre_cell(obj, k, height, width)
            colour[i] = colours.index(obj.colour) + 1
            shape[i] = synthetic.SHAPES.index(obj.shape) + 1
            size[i] = synthetic.SIZES.index(obj.size) + 1
            offset[i, 0] = 2 * (x / cell_w - col) - 1
            offset[i, 1] = 2 * (y / cell_h - row) - 1
    cells = torch.from_numpy(frames).reshape(t, GRID, height // GRID, GRID, width // GRID, 3).permute(0, 1, 3, 2, 4, 5)
    cells = cells.reshape(n, -1, 3)
    for j, name in enumerate(colours):
        rgb = torch.tensor(synthetic.COLOURS[name], dtype=cells.dtype)
        present[:, j] = ((cells == rgb).all(-1).sum(-1) > 0).float()
    return {"colour": colour, "shape": shape, "size": size, "offset": offset, "present": present}


def video_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """(B, T * GRID**2 + 1, hidden) for pixels (B, T, 3, H, W): the projected, pooled video tokens plus
    the trailing newline of each video, as the stock forward feeds them."""
    out = model.get_video_features(pixel_values_videos=pixels).pooler_output
    return out.reshape(pixels.shape[0], -1, out.shape[-1])


def aux_loss(probe: Probe, model, feats: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense vision-probe loss on ``model``'s video tokens ``feats`` (the trailing newline excluded)."""
    (colour, shape, size), offset, present = probe(feats[:-1], model.get_input_embeddings().weight)
    ce = torch.nn.functional.cross_entropy
    has = targets["colour"] > 0
    loss = ce(colour, targets["colour"]) + ce(shape, targets["shape"]) + ce(size, targets["size"])
    if has.any():
        loss = loss + 4 * torch.nn.functional.mse_loss(offset[has], targets["offset"][has])
    return loss + torch.nn.functional.binary_cross_entropy_with_logits(present, targets["present"])


def packed_forward(model, rows, feats, keeps=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(last hidden states (B, L, hidden), labels (B, L)) of the language model over a batch of packed rows.

    ``rows``: (input_ids (1, L), labels (1, L), branch (L,)) per packed sequence (:func:`encode`);
    ``feats[b]`` (video tokens, hidden) go into row b's video slots; ``keeps`` (per row None or
    sorted positions): only those tokens are fed, at their original positions. Rows are right-padded;
    padding carries no labels and no real token sees it (:func:`branch_mask`).
    """
    embed = model.get_input_embeddings()
    parts = []
    for b, (input_ids, labels, branch) in enumerate(rows):
        embeds = embed(input_ids[0]).clone()
        slots = (input_ids[0] == model.config.video_token_id).nonzero().squeeze(-1)
        embeds[slots] = feats[b].to(embeds.dtype)
        positions = branch_positions(branch)
        keep = None if keeps is None else keeps[b]
        if keep is not None:
            embeds, positions, labels, branch = embeds[keep], positions[keep], labels[:, keep], branch[keep]
        parts.append((embeds, positions, labels[0], branch))
    length = max(p[0].shape[0] for p in parts)
    embeds = parts[0][0].new_zeros(len(parts), length, parts[0][0].shape[-1])
    positions = torch.zeros(len(parts), length, dtype=torch.long)
    labels = torch.full((len(parts), length), -100, dtype=torch.long)
    branches = torch.full((len(parts), length), -1, dtype=torch.long)
    for b, (e, p, y, t) in enumerate(parts):
        n = e.shape[0]
        embeds[b, :n], positions[b, :n], labels[b, :n], branches[b, :n] = e, p, y, t
    masks = {"full_attention": branch_mask(branches)}
    hidden = model.model.language_model(inputs_embeds=embeds, position_ids=positions, attention_mask=masks).last_hidden_state
    return hidden, labels


def lm_loss(model, rows, feats: torch.Tensor, keeps=None) -> torch.Tensor:
    """Next-token loss over a batch of packed rows (:func:`packed_forward`), averaged over the answer tokens.

    Every labelled token follows a token of its own turn (an answer's first token follows the turn's
    assistant header), so shifting by one position in packed order is exact.
    """
    hidden, labels = packed_forward(model, rows, feats, keeps)
    logits = model.lm_head(hidden[:, :-1]).float()
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def draft_subset(
    input_ids: torch.Tensor, video_token_id: int, keep_share: float, gen: torch.Generator, salient: torch.Tensor
) -> torch.Tensor:
    """Sorted positions: every non-video token plus ``keep_share`` of the video tokens.

    The kept video tokens favour ``salient`` ones (cells an object covers), as a verifier's attention
    does, with a random share of background: the draft learns to work from what pruning leaves it.
    """
    is_video = input_ids[0] == video_token_id
    video = is_video.nonzero().squeeze(-1)
    k = max(1, int(video.numel() * keep_share))
    score = torch.rand(video.numel(), generator=gen)
    boost = torch.zeros(video.numel())
    boost[: salient.numel()] = salient.float() * 2 * torch.rand(1, generator=gen).item()
    chosen = video[(score + boost).topk(k).indices]
    return torch.cat([(~is_video).nonzero().squeeze(-1), chosen]).sort().values


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


def single_turn_stage(target, draft, processor, config: "TrainConfig") -> None:
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


def distill_stage(target, draft, processor, config: "TrainConfig") -> None:
    """Stage 4: the draft learns the target's own outputs; the target does not change.

    For ``config.distill_samples`` held-in requests (captions and single questions on videos of
    ``config.distill_frames`` frames) the target decodes greedily and its next-token distributions over
    its own output are recorded; the draft's language model (embeddings, layers, head; its vision tower
    and projector stay fixed) is trained to match them (KL divergence), on the video tokens the target's
    ``specvlm`` pruning keeps at the default settings for ``config.distill_pruned_share`` of the
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


def save(out: Path, target, draft, processor) -> None:
    for name, model in (("target", target), ("draft", draft)):
        path = out / CHECKPOINTS[name]
        model.save_pretrained(path)
        processor.save_pretrained(path)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.zoo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write the checkpoints (default: the package)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--vision-steps", type=int, default=TrainConfig.vision_steps)
    parser.add_argument("--single-turn-steps", type=int, default=TrainConfig.single_turn_steps)
    parser.add_argument("--distill-samples", type=int, default=TrainConfig.distill_samples,
                        help="stage 4: target outputs the draft learns from (0: skip the stage)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=TrainConfig.batch, help="sequences per optimiser step (stages 2-3)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save-stage2", type=Path, default=None,
                        help="also write the checkpoints after stages 1-2 to this directory (for --stage3-from)")
    parser.add_argument("--stage3-from", type=Path, default=None,
                        help="run only stages 3-4 on the checkpoints saved in this directory by stages 1-2")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        steps=args.steps, vision_steps=args.vision_steps, single_turn_steps=args.single_turn_steps,
        distill_samples=args.distill_samples, batch=args.batch, seed=args.seed,
    )  # fmt: skip
    if args.stage3_from is not None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        start = time.perf_counter()
        target, draft = (
            AutoModelForImageTextToText.from_pretrained(args.stage3_from / CHECKPOINTS[n], dtype=torch.float32) for n in ("target", "draft")
        )
        processor = AutoProcessor.from_pretrained(args.stage3_from / CHECKPOINTS["target"])
        single_turn_stage(target, draft, processor, config)
        distill_stage(target, draft, processor, config)
        save(args.out, target, draft, processor)
        logger.info("stages 3-4 done in %.0f s", time.perf_counter() - start)
        return 0
    report = train(args.out, config, save_stage2=args.save_stage2)
    logger.info("done in %.0f s; final losses %s", report["seconds"], report["final_loss"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
