"""Build the video demo model: the first demo model (assets/demo_model) fine-tuned to answer
questions about short clips of a digit drifting across the frame, with its reply format only
half learned, and the clip sets it answers.

The clips. Each is K = 8 frames of 32x32 grey pixels, 100 ms apart, saved as an animated GIF
(lossless: the engine's video.load_video gives back exactly these frames). One scikit-learn
`load_digits` digit (8x8, upscaled bilinear to 28x28) drifts TRAVEL = 4 pixels left, right, up
or down across the clip, at a random offset on the other axis. Each clip is asked one of two
questions (the engine's open prompt, prompts.build_prompt("open", q)):
    "Which digit is shown in the video?"   -> the digit, "0" ... "9"
    "Which way does the digit move?"        -> "left", "right", "up" or "down"
The processor makes every frame 112x112 (8x8 patches); Qwen2.5-VL's patch embedding spans two
frames (temporal patch 2), so a clip is 4 x 16 = 64 video tokens, against 16 for a still image.

Why the reply format is half learned (DESIGN.md section 7, as assets/build_choice_model.py):
a model whose greedy reply is already the mode of its votes gives TTRV nothing to correct (the
open demo moves -1.2 points). So the training reply to both questions is the bare answer with
probability BARE_SHARE, and otherwise a sentence drawn uniformly from SENTENCES ("It moves
left.", "It is the digit seven.", ...). Every sentence starts with the same token ("I" of "It"),
so greedy decoding starts a sentence wherever the model's belief in its best answer is below
(1 - BARE_SHARE) / BARE_SHARE = 0.82, while the sentences split over six templates and never win
the vote: the majority of the votes is the bare answer wherever the model reads the clip. The
open task counts a sentence as a wrong answer (it normalises to "it moves left", not "left");
it is not "invalid" there (any non-empty open reply is valid), so the label-free invalid share
does not show it: the greedy accuracy and the replies do.

Training: full fine-tune of assets/demo_model (its weights, tokenizer and processor; it had never
seen a video and answers every clip with an empty reply), AdamW, batch BATCH, one question kind
per batch; clips rendered on the fly from the training digits with random directions and offsets,
encoded by the processor in one batched call that is checked to equal ttrv_core.sampling.model_inputs.encode on a
saved GIF read by ttrv_core.inputs.video.load_video (the engine's path).

Build criteria, fixed in this file BEFORE any TTRV run on this model and checked on the base model
on the validation clips (greedy and N_VOTES samples at T = 1, top_k 0, top_p 1, special tokens but
<|im_end|> suppressed; replies read with answers.normalize_open); training stops at the first check
that meets them:
    MIN_SENTENCE <= share of greedy replies that are a sentence, not a bare answer <= MAX_SENTENCE
    accuracy of the bare sampled answers >= MIN_BARE_ACC overall, and >= MIN_BARE_ACC_EACH on
        each question (it reads the digit and it reads the motion)
    maj@N_VOTES >= greedy accuracy + MIN_MAJ_GAIN
No checkpoint, mix or prompt is chosen by a TTRV outcome.

Two attempts came first, both stopped before any model was saved or any TTRV run. (1) A 20x20
digit travelling 12 pixels, lr 5e-4, at most 900 steps, 0.60 on each question: the direction was
read at once (bare-sample accuracy 0.97 on validation by step 475), the digit only slowly (0.36-0.42
at steps 500-600; the base reads still digits with single@T1 0.52-0.59), stopped at step 625. So the
per-question floors became 0.50 (digit) and 0.80 (direction), lr 1e-3, up to 2,000 steps. (2) A 24x24
digit travelling 8 pixels: the digit's first-token accuracy was still at chance (0.12) at step 125,
on a machine so loaded that the build would not have ended in time; stopped. (3) This build: a
28x28 digit (close to the 32x32 the base reads) travelling 4 pixels; it met the criteria at step 700.

Splits (load_digits order, as the other builds): the last 240 digits are held out (never trained
on by any build) and exported as assets/examples/digits_video (one clip each, the two questions
alternating); the 200 before them are validation, exported as assets/validation/digits_video
(TTRV settings for the demo are chosen there); the first 1,357 are trained on.

    python assets/build_video_model.py      # 13 min on 2 shared CPU cores (step 700)

scikit-learn (its bundled digits) comes with tests/requirements.txt.
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from transformers import AutoModelForImageTextToText, AutoProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))  # assets/: the builder module
import builder  # noqa: E402  (the environment, the engine's modules, the steps every build shares)
from builder import N_HELDOUT, N_VAL, ROOT, SEED, answers, chat_text, encode, load_video, prompts  # noqa: E402

SOURCE = ROOT / "assets" / "demo_model"
OUT = ROOT / "assets" / "demo_video"
EXAMPLES_DIR = ROOT / "assets" / "examples" / "digits_video"
VALIDATION_DIR = ROOT / "assets" / "validation" / "digits_video"

# The clips.
K = 8  # frames per clip (= TTRVConfig.video_frames' default: the engine samples each one)
CANVAS = 32  # frame side in pixels
DIGIT_SIDE = 28  # the 8x8 digit upscaled (bilinear)
TRAVEL = 4  # pixels the digit moves over the clip (CANVAS - DIGIT_SIDE: it stays in frame)
FRAME_MS = 100
DIRECTIONS = ("left", "right", "up", "down")
QUESTIONS = {"digit": "Which digit is shown in the video?", "move": "Which way does the digit move?"}
NUMBER_WORDS = "zero one two three four five six seven eight nine".split()
SENTENCES = {
    "digit": ["It is the digit {w}.", "It shows the number {w}.", "It looks like {w}.", "It is {w}.",
              "It must be {w}.", "It reads {w}."],
    "move": ["It moves {w}.", "It goes {w}.", "It drifts {w}.", "It slides {w}.", "It is moving {w}.",
             "It heads {w}."],
}
BARE_SHARE = 0.55
"""Share of bare answers in the training replies (the rest: a sentence)."""

# Training and the early stop.
BATCH = 16
LR = 1e-3
MAX_STEPS = 2000
EVAL_EVERY = 25
N_VOTES = 32
MAX_NEW_TOKENS = 16  # the longest sentence is 12 tokens + <|im_end|>

MIN_SENTENCE, MAX_SENTENCE = 0.25, 0.80
MIN_BARE_ACC = 0.70
MIN_BARE_ACC_EACH = {"digit": 0.50, "move": 0.80}
"""Per question: five times chance for the digit (the base model reads still digits with single@T1
0.52-0.59: its card), 3.2 times chance for the direction."""
MIN_MAJ_GAIN = 0.15


# --------------------------------------------------------------------------- clips

def clip_frames(pixels: np.ndarray, direction: str, cross: int) -> list[Image.Image]:
    """K grey CANVAS x CANVAS frames: the digit (0..16 array) drifting TRAVEL pixels in `direction`,
    at `cross` pixels (0..TRAVEL) on the other axis."""
    digit = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), mode="L")
    digit = digit.resize((DIGIT_SIDE, DIGIT_SIDE), Image.BILINEAR)
    frames = []
    for i in range(K):
        s = round(i * TRAVEL / (K - 1))
        x, y = {"right": (s, cross), "left": (TRAVEL - s, cross),
                "down": (cross, s), "up": (cross, TRAVEL - s)}[direction]
        frame = Image.new("L", (CANVAS, CANVAS))
        frame.paste(digit, (x, y))
        frames.append(frame)
    return frames


def save_gif(frames: list[Image.Image], path: Path) -> None:
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0, optimize=False)


def answer(kind: str, digit: int, direction: str) -> str:
    return str(digit) if kind == "digit" else direction


def sentence(kind: str, template: str, digit: int, direction: str) -> str:
    return template.format(w=NUMBER_WORDS[digit] if kind == "digit" else direction)


def check_sentences() -> None:
    """No sentence may read as a bare answer, and every one starts with "It"."""
    bare = {str(d) for d in range(10)} | set(DIRECTIONS)
    for kind, templates in SENTENCES.items():
        for t in templates:
            for d in range(10):
                for m in DIRECTIONS:
                    s = sentence(kind, t, d, m)
                    assert answers.normalize_open(s) not in bare and s.startswith("It "), s


def set_spec(n: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    """(question kind, direction, cross offset) for n exported clips: questions alternate, the
    directions are balanced (shuffled), the offsets uniform."""
    dirs = rng.permutation(np.resize(np.array(DIRECTIONS), n))
    cross = rng.integers(0, TRAVEL + 1, n)
    return [("digit" if i % 2 == 0 else "move", str(dirs[i]), int(cross[i])) for i in range(n)]


# --------------------------------------------------------------------------- encoding

class Clips:
    """Encodes batches of clips for one question kind, as the engine does (checked once)."""

    def __init__(self, processor):
        self.processor = processor
        self.texts = {k: chat_text(processor, prompts.build_prompt("open", q), "video") for k, q in QUESTIONS.items()}
        self.fps = 1000.0 / FRAME_MS

    def inputs(self, kind: str, clips: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
        meta = {"fps": self.fps, "total_num_frames": K, "frames_indices": list(range(K))}
        f = self.processor(text=[self.texts[kind]] * len(clips),
                           videos=[[im.convert("RGB") for im in c] for c in clips],
                           fps=self.fps, video_metadata=[meta] * len(clips), do_sample_frames=False,
                           return_tensors="pt")
        return dict(f)

    def check_against_engine(self, frames: list[Image.Image], tmp: Path) -> None:
        """The batched call gives what ttrv_core.sampling.model_inputs.encode gives for the saved GIF."""
        save_gif(frames, tmp)
        video = load_video(tmp, K)
        assert [np.array(v.convert("L")).tolist() for v in video.frames] == [np.array(f).tolist() for f in frames]
        for kind, q in QUESTIONS.items():
            one = encode(self.processor, video, prompts.build_prompt("open", q), video_as="video")
            mine = self.inputs(kind, [frames])
            for key in one:
                assert torch.equal(one[key], mine[key]), key
        tmp.unlink()


def training_batch(clips: Clips, tokenizer, kind: str, digits: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random clips of these digits + replies (bare answer or sentence) + <|im_end|>, right-padded;
    the loss sees only the reply tokens."""
    dirs = [DIRECTIONS[i] for i in rng.integers(0, 4, len(digits))]
    frames = [clip_frames(px, m, int(c)) for px, m, c in zip(digits, dirs, rng.integers(0, TRAVEL + 1, len(digits)))]
    texts = [answer(kind, int(y), m) if rng.random() < BARE_SHARE else
             sentence(kind, SENTENCES[kind][rng.integers(len(SENTENCES[kind]))], int(y), m)
             for y, m in zip(labels, dirs)]
    return builder.with_replies(clips.inputs(kind, frames), tokenizer, texts)


# --------------------------------------------------------------------------- evaluation

class EvalSet:
    """Fixed clips (a split), grouped by question kind."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, spec: list[tuple[str, str, int]]):
        self.kind = [k for k, _, _ in spec]
        self.truth = [answer(k, int(y), m) for (k, m, _), y in zip(spec, labels)]
        self.frames = [clip_frames(px, m, c) for px, (_, m, c) in zip(images, spec)]

    def parts(self, chunk: int) -> list[tuple[str, list[int]]]:
        """The clips in parts of at most `chunk`, each of one question kind: (kind, clip indices)."""
        out = []
        for kind in QUESTIONS:
            idx = [i for i, k in enumerate(self.kind) if k == kind]
            out += [(kind, idx[s:s + chunk]) for s in range(0, len(idx), chunk)]
        return out

    def inputs(self, clips: Clips, part: tuple[str, list[int]]) -> dict[str, torch.Tensor]:
        """The model inputs of one part's clips."""
        kind, idx = part
        return clips.inputs(kind, [self.frames[i] for i in idx])


def bare(kind: str, a: str) -> bool:
    return a in ({str(d) for d in range(10)} if kind == "digit" else set(DIRECTIONS))


def evaluate(model, tokenizer, clips: Clips, data: EvalSet, seed: int, chunk: int = 25) -> dict:
    """Greedy accuracy and sentence share, single@T1, accuracy of the bare samples, maj@N_VOTES:
    overall and per question kind."""
    parts = data.parts(chunk)
    g, v = builder.greedy_and_votes(model, tokenizer, partial(data.inputs, clips), parts, N_VOTES, MAX_NEW_TOKENS,
                                    seed)
    greedy, votes = [None] * len(data.kind), [None] * len(data.kind)
    for i, a, b in zip([i for _, part in parts for i in part], g, v):
        greedy[i], votes[i] = a, b
    norm = answers.normalize_open

    def measures(sel: list[int]) -> dict:
        g = [norm(greedy[i]) for i in sel]
        v = [[norm(r) for r in votes[i]] for i in sel]
        t = [data.truth[i] for i in sel]
        kinds = [data.kind[i] for i in sel]
        good = [a == y for x, y, k in zip(v, t, kinds) for a in x if bare(k, a)]
        maj = [builder.majority(x) for x in v]
        return dict(greedy=float(np.mean([a == y for a, y in zip(g, t)])),
                    sentence=float(np.mean([not bare(k, a) for a, k in zip(g, kinds)])),
                    single=float(np.mean([a == y for x, y in zip(v, t) for a in x])),
                    bare_acc=float(np.mean(good)) if good else 0.0,
                    maj=float(np.mean([m == y for m, y in zip(maj, t)])), n=len(sel))
    out = measures(list(range(len(data.kind))))
    out["by_kind"] = {k: measures([i for i, x in enumerate(data.kind) if x == k]) for k in QUESTIONS}
    out["greedy_replies"] = greedy
    return out


@torch.no_grad()
def first_token_check(model, tokenizer, clips: Clips, data: EvalSet, chunk: int = 50) -> dict:
    """A cheap look (one forward, no sampling) at the first reply token, which decides the format:
    the share of clips whose most likely first token starts a sentence, and the bare answers'
    accuracy read from the first tokens of the answers. Used only to decide when the full
    evaluation is worth running."""
    it = tokenizer("It", add_special_tokens=False)["input_ids"][0]
    firsts = {k: [tokenizer(answer(k, d, m), add_special_tokens=False)["input_ids"][0]
                  for d, m in ([(d, "") for d in range(10)] if k == "digit" else [(0, m) for m in DIRECTIONS])]
              for k in QUESTIONS}
    sent, acc, each = [], [], {}
    for kind in QUESTIONS:
        parts = [part for part in data.parts(chunk) if part[0] == kind]
        idx = [i for _, part in parts for i in part]
        probs = builder.first_token_probs(model, partial(data.inputs, clips), parts)
        sent += (probs.argmax(-1) == it).tolist()
        p = probs[:, torch.tensor(firsts[kind])]  # (n, answers)
        truth = torch.tensor([firsts[kind].index(tokenizer(data.truth[i], add_special_tokens=False)["input_ids"][0])
                              for i in idx])
        acc += (p.gather(1, truth[:, None])[:, 0] / p.sum(-1)).tolist()
        each[kind] = float(np.mean(acc[-len(idx):]))
    return dict(sentence=float(np.mean(sent)), bare_acc=float(np.mean(acc)), each=each)


def fmt(m: dict) -> str:
    each = "  ".join(f"{k}: greedy {x['greedy']:.3f} sent {x['sentence']:.3f} bare-acc {x['bare_acc']:.3f} "
                     f"maj {x['maj']:.3f}" for k, x in m["by_kind"].items())
    return (f"greedy {m['greedy']:.3f} (sentence {m['sentence']:.3f})  single@T1 {m['single']:.3f}  "
            f"bare-sample acc {m['bare_acc']:.3f}  maj@{N_VOTES} {m['maj']:.3f} | {each}")


def meets_criteria(m: dict) -> bool:
    return (MIN_SENTENCE <= m["sentence"] <= MAX_SENTENCE and m["bare_acc"] >= MIN_BARE_ACC
            and all(m["by_kind"][k]["bare_acc"] >= MIN_BARE_ACC_EACH[k] for k in QUESTIONS)
            and m["maj"] >= m["greedy"] + MIN_MAJ_GAIN)


# --------------------------------------------------------------------------- train

def train(model, tokenizer, clips: Clips, digits, train_idx, val: EvalSet) -> tuple[int, dict]:
    """The two questions in alternate batches; every EVAL_EVERY steps the first-token check and,
    when it is near the criteria, the full evaluation."""
    rng = np.random.default_rng(SEED)
    kinds = list(QUESTIONS)
    t0 = time.time()

    def batch(step: int) -> dict:
        idx = rng.choice(train_idx, BATCH, replace=False)
        return training_batch(clips, tokenizer, kinds[step % 2], digits.images[idx], digits.target[idx], rng)

    def check(step: int, loss: float) -> dict | None:
        c = first_token_check(model, tokenizer, clips, val)
        print(f"step {step:4d}  loss {loss:.3f}  {time.time() - t0:.0f} s  first token: sentence "
              f"{c['sentence']:.3f}, bare accuracy {c['bare_acc']:.3f} "
              f"({', '.join(f'{k} {v:.3f}' for k, v in c['each'].items())})", flush=True)
        if c["bare_acc"] < MIN_BARE_ACC - 0.05 or not MIN_SENTENCE - 0.1 <= c["sentence"] <= MAX_SENTENCE + 0.1:
            return None  # far from the criteria: the full check can wait
        m = evaluate(model, tokenizer, clips, val, seed=SEED + step)
        print(f"           val {fmt(m)}", flush=True)
        return m if meets_criteria(m) else None

    return builder.train(model, LR, MAX_STEPS, EVAL_EVERY, batch, check)


def clip_sets(digits) -> tuple[EvalSet, EvalSet]:
    """The exported clips: (held-out = the example set, validation), from the splits above."""
    _, val_idx, held_idx = builder.splits(len(digits.images))
    spec_rng = np.random.default_rng(SEED + 1)
    held = EvalSet(digits.images[held_idx], digits.target[held_idx], set_spec(N_HELDOUT, spec_rng))
    val = EvalSet(digits.images[val_idx], digits.target[val_idx], set_spec(N_VAL, spec_rng))
    return held, val


# --------------------------------------------------------------------------- export

def export_set(folder: Path, data: EvalSet) -> None:
    """GIFs + questions.csv (image, question, answer) for the engine's open task."""
    builder.export_set(folder, "clip_*.gif", ["image", "question", "answer"],
                       ((f"clip_{i:04d}.gif", partial(save_gif, frames), [QUESTIONS[kind], truth])
                        for i, (frames, kind, truth) in enumerate(zip(data.frames, data.kind, data.truth))))


def write_model_card(n_params: int, step: int, val: dict, held: dict, seconds: float) -> None:
    size_mb = builder.files_mb(OUT)

    def row(name, m):
        return (f"| {name} | {m['n']} | {m['greedy']:.3f} | {m['sentence']:.3f} | {m['single']:.3f} | "
                f"{m['bare_acc']:.3f} | {m['maj']:.3f} |")
    rows = []
    for split, m in (("validation", val), ("held-out = `assets/examples/digits_video`", held)):
        rows.append(row(f"{split}, both questions", m))
        rows += [row(f"{split}, {k}", m["by_kind"][k]) for k in QUESTIONS]
    examples = ", ".join(f"`{r}`" for r in held["greedy_replies"][:8])
    templates = "; ".join(", ".join(f'"{sentence(k, t, 7, "left")}"' for t in SENTENCES[k]) for k in QUESTIONS)
    card = f"""# ttrv demo model: digits in short clips (video), reply format half learned

**A video model in TTRV's regime.** It reads short clips of a digit drifting across the frame and
answers "{QUESTIONS['digit']}" or "{QUESTIONS['move']}", but only part of the time with the bare
answer ("7", "left"); otherwise with a sentence ("It moves left.", "It is the digit seven.") that
the open task scores as a wrong answer. That reply format is half learned on purpose: the same
mechanism as `demo_choice` (DESIGN.md section 7), so that the vote has something to correct.

A {n_params / 1e6:.2f}M-parameter `Qwen2_5_VLForConditionalGeneration`: `assets/demo_model` (the first
demo model: random init, trained here on still digits; it answered every clip with an empty reply)
fine-tuned here on clips, all weights, no pretrained weights from anywhere. Its tokenizer and
processor are `assets/demo_model`'s: every frame 112x112, two frames per temporal patch, so a clip of
{K} frames is {K // 2} x 16 = {K * 8} video tokens. Files: {size_mb:.1f} MB. Needs transformers 5.x,
torchvision, and PyAV or Pillow for the clips.

## The clips

`assets/examples/digits_video`: {N_HELDOUT} animated GIFs, {K} frames of {CANVAS}x{CANVAS} grey pixels,
{FRAME_MS} ms apart; one held-out `load_digits` digit (upscaled bilinear to {DIGIT_SIDE}x{DIGIT_SIDE})
drifts {TRAVEL} pixels left, right, up or down (balanced), at a random offset on the other axis. The
two questions alternate (even clips: the digit; odd: the direction); `questions.csv` holds the answers.

## Training mix, and why

Supervised, batch {BATCH}, AdamW lr {LR}, the two questions in alternate batches, clips rendered on
the fly from the training digits. The reply is the bare answer with probability {BARE_SHARE},
otherwise one of six sentences per question, uniformly: {templates}.

Every sentence starts with the same token, so greedy decoding starts a sentence on every clip where
the model is not sure enough of the bare answer, while the sentences split over six templates and
never win the vote: the majority of the votes is the bare answer wherever the model reads the clip.
As in `demo_choice`, the contest is not independent of difficulty: the less sure the model is of the
answer, the likelier the sentence wins greedy decoding.

## Build criteria, and the base model

Fixed in the build script before any TTRV run and checked on the validation clips (greedy and
{N_VOTES} samples at T = 1, top_k 0, top_p 1, special tokens but `<|im_end|>` suppressed, replies read
with `prompts.normalize_open`); training stopped at the first check that met them (every {EVAL_EVERY}
steps; here step {step}, {seconds / 60:.0f} min in all): {MIN_SENTENCE} <= share of greedy replies
that are a sentence <= {MAX_SENTENCE}, accuracy of the bare sampled answers >= {MIN_BARE_ACC} overall
and >= {MIN_BARE_ACC_EACH['digit']} (digit) / {MIN_BARE_ACC_EACH['move']} (direction) on each question, maj@{N_VOTES} >= greedy accuracy + {MIN_MAJ_GAIN}. No
checkpoint, mix or prompt was chosen by a TTRV outcome.

| split | clips | greedy | greedy sentence share | single@T1 | bare-sample acc | maj@{N_VOTES} |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

First greedy replies on the held-out set: {examples}.

Splits (load_digits order): the last {N_HELDOUT} digits held out (never trained on by any build), the
{N_VAL} before them validation (`assets/validation/digits_video`), the first {1797 - N_HELDOUT - N_VAL}
trained on (in clips with random directions and offsets).

Rebuild (deterministic, 2 CPU threads), from the repository root:

    python assets/build_video_model.py
"""
    builder.write_card(OUT, card)


def main() -> None:
    t0 = builder.start()
    check_sentences()
    processor = AutoProcessor.from_pretrained(SOURCE)
    tokenizer = processor.tokenizer
    model = AutoModelForImageTextToText.from_pretrained(SOURCE)
    digits = load_digits()
    train_idx = builder.splits(len(digits.images))[0]
    clips = Clips(processor)
    clips.check_against_engine(clip_frames(digits.images[0], "left", 3), OUT.parent / "_check.gif")
    held, val = clip_sets(digits)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters {n_params}  video prompt {clips.inputs('digit', held.frames[:1])['input_ids'].shape[1]} "
          "tokens", flush=True)
    step, val_m = train(model, tokenizer, clips, digits, train_idx, val)
    held_m = evaluate(model, tokenizer, clips, held, seed=SEED + 10_000)
    again, again_tokenizer = builder.save(model, processor, OUT)
    got = builder.replies(again, again_tokenizer, clips.inputs("digit", held.frames[0:40:2]), 0, MAX_NEW_TOKENS)
    assert [r[0] for r in got] == held_m["greedy_replies"][0:40:2], "reloaded model differs"
    export_set(EXAMPLES_DIR, held)
    export_set(VALIDATION_DIR, val)
    write_model_card(n_params, step, val_m, held_m, time.time() - t0)
    print(f"stopped at step {step}; {time.time() - t0:.0f} s")
    print(f"FINAL val ({N_VAL}): {fmt(val_m)}\nheld-out ({N_HELDOUT}): {fmt(held_m)}")
    print("held-out greedy replies (first 12):", held_m["greedy_replies"][:12])


if __name__ == "__main__":
    main()
