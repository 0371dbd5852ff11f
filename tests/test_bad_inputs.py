"""A corpus of bad inputs, generated here: each is named with its problem, and the good items beside it still load.

Four tables, one parametrized test each (the count of bad inputs is their total):
  IMAGES     bad files in an image folder
  QUESTIONS  bad questions files and rows
  ZIPS       bad zips and zip members (uploaded beside a plain image)
  UPLOADS    bad plain uploads and size caps
IMAGES holds bad DICOM files too (not DICOM, truncated, a compression with no decoder here, no
pixels, a huge header). Then the odd-but-valid images (modes, animation, EXIF, names) load as RGB,
and one short CLI run on the demo model goes through a zip holding a mix.
"""
import csv
import io
import stat
import zipfile
import zlib
from pathlib import Path

import dicom_files
import numpy as np
import pytest
import video_files
from PIL import Image

from ttrv_core.inputs import questions, uploads
from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.inputs.uploads import collect_uploads

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # huge.png: refused anyway


# --------------------------------------------------------------------------- makers

def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    f = io.BytesIO()
    im.save(f, fmt, **kw)
    return f.getvalue()


def noise(size=(64, 64)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def png(size=(16, 16), mode="RGB", color=128) -> bytes:
    return encode(Image.new(mode, size, color), "PNG")


def png_claiming(w: int, h: int) -> bytes:
    """A 1x1 PNG whose header says w x h (a decompression bomb costs nothing to make)."""
    raw = bytearray(png((1, 1)))
    raw[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")  # IHDR type + data
    return bytes(raw)


def garbled_png() -> bytes:
    raw = encode(noise(), "PNG")
    i = raw.index(b"IDAT") + 40
    return raw[:i] + bytes(200) + raw[i + 200:]


def xlsx_like() -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
    return f.getvalue()


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):  # made on use (the videos take a moment to encode)
        content = content()
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def problems(ds) -> list[str]:
    return [str(p) for p in ds.problems]


def assert_named(ds, expected: str):
    assert any(expected in p for p in problems(ds)), f"{expected!r} not in {problems(ds)}"


# --------------------------------------------------------------------------- bad images in a folder

IMAGES = [  # file, contents, expected "file: message" (substring)
    ("empty.jpg", b"", "empty.jpg: empty file (0 bytes)"),
    ("notes.png", "just some text", "notes.png: cannot read image: not an image file"),
    ("page.jpg", "<!DOCTYPE html><html><body>404</body></html>", "page.jpg: cannot read image: not an image file"),
    ("archive.png", xlsx_like(), "archive.png: cannot read image: not an image file"),
    ("postscript.png", "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n",
     "postscript.png: cannot read image: not an image file"),  # never handed to Ghostscript
    ("signature only.png", b"\x89PNG\r\n\x1a\n not really", "signature only.png: cannot read image"),
    ("truncated.png", encode(noise(), "PNG")[:3000], "truncated.png: cannot read image: the file is truncated"),
    ("truncated.jpg", encode(noise(), "JPEG")[:2000], "truncated.jpg: cannot read image: the file is truncated"),
    ("truncated.gif", encode(noise().convert("P"), "GIF")[:1500],
     "truncated.gif: cannot read image: the file is truncated"),
    ("truncated.tif", encode(noise(), "TIFF")[:3000], "truncated.tif: cannot read image: the file is truncated"),
    ("jpeg header.jpg", encode(noise(), "JPEG")[:20], "jpeg header.jpg: cannot read image"),
    ("garbled.png", garbled_png(), "garbled.png: cannot read image: the file is damaged"),
    ("huge.png", png_claiming(8000, 8000), "huge.png: image is 8000x8000 (64 megapixels); the limit is 50 megapixels"),
    ("bomb.png", png_claiming(30000, 30000), "bomb.png: image has 900 megapixels; the limit is 50 megapixels"),
    ("thin.png", png((500, 2)), "thin.png: image is 500x2: too long and thin (aspect ratio above 200:1)"),
    ("photo.heic", b"\0\0\0\x18ftypheic", "photo.heic: HEIC images are not supported; convert to PNG or JPEG"),
    ("drawing.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>", "drawing.svg: SVG images are not supported"),
    ("sub/dir/bad name é.jpg", "nope", "sub/dir/bad name é.jpg: cannot read image: not an image file"),
    # DICOM (made with pydicom in tests/dicom_files.py)
    ("notes.dcm", "just some text", "notes.dcm: cannot read DICOM: not a DICOM file (no 'DICM' marker)"),
    ("photo.dcm", png(), "photo.dcm: cannot read DICOM: not a DICOM file"),
    ("empty.dcm", b"", "empty.dcm: empty file (0 bytes)"),
    ("truncated.dcm", dicom_files.truncated(), "truncated.dcm: cannot read DICOM: the file is truncated"),
    ("header only.dcm", dicom_files.header_only(), "header only.dcm: cannot read DICOM: the file is truncated"),
    ("cut in header.dcm", dicom_files.dcm()[:500], "cut in header.dcm: cannot read DICOM: the file is truncated"),
    ("jpegls.dcm", dicom_files.jpeg_ls(), "jpegls.dcm: DICOM compressed as JPEG-LS Lossless Image Compression, "
     "which cannot be decoded here; export it uncompressed (Explicit VR Little Endian) or as PNG"),
    ("report.dcm", dicom_files.no_pixels(), "report.dcm: cannot read DICOM: it holds no image (no pixel data; a report?)"),
    ("huge.dcm", dicom_files.claiming(9000, 9000), "huge.dcm: image is 9000x9000 (81 megapixels); the limit is 50"),
    ("thin.dcm", dicom_files.claiming(2, 500), "thin.dcm: image is 500x2: too long and thin"),
    # video (made with PyAV in tests/video_files.py); a long clip is capped, not refused: tests/test_video.py
    ("truncated.mp4", lambda: (lambda b: b[:len(b) // 2])(video_files.clip_bytes(n=40)),
     "truncated.mp4: cannot read video: it has no frames (no streams: empty, truncated or damaged)"),
    ("truncated.webm", lambda: (lambda b: b[:len(b) // 3])(video_files.clip_bytes(".webm", n=40, codec="libvpx-vp9")),
     "truncated.webm: cannot read video: the file is truncated"),
    ("zero frames.mp4", lambda: video_files.clip_bytes(n=0), "zero frames.mp4: cannot read video: it has no frames"),
    ("zero frames.webm", lambda: video_files.clip_bytes(".webm", n=0, codec="libvpx-vp9"),
     "zero frames.webm: cannot read video: not a video file, or a truncated or damaged one"),
    ("audio only.mp4", lambda: video_files.clip_bytes(video=False, audio=True),
     "audio only.mp4: cannot read video: no video stream (it holds audio only)"),
    ("huge.mp4", lambda: video_files.clip_bytes(n=1, size=(7680, 6608)),
     "huge.mp4: image is 7680x6608 (51 megapixels); the limit is 50 megapixels"),
    ("thin.mp4", lambda: video_files.clip_bytes(n=1, size=(1024, 4)),
     "thin.mp4: image is 1024x4: too long and thin"),
    ("photo.mp4", png(), "photo.mp4: cannot read video: the file is piped png sequence, not MP4, MOV, WebM or GIF"),
    ("notes.mov", "just some text", "notes.mov: cannot read video: not a video file"),
    ("empty.webm", b"", "empty.webm: empty file (0 bytes)"),
    ("unknown codec.mkv", lambda: video_files.clip_bytes(".mkv").replace(b"V_MPEG4/ISO/ASP", b"V_XXXXX/XXX/XXX"),
     "unknown codec.mkv: cannot read video: its codec (unknown) cannot be decoded here; convert it to H.264 MP4"),
    ("lossless.mkv", lambda: video_files.clip_bytes(".mkv", codec="ffv1"),
     "lossless.mkv: cannot read video: its codec (ffv1) is not one read here (H.264, HEVC, VP8, VP9, AV1, MPEG-4"),
]


@pytest.mark.parametrize("name,content,expected", IMAGES, ids=[c[0] for c in IMAGES])
def test_bad_image_in_folder(tmp_path, name, content, expected):
    d = tmp_path / "imgs"
    write(d / "good.png", png())
    write(d / name, content)
    ds = load_dataset(d, question="What is it?")
    assert [i.id for i in ds.items] == ["good.png"]
    assert_named(ds, expected)
    assert len(ds.problems) == 1
    assert ds.items[0].image().mode == "RGB"


def test_broken_link_is_named(tmp_path):
    d = tmp_path / "imgs"
    write(d / "good.png", png())
    (d / "gone.png").symlink_to(tmp_path / "nowhere.png")
    ds = load_dataset(d, question="Q")
    assert [i.id for i in ds.items] == ["good.png"]
    assert problems(ds) == ["gone.png: cannot read image: file not found (a broken link?)"]


# --------------------------------------------------------------------------- bad questions files and rows

LONG = "w" * 5000
Q = "image,question,answer\ngood.png,What is it?,7\n"
J = '{"image": "good.png", "question": "What is it?", "options": ["cat", "dog"]}\n'
OPTS30 = "|".join(f"o{i}" for i in range(30))
QUESTIONS = [  # file, contents, task, ids that load, expected "file: message" (substring)
    ("q.csv", "picture,question\ngood.png,Q\n", "open", [],
     "q.csv: missing column 'image' (found: picture, question; expected: image, question[, options][, answer])"),
    ("q.csv", "image,answer\ngood.png,7\n", "open", [], "q.csv: no column 'question' and no question given"),
    ("q.csv", "", "open", [], "q.csv: questions file is empty"),
    ("q.csv", "image,question\n", "open", [], "q.csv: questions file has no rows"),
    ("q.csv", xlsx_like(), "open", [], "q.csv: this is a zip or an Excel workbook, not a text file"),
    ("q.csv", b"image,question\ngood.png,Q\0\n", "open", [], "q.csv: not a text file (it contains NUL bytes)"),
    ("gone.csv", None, "open", [], "gone.csv: questions file not found"),
    ("q.csv", Q + "gone.png,Q,1\n", "open", ["good.png"],
     "q.csv: line 3: image 'gone.png' not found in the folder; skipped"),
    ("q.csv", Q + ",Q,1\n", "open", ["good.png"], "q.csv: line 3: empty 'image'; skipped"),
    ("q.csv", Q + "second.png,,1\n", "open", ["good.png"],
     "q.csv: line 3: no question for 'second.png' (column 'question'); skipped"),
    ("q.csv", Q + f"second.png,{LONG},1\n", "open", ["good.png"],
     "q.csv: line 3: question for 'second.png' is 5,000 characters; the limit is 2,000; skipped"),
    ("q.csv", Q + "second.png,What is it, really?,1\n", "open", ["good.png"],
     "q.csv: line 3: 4 fields but the header has 3 (quote fields that contain the separator); skipped"),
    ("q.csv", Q + 'second.png,"' + "x" * 200_000 + '",1\n', "open", ["good.png"], "q.csv: line 3: field larger than"),
    ("q.csv", (Q + "second.png,Qu'est-ce que c'est ? \xe9t\xe9,1\n").encode("cp1252"), "open",
     ["good.png", "second.png"], "q.csv: not UTF-8; read as Windows-1252"),
    ("q.csv", "image,question,options\ngood.png,Q,a|b\nsecond.png,Q,\n", "choice", ["good.png"],
     "q.csv: line 3: task 'choice' needs options for 'second.png'; skipped"),
    ("q.csv", f"image,question,options\ngood.png,Q,a|b\nsecond.png,Q,{OPTS30}\n", "choice", ["good.png"],
     "q.csv: line 3: 30 options for 'second.png'; at most 26; skipped"),
    ("q.csv", Q, "open", ["good.png"], "q.csv: 1 image(s) have no row here and are not used: second.png"),
    ("q.jsonl", J + "{broken\n", "choice", ["good.png"], "q.jsonl: line 2: not valid JSON"),
    ("q.jsonl", J + '["second.png", "Q"]\n', "choice", ["good.png"], "q.jsonl: line 2: not a JSON object (got list)"),
    ("q.jsonl", J + '{"image": 7, "question": "Q", "options": ["a"]}\n', "choice", ["good.png"],
     "q.jsonl: line 2: 'image' should be a file name; skipped"),
    ("q.jsonl", J + '{"image": "second.png", "question": {"text": "Q"}, "options": ["a"]}\n', "choice", ["good.png"],
     "q.jsonl: line 2: 'question' should be text or a number, not a dict; skipped"),
    ("q.jsonl", J + '{"image": "second.png", "question": "Q", "options": ["a"], "answer": ["a", "b"]}\n', "choice",
     ["good.png", "second.png"], "q.jsonl: line 2: 'answer' should be text or a number, not a list; answer ignored"),
]


@pytest.mark.parametrize("name,content,task,ids,expected", QUESTIONS,
                         ids=[f"{i}-{c[-1][:40]}" for i, c in enumerate(QUESTIONS)])
def test_bad_questions(tmp_path, name, content, task, ids, expected):
    d = tmp_path / "imgs"
    write(d / "good.png", png())
    write(d / "second.png", png(color=30))
    qfile = tmp_path / name
    if content is not None:
        write(qfile, content)
    ds = load_dataset(d, questions_file=qfile, task=task)
    assert [i.id for i in ds.items] == ids
    assert_named(ds, expected)
    for it in ds.items:
        assert it.image().mode == "RGB" and it.prompt


def test_row_for_a_broken_image_is_reported_once(tmp_path):
    d = tmp_path / "imgs"
    write(d / "good.png", png())
    write(d / "broken.png", "text")
    write(d / "q.csv", Q + "broken.png,Q,1\n")
    ds = load_dataset(d, questions_file=d / "q.csv")
    assert [i.id for i in ds.items] == ["good.png"]
    assert sum("broken.png" in p for p in problems(ds)) == 1


# --------------------------------------------------------------------------- bad zips

def zip_bytes(members, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """members: (name or ZipInfo, bytes); good.png always first."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression) as zf:
        zf.writestr("set/good.png", png())
        for name, payload in members:
            zf.writestr(name, payload)
    return f.getvalue()


def symlink_member(name: str, target: str):
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def flag_encrypted(raw: bytes, name: str) -> bytes:
    """Set the 'encrypted' bit of a member in its local and central headers (zipfile cannot write encryption)."""
    raw = bytearray(raw)
    for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        i = raw.find(sig)
        while i >= 0:
            if raw[i + name_at:i + name_at + len(name)] == name.encode():
                raw[i + flag_at] |= 1
            i = raw.find(sig, i + 1)
    return bytes(raw)


def stored(name: str, payload: bytes):
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    return info, payload


def bad_crc() -> bytes:
    raw = zip_bytes([stored("set/flipped.png", png(color=1) + b"MARK")])
    return raw.replace(b"MARK", b"MARX", 1)


ZIPS = [  # zip contents, caps to lower, ids that load, expected message (file is always 'up.zip')
    (zip_bytes([("../evil.png", png())]), {}, "member '../evil.png' points outside the archive; skipped"),
    (zip_bytes([("/tmp/abs.png", png())]), {}, "member '/tmp/abs.png' points outside the archive; skipped"),
    (zip_bytes([("set\\..\\..\\evil.png", png())]), {}, "points outside the archive; skipped"),
    (zip_bytes([("C:/Windows/evil.png", png())]), {}, "member 'C:/Windows/evil.png' points outside the archive"),
    (zip_bytes([symlink_member("set/link.png", "/etc/passwd")]), {},
     "member 'set/link.png' is a symbolic link; skipped"),
    (flag_encrypted(zip_bytes([("set/secret.png", png())]), "set/secret.png"), {},
     "member 'set/secret.png' is encrypted (password-protected); skipped"),
    (zip_bytes([("set/zeros.png", bytes(500_000))]), {"ZIP_RATIO_MIN_MB": 0}, "would expand"),
    (zip_bytes([stored("set/big.png", bytes(2 * questions.MB))]), {"MAX_FILE_MB": 1},
     "member 'set/big.png' is 2.0 MB unpacked; the limit is 1 MB per file"),
    (zip_bytes([stored("set/a.png", bytes(600_000)), stored("set/b.png", bytes(600_000)), stored("set/c.png", b"1")]),
     {"MAX_TOTAL_MB": 1}, "uploads exceed 1 MB in total; 'set/b.png' and any later files skipped"),
    (zip_bytes([("set/inner.zip", zip_bytes([]))]), {}, "member 'set/inner.zip' is a zip inside the zip"),
    (zip_bytes([("set/photo.heic", b"heic")]), {}, "member 'set/photo.heic': HEIC images are not supported"),
    (bad_crc(), {}, "member 'set/flipped.png' cannot be unpacked (Bad CRC-32"),
    (zip_bytes([(f"set/{i}.png", png()) for i in range(5)]), {"MAX_ZIP_MEMBERS": 3}, "holds 6 files; the limit is 3"),
    (zip_bytes([("set/" + "x" * 300 + ".png", png())]), {}, "cannot be unpacked (File name too long); skipped"),
    (b"this is not a zip", {}, "not a valid zip file"),
    (zip_bytes([("set/x.png", png())])[:-30], {}, "not a valid zip file"),
]


@pytest.mark.parametrize("raw,caps,expected", ZIPS, ids=[c[-1][:40] for c in ZIPS])
def test_bad_zip(tmp_path, monkeypatch, raw, caps, expected):
    for k, v in caps.items():
        monkeypatch.setattr(uploads, k, v)
    up = write(tmp_path / "uploads" / "up.zip", raw)
    beside = write(tmp_path / "uploads" / "beside.png", png())
    before = sorted(tmp_path.rglob("*"))
    folder, _, probs = collect_uploads([str(beside), str(up)], tmp_path / "run" / "input")
    assert all(p.is_relative_to(tmp_path / "run" / "input") for p in set(tmp_path.rglob("*")) - set(before)
               if p != tmp_path / "run"), "wrote outside the run's input folder"
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "run" / "evil.png").exists()
    assert any(str(p).startswith("up.zip: ") and expected in str(p) for p in probs), [str(p) for p in probs]
    ds = load_dataset(folder, question="What is it?")
    ids = {i.id for i in ds.items}
    assert "beside.png" in ids  # the upload beside the zip always loads
    assert not (folder / "set" / "c.png").exists()  # past the total cap nothing more, however small
    whole_zip_refused = "valid zip" in expected or "holds" in expected
    assert ("set/good.png" in ids) != whole_zip_refused


# --------------------------------------------------------------------------- bad plain uploads

UPLOADS = [  # file name, contents, caps, expected "file: message"
    ("setup.exe", b"MZ\x90\0", {}, "setup.exe: not an image, a video, a .zip or a questions file (.csv, .jsonl); skipped"),
    ("scan.heic", b"heic", {}, "scan.heic: HEIC images are not supported; convert to PNG or JPEG"),
    ("big.bmp", encode(noise((800, 800)), "BMP"), {"MAX_FILE_MB": 1},
     "big.bmp: file is 1.8 MB; the limit is 1 MB per file"),
    ("many.bmp", encode(noise((600, 600)), "BMP"), {"MAX_TOTAL_MB": 1},
     "many.bmp: uploads exceed 1 MB in total; 'many.bmp' and any later files skipped"),
    ("missing.png", None, {}, "missing.png: upload not found"),
]


@pytest.mark.parametrize("name,content,caps,expected", UPLOADS, ids=[c[0] for c in UPLOADS])
def test_bad_upload(tmp_path, monkeypatch, name, content, caps, expected):
    for k, v in caps.items():
        monkeypatch.setattr(uploads, k, v)
    first = write(tmp_path / "up" / "first.bmp", encode(noise((300, 300)), "BMP"))  # 0.26 MB
    bad = tmp_path / "up" / name
    if content is not None:
        write(bad, content)
    folder, _, probs = collect_uploads([str(first), str(bad)], tmp_path / "input")
    assert [str(p) for p in probs] == [expected]
    ds = load_dataset(folder, question="What is it?")
    assert [i.id for i in ds.items] == ["first.bmp"]


BAD_INPUTS = len(IMAGES) + 1 + len(QUESTIONS) + 1 + len(ZIPS) + len(UPLOADS)


def test_corpus_size():
    assert BAD_INPUTS >= 30, BAD_INPUTS


# --------------------------------------------------------------------------- odd but valid: all load, as RGB

def cmyk_jpeg():
    return encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG")  # red


def rotated_jpeg():
    """Stored 20 wide x 10 high, EXIF orientation 6: shown 10 wide x 20 high."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (20, 10), "red"), "JPEG", exif=exif)


def animated_gif():
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    return encode(red, "GIF", save_all=True, append_images=[blue], duration=50, loop=0)


def transparent_palette_png():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((0, 0), 1)
    return encode(im, "PNG", transparency=0)  # index 0 (black) is transparent: white after loading


ODD = [  # file, contents, (width, height) after loading, pixel (0, 0) after loading (None: not checked)
    ("cmyk.jpg", cmyk_jpeg(), (16, 16), None),
    ("gray16.png", png((8, 8), "I;16", 32896), (8, 8), (128, 128, 128)),  # 16-bit scaled, not clipped to white
    ("gray32.tif", encode(Image.new("I", (8, 8), 65535), "TIFF"), (8, 8), (255, 255, 255)),
    ("palette.png", png((8, 8), "P", 3), (8, 8), None),
    ("palette transparent.png", transparent_palette_png(), (8, 8), (255, 0, 0)),
    ("rgba.png", encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), (8, 8), (255, 255, 255)),
    ("la.png", encode(Image.new("LA", (8, 8), (0, 0)), "PNG"), (8, 8), (255, 255, 255)),
    ("bilevel.png", png((8, 8), "1", 1), (8, 8), (255, 255, 255)),
    ("gray.jpg", encode(Image.new("L", (8, 8), 200), "JPEG"), (8, 8), None),
    ("animated.gif", animated_gif(), (8, 8), (255, 0, 0)),  # a video: its first frame (the last is blue)
    ("rotated.jpg", rotated_jpeg(), (10, 20), None),  # EXIF orientation applied
    ("tiny.png", png((1, 1), color=(0, 255, 0)), (1, 1), (0, 255, 0)),
    ("wide.png", png((3000, 100)), (2048, 68), None),  # longest side capped at MAX_SIDE
    ("really a png.jpg", png((8, 8), color=(1, 2, 3)), (8, 8), (1, 2, 3)),  # read by content, not by name
    ("lab.tif", encode(Image.new("LAB", (8, 8)), "TIFF"), (8, 8), None),
    ("photo.webp", encode(Image.new("RGB", (8, 8), "blue"), "WEBP", lossless=True), (8, 8), (0, 0, 255)),
    ("café au lait 猫 #1.png", png((8, 8)), (8, 8), None),
    ("a/b/c/deep.png", png((8, 8)), (8, 8), None),
]


@pytest.mark.parametrize("name,content,size,pixel", ODD, ids=[c[0] for c in ODD])
def test_odd_but_valid_image(tmp_path, name, content, size, pixel):
    d = tmp_path / "imgs"
    write(d / name, content)
    ds = load_dataset(d, question="What is it?")
    assert problems(ds) == []
    (it,) = ds.items
    assert it.id == name
    im = it.image()
    if it.video:  # an animated GIF is a video item: its first sampled frame
        assert len(im.frames) == 8 and [f.getpixel((0, 0)) for f in im.frames[::4]] == [(255, 0, 0), (0, 0, 255)]
        im = im.frames[0]
    assert im.mode == "RGB" and im.size == size
    if pixel is not None:
        assert im.getpixel((0, 0)) == pixel


def test_system_files_skipped_and_same_names_kept(tmp_path):
    d = tmp_path / "imgs"
    for name in ("x/cat.png", "y/cat.png"):
        write(d / name, png())
    for junk in (".DS_Store", "._cat.png", "__MACOSX/x/._cat.png", "Thumbs.db", "desktop.ini", ".hidden/a.png",
                 "README.txt"):
        write(d / junk, b"\0\x05junk")
    ds = load_dataset(d, question="Q")
    assert problems(ds) == []
    assert [i.id for i in ds.items] == ["x/cat.png", "y/cat.png"]


def test_same_names_across_uploads_are_all_kept(tmp_path):
    a = write(tmp_path / "u1" / "cat.png", png(color=10))
    b = write(tmp_path / "u2" / "cat.png", png(color=20))
    z = write(tmp_path / "u3" / "more.zip", zip_bytes([]))  # set/good.png
    z2 = write(tmp_path / "u4" / "again.zip", zip_bytes([]))
    folder, _, probs = collect_uploads([str(a), str(b), str(z), str(z2)], tmp_path / "input")
    assert [str(p) for p in probs] == ["cat.png: another file has the same name; kept as 'cat (2).png'",
                                       ("again.zip: member 'set/good.png': another file has the same name; "
                                        "kept as 'set/good (2).png'")]
    ds = load_dataset(folder, question="Q")
    assert [i.id for i in ds.items] == ["cat (2).png", "cat.png", "set/good (2).png", "set/good.png"]
    assert ds.items[0].image().getpixel((0, 0)) == (20, 0, 0)  # the second upload, kept


def test_questions_file_quirks_that_are_fine(tmp_path):
    """BOM, tab separator, aliases, NFD names, './', case, extra columns, several questions per image,
    answers of either type."""
    d = tmp_path / "imgs"
    write(d / "Café.png", png())
    write(d / "sub" / "dog.png", png())
    nfd = "Cafe\u0301.png"
    write(d / "q.tsv.csv", f"\ufefffile\tprompt\tlabel\tnotes\n{nfd}\tWhat?\t7\tx\n./SUB/DOG.PNG\tWhich?\tseven\t\n"
                           f"{nfd}\tAnd?\t\t\n")
    ds = load_dataset(d, questions_file=d / "q.tsv.csv")
    assert problems(ds) == []
    assert [(i.id, i.question, i.reference) for i in ds.items] == [
        ("Café.png", "What?", "7"), ("sub/dog.png", "Which?", "7"), ("Café.png#2", "And?", None)]
    write(d / "q.jsonl", '{"image": "sub/dog.png", "question": "How many?", "answer": 7.0}\n'
                         '{"image": "Café.png", "question": "Is it?", "answer": true}\n')
    ds = load_dataset(d, questions_file=d / "q.jsonl")
    assert [(i.answer, i.reference) for i in ds.items] == [("7", "7"), ("yes", "yes")]


@pytest.mark.parametrize("text", ["sep=;\r\nimage;question\r\na.png;What, then?\r\n",  # Excel's separator line
                                  "image,question\ra.png,\"What,\rthen?\"\r"])  # classic Mac line ends
def test_excel_and_old_mac_csv(tmp_path, text):
    d = tmp_path / "imgs"
    write(d / "a.png", png())
    (d / "q.csv").write_bytes(text.encode())
    ds = load_dataset(d, questions_file=d / "q.csv")
    assert problems(ds) == [] and [i.question for i in ds.items] in (["What, then?"], ["What,\nthen?"])


def test_utf16_questions_file(tmp_path):
    d = tmp_path / "imgs"
    write(d / "a.png", png())
    write(d / "q.csv", "image\tquestion\na.png\tWhat?\n".encode("utf-16"))  # Excel's "Unicode text"
    ds = load_dataset(d, questions_file=d / "q.csv")
    assert problems(ds) == [] and ds.items[0].question == "What?"


# --------------------------------------------------------------------------- a mix of it all, actually run

def test_cli_runs_on_a_zip_of_mixed_inputs(tmp_path, capsys):
    """One short run on the demo model: odd images and a broken row beside good ones; the run folder is the
    only thing written."""
    from ttrv_core.cli import main
    from ttrv_core.config import DEMO_MODEL
    if not (Path(DEMO_MODEL) / "config.json").is_file():
        pytest.skip("demo model not built")
    members = [("set/cmyk.jpg", cmyk_jpeg()), ("set/rotated.jpg", rotated_jpeg()), ("set/animated.gif", animated_gif()),
               ("set/gray16.png", png((8, 8), "I;16", 32896)), ("set/tiny.png", png((1, 1))),
               ("set/café 猫.png", transparent_palette_png()),
               ("set/broken.png", b"not a png"), ("set/bomb.png", png_claiming(30000, 30000)),
               ("../evil.png", png()), ("set/.DS_Store", b"junk"), ("__MACOSX/set/._cmyk.jpg", b"junk")]
    rows = [(m.split("/", 1)[1], "Which digit is shown in the image?", "3") for m, _ in members[:6]]
    rows += [("good.png", "Which digit is shown in the image?", "7"), ("gone.png", "Which digit?", "1")]
    qcsv = io.StringIO()
    csv.writer(qcsv, delimiter=";").writerows([("image", "question", "answer"), *rows])
    up = write(tmp_path / "mixed.zip", zip_bytes(members + [("set/questions.csv", qcsv.getvalue())]))
    out = tmp_path / "run"
    rc = main(["--images", str(up), "--out", str(out), "--steps", "1", "--train-items", "2", "--votes", "4",
               "--train", "2", "--prompts-per-step", "1", "--eval-votes", "2", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    for expected in ("mixed.zip: member '../evil.png' points outside the archive; skipped",
                     "broken.png: cannot read image: not an image file",
                     "bomb.png: image has 900 megapixels; the limit is 50 megapixels",
                     "questions.csv: line 9: image 'gone.png' not found in the folder; skipped"):
        assert expected in err and expected in (out / "problems.txt").read_text(encoding="utf-8")
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        done = {r["item"] for r in csv.DictReader(f)}
    assert done == {"cmyk.jpg", "rotated.jpg", "animated.gif", "gray16.png", "tiny.png", "café 猫.png", "good.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.zip", "run"]  # nothing else written
