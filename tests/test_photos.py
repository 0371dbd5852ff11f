"""The bundled photos (assets/examples/photos), the example set a real model opens on: real photographs,
freely licensed and each one's licence recorded, small enough to ship, asked the paper's recognition
prompt with four options, and read by the app as any example set."""
import csv
from collections import Counter
from pathlib import Path

from PIL import Image

from ttrv_core import inputs
from ttrv_core.app import form_fields, model_menu
from ttrv_core.tasks.prompts import DEFAULT_CHOICE_QUESTION

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "examples" / model_menu.PHOTOS


def test_the_photos_are_small_jpegs_and_each_licence_is_recorded():
    photos = sorted(PHOTOS.glob("*.jpg"))
    assert 12 <= len(photos) <= 30 and sorted(p.name for p in PHOTOS.iterdir()) == sorted(
        [p.name for p in photos] + ["LICENSES.md", "questions.csv"])
    assert sum(p.stat().st_size for p in photos) < 1 << 20           # well under 2 MB
    licences = (PHOTOS / "LICENSES.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in licences.splitlines() if line.startswith("| ")}
    for p in photos:
        with Image.open(p) as im:
            assert im.format == "JPEG" and max(im.size) <= 512 and im.mode == "RGB", p.name
        assert p.name in rows, f"{p.name} has no row in LICENSES.md"
        assert any(w in rows[p.name] for w in ("CC0", "public domain", "CC BY 2.0", "No known copyright")), p.name


def test_every_photo_is_asked_the_papers_recognition_prompt_with_four_options():
    with open(PHOTOS / "questions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == sorted(p.name for p in PHOTOS.glob("*.jpg"))
    for r in rows:
        options = r["options"].split("|")
        assert r["question"] == DEFAULT_CHOICE_QUESTION
        assert len(options) == 4 == len(set(options)) and r["answer"] in options, r["image"]
    letters = Counter("ABCD"[r["options"].split("|").index(r["answer"])] for r in rows)
    assert len(letters) == 4 and max(letters.values()) <= len(rows) // 2   # no letter answers most of them


def test_the_app_reads_the_photos_as_an_example_set(tmp_path):
    assert model_menu.PHOTOS in form_fields.example_sets(PHOTOS.parent)
    inp = inputs.load(inputs.collect(PHOTOS, tmp_path, label="example set 'photos'"), None, None, "choice", [])
    assert not inp.dataset.problems and len(inp.dataset.items) == len(list(PHOTOS.glob("*.jpg")))
    item = next(it for it in inp.dataset.items if it.id == "chelsea.jpg")
    assert item.task == "choice" and item.options == ("dog", "fox", "cat", "rabbit") and item.reference == "C"
