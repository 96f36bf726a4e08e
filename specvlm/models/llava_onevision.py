"""LLaVA-OneVision over the stock ``LlavaOnevisionForConditionalGeneration``.

Video tokens: every frame is encoded by the vision tower, projected and 2x2 bilinearly pooled to an
(h, w) grid; the frames' grids are concatenated in time and one learned newline token follows.
The grid (T, h, w) is prunable; the newline token is structural and always kept. Positions are 1-D.

Images (anyres): each image is its base view, an (s, s) grid of unpooled tokens, then, when the stock model
tiles it, its unpadded high-resolution view as rows of tokens each ending in a learned newline
token (one newline token after an untiled image). Both views are prunable runs; the newline tokens are
structural.
"""

from __future__ import annotations

import math

import torch
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from specvlm.models.base import ModelAdapter, VisualLayout


class LlavaOnevisionAdapter(ModelAdapter):
    family = "llava_onevision"
    model_types = ("llava_onevision",)

    def layout_signature(self) -> dict:
        vision = self.config.vision_config
        return {"image_size": vision.image_size, "patch_size": vision.patch_size}

    @torch.no_grad()
    def video_features(self, inputs) -> torch.Tensor:
        pixels = inputs["pixel_values_videos"].to(self.device, self.dtype)
        out = self.model.get_video_features(pixel_values_videos=pixels)
        return out.pooler_output.flatten(0, 1)  # (T * h * w + 1, D)

    @torch.no_grad()
    def embed_kept(self, inputs, keep: torch.Tensor):
        """The vision tower runs only over the frames holding a kept video token (it encodes each frame on
        its own, so their features are exact); the other frames' rows stay zero (never fed)."""
        if self.has_images(inputs) or not self.has_video(inputs):
            return super().embed_kept(inputs, keep)
        pixels = inputs["pixel_values_videos"]  # (1, T, C, H, W)
        frames = pixels.shape[1]
        slots = self.video_slots(inputs)  # (T * h * w + 1,): the frames' grids, then the newline token
        per_frame = (slots.numel() - 1) // frames
        kept = torch.isin(slots, keep.to(slots.device)).nonzero().squeeze(-1)
        needed = torch.unique(kept[kept < frames * per_frame] // per_frame)
        features = torch.zeros(slots.numel(), self.text_config.hidden_size, device=self.device, dtype=self.dtype)
        if not needed.numel():  # no video token kept: the newline token only
            needed = needed.new_zeros(1)
        out = self.model.get_video_features(pixel_values_videos=pixels[:, needed].to(self.device, self.dtype))
        pooled = out.pooler_output[0]  # (F * h * w + 1, D): the frames' grids, then the newline token
        features[: frames * per_frame].view(frames, per_frame, -1)[needed.to(self.device)] = pooled[:-1].view(
            needed.numel(), per_frame, -1
        )
        features[-1] = pooled[-1]
        return self.scatter_video(inputs, features), None

    @torch.no_grad()
    def image_features(self, inputs) -> torch.Tensor:
        out = self.model.get_image_features(
            pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
            image_sizes=inputs["image_sizes"].to(self.device),
            batch_num_images=inputs.get("batch_num_images"),
        )
        return torch.cat(list(out.pooler_output), dim=0)  # every image's tokens, newline tokens included

    def image_newlines(self, inputs) -> list[torch.Tensor]:
        """Per image, (L_i,) bool: which of its placeholder tokens are learned newline tokens. Read from the
        stock packing itself (``pack_image_features`` over stand-in features of ones with a zero newline),
        so every anyres rule (tiles, unpadding, ``anyres_max`` downscaling) is the stock model's."""
        sizes = inputs["image_sizes"]
        counts = inputs.get("batch_num_images")
        # as the stock model decides: an image is tiled when its entry of ``batch_num_images`` is 1
        tiled = [True] * len(sizes) if counts is None else [int(n) == 1 for n in counts for _ in range(int(n))]
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        stand_ins = []
        for size, tile in zip(sizes, tiled):
            tiles = image_size_to_num_patches(size, self.config.image_grid_pinpoints, vision.image_size) if tile else 1
            stand_ins.append(torch.ones(tiles, side * side, 1))
        packed, _ = self.model.model.pack_image_features(
            stand_ins, sizes, image_newline=torch.zeros(1), vision_aspect_ratio=self.config.vision_aspect_ratio
        )
        return [features[:, 0] == 0 for features in packed]

    def layout(self, inputs) -> VisualLayout:
        runs, structural = [], []
        if self.has_video(inputs):
            slots = self.video_slots(inputs).cpu()
            frames = int(inputs["pixel_values_videos"].shape[1])
            vision = self.config.vision_config
            side = math.ceil((vision.image_size // vision.patch_size) / 2)
            grid = (frames, side, side)
            n = frames * side * side
            if slots.numel() != n + 1:
                raise ValueError(
                    f"llava_onevision: {slots.numel()} video placeholder tokens for a {grid} grid plus one newline token "
                    f"({n + 1} expected): the processor does not match the model"
                )
            runs.append(("video", grid, slots[:n]))
            structural.append(slots[n:])
        if self.has_images(inputs):
            image_runs, image_structural = self.image_runs(inputs)
            runs += image_runs
            structural += image_structural
        return VisualLayout.from_runs(runs, torch.cat(structural).sort().values if structural else None)

    def image_runs(self, inputs) -> tuple[list, list]:
        """([(kind, grid, positions)] of every image's runs, [newline positions]). An image is its base view,
        a (1, s, s) run, then, when tiled, its unpadded high-resolution view, a (1, rows, cols) run whose
        rows each end in a newline token; an untiled image ends in one newline token."""
        slots = self.image_slots(inputs).cpu()
        newlines = self.image_newlines(inputs)
        lengths = [int(mask.numel()) for mask in newlines]
        if sum(lengths) != slots.numel():
            raise ValueError(
                f"llava_onevision: {slots.numel()} image placeholder tokens for images of {lengths} tokens: "
                "the processor does not match the model"
            )
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        runs, structural = [], []
        for chunk, mask in zip(torch.split(slots, lengths), newlines):
            runs.append(("image", (1, side, side), chunk[: side * side]))
            rest, rest_mask = chunk[side * side :], mask[side * side :]
            rows = int(rest_mask.sum())
            cols = (rest.numel() - rows) // max(rows, 1)
            if rows > 1 or rest.numel() > 1:
                expected = torch.zeros(rows, cols + 1, dtype=torch.bool)
                expected[:, -1] = True
                if rest_mask.numel() != rows * (cols + 1) or not torch.equal(rest_mask, expected.flatten()):
                    raise ValueError("llava_onevision: an image's high-resolution tokens are not rows ending in a newline")
                runs.append(("image", (1, rows, cols), rest[~rest_mask]))
            structural.append(rest[rest_mask])
        return runs, structural

    def positions(self, inputs) -> torch.Tensor:
        length = inputs["input_ids"].shape[1]
        return torch.arange(length, dtype=torch.long).unsqueeze(0)  # (1, L)
