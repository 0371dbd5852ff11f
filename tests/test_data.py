"""Input loading: good items run, every bad file or row is named with its problem."""
import json

import pytest
from PIL import Image

from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.inputs.uploads import extract_zip
from ttrv_core.tasks.prompts import build_prompt


def img(path, size=(16, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    img(d / "a.png")
    img(d / "sub" / "b.jpg")
    img(d / "pal.png", mode="P")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "empty.jpg").write_bytes(b"")
    (d / ".DS_Store").write_bytes(b"junk")
    img(d / "__MACOSX" / "a.png")
    (d / "notes.txt").write_text("not an image")
    return d


def by_file(ds):
    return {p.file: p.message for p in ds.problems}


def test_one_question_for_all(folder):
    ds = load_dataset(folder, question="What is it?")
    assert sorted(i.id for i in ds.items) == ["a.png", "pal.png", "sub/b.jpg"]
    probs = by_file(ds)
    assert "cannot read image" in probs["broken.png"]
    assert "empty file" in probs["empty.jpg"]
    assert len(probs) == 2  # hidden files and __MACOSX are skipped silently
    assert ds.items[0].prompt == build_prompt("open", "What is it?")
    assert ds.items[0].image().mode == "RGB"


def test_no_images(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    ds = load_dataset(tmp_path, question="q")
    assert not ds.items
    assert "no images found" in ds.problems[0].message and ds.problems[0].file == str(tmp_path)


def test_missing_folder(tmp_path):
    ds = load_dataset(tmp_path / "nope", question="q")
    assert ds.problems[0].message == "image folder not found"


def test_csv_with_missing_image_and_answers(folder, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text("\ufeffimage,question,answer\na.png,What?,Seven\nsub/b.jpg,Which?,\nmissing.png,Q,1\n"
                 "broken.png,Q,2\n", encoding="utf-8")
    ds = load_dataset(folder, questions_file=q)
    assert [i.id for i in ds.items] == ["a.png", "sub/b.jpg"]
    assert ds.items[0].answer == "Seven" and ds.items[0].reference == "7"
    assert ds.items[1].answer is None
    probs = [str(p) for p in ds.problems]
    assert "q.csv: line 4: image 'missing.png' not found in the folder; skipped" in probs
    assert "q.csv: 1 image(s) have no row here and are not used: pal.png" in probs
    assert any(p.startswith("broken.png: cannot read image") for p in probs)


def test_csv_missing_column(folder, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text("picture,question\na.png,What?\n")
    ds = load_dataset(folder, questions_file=q)
    assert not ds.items
    assert ds.problems[-1].file == "q.csv" and "missing column 'image'" in ds.problems[-1].message


def test_semicolon_csv_and_choice_options(folder, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text("image;question;options;answer\na.png;What is it?;cat|dog|bird;dog\n")
    ds = load_dataset(folder, questions_file=q, task="choice")
    (it,) = ds.items
    assert it.options == ("cat", "dog", "bird") and it.reference == "B"
    assert "A. cat\nB. dog\nC. bird" in it.prompt


def test_jsonl_with_broken_line(folder, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"image": "a.png", "question": "Q?", "options": ["x", "y"], "answer": "A"})
                 + "\n{broken\n" + json.dumps({"image": "sub/b.jpg", "question": "Q?", "options": ["x", "y"]}) + "\n")
    ds = load_dataset(folder, questions_file=q, task="choice")
    assert [i.id for i in ds.items] == ["a.png", "sub/b.jpg"]
    assert any(str(p).startswith("q.jsonl: line 2: not valid JSON") for p in ds.problems)


def test_choice_without_options_is_reported(folder, tmp_path):
    q = tmp_path / "q.csv"
    q.write_text("image,question\na.png,What?\n")
    ds = load_dataset(folder, questions_file=q, task="choice")
    assert not ds.items and "needs options" in ds.problems[-1].message


def test_zip_never_writes_outside(tmp_path):
    import zipfile
    z = tmp_path / "up.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok/a.png", (img(tmp_path / "src.png")).read_bytes())
        zf.writestr("../evil.png", b"x")
        zf.writestr("/abs.png", b"x")
    dest = tmp_path / "out"
    probs = extract_zip(z, dest)
    assert (dest / "ok" / "a.png").exists()
    assert not (tmp_path / "evil.png").exists()
    assert sorted(map(str, probs)) == ["up.zip: member '../evil.png' points outside the archive; skipped",
                                       "up.zip: member '/abs.png' points outside the archive; skipped"]


def test_zip_never_follows_a_link_out_of_dest(tmp_path):
    import zipfile
    outside, dest = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    dest.mkdir()
    (dest / "set").symlink_to(outside)  # not something extract_zip makes; defence in depth
    z = tmp_path / "up.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("set/a.png", img(tmp_path / "src.png").read_bytes())
    probs = extract_zip(z, dest)
    assert [str(p) for p in probs] == ["up.zip: member 'set/a.png' points outside the archive; skipped"]
    assert list(outside.iterdir()) == []
