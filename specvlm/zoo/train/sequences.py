"""Packed training sequences: one video followed by several turns, each of which sees only the video and
itself at the positions it would have alone (:func:`encode`, :func:`branch_mask`,
:func:`packed_forward`), the next-token loss over them (:func:`lm_loss`) and the draft's pruned view of
the video (:func:`draft_subset`)."""

from __future__ import annotations

import numpy as np
import torch

from specvlm.zoo import synthetic
from specvlm.zoo.train.pair import GRID


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
