"""DICOM uploads: 8-bit grayscale through the file's window, else min-max;
the pixels checked against hand values. Bad DICOM files are in tests/test_bad_inputs.py."""
from pathlib import Path

import numpy as np
from dicom_files import dcm, jpeg_baseline, ramp, rle

from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.inputs.dicom import load_dicom
from ttrv_core.inputs.images import load_image
from ttrv_core.inputs.uploads import collect_uploads


def pixels(tmp_path, raw: bytes, name="scan.dcm") -> np.ndarray:
    p = tmp_path / name
    p.write_bytes(raw)
    im = load_dicom(p)
    assert im.mode == "L"
    return np.asarray(im)


def test_no_window_is_min_max(tmp_path):
    a = pixels(tmp_path, dcm())          # stored 0 .. 2550
    x = ramp().astype(float)
    assert a.min() == 0 and a.max() == 255
    assert (a == np.round(x * 255 / 2550)).all()


def test_the_files_window_is_used(tmp_path):
    """Center 1000, width 1001: 500 and below black, 1500 and above white, linear between (PS3.3)."""
    a = pixels(tmp_path, dcm(window=(1000, 1001)))
    x = ramp().astype(float)
    want = np.clip(((x - 999.5) / 1000 + 0.5) * 255, 0, 255).round()
    assert (a == want).all()
    assert a[x <= 499.5].max() == 0 and a[x > 1499.5].min() == 255
    assert a[ramp() == 1000][0] == 128   # ((1000 - 999.5) / 1000 + 0.5) * 255 = 127.6


def test_window_applies_to_rescaled_units(tmp_path):
    """Hounsfield units = stored * slope + intercept; the window is in those units."""
    a = pixels(tmp_path, dcm(slope=1.0, intercept=-1024.0, window=(-24, 1001)))  # = the window above, shifted
    b = pixels(tmp_path, dcm(window=(1000, 1001)), "plain.dcm")
    assert (a == b).all()


def test_several_windows_use_the_first(tmp_path):
    a = pixels(tmp_path, dcm(window=([1000, 40], [1001, 400])))
    assert (a == pixels(tmp_path, dcm(window=(1000, 1001)), "one.dcm")).all()


def test_monochrome1_is_inverted(tmp_path):
    a = pixels(tmp_path, dcm(photometric="MONOCHROME1"))
    assert (a == 255 - pixels(tmp_path, dcm(), "m2.dcm")).all()


def test_flat_image_and_first_frame(tmp_path):
    assert (pixels(tmp_path, dcm(arr=np.full((8, 8), 300))) == 0).all()
    frames = np.stack([ramp(), ramp()[::-1]])
    assert (pixels(tmp_path, dcm(arr=frames, frames=2), "multi.dcm") == pixels(tmp_path, dcm(), "one.dcm")).all()


def test_rle_compressed_is_decoded(tmp_path):
    assert (pixels(tmp_path, rle()) == pixels(tmp_path, dcm(), "plain.dcm")).all()


def test_dicom_loads_as_rgb_through_the_image_path(tmp_path):
    (tmp_path / "scan.dcm").write_bytes(dcm(window=(1000, 1001)))
    im = load_image(tmp_path / "scan.dcm")
    assert im.mode == "RGB" and im.size == (16, 16)
    assert (np.asarray(im)[..., 0] == pixels(tmp_path, dcm(window=(1000, 1001)), "again.dcm")).all()


def test_dicom_in_a_folder_and_in_uploads(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "chest.dcm").write_bytes(dcm())
    (d / "knee.DICOM").write_bytes(dcm(window=(40, 400)))
    ds = load_dataset(d, question="Is there an abnormality?")
    assert sorted(i.id for i in ds.items) == ["chest.dcm", "knee.DICOM"] and not ds.problems
    folder, qfile, problems = collect_uploads([str(d / "chest.dcm")], tmp_path / "up")
    assert [p.name for p in folder.iterdir()] == ["chest.dcm"] and not problems


def test_cli_takes_a_dicom_folder(tmp_path, capsys):
    """One short CLI run on the demo model over a folder of two DICOM slices and a PNG."""
    from PIL import Image

    from ttrv_core.cli import main
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "scan.dcm").write_bytes(dcm())
    (d / "other.dcm").write_bytes(dcm(window=(1000, 1001)))
    Image.new("RGB", (16, 16), 128).save(d / "photo.png")
    (d / "broken.dcm").write_bytes(b"not dicom")
    out = tmp_path / "run"
    assert main(["--images", str(d), "--question", "Which digit is shown in the image?", "--task", "open",
                 "--out", str(out), "--steps", "1", "--votes", "4", "--train", "2", "--prompts-per-step", "2"]) == 0
    assert "broken.dcm: cannot read DICOM: not a DICOM file" in capsys.readouterr().err
    assert (out / "results.csv").read_text().count(".dcm") == 2


def test_the_app_upload_box_takes_dicom():
    """gradio's "image" file type is image/* by MIME type; DICOM is application/dicom, named apart."""
    from ttrv_core.app import form_fields
    assert {".dcm", ".dicom", "image"} <= set(form_fields.UPLOAD_TYPES)
    assert "file_types=form_fields.UPLOAD_TYPES" in (Path(__file__).resolve().parents[1] / "app.py").read_text()


def test_a_dicom_file_named_otherwise_is_read_as_dicom(tmp_path):
    """By content, as every image: the marker 'DICM' after the 128-byte preamble."""
    (tmp_path / "scan.png").write_bytes(dcm())
    assert (np.asarray(load_image(tmp_path / "scan.png"))[..., 0] == pixels(tmp_path, dcm())).all()


def test_jpeg_baseline_compressed_is_decoded(tmp_path):
    x = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    a = pixels(tmp_path, jpeg_baseline(x)).astype(int)   # min-max of a lossy copy of 0..255 rows
    assert np.abs(a - x).mean() < 4


def test_dicom_in_an_uploaded_zip(tmp_path):
    import zipfile
    z = tmp_path / "scans.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("study/slice1.dcm", dcm())
        zf.writestr("study/broken.dcm", b"nope")
    folder, _, problems = collect_uploads([str(z)], tmp_path / "up")
    ds = load_dataset(folder, question="Is there a fracture?")
    assert [i.id for i in ds.items] == ["slice1.dcm"]
    assert [str(p) for p in ds.problems + problems] == ["broken.dcm: cannot read DICOM: not a DICOM file (no 'DICM' marker)"]


def test_colour_is_kept_and_a_degenerate_window_falls_back_to_min_max(tmp_path):
    from dicom_files import dataset, to_bytes
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ds = dataset(np.zeros((8, 8)))
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    (tmp_path / "colour.dcm").write_bytes(to_bytes(ds))
    im = load_dicom(tmp_path / "colour.dcm")
    assert im.mode == "RGB" and (np.asarray(im) == rgb).all()
    assert (pixels(tmp_path, dcm(window=(1000, 1))) == pixels(tmp_path, dcm(), "plain.dcm")).all()   # width 1
