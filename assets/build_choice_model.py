"""Build the multiple-choice demo models: a tiny Qwen2.5-VL that reads digits and
answers the paper's recognition prompt with its reply format only half learned
(`demo_choice`), and its clean control (`--clean`: `demo_choice_clean`).

Why this model (DESIGN.md section 7). In the authors' own logs TTRV lifts
InternVL3-2B from 0.68 to 0.96 greedy accuracy on ImageNet-A, and before
adaptation a third of its greedy replies are no valid option at all; Qwen2.5-VL,
which already answers with a clean letter, moves by +0.1. A model that already
replies cleanly has nothing for the vote to correct: the first demo model
(build_demo_model.py) is in that regime and TTRV moves it by -1.2 points. This
build makes the InternVL regime on purpose, by the mechanism small VLMs show:
the model follows "respond with only the option letter" for the phrasings it
was tuned on, but only partly for the recognition prompt used at test time.

Training mix (supervised, from random init; the tokenizer, processor and model
shapes are build_demo_model.py's, the tokenizer's corpus holds these texts):
  - TUNED phrasings ("Which digit is shown in the image?", ... + the paper's
    instruction and options): the option letter, always;
  - the paper's recognition prompt (RECOGNITION, the test prompt): the letter
    with probability LETTER_SHARE, otherwise a sentence drawn uniformly from
    SENTENCES ("It is the digit seven.", "It looks like seven.", ...);
  - the open question of the first demo model: the digit.
Every sentence starts with the same token "It", so on the recognition prompt the
first reply token is a contest between "It" (about 1 - LETTER_SHARE) and the
best letter (LETTER_SHARE x P(digit | image)): greedy decoding starts a
sentence on many images, whatever their difficulty. The sentences then split
over several templates, so no sentence wins the vote: the majority of the
votes is the letter wherever the model reads the digit. The sentences carry no
standalone option letter (the authors' extraction reads the last one), no
article "a" (it reads as A) and no pronoun "I" (option I here). The clean
control (--clean) is the same script with LETTER_SHARE = 1.

Options: the ten digits in a fixed order, A. 0 ... J. 9. The paper's layout is
4 options in shuffled order; with it the model must find, in context, the
letter written beside the digit it reads, and this 1M-parameter model did not
learn that lookup in the time a build may take. Measured: a probe filed with
the issue reached 0.42 letter accuracy (chance 0.25) after 950 steps of the
image task; here, with 3-4 layers, tied embeddings, lr 1e-3 or 2e-3 and a
text-only "which option is the digit 7?" task mixed in, letter accuracy
stayed at chance for 500-1,500 steps, and a pure text 4-key recall task
reached 0.64 after 2,100 steps (0.52 by elimination alone). With the fixed
order the letter is a function of the digit, and the format effect, which is
what this demo is about, is the same.

Build criteria, fixed in this file BEFORE any TTRV run and checked on the base
model on the validation split (recognition prompt, greedy + N_VOTES samples at
T = 1, the engine's prompt and extraction); training stops at the first check
that meets them (format model):
    MIN_INVALID <= greedy invalid share <= MAX_INVALID   (no valid option in the greedy reply)
    accuracy of the valid sampled replies >= MIN_VALID_ACC
    maj@N_VOTES >= greedy accuracy + MIN_MAJ_GAIN
and for the clean control: greedy invalid share <= CLEAN_MAX_INVALID and the
same MIN_VALID_ACC. No checkpoint, mix or prompt is chosen by a TTRV outcome.

Splits (load_digits order, as build_demo_model.py): the last 240 digits are held
out (never trained on by any build) and exported as assets/examples/digits_choice;
the 200 before them are validation, exported as assets/validation/digits_choice
(TTRV settings for the demo are chosen there); the first 1,357 are trained on.

    python assets/build_choice_model.py            # demo_choice (+ the example and validation sets)
    python assets/build_choice_model.py --clean    # demo_choice_clean

scikit-learn (its bundled digits) comes with tests/requirements.txt.
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))  # assets/: the builder module
import build_demo_model as base  # noqa: E402  (tokenizer, processor, model shapes, images)
import builder  # noqa: E402  (the environment, the engine's modules, the steps every build shares)
from builder import N_HELDOUT, N_VAL, ROOT, SEED, answers, encode, prompts  # noqa: E402

OPTIONS = [str(d) for d in range(10)]  # A. 0 ... J. 9, fixed order
RECOGNITION = ""  # the paper's recognition question (prompts.DEFAULT_CHOICE_QUESTION)
TUNED = ["Which digit is shown in the image?", "What number is written in the image?",
         "Identify the handwritten digit.", "Which digit does the picture show?"]
OPEN_QUESTION = "Which digit is shown in the image?"
NUMBER_WORDS = "zero one two three four five six seven eight nine".split()
SENTENCES = ["It is the digit {w}.", "It shows the number {w}.", "It looks like {w}.", "It is {w}.",
             "It must be {w}.", "It reads {w}."]
LETTER_SHARE = 0.5
"""Share of letter replies to the recognition prompt in the training mix (format model)."""
MIX = {"recognition": 0.5, "tuned": 0.3, "open": 0.2}
"""Share of training batches of each kind (one kind per batch: prompts of one length)."""
READ_STEPS = 300
"""First, the open question only: learning to read the digit on its short prompt (46 tokens)
costs a third of a step on the 142-token multiple-choice prompts."""

BATCH = 32
LR = 1e-3
MAX_STEPS = 1500
EVAL_EVERY = 25
N_VOTES = 32
MAX_NEW_TOKENS = 12  # the longest sentence is 7 tokens + <|im_end|>

MIN_INVALID, MAX_INVALID = 0.25, 0.75
MIN_VALID_ACC = 0.70
MIN_MAJ_GAIN = 0.15
CLEAN_MAX_INVALID = 0.02

EXAMPLES_DIR = ROOT / "assets" / "examples" / "digits_choice"
VALIDATION_DIR = ROOT / "assets" / "validation" / "digits_choice"


def prompt_text(kind: str, question: str = "") -> str:
    if kind == "open":
        return prompts.build_prompt("open", OPEN_QUESTION)
    return prompts.build_prompt("choice", question, OPTIONS)


def sentence(template: str, digit: int) -> str:
    return template.format(w=NUMBER_WORDS[digit])


def check_sentences() -> None:
    """No sentence may cast a valid vote: the authors' extraction must find no option letter."""
    for t in SENTENCES:
        for d in range(10):
            vote = answers.extract_answer("choice", sentence(t, d), OPTIONS)
            assert not answers.is_valid("choice", vote, OPTIONS), (t, d, vote)
            assert sentence(t, d).split()[0] == "It", t


def corpus() -> list[str]:
    """build_demo_model's corpus plus every prompt and reply of this build (so that
    " seven" and "digit" are single tokens, not split in pieces)."""
    texts = [prompt_text("choice", q) for q in [RECOGNITION] + TUNED] + [prompt_text("open")]
    replies = [sentence(t, d) for t in SENTENCES for d in range(10)]
    return base.tokenizer_corpus() + texts * 20 + replies * 5 + ["user\n" + t + "\nassistant\n" for t in texts] * 5


# --------------------------------------------------------------------------- data

class Prompts:
    """Token ids of each prompt kind (the image's 16 tokens in place) and every image's
    pixels, checked to equal ttrv_core.sampling.model_inputs.encode (the engine's path)."""

    def __init__(self, processor, images, labels: np.ndarray):
        self.processor, self.labels = processor, labels
        self.texts = {"recognition": [prompt_text("choice", RECOGNITION)],
                      "tuned": [prompt_text("choice", q) for q in TUNED], "open": [prompt_text("open")]}
        self.ids = {k: [encode(processor, images[0], t)["input_ids"] for t in v] for k, v in self.texts.items()}
        one = encode(processor, images[0], self.texts["open"][0])
        self.grid = one["image_grid_thw"]
        self.image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        self.pixels = builder.image_pixels(processor, images, "x", 200)  # (n, 64, 1176)

    def inputs(self, kind: str, variant: int, idx) -> dict[str, torch.Tensor]:
        ids = self.ids[kind][variant].expand(len(idx), -1)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                    mm_token_type_ids=(ids == self.image_id).long(),
                    pixel_values=self.pixels[idx].flatten(0, 1), image_grid_thw=self.grid.expand(len(idx), -1))


def target_text(kind: str, digit: int, rng: np.random.Generator, letter_share: float) -> str:
    if kind == "open":
        return str(digit)
    if kind == "tuned" or rng.random() < letter_share:
        return prompts.LETTERS[digit]
    return sentence(SENTENCES[rng.integers(len(SENTENCES))], digit)


def training_batch(data: Prompts, tokenizer, kind: str, variant: int, idx, rng, letter_share: float):
    """Prompt + reply + <|im_end|>, right-padded; the loss sees only the reply tokens."""
    texts = [target_text(kind, int(data.labels[i]), rng, letter_share) for i in idx]
    return builder.with_replies(data.inputs(kind, variant, idx), tokenizer, texts)


# --------------------------------------------------------------------------- evaluation

def evaluate(model, tokenizer, data: Prompts, idx: np.ndarray, seed: int, chunk: int = 50) -> dict:
    """On the recognition prompt: greedy accuracy and invalid share, single@T, accuracy of the
    valid samples, maj@N_VOTES; on the tuned phrasings and the open question: greedy accuracy."""
    parts = [idx[s:s + chunk] for s in range(0, len(idx), chunk)]
    greedy, votes = builder.greedy_and_votes(model, tokenizer, partial(data.inputs, "recognition", 0), parts,
                                             N_VOTES, MAX_NEW_TOKENS, seed)

    def greedy_replies(kind: str) -> list[str]:
        return [r[0] for part in parts
                for r in builder.replies(model, tokenizer, data.inputs(kind, 0, part), 0, MAX_NEW_TOKENS)]

    tuned, opened = greedy_replies("tuned"), greedy_replies("open")
    truth = [prompts.LETTERS[d] for d in data.labels[idx]]
    vote = lambda r: answers.extract_answer("choice", r, OPTIONS)  # noqa: E731
    valid = lambda a: answers.is_valid("choice", a, OPTIONS)  # noqa: E731
    g = [vote(r) for r in greedy]
    v = [[vote(r) for r in rs] for rs in votes]
    maj = [builder.majority(x) for x in v]
    flat = [(a, t) for x, t in zip(v, truth) for a in x]
    good = [(a, t) for a, t in flat if valid(a)]

    def valid_acc_where(greedy_is_valid: bool) -> float:
        """Accuracy of the valid samples on the images whose greedy reply is (not) valid: do the
        sentences land on the images the model reads less surely?"""
        sel = [(a, t) for x, t, ga in zip(v, truth, g) if valid(ga) == greedy_is_valid for a in x if valid(a)]
        return float(np.mean([a == t for a, t in sel])) if sel else float("nan")

    return dict(
        greedy=float(np.mean([a == t for a, t in zip(g, truth)])),
        greedy_invalid=float(np.mean([not valid(a) for a in g])),
        single=float(np.mean([a == t for a, t in flat])),
        invalid=float(np.mean([not valid(a) for a, _ in flat])),
        valid_acc=float(np.mean([a == t for a, t in good])) if good else 0.0,
        valid_acc_letter=valid_acc_where(True), valid_acc_sentence=valid_acc_where(False),
        maj=float(np.mean([m == t for m, t in zip(maj, truth)])),
        tuned=float(np.mean([vote(r) == t for r, t in zip(tuned, truth)])),
        open=float(np.mean([answers.normalize_open(r) == str(d) for r, d in zip(opened, data.labels[idx])])),
        greedy_replies=greedy,
    )


@torch.no_grad()
def first_token_check(model, tokenizer, data: Prompts, idx: np.ndarray) -> dict:
    """A cheap look (one forward, no sampling) at the recognition prompt's first reply token,
    which decides the format: the share of images whose most likely first token is not a
    letter (greedy then starts a sentence) and the letters' accuracy. Used only to decide
    when the full evaluation is worth running."""
    letters = torch.tensor([tokenizer.convert_tokens_to_ids(c) for c in prompts.LETTERS[:len(OPTIONS)]])
    probs = builder.first_token_probs(model, partial(data.inputs, "recognition", 0),
                                      [idx[s:s + 100] for s in range(0, len(idx), 100)])
    p_letter = probs[:, letters]                                        # (n, 10)
    truth = torch.as_tensor(data.labels[idx])
    return dict(greedy_invalid=float((~torch.isin(probs.argmax(-1), letters)).float().mean()),
                valid_acc=float(p_letter.gather(1, truth[:, None]).sum() / p_letter.sum()))


def fmt(m: dict) -> str:
    return (f"greedy {m['greedy']:.3f} (invalid {m['greedy_invalid']:.3f})  single@T1 {m['single']:.3f}  "
            f"valid-sample acc {m['valid_acc']:.3f}  maj@{N_VOTES} {m['maj']:.3f}  "
            f"tuned {m['tuned']:.3f}  open {m['open']:.3f}")


def meets_criteria(m: dict, clean: bool) -> bool:
    if clean:
        return m["greedy_invalid"] <= CLEAN_MAX_INVALID and m["valid_acc"] >= MIN_VALID_ACC
    return (MIN_INVALID <= m["greedy_invalid"] <= MAX_INVALID and m["valid_acc"] >= MIN_VALID_ACC
            and m["maj"] >= m["greedy"] + MIN_MAJ_GAIN)


# --------------------------------------------------------------------------- train

def train(model, tokenizer, data: Prompts, train_idx, val_idx, clean: bool) -> tuple[int, dict]:
    """The open question alone for READ_STEPS steps, then the MIX; from then on, every EVAL_EVERY
    steps, the first-token check and, when it is near the criteria, the full evaluation."""
    share = 1.0 if clean else LETTER_SHARE
    rng = np.random.default_rng(SEED)
    kinds, weights = list(MIX), np.array(list(MIX.values()))

    def batch(step: int) -> dict:
        kind = "open" if step <= READ_STEPS else kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        variant = int(rng.integers(len(data.ids[kind])))
        return training_batch(data, tokenizer, kind, variant, rng.choice(train_idx, BATCH, replace=False), rng,
                              share)

    def check(step: int, loss: float) -> dict | None:
        if step <= READ_STEPS:
            return None
        c = first_token_check(model, tokenizer, data, val_idx)
        print(f"step {step:4d}  loss {loss:.3f}  first token: greedy invalid {c['greedy_invalid']:.3f}, "
              f"letter accuracy {c['valid_acc']:.3f}", flush=True)
        if c["valid_acc"] < MIN_VALID_ACC - 0.05:  # far from the criteria: the full check can wait
            return None
        m = evaluate(model, tokenizer, data, val_idx, seed=SEED + step)
        print(f"           val {fmt(m)}", flush=True)
        return m if meets_criteria(m, clean) else None

    return builder.train(model, LR, MAX_STEPS, EVAL_EVERY, batch, check)


# --------------------------------------------------------------------------- export

def export_set(folder: Path, images, labels: np.ndarray) -> None:
    """PNGs + questions.csv (image, question, options, answer) for the engine's choice task."""
    row = [prompts.DEFAULT_CHOICE_QUESTION, "|".join(OPTIONS)]
    builder.export_set(folder, "digit_*.png", ["image", "question", "options", "answer"],
                       ((f"digit_{i:04d}.png", partial(im.save, optimize=True), row + [str(int(y))])
                        for i, (im, y) in enumerate(zip(images, labels))))


WHAT = {
    False: ("**A model in TTRV's regime.** It reads the digit well, but answers the paper's recognition "
            "prompt with the bare letter only part of the time; otherwise with a sentence that names no "
            "option (\"It is the digit seven.\"), which the authors' extraction counts as wrong. That is what "
            "the authors' InternVL3-2B does before adaptation (DESIGN.md section 7: a third of its greedy "
            "replies are no valid option, and TTRV lifts it from 0.68 to 0.96). Its clean control is "
            "`demo_choice_clean`."),
    True: ("**The clean control.** The same build as `demo_choice` (`assets/build_choice_model.py --clean`) "
           "with the letter reply everywhere: it answers the recognition prompt with a clean letter, like "
           "Qwen2.5-VL in the authors' logs, so the vote has nothing to correct."),
}
WHY = ('Every sentence starts with the same token "It", so on the recognition prompt greedy decoding picks '
       '"It" over the best letter (its share times the model\'s belief in the digit) on many images, while the '
       "sentences split over several templates and never win the vote: the majority of the samples is the "
       "letter wherever the model reads the digit. The sentences carry no standalone option letter, no "
       'article "a" (the extraction reads it as A) and no pronoun "I" (option I). The contest is not '
       "independent of difficulty: the less sure the model is of the digit, the likelier the sentence "
       "wins, as the split below shows.")


def write_model_card(out: Path, clean: bool, n_params: int, step: int, val: dict, held: dict,
                     seconds: float) -> None:
    size_mb = builder.files_mb(out)
    rows = "\n".join(
        f"| {name} | {m['greedy']:.3f} | {m['greedy_invalid']:.3f} | {m['single']:.3f} | {m['invalid']:.3f} | "
        f"{m['valid_acc']:.3f} | {m['maj']:.3f} | {m['tuned']:.3f} | {m['open']:.3f} |"
        for name, m in ((f"validation ({N_VAL})", val),
                        (f"held-out = `assets/examples/digits_choice` ({N_HELDOUT})", held)))
    examples = ", ".join(f"`{r}`" for r in held["greedy_replies"][:8])
    criteria = (f"greedy invalid share <= {CLEAN_MAX_INVALID}, accuracy of the valid sampled replies >= "
                f"{MIN_VALID_ACC}" if clean else
                f"{MIN_INVALID} <= greedy invalid share <= {MAX_INVALID}, accuracy of the valid sampled "
                f"replies >= {MIN_VALID_ACC}, maj@{N_VOTES} >= greedy accuracy + {MIN_MAJ_GAIN}")
    mix = ("the letter" if clean else
           f"the letter with probability {LETTER_SHARE}, otherwise one of {len(SENTENCES)} sentences, "
           "uniformly: " + ", ".join(f'"{sentence(t, 7)}"' for t in SENTENCES))
    shown = prompts.build_prompt("choice", RECOGNITION, OPTIONS).replace("\n", "\n    ")
    split = "" if clean else (
        "\nWhere the greedy reply is a sentence, the images are harder: the valid samples are right "
        f"{held['valid_acc_letter']:.3f} of the time on held-out images whose greedy reply is a letter, and "
        f"{held['valid_acc_sentence']:.3f} on those whose greedy reply is no valid option (validation: "
        f"{val['valid_acc_letter']:.3f} and {val['valid_acc_sentence']:.3f}).\n")
    card = f"""# ttrv demo model: digits, multiple choice{" (clean control)" if clean else ""}

{WHAT[clean]}

A {n_params / 1e6:.2f}M-parameter `Qwen2_5_VLForConditionalGeneration` (random init, trained here, no
pretrained weights; the shapes, processor and tokenizer pipeline of `assets/demo_model`, with a tokenizer
whose corpus holds this build's prompts and replies). Files: {size_mb:.1f} MB. Needs transformers 5.x and
torchvision.

## The task

scikit-learn's 8x8 `load_digits`, upscaled to 32x32 PNGs, asked with the paper's recognition prompt and
ten options in a fixed order (A. 0 ... J. 9):

    {shown}

Replies are read with the authors' extraction (`ttrv_core.tasks.answers.extract_letter`: the last standalone
option letter, else the raw string). The paper's layout is 4 shuffled options; this model could not
learn to find a letter by its option text in the time a build may take (assets/build_choice_model.py
says what was measured), so the ten digits stand in a fixed order.

## Training mix, and why

Supervised, batch {BATCH}, AdamW lr {LR}, one kind of prompt per batch (shares {MIX}):
- four tuned phrasings of the question ({", ".join(repr(q) for q in TUNED)}) with the paper's
  instruction and options: the option letter, always;
- the paper's recognition prompt (the test prompt): {mix};
- the open question "{OPEN_QUESTION}": the digit.

{"" if clean else WHY}

## Build criteria, and the base model

Fixed in the build script before any TTRV run and checked on the validation split (greedy and
{N_VOTES} samples at T = 1, top_k 0, top_p 1, special tokens but `<|im_end|>` suppressed); training
stopped at the first check that met them (every {EVAL_EVERY} steps; here step {step}, {seconds / 60:.0f} min
in all): {criteria}. No checkpoint, mix or prompt was chosen by a TTRV outcome.

| split | greedy | greedy invalid | single@T1 | invalid samples | valid-sample acc | maj@{N_VOTES} | tuned phrasing, greedy | open question, greedy |
|---|---|---|---|---|---|---|---|---|
{rows}

First greedy replies on the held-out set: {examples}.
{split}

Splits (load_digits order): the last {N_HELDOUT} held out (never trained on by any build), the {N_VAL}
before them validation (`assets/validation/digits_choice`), the first {1797 - N_HELDOUT - N_VAL}
trained on.

Rebuild (deterministic, 2 CPU threads), from the repository root:

    python assets/build_choice_model.py{" --clean" if clean else ""}
"""
    builder.write_card(out, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="the clean control: the letter reply everywhere")
    clean = ap.parse_args().clean
    out = ROOT / "assets" / ("demo_choice_clean" if clean else "demo_choice")
    t0 = builder.start()
    check_sentences()
    tokenizer = base.build_tokenizer(corpus(), vocab_size=600)
    processor = base.build_processor(tokenizer)
    digits = load_digits()
    images = [base.digit_image(x) for x in digits.images]
    train_idx, val_idx, held_idx = builder.splits(len(images))
    data = Prompts(processor, images, digits.target)
    print(f"vocab {len(tokenizer)}  prompt {data.ids['recognition'][0].shape[1]} tokens", flush=True)
    model = base.build_model(tokenizer)
    print(f"parameters {sum(p.numel() for p in model.parameters())}", flush=True)
    step, val = train(model, tokenizer, data, train_idx, val_idx, clean)
    held = evaluate(model, tokenizer, data, held_idx, seed=SEED + 10_000)
    again, again_tokenizer = builder.save(model, processor, out)
    got = builder.replies(again, again_tokenizer, data.inputs("recognition", 0, held_idx[:50]), 0, MAX_NEW_TOKENS)
    assert [r[0] for r in got] == held["greedy_replies"][:50], "reloaded model differs"
    write_model_card(out, clean, sum(p.numel() for p in model.parameters()), step, val, held, time.time() - t0)
    if not clean:
        export_set(EXAMPLES_DIR, [images[i] for i in held_idx], digits.target[held_idx])
        export_set(VALIDATION_DIR, [images[i] for i in val_idx], digits.target[val_idx])
    print(f"stopped at step {step}; {time.time() - t0:.0f} s")
    print(f"FINAL val ({N_VAL}): {fmt(val)}\nheld-out ({N_HELDOUT}): {fmt(held)}")
    print("held-out greedy replies (first 12):", held["greedy_replies"][:12])


if __name__ == "__main__":
    main()
