"""The app's third source of images: a Hugging Face dataset on this machine (form_fields.DATASET, read
by inputs/tables.py lazily), previewed and run as the CLI's --dataset is; never on a public Space."""
import json
from pathlib import Path

import datasets
import pytest
from test_app import app_url, client, unpack  # noqa: F401 (app_url: a fixture)
from test_datasets import digits

from ttrv_core import demos
from ttrv_core.app import form_fields, sessions


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "digits"
    digits(6).save_to_disk(str(path))
    return path


def read(tmp_path, saved, **kw):
    sess = sessions.Session(tmp_path / "sess")
    args = dict(source=form_fields.DATASET, example=None, files=[], question="", qfile=None, task="choice",
                options="", table=str(saved), split="train") | kw
    return form_fields.read(sess, Path("."), None, **args)


def test_the_preview_lists_the_rows_and_decodes_none(tmp_path, saved):
    inp = read(tmp_path, saved)
    assert [it.id for it in inp.dataset.items] == [f"train row {i}" for i in range(6)] and not inp.dataset.problems
    assert not any(it.path.is_file() for it in inp.dataset.items)                 # nothing written or decoded yet
    assert inp.dataset.items[0].options and inp.dataset.items[0].answer is not None


def test_a_public_space_a_missing_name_and_a_wrong_split_are_said(tmp_path, saved):
    said = lambda inp: [str(p) for p in inp.dataset.problems]   # noqa: E731
    assert said(read(tmp_path, saved, public=True)) == ["dataset: a public Space reads uploaded files only"]
    assert "name a dataset" in said(read(tmp_path, saved, table=" "))[0]
    datasets.DatasetDict({"train": digits(2), "test": digits(2)}).save_to_disk(str(tmp_path / "dd"))
    assert "no split 'val'" in said(read(tmp_path, tmp_path / "dd", split="val"))[0]


def test_a_run_on_a_dataset_through_the_app(app_url, saved):  # noqa: F811
    from gradio_client import Client
    c = Client(app_url, verbose=False)
    args = dict(source=form_fields.DATASET, dataset=str(saved), split="train", example=None, uploads=None,
                folder=None, question="", qfile=None, task="choice", options="", custom="",
                hist_choice="the first image step 1 trains on", model=demos.by_key("format").model, precision="auto",
                single=False, single_item=None, n_votes=4, n_train=2, max_steps=1, epochs=1, eval_votes=2,
                prompts_per_step=2, lora_r=4)
    out = unpack(c.predict(**args, api_name="/run"))
    assert 'data-kind="done"' in out["status"], out["status"]
    config = json.loads(next(f for f in out["files"] if f.name == "config.json").read_text())
    results = next(f for f in out["files"] if f.name == "results.json")
    assert len(json.loads(results.read_text())["items"]) == 6 and "dataset" in config["source"]
