"""DICOM (.dcm) files as 8-bit images: what users of medical VQA try first.

`load_dicom` reads one file with pydicom and returns a Pillow image:
  1. The file must be DICOM (the 'DICM' marker after the 128-byte preamble; pydicom's own
     check) and hold pixel data; the size in the header goes through pixels.check_size
     before any pixel is decoded.
  2. A compressed transfer syntax is decoded only where pydicom has a decoder installed
     here (RLE always; JPEG baseline and JPEG 2000 through Pillow); the others (JPEG-LS,
     JPEG lossless, HTJ2K without their plugins) are refused with their name and what to do.
  3. First frame of a multi-frame file. Grayscale: the modality LUT (RescaleSlope /
     RescaleIntercept) from stored values to the modality's units (CT: Hounsfield), then
     the file's window when it has one (WindowCenter / WindowWidth, the first of several;
     width > 1), by the standard's linear function (PS3.3 C.11.2.1.2.1):

         y = 0                                  x <= c - 0.5 - (w - 1) / 2
         y = 255                                x >  c - 0.5 + (w - 1) / 2
         y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255   otherwise

     else min-max over the image: y = 255 (x - min) / (max - min) (0 for a flat image).
     MONOCHROME1 (low values white) is inverted after. Rounded to 8-bit 'L'.
     Colour (3 samples, RGB or YBR: pydicom converts to RGB) is kept as RGB, min-max
     scaled when it is not 8-bit.

Departures from a viewer: a VOI LUT sequence (rare outside mammography) is not applied,
the window is; the presentation LUT shape is not read (MONOCHROME1 is); PALETTE COLOR
images are scaled as grayscale indices, their palette is not applied.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ttrv_core.inputs.pixels import ImageError, check_size


def window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """The standard's linear VOI window to [0, 255] (float; width > 1).

    >>> window(np.array([-10., -0.5, 49.5, 99.5, 200.]), center=50, width=101).tolist()
    [0.0, 0.0, 127.5, 255.0, 255.0]
    """
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(y, 0, 255)


def min_max(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 255] over the image's own range; a flat image is 0.

    >>> min_max(np.array([100., 150., 200.])).tolist(), min_max(np.array([7., 7.])).tolist()
    ([0.0, 127.5, 255.0], [0.0, 0.0])
    """
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) * 255 / (hi - lo) if hi > lo else np.zeros_like(x, dtype=np.float64)


def _first(value) -> float | None:
    """A window value: numbers may be multi-valued (several windows), the first one is used."""
    if value is None:
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def to_8bit(ds, arr: np.ndarray) -> Image.Image:
    """One decoded frame (H, W) or (H, W, 3) of dataset `ds` as an 8-bit Pillow image."""
    from pydicom.pixels import apply_modality_lut
    if arr.ndim == 3:  # (H, W, 3): colour, already RGB
        rgb = arr if arr.dtype == np.uint8 else min_max(arr.astype(np.float64)).round().astype(np.uint8)
        return Image.fromarray(rgb, "RGB")
    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)  # (H, W) in stored units (e.g. HU)
    c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    y = window(x, c, w) if c is not None and w is not None and w > 1 else min_max(x)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        y = 255 - y
    return Image.fromarray(np.nan_to_num(y).round().astype(np.uint8), "L")


def load_dicom(path: Path) -> Image.Image:
    """The first frame of a DICOM file as 8-bit 'L' (grayscale) or 'RGB'. Raises ImageError."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import get_decoder
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise ImageError("cannot read DICOM: not a DICOM file (no 'DICM' marker)") from None
    except FileNotFoundError:
        raise ImageError("cannot read image: file not found (a broken link?)") from None
    except PermissionError:
        raise ImageError("cannot read image: permission denied") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError):
        raise ImageError("cannot read DICOM: the file is truncated or damaged") from None
    if "PixelData" not in ds:
        # pydicom stops quietly at the end of a file: an image whose pixel data is missing was cut short
        sop = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
        if len(ds) == 0 or "Rows" in ds or (sop is not None and "Image Storage" in sop.name):
            raise ImageError("cannot read DICOM: the file is truncated (it ends before its pixel data)")
        raise ImageError("cannot read DICOM: it holds no image (no pixel data; a report?)")
    check_size(int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0))
    ts = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if ts is not None and ts.is_compressed:
        try:
            ok = get_decoder(ts).is_available
        except NotImplementedError:
            ok = False
        if not ok:
            raise ImageError(f"DICOM compressed as {ts.name}, which cannot be decoded here; "
                             "export it uncompressed (Explicit VR Little Endian) or as PNG")
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - pydicom raises ValueError/RuntimeError/... for bad pixel data
        text = str(e).lower()
        if any(k in text for k in ("less than expected", "length", "truncat", "end of")) or isinstance(e, EOFError):
            raise ImageError("cannot read DICOM: the file is truncated (its pixel data is short)") from None
        raise ImageError(f"cannot read DICOM: the pixel data is damaged ({type(e).__name__})") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # (frames, H, W[, 3]) -> the first frame
    return to_8bit(ds, arr)
