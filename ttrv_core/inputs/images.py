"""Reading one image file safely, as plain RGB.

Every image the model sees goes through `load_image`:
  1. Pillow may identify the file only as one of `FORMATS` (by content, not
     by name): a PostScript file named .png is refused rather than handed to
     Ghostscript, and nothing else in an upload is ever decoded or run.
  2. The size in the header is checked before any pixel is decoded:
     more than `MAX_PIXELS` (a decompression bomb, or just too big to be
     useful) or a side more than `MAX_ASPECT` times the other is refused.
  3. DICOM (.dcm, or a file with the DICOM marker) goes through dicom.py instead: its
     window to 8-bit grayscale.
  4. First frame of animations; EXIF orientation applied; every mode made
     RGB (16-bit scaled to 8, CMYK converted, transparency composited on
     white); the longest side capped at `MAX_SIDE`.

`check_image` runs the same path once at dataset load (JPEGs decoded at a
reduced scale, which still reads the whole file), so a file that passes it
loads later; its answer is a message for the user, never an exception.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ttrv_core.inputs.dicom import load_dicom
from ttrv_core.inputs.pixels import MAX_PIXELS, MAX_SIDE, ImageError, check_size, to_rgb

DICOM_EXTS = {".dcm", ".dicom"}
"""Read with pydicom (dicom.py), by name: a DICOM file has no Pillow format."""
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} | DICOM_EXTS
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG covers MPO (multi-picture JPEGs from phones)
UNSUPPORTED_EXTS = {".heic", ".heif", ".avif", ".svg", ".psd", ".pdf", ".eps", ".raw", ".dng", ".cr2",
                    ".nef", ".arw", ".jxl", ".ico"}
"""Image-like files that are reported (with what to do) instead of silently ignored."""


FORMAT_NAMES = "PNG, JPEG, GIF, BMP, WebP, TIFF or DICOM"


def load_image(path: Path, fast: bool = False) -> Image.Image:
    """RGB image, EXIF rotation applied, first frame, longest side <= MAX_SIDE.

    fast: decode JPEGs at a reduced scale (validation only). Raises ImageError.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTS or is_dicom(path):
        im = to_rgb(load_dicom(path))
        im.thumbnail((MAX_SIDE, MAX_SIDE))
        return im
    try:
        with warnings.catch_warnings():  # between Pillow's warning and its error: check_size refuses it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=FORMATS)
        with im:
            check_size(*im.size)
            im.seek(0)
            if fast:
                im.draft("RGB", (256, 256))  # JPEG only: DCT scaling, the whole file is still read
            else:
                im.draft("RGB", (MAX_SIDE, MAX_SIDE))
            im.load()
            im = to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"has {int(n.group(1)) / 1e6:.0f} megapixels" if n else "is too large"
        raise ImageError(f"image {size}; the limit is {MAX_PIXELS // 1_000_000} megapixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image: not an image file, or not {FORMAT_NAMES}") from None
    except FileNotFoundError:
        raise ImageError("cannot read image: file not found (a broken link?)") from None
    except PermissionError:
        raise ImageError("cannot read image: permission denied") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken files (struct.error, ...)
        raise ImageError(f"cannot read image: {_reason(e, path)}") from None
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE))
    return im


def is_dicom(path: Path) -> bool:
    """The DICOM marker: 'DICM' after a 128-byte preamble (a .png that is a DICOM file is read as one)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def check_image(path: Path) -> str | None:
    """None if the image loads, else the problem in words."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        return "cannot read image: file not found (a broken link?)"
    try:
        load_image(path, fast=True)
    except ImageError as e:
        return str(e)
    return None


def _reason(e: Exception, path: Path) -> str:
    text = str(e).replace(str(path), path.name) or type(e).__name__
    if "truncated" in text.lower() or isinstance(e, EOFError):
        return "the file is truncated (an incomplete download or copy?)"
    return f"the file is damaged ({text})"
