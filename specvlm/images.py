"""Images for a prompt: a path, a PIL image or an array, read as an (H, W, 3) uint8 RGB array.

Images enter the prompt beside (or instead of) the video, through ``images=`` or ``{"type": "image"}``
entries of a conversation; the processor turns each into visual tokens that are pruned with the video's.

**Faithful conversion.** Every pixel format is either converted to 8-bit RGB in a way that keeps what
the image shows, or refused with a ``ValueError`` naming the format; nothing is clipped or saturated
silently. Per PIL mode:

* ``RGB``: as is. ``RGBX``: the padding band is dropped.
* ``L`` (8-bit grey): the grey value in all three channels. ``1`` (1-bit): black 0, white 255.
* ``P`` (palette) without transparency: each index replaced by its palette colour.
* ``YCbCr``, ``HSV``, ``LAB``, ``CMYK``: Pillow's colour-space conversion (CMYK without any embedded
  ICC profile, as Pillow converts it).
* ``RGBA``, ``LA``, ``PA``, ``RGBa`` (premultiplied) and ``P`` or ``L`` / ``RGB`` with a transparency
  entry: composited onto white, as transformers' ``convert_to_rgb`` does when a processor is handed
  such an image (a transparent pixel shows white, not whatever colour it stores).
* ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey): scaled by the 16-bit range,
  ``round(v * 255 / 65535)``, so 65535 is white and 32768 mid-grey (``convert("RGB")`` would
  saturate every value above 255 to white).
* ``I`` (32-bit integers; Pillow's mode for 16-bit PGM and 32-bit TIFF files): values within
  0..65535 are read as 16-bit and scaled like ``I;16``; any value outside is refused.
* ``F`` (32-bit float) and ``La`` are refused: a float image has no fixed white level, and Pillow
  cannot convert ``La``; convert them yourself to a mode above.

Files: the first frame of an MPO (a camera JPEG's primary picture); an animation or a multi-page file
is refused (pass an animation as a video). EXIF orientation is applied, as ``transformers``'
``load_image`` does. ``data:image/...;base64,`` URIs are decoded.

Arrays and tensors (channels last): ``uint8`` as is, ``uint16`` scaled like ``I;16``; (H, W) and
(H, W, 1) are grey, (H, W, 3) RGB, (H, W, 4) RGBA (composited onto white). Any other dtype (float,
signed or wider integers, bool) or shape is refused by name.

What this module deliberately does not do: fetch URLs, or resize (the processor does, as for the
checkpoint's own ``generate()``).
"""

from __future__ import annotations

import base64
import binascii
import io
import os

import numpy as np
import torch

from specvlm.files import check_input_file

#: PIL modes holding 16-bit grey levels.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: PIL modes refused, with the reason.
REFUSED_MODES = {
    "F": "32-bit floating-point pixels have no fixed white level; scale them to 8-bit ('L') or 16-bit ('I;16') first",
    "La": "Pillow cannot convert premultiplied grey + alpha; convert it to 'LA' or 'RGBA' first",
}
#: Array dtypes accepted, with the value of white.
ARRAY_DTYPES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
_DATA_URI = "data:image/"


class ImageLoadError(ValueError):
    """An image file could not be read: missing, a directory, empty, unreadable or not an image.

    ``path`` is the file path and ``reason`` says why (the same shape as
    :class:`specvlm.video.VideoDecodeError`).
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = os.fsdecode(path) if path is not None else None
        self.reason = " ".join(str(reason).split())
        super().__init__(f"cannot read image {self.path!r}: {self.reason}")

    def __reduce__(self):  # keep (path, reason) through pickling
        return (type(self), (self.path, self.reason))


def _scale_16(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to the nearest level (white stays white, nothing saturates)."""
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8 RGB over a white background (transformers' rule)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    return np.round(alpha * rgb + (1.0 - alpha) * 255.0).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


def pil_to_rgb(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image, converted faithfully (see the module docstring) or refused
    with a ValueError naming ``name`` and the mode."""
    mode = image.mode
    if mode in REFUSED_MODES:
        raise ValueError(f"{name} has PIL mode {mode!r}: {REFUSED_MODES[mode]}")
    if mode in SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_scale_16(np.asarray(image).astype(np.uint16)))
    if mode == "I":
        values = np.asarray(image)
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"{name} has PIL mode 'I' (32-bit integers) with values {low}..{high}, outside the 16-bit range "
                "0..65535 this reads; scale it to 8-bit ('L') or 16-bit ('I;16') first"
            )
        return _grey_to_rgb(_scale_16(values.astype(np.uint16)))
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or image.info.get("transparency") is not None
    try:
        if has_alpha:
            return _composite_on_white(np.asarray(image.convert("RGBA")))
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as err:  # a mode Pillow cannot convert
        raise ValueError(f"{name} has PIL mode {mode!r}, which cannot be converted to RGB: {err}") from None


def array_to_rgb(array: np.ndarray, name: str = "an image array") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a channels-last array: uint8 or uint16 (scaled by 65535), with 1, 3 or 4
    channels or none (grey); anything else raises ValueError naming the shape and dtype."""
    allowed = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 (0-255) or uint16 (0-65535), channels last"
    if array.dtype not in ARRAY_DTYPES:
        hint = " (e.g. array.astype(np.uint8) if its values are 0-255)" if array.dtype.kind in "iub" else ""
        raise ValueError(f"{name} has dtype {array.dtype}; give {allowed}{hint}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(f"{name} has shape {tuple(array.shape)}; give {allowed}")
    if array.dtype == np.uint16:
        array = _scale_16(array)
    channels = array.shape[-1]
    if channels == 1:
        return _grey_to_rgb(array[..., 0])
    if channels == 4:
        return _composite_on_white(array)
    return np.ascontiguousarray(array)


def _open(source, name: str) -> np.ndarray:
    """Open an image file (a path or bytes) and convert its picture faithfully."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1 and opened.format != "MPO":
                what = "an animation" if getattr(opened, "is_animated", False) else "a multi-page file"
                raise ImageLoadError(
                    name, f"holds {frames} frames ({what}); pass an animation as a video, or save the frame you mean as an image"
                )
            picture = ImageOps.exif_transpose(opened)
            return pil_to_rgb(picture, f"image {name!r}")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ImageLoadError(name, f"not a readable image ({type(err).__name__}: {err})") from None


def load_image(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array of ``image``: a local path, a ``data:image/...;base64,`` URI, a PIL
    image, or an array / tensor (see the module docstring for what each pixel format becomes).

    Raises :class:`ImageLoadError` (a ``ValueError``) for a file that cannot be read, ``ValueError`` for
    a URL or a refused pixel format, ``TypeError`` for anything else."""
    from PIL import Image

    if isinstance(image, bytes):
        raise TypeError("an image given as bytes is ambiguous; pass a path (str), a PIL image or an array")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.startswith(_DATA_URI):
            head, _, payload = path.partition(",")
            if not head.endswith(";base64") or not payload:
                raise ValueError(f"image data URI {path[:40]!r}...: only base64 data URIs (data:image/...;base64,...) are read")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as err:
                raise ImageLoadError(head + ",...", f"the base64 payload is invalid: {err}") from None
            return _open(io.BytesIO(data), head + ",...")
        if "://" in path:
            raise ValueError(f"image {path!r} is a URL; SpecVLM reads local files only: download it first")
        if "\x00" in path:
            raise ImageLoadError(path, "the path holds a NUL character")
        check_input_file(path, ImageLoadError, "is a directory, not an image file")
        return _open(path, path)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dtype == torch.uint16:  # numpy() has no uint16 path on every torch version
            image = image.to(torch.int32).numpy().astype(np.uint16)
        else:
            image = image.numpy()
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    raise TypeError(
        f"an image must be a path, a PIL image or an (H, W, 3) uint8 / uint16 array, got {type(image).__name__}"
    )


def load_images(images) -> list[np.ndarray]:
    """A list of (H, W, 3) uint8 arrays from one image or a list / tuple of them."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; pass at least one image or leave it out")
        return [load_image(image) for image in images]
    return [load_image(images)]
