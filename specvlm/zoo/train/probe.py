"""The training-only dense probe of a model's video tokens (:class:`Probe`): per video-token cell, which
object's centre lies in it (colour, shape and size scored against the language model's own word
embeddings), where in the cell, and which colours cover it; its targets (:func:`cell_targets`) and
its loss (:func:`aux_loss`)."""

from __future__ import annotations

import torch

from specvlm.zoo import synthetic
from specvlm.zoo.train.pair import GRID

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


def aux_loss(probe: Probe, model, feats: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense vision-probe loss on ``model``'s video tokens ``feats`` (the trailing newline excluded)."""
    (colour, shape, size), offset, present = probe(feats[:-1], model.get_input_embeddings().weight)
    ce = torch.nn.functional.cross_entropy
    has = targets["colour"] > 0
    loss = ce(colour, targets["colour"]) + ce(shape, targets["shape"]) + ce(size, targets["size"])
    if has.any():
        loss = loss + 4 * torch.nn.functional.mse_loss(offset[has], targets["offset"][has])
    return loss + torch.nn.functional.binary_cross_entropy_with_logits(present, targets["present"])
