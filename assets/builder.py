"""The steps every demo-model build shares (assets/build_*_model.py); each build script keeps
its own data, model, build criteria and model card, and takes the rest from here:

  - the environment: one seed, 2 threads (a rebuild gives the same bytes), the repository root
    on sys.path and the engine's modules the builds use (its prompts, its encoding of an image
    or clip with a prompt, its video reader), imported here and nowhere else in assets/;
  - the splits of scikit-learn's `load_digits` that every build uses;
  - inputs as the engine makes them: still images' pixels from batched processor calls, checked
    to equal ttrv_core.sampling.model_inputs.encode, and supervised targets appended to a batch of prompts;
  - replies as the engine samples them: greedy, or n samples at T = 1 (top_k 0, top_p 1), never
    a special token but EOS;
  - supervised training until the build criteria are met: AdamW, one batch per step, a check of
    the model every few steps, stopping at the first check that meets the criteria;
  - what a build writes: the model folder (reloaded, for the build to check it answers the
    same), a set folder the engine reads (one file per item and questions.csv), the model card.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ttrv_core.inputs.video import load_video  # noqa: E402
from ttrv_core.sampling.model_inputs import chat_text, encode  # noqa: E402
from ttrv_core.tasks import answers, prompts  # noqa: E402

__all__ = ["ROOT", "SEED", "N_HELDOUT", "N_VAL", "WEIGHT_DECAY", "answers", "prompts", "chat_text", "encode", "load_video",
           "start", "splits", "image_pixels", "with_replies", "suppressed_ids", "replies", "greedy_and_votes",
           "first_token_probs", "majority", "train", "save", "export_set", "files_mb", "write_card"]

SEED = 0
THREADS = 2
N_HELDOUT = 240  # the last digits (load_digits order): the example sets, never trained on by any build
N_VAL = 200  # the digits just before them: validation (build criteria; TTRV settings for the demos)
WEIGHT_DECAY = 0.01


def start() -> float:
    """Seed torch and fix its threads, as every build does first; returns the start time."""
    t0 = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    return t0


def splits(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, held-out) indices of n digits in load_digits order: the last N_HELDOUT
    held out, the N_VAL before them validation, the rest trained on."""
    return (np.arange(0, n - N_HELDOUT - N_VAL), np.arange(n - N_HELDOUT - N_VAL, n - N_HELDOUT),
            np.arange(n - N_HELDOUT, n))


# --------------------------------------------------------------------------- inputs

def image_pixels(processor, images: list, prompt: str, chunk: int) -> torch.Tensor:
    """Every image's pixel values, (n, patches, values), from processor calls on `chunk` images at a
    time with `prompt`; checked to give the token ids that ttrv_core.sampling.model_inputs.encode gives for the first
    image, and its pixels for the first and the last (the engine's path, image by image)."""
    one = encode(processor, images[0], prompt)
    text = chat_text(processor, prompt)
    pixels = []
    for s in range(0, len(images), chunk):
        part = images[s:s + chunk]
        feats = processor(text=[text] * len(part), images=part, return_tensors="pt")
        assert (feats["input_ids"] == one["input_ids"]).all()
        pixels.append(feats["pixel_values"].view(len(part), -1, feats["pixel_values"].shape[-1]))
    out = torch.cat(pixels)
    for i in (0, len(images) - 1):
        assert torch.equal(out[i], encode(processor, images[i], prompt)["pixel_values"])
    return out


def with_replies(inp: dict, tokenizer, texts: list[str]) -> dict:
    """A batch of B prompts with each row's reply appended as its supervised target: the text's tokens
    and EOS, right-padded to the longest reply; labels -100 on the prompt and the padding."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    replies = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    B, P, T = len(replies), inp["input_ids"].shape[1], max(map(len, replies))
    tgt = torch.full((B, T), pad)
    mask = torch.zeros((B, T), dtype=torch.long)
    for j, r in enumerate(replies):
        tgt[j, :len(r)], mask[j, :len(r)] = torch.tensor(r), 1
    inp["input_ids"] = torch.cat([inp["input_ids"], tgt], 1)
    inp["attention_mask"] = torch.cat([inp["attention_mask"], mask], 1)
    inp["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"], torch.zeros_like(tgt)], 1)
    inp["labels"] = torch.cat([torch.full((B, P), -100), tgt.masked_fill(mask == 0, -100)], 1)
    return inp


# --------------------------------------------------------------------------- replies

def suppressed_ids(tokenizer) -> list[int]:
    """Special tokens a sample must never contain: all but EOS (DESIGN.md section 5), as the engine
    masks them."""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return sorted(special - {tokenizer.eos_token_id})


@torch.no_grad()
def replies(model, tokenizer, inp: dict, n: int, max_new_tokens: int) -> list[list[str]]:
    """Each prompt's raw replies: the greedy one (n = 0) or n samples at T = 1, top_k 0, top_p 1."""
    P = inp["input_ids"].shape[1]
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=n) if n else \
        dict(do_sample=False)
    out = model.generate(**inp, max_new_tokens=max_new_tokens, suppress_tokens=suppressed_ids(tokenizer), **kw)
    texts = tokenizer.batch_decode(out[:, P:], skip_special_tokens=True)
    k = max(n, 1)
    return [texts[i * k:(i + 1) * k] for i in range(len(texts) // k)]


def greedy_and_votes(model, tokenizer, inputs: Callable[[object], dict], parts: Iterable, n_votes: int,
                     max_new_tokens: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Each prompt's greedy reply and its n_votes samples, part after part (inputs(part): the model
    inputs of one part's prompts), sampled from torch seed `seed`; leaves the model in eval mode."""
    model.eval()
    torch.manual_seed(seed)
    greedy, votes = [], []
    for part in parts:
        greedy += [r[0] for r in replies(model, tokenizer, inputs(part), 0, max_new_tokens)]
        votes += replies(model, tokenizer, inputs(part), n_votes, max_new_tokens)
    return greedy, votes


@torch.no_grad()
def first_token_probs(model, inputs: Callable[[object], dict], parts: Iterable) -> torch.Tensor:
    """The distribution of the first reply token after each prompt, part after part: one forward
    pass, no sampling (a cheap look at the reply format); leaves the model in eval mode."""
    model.eval()
    return torch.cat([model(**inputs(part)).logits[:, -1].softmax(-1) for part in parts])


def majority(votes: Sequence[str]) -> str:
    """The most common answer (of tied ones, the first given)."""
    return Counter(votes).most_common(1)[0][0]


# --------------------------------------------------------------------------- training

def train(model, lr: float, max_steps: int, eval_every: int, batch: Callable[[int], dict],
          check: Callable[[int, float], dict | None]) -> tuple[int, dict]:
    """Supervised training from the model's current weights: AdamW (weight decay WEIGHT_DECAY,
    gradient norm clipped to 1) on batch(step), in training mode, for steps 1, 2, ...; every
    eval_every steps check(step, loss) measures the model and returns the measures if they meet the
    build criteria, else None. Returns (step, measures) of the first check that meets them."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**batch(step), use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0:
            measures = check(step, loss.item())
            if measures is not None:
                return step, measures
    raise SystemExit(f"no checkpoint met the build criteria within {max_steps} steps")


# --------------------------------------------------------------------------- what a build writes

def save(model, processor, out: Path):
    """The model folder (files 0644: safetensors writes 0600), and the model and tokenizer loaded
    back from it through the Auto classes, as the engine loads them."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    for f in out.iterdir():
        f.chmod(0o644)
    return AutoModelForImageTextToText.from_pretrained(out), AutoProcessor.from_pretrained(out).tokenizer


def export_set(folder: Path, old: str, header: list[str],
               items: Iterable[tuple[str, Callable[[Path], object], list[str]]]) -> None:
    """A set folder the engine reads: for each item (file name, save(path), the rest of its row) its
    file and a row of questions.csv (header, then the file name and the rest). Files matching the
    glob `old` are removed first, so a rebuild leaves none of an earlier one's behind."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.glob(old):
        f.unlink()
    with open(folder / "questions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for name, save_to, row in items:
            save_to(folder / name)
            (folder / name).chmod(0o644)
            w.writerow([name, *row])


def files_mb(folder: Path) -> float:
    """The size of the folder's files in MB (for the model card)."""
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def write_card(folder: Path, card: str) -> None:
    """The model card: README.md in the model folder."""
    (folder / "README.md").write_text(card)
