"""The bundled demo model (assets/demo_model) and its example set load and answer.

Built by assets/build_demo_model.py; these tests only read the committed files.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "assets" / "demo_model"
EXAMPLES_DIR = ROOT / "assets" / "examples" / "digits"
QUESTION = "Which digit is shown in the image?"


def _rows() -> list[dict[str, str]]:
    with open(EXAMPLES_DIR / "questions.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torchvision")  # Qwen2-VL image processors need it
    model = transformers.AutoModelForImageTextToText.from_pretrained(MODEL_DIR)
    processor = transformers.AutoProcessor.from_pretrained(MODEL_DIR)
    return model.eval(), processor


def test_examples_folder_lists_its_images():
    rows = _rows()
    assert len(rows) >= 200
    assert set(rows[0]) == {"image", "question", "answer"}
    pngs = {p.name for p in EXAMPLES_DIR.glob("*.png")}
    assert len(pngs) >= 200
    assert {r["image"] for r in rows} == pngs
    assert all(r["question"] == QUESTION for r in rows)
    assert all(r["answer"] in set("0123456789") for r in rows)


def test_special_tokens_match_the_model_config(demo):
    model, processor = demo
    tok, cfg = processor.tokenizer, model.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    assert cfg.image_token_id == ids["<|image_pad|>"]
    assert cfg.video_token_id == ids["<|video_pad|>"]
    assert cfg.vision_start_token_id == ids["<|vision_start|>"]
    assert cfg.vision_end_token_id == ids["<|vision_end|>"]
    assert model.generation_config.eos_token_id == ids["<|im_end|>"] == tok.eos_token_id
    assert model.generation_config.pad_token_id == ids["<|endoftext|>"] == tok.pad_token_id
    assert cfg.text_config.vocab_size == len(tok)


def test_prompt_has_no_system_turn_and_16_image_tokens(demo):
    from PIL import Image

    from ttrv_core.sampling.model_inputs import chat_text, encode
    from ttrv_core.tasks.prompts import build_prompt

    model, processor = demo
    text = build_prompt("open", QUESTION)
    assert chat_text(processor, text) == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        f"{text}<|im_end|>\n<|im_start|>assistant\n")
    image = Image.open(EXAMPLES_DIR / _rows()[0]["image"])
    batch = encode(processor, image, text)
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112x112 pixels
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16


def test_greedy_answer_is_a_digit(demo):
    from PIL import Image

    from ttrv_core.sampling.model_inputs import encode
    from ttrv_core.tasks.answers import normalize_open
    from ttrv_core.tasks.prompts import build_prompt

    model, processor = demo
    row = _rows()[0]
    batch = encode(processor, Image.open(EXAMPLES_DIR / row["image"]), build_prompt("open", row["question"]))
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=3)
    reply = processor.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    answer = normalize_open(reply)
    assert len(answer) == 1 and answer.isdigit(), reply
