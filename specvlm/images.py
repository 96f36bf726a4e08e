"""Images for a prompt: a path, a PIL image or an (H, W, 3) uint8 array, read as an (H, W, 3) uint8 array.

Images enter the prompt beside (or instead of) the video, through ``images=`` or ``{"type": "image"}``
entries of a conversation; the processor turns each into visual tokens that are pruned with the video's.

What this module deliberately does not do: fetch URLs, or resize (the processor does, as for the
checkpoint's own ``generate()``).
"""

from __future__ import annotations

import os

import numpy as np
import torch


def load_image(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of ``image``: a local path, a PIL image, or an (H, W, 3) uint8 array / tensor."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if "://" in path:
            raise ValueError(f"image {path!r} is a URL; SpecVLM reads local files only: download it first")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
        try:
            with Image.open(path) as opened:
                return np.array(opened.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image {path!r} cannot be read as an image: {err}") from None
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(
                f"an image array must be (H, W, 3) uint8, got shape {tuple(image.shape)} and dtype {image.dtype}"
            )
        return image
    raise TypeError(f"an image must be a path, a PIL image or an (H, W, 3) uint8 array, got {type(image).__name__}")


def load_images(images) -> list[np.ndarray]:
    """A list of (H, W, 3) uint8 arrays from one image or a list / tuple of them."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; pass at least one image or leave it out")
        return [load_image(image) for image in images]
    return [load_image(images)]
