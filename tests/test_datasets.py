"""--dataset: Hugging Face datasets (saved, parquet, jsonl, csv, imagefolder) as items, read lazily."""
import csv
import json
import shutil

import datasets
import pytest

from ttrv_core.cli import main
from ttrv_core.demos import by_key
from ttrv_core.inputs.tables import load_table, parse_columns

EXAMPLES = by_key("format").example_dir   # the 240 multiple-choice digits
ROWS = list(csv.DictReader(open(EXAMPLES / "questions.csv")))
FEATURES = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                              "options": datasets.Sequence(datasets.Value("string")),
                              "answer": datasets.Value("string")})
RUN = ["--task", "choice", "--model", "assets/demo_choice", "--votes", "4", "--train", "2", "--steps", "2",
       "--eval-votes", "2", "--train-items", "4"]


def digits(n: int, start: int = 0) -> datasets.Dataset:
    rows = ROWS[start:start + n]
    return datasets.Dataset.from_dict({"image": [str(EXAMPLES / r["image"]) for r in rows],
                                       "question": [r["question"] for r in rows],
                                       "options": [r["options"].split("|") for r in rows],
                                       "answer": [r["answer"] for r in rows]}, features=FEATURES)


def _results(out):
    return list(csv.DictReader(open(out / "results.csv")))


def test_a_saved_dataset_runs_as_its_images_folder_does(tmp_path):
    digits(12).save_to_disk(str(tmp_path / "saved"))   # the images embedded as bytes
    folder = tmp_path / "folder"
    folder.mkdir()
    with open(folder / "questions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "question", "options", "answer"])
        for i, r in enumerate(ROWS[:12]):
            shutil.copy(EXAMPLES / r["image"], folder / f"{i:02d}.png")
            w.writerow([f"{i:02d}.png", r["question"], r["options"], r["answer"]])
    assert main(["--dataset", str(tmp_path / "saved"), "--out", str(tmp_path / "a"), *RUN]) == 0
    assert main(["--images", str(folder), "--out", str(tmp_path / "b"), *RUN]) == 0
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    assert [r["item"] for r in a] == [f"test row {i}" for i in range(12)]   # one row per item
    same = ("reference", "adapted_on", "before_reply", "after_reply")
    assert [[r[k] for k in same] for r in a] == [[r[k] for k in same] for r in b]   # the same run
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["dataset"] == {"name": str(tmp_path / "saved"), "split": "test", "config": None, "columns": {},
                               "eval_split": None}


def test_nothing_is_decoded_or_written_until_an_image_is_read(tmp_path):
    digits(30).save_to_disk(str(tmp_path / "saved"))
    ds = load_table(str(tmp_path / "saved"), tmp_path / "work", task="choice")
    assert len(ds.items) == 30 and not ds.problems
    assert not (tmp_path / "work").exists()
    image = ds.items[7].image()
    assert [p.name for p in (tmp_path / "work").rglob("*.png")] == ["0000007.png"]
    assert image.size == (32, 32) and ds.items[7].answer == ROWS[7]["answer"]


def test_bad_rows_are_named_and_the_rest_run(tmp_path):
    d = digits(5).cast_column("image", datasets.Image(decode=False)).to_list()
    d[1]["image"] = None                                         # no image
    d[2]["question"] = ""                                        # no question
    d[3]["image"] = {"bytes": b"not a png at all", "path": None}  # fails when the run reads it
    datasets.Dataset.from_list(d, features=FEATURES).save_to_disk(str(tmp_path / "saved"))
    ds = load_table(str(tmp_path / "saved"), tmp_path / "work")
    assert [str(p) for p in ds.problems] == ["test row 1: no image; skipped",
                                             "test row 2: no question (and none given for every row: --question); "
                                             "skipped"]
    assert [it.id for it in ds.items] == ["test row 0", "test row 3", "test row 4"]
    out = tmp_path / "run"
    assert main(["--dataset", str(tmp_path / "saved"), "--out", str(out), *RUN]) == 0
    problems = (out / "problems.txt").read_text()
    assert "test row 1: no image; skipped" in problems
    assert "test row 3: " in problems and "left out of the run" in problems
    rows = {r["item"]: r for r in _results(out)}   # choice: row 2 asks the options' default question
    assert list(rows) == ["test row 0", "test row 2", "test row 3", "test row 4"]
    assert rows["test row 3"]["before_reply"] == "" and rows["test row 4"]["before_reply"]


def test_tables_of_paths_parquet_and_the_imagefolder_layout(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for r in ROWS[:4]:
        shutil.copy(EXAMPLES / r["image"], folder / "sub" / r["image"])
    with open(folder / "metadata.csv", "w", newline="") as f:   # the Hub's imagefolder: file_name
        w = csv.writer(f)
        w.writerow(["file_name", "prompt", "A", "B", "C", "label"])
        for r in ROWS[:4]:
            w.writerow([f"sub/{r['image']}", "Which digit?", "1", "2", "3", 1])
    ds = load_table(str(folder), tmp_path / "w", task="choice")
    assert [(it.question, it.options, it.answer) for it in ds.items] == [("Which digit?", ("1", "2", "3"), "2")] * 4
    assert ds.items[0].image().size == (32, 32) and not ds.problems
    # jsonl with paths relative to the file, and --columns
    lines = [json.dumps({"img": f"imgs/sub/{r['image']}", "q": "Which?", "ans": r["answer"]}) for r in ROWS[:3]]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    cols = parse_columns("image=img, question=q,answer=ans")
    ds = load_table(str(tmp_path / "t.jsonl"), tmp_path / "w", columns=cols)
    assert [it.answer for it in ds.items] == [r["answer"] for r in ROWS[:3]]
    assert ds.items[2].image().size == (32, 32)
    # parquet holding the bytes, a ClassLabel answer read as its name
    labelled = datasets.Features({**FEATURES, "answer": datasets.ClassLabel(names=[f"d{k}" for k in range(10)])})
    rows = [{**r, "answer": int(r["answer"])} for r in digits(3).to_list()]
    datasets.Dataset.from_list(rows, features=labelled).to_parquet(str(tmp_path / "d.parquet"))
    ds = load_table(str(tmp_path / "d.parquet"), tmp_path / "w", task="choice")
    assert [it.answer for it in ds.items] == [f"d{r['answer']}" for r in ROWS[:3]] and ds.items[1].image()
    with pytest.raises(ValueError, match="should be ROLE=COLUMN"):
        parse_columns("picture=img")


def test_eval_split_adapts_on_one_split_and_evaluates_another(tmp_path):
    datasets.DatasetDict({"train": digits(8), "test": digits(6, start=100)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="no split 'val'"):
        load_table(str(tmp_path / "dd"), tmp_path / "w", split="val")
    out = tmp_path / "run"
    assert main(["--dataset", str(tmp_path / "dd"), "--split", "train", "--eval-split", "test", "--train-first",
                 "--out", str(out), *RUN]) == 0
    start = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert start["train_ids"] == [f"train row {i}" for i in range(4)]   # the first 4 of the train split
    rows = _results(out)
    assert [r["item"] for r in rows] == [f"test row {i}" for i in range(6)]
    assert not any(r["adapted_on"] == "True" for r in rows)
    # summary.json says which items were adapted on: here rows of the other split
    assert json.loads((out / "summary.json").read_text())["adapted_on"] == [f"train row {i}" for i in range(4)]


def test_an_answer_written_as_an_options_index_is_that_option(tmp_path):
    """lmms-lab/ai2d's answer column holds the right option's index as text ("0".."3"); an option that
    reads as the answer text is that option (options that are numbers keep their meaning)."""
    table = datasets.Dataset.from_dict({"image": [str(EXAMPLES / ROWS[0]["image"])] * 3,
                                        "question": ["Which?"] * 3,
                                        "options": [["frog", "sun", "tree"], ["frog", "sun", "tree"], ["2", "4", "0"]],
                                        "answer": ["1", "sun", "0"]}, features=FEATURES)
    table.save_to_disk(str(tmp_path / "ai2d_like"))
    ds = load_table(str(tmp_path / "ai2d_like"), tmp_path / "w", task="choice")
    assert [it.answer for it in ds.items] == ["sun", "sun", "0"]
    assert [it.reference for it in ds.items] == ["B", "B", "C"]
