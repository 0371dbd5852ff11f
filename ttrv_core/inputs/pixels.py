"""What every picture the model sees obeys, whatever file it came from (an image, a DICOM file, a
video's frames): the size limits, checked from a header before any pixel is decoded (`check_size`),
and 8-bit RGB (`to_rgb`). `ImageError` is a picture that cannot be used; its message is for the user."""
from __future__ import annotations

import numpy as np
from PIL import Image

MAX_SIDE = 2048
"""Images are downscaled to this longest side on load; processors resize further."""
MAX_PIXELS = 50_000_000
"""Larger images are refused: a 50 MP photo is already far beyond what any VLM processor keeps."""
MAX_ASPECT = 200
"""Qwen2/2.5-VL processors raise on aspect ratios above 200:1 (smart_resize); refuse them up front."""
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow itself refuses twice this as a decompression bomb, before our check

WHITE = (255, 255, 255, 255)


class ImageError(ValueError):
    """An image that cannot be used; the message is for the user."""


def check_size(w: int, h: int) -> None:
    """Refuse, from the header alone, images too large or too thin to use."""
    if w < 1 or h < 1:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > MAX_PIXELS:
        raise ImageError(f"image is {w}x{h} ({w * h / 1e6:.0f} megapixels); "
                         f"the limit is {MAX_PIXELS // 1_000_000} megapixels")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"image is {w}x{h}: too long and thin (aspect ratio above {MAX_ASPECT}:1)")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparent pixels become white.

    >>> to_rgb(Image.new("LA", (2, 1), (0, 0))).getpixel((0, 0))
    (255, 255, 255)
    >>> to_rgb(Image.new("I;16", (1, 1), 65535)).getpixel((0, 0))
    (255, 255, 255)
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    try:
        return im.convert("RGB")
    except ValueError:  # e.g. LAB or HSV TIFFs
        raise ImageError(f"cannot read image: colour mode {im.mode} is not supported") from None


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale as 8-bit 'L'.

    Pillow's own convert clips these at 255 (a 16-bit photo turns white);
    scale instead: 16-bit by 1/257, floats in [0, 1] by 255.
    """
    a = np.asarray(im).astype(np.float64)  # (H, W)
    if im.mode == "F":
        a = a * 255 if a.size and np.nanmax(a) <= 1.0 else a
    elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257
    return Image.fromarray(np.nan_to_num(a).clip(0, 255).round().astype(np.uint8), "L")
