"""DICOM files made in the tests with pydicom (no downloads): a CT-like slice, its variants and bad ones."""
import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)


def ramp(rows: int = 16, cols: int = 16) -> np.ndarray:
    """(rows, cols) int16 stored values 0, 10, 20, ... row by row: a known range to window."""
    return (np.arange(rows * cols, dtype=np.int16) * 10).reshape(rows, cols)


def dataset(arr: np.ndarray | None = None, window: tuple | None = None, slope: float = 1.0,
            intercept: float = 0.0, photometric: str = "MONOCHROME2", frames: int = 1) -> Dataset:
    """A minimal CT image: 16-bit signed grayscale, uncompressed; `arr` (frames?, rows, cols)."""
    arr = ramp() if arr is None else arr
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype(np.int16).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    f = io.BytesIO()
    ds.save_as(f, enforce_file_format=True)  # 128-byte preamble, 'DICM', file meta
    return f.getvalue()


def dcm(**kw) -> bytes:
    return to_bytes(dataset(**kw))


def truncated() -> bytes:
    raw = dcm(arr=ramp(64, 64))
    return raw[:len(raw) - 4000]  # the pixel data cut short


def header_only() -> bytes:
    return dcm()[:200]  # preamble, 'DICM' and part of the file meta


def jpeg_ls() -> bytes:
    """Pixel data said to be JPEG-LS: no decoder for it is installed (pydicom needs a plugin)."""
    ds = dataset()
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(64)])
    return to_bytes(ds)


def rle() -> bytes:
    """The ramp compressed as RLE Lossless, which pydicom decodes by itself."""
    ds = dataset()
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return to_bytes(ds)


def no_pixels() -> bytes:
    """A structured report: a DICOM file with no image."""
    ds = dataset()
    for k in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
              "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, k)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    ds.Modality = "SR"
    return to_bytes(ds)


def claiming(rows: int, cols: int) -> bytes:
    """A header that says rows x cols over a few bytes of pixel data (refused before decoding)."""
    ds = dataset()
    ds.Rows, ds.Columns = rows, cols
    return to_bytes(ds)


def jpeg_baseline(arr: np.ndarray) -> bytes:
    """(H, W) uint8 as JPEG baseline pixel data (encoded by Pillow; pydicom decodes it through Pillow)."""
    from PIL import Image
    from pydicom.uid import JPEGBaseline8Bit
    f = io.BytesIO()
    Image.fromarray(arr, "L").save(f, "JPEG", quality=95)
    ds = dataset(arr.astype(np.int16))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([f.getvalue()])
    return to_bytes(ds)
