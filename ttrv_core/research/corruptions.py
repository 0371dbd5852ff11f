"""Deterministic test-time corruptions of images: a shifted input distribution.

    noise      additive Gaussian noise, sigma = 0.2 of the 0-255 range, clipped;
               the noise is seeded by the item id, so every run sees the same pixels
    blur       Gaussian blur, radius 1.5 px (on the 32x32 demo digits: about a
               third of a stroke width of the original 8x8 scan)
    rotate     rotation by 15 degrees counter-clockwise about the centre, black fill
    invert     255 - pixel (dark strokes on a light ground)
    contrast   contrast scaled to 0.5 about the mean grey level (ImageEnhance)

A corrupted set is written to disk as PNGs (lossless, so the pixels are
exactly the ones generated), with the items' questions and answers unchanged:
`corrupted_items(items, "blur", folder)` returns Items that point at the new
files and keep their ids. The same call always writes the same bytes.
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ttrv_core.inputs.dataset import Item

NOISE_SIGMA = 0.2
BLUR_RADIUS = 1.5
ROTATE_DEG = 15.0
CONTRAST = 0.5


def _noise(im: Image.Image, key: str) -> Image.Image:
    rng = np.random.default_rng(zlib.crc32(key.encode()))  # per item, independent of run order
    a = np.asarray(im, dtype=np.float32)
    a = a + rng.normal(0.0, NOISE_SIGMA * 255.0, size=a.shape)
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))


CORRUPTIONS: dict[str, Callable[[Image.Image, str], Image.Image]] = {
    "noise": _noise,
    "blur": lambda im, key: im.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)),
    "rotate": lambda im, key: im.rotate(ROTATE_DEG, resample=Image.BILINEAR, fillcolor=(0, 0, 0)),
    "invert": lambda im, key: ImageOps.invert(im),
    "contrast": lambda im, key: ImageEnhance.Contrast(im).enhance(CONTRAST),
}
"""name -> f(RGB image, item id) -> corrupted RGB image."""


def corrupt(im: Image.Image, name: str, key: str = "") -> Image.Image:
    """One image, corrupted; `key` (the item id) seeds the random corruptions.

    >>> im = Image.new("RGB", (4, 4), (10, 20, 30))
    >>> corrupt(im, "invert").getpixel((0, 0))
    (245, 235, 225)
    >>> corrupt(im, "noise", "a.png").tobytes() == corrupt(im, "noise", "a.png").tobytes()
    True
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; expected one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](im.convert("RGB"), key)


def corrupted_items(items: Sequence[Item], name: str, folder: Path) -> list[Item]:
    """Write each item's corrupted image under `folder` (same relative path as its id) and
    return the items pointing at them: same ids, questions and answers."""
    out = []
    for it in items:
        path = Path(folder) / it.id
        path.parent.mkdir(parents=True, exist_ok=True)
        corrupt(it.image(), name, it.id).save(path, format="PNG")
        out.append(replace(it, path=path))
    return out
