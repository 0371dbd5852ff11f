"""What a person gives, read by the one data path (inputs/__init__.py over inputs/dataset.py and
inputs/uploads.py): which
questions are used, and messages that name the upload, the file's own columns or the setting."""
import zipfile

import pytest
from PIL import Image

from ttrv_core import inputs
from ttrv_core.inputs.dataset import load_dataset


@pytest.fixture
def pngs(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(d / f"p{i}.png")
    return d


def messages(ds):
    return [str(p) for p in ds.problems]


def test_a_typed_question_is_enough_for_a_folder_of_images(pngs, tmp_path):
    got = inputs.collect(pngs, tmp_path / "work")
    assert got.folder == pngs and got.found is None                  # a folder is used in place
    inp = inputs.load(got, "What colour is it?")
    assert [it.question for it in inp.dataset.items] == ["What colour is it?"] * 3
    assert inp.questions == "your question, for every image" and not inp.dataset.problems


def test_uploaded_files_with_no_question_say_what_to_do(pngs, tmp_path):
    got = inputs.collect(sorted(map(str, pngs.iterdir())), tmp_path / "work")
    inp = inputs.load(got)
    assert not inp.dataset.items
    assert messages(inp.dataset) == ["questions: type a question for all images, or give a questions file (CSV or "
                                     "JSONL with columns image, question, optional options and answer)"]
    text = inputs.describe(inp)
    assert "Nothing to run yet" in text and "still run" not in text and str(tmp_path) not in text


def test_a_questions_file_among_the_images_is_used_and_the_typed_question_fills_gaps(pngs, tmp_path):
    (pngs / "questions.csv").write_text("image,question,answer\np0.png,Which one?,red\np1.png,,black\n")
    inp = inputs.load(inputs.collect(pngs, tmp_path / "w"), "Typed?")
    assert [(it.id, it.question) for it in inp.dataset.items] == [("p0.png", "Which one?"), ("p1.png", "Typed?")]
    assert inp.questions == "questions.csv (your question where a row has none)"
    text = inputs.describe(inp)
    assert "2 image(s) ready" in text and "questions.csv" in text and "Skipped" in text   # p2.png has no row
    assert "the other images still run" in text


def test_an_empty_zip_is_named_by_its_name_not_the_work_folder(tmp_path):
    z = tmp_path / "holiday.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "no images")
    inp = inputs.load(inputs.collect([str(z)], tmp_path / "work"), "What is it?")
    assert messages(inp.dataset)[0].startswith("holiday.zip: no images found")
    assert str(tmp_path / "work") not in inputs.describe(inp)


def test_choice_without_options_names_the_setting(pngs, tmp_path):
    inp = inputs.load(inputs.collect(sorted(map(str, pngs.iterdir())), tmp_path / "work"), "Which?", task="choice")
    assert messages(inp.dataset) == ["options: task 'choice' needs options (none given): list them for all images, "
                                     "or give a questions file with an options column"]


@pytest.mark.parametrize("name, text, found", [
    ("q.csv", "Picture,Label\np0.png,red\n", "found: Picture, Label"),              # 'Label' is read as 'answer'
    ("q.jsonl", '{"pic": "p0.png", "Prompt": "Which?"}\n', "found: pic, Prompt"),    # 'Prompt' as 'question'
])
def test_a_missing_column_message_lists_the_columns_as_written(pngs, name, text, found):
    (pngs / name).write_text(text)
    ds = load_dataset(pngs, questions_file=pngs / name)
    assert not ds.items and f"missing column 'image' ({found}; expected" in messages(ds)[-1]
