"""Our TTRV step vs TRL's GRPOTrainer, side by side in one process.

Same model (checkpoint, precision, LoRA r16 / alpha 32 on the language model's
projections only), same image prompt, same reward (ttrv over the group, i.e.
the frequency reward), G = 16 trained answers of up to 16 tokens, beta 0.001,
the same learning rate and weight decay. Measured, in this order:

  ours_shared        step.train_step on one prompt: sample N votes, update on the first G (shared prefix)
  ours_shared_n=g    the same with N = G (like for like with TRL, which samples only the G it trains on)
  ours_naive         step.train_step with shared_prefix off (N full rows sampled, G full rows trained)
  ours_naive_n=g     the same with N = G
  trl                one optimizer step of TRL GRPOTrainer.train() (one prompt x G completions)

Seconds are the median of --repeats steps after one warm-up step (ours) or of
the steps after --warmup steps of trainer.train() (TRL, timed by a
TrainerCallback from on_step_begin to on_step_end: generation, reward,
reference pass, forward/backward, clip, optimizer step; the data loader's fetch
of the row happens just before and is not counted). On CUDA the peak is
torch.cuda.max_memory_allocated over the timed steps, reset before each step;
our policy is freed before TRL's model is loaded, so each peak holds one model.

How TRL is set up (its defaults unless said): GRPOConfig(num_generations=G,
per_device_train_batch_size=G, gradient_accumulation_steps=1) so one step is
one prompt x G completions; max_completion_length=16, temperature 1.0,
beta=0.001, learning_rate and weight_decay as ours, gradient checkpointing on
(TRL's default), bf16 autocast on CUDA / fp32 on CPU, no vLLM, logging and
saving off. The base model is loaded exactly as load_policy loads it (same
4-bit config) and handed to TRL with a peft LoraConfig on the same targets.
Differences that remain, all TRL's own behaviour:
1. TRL samples G answers and trains on them; TTRV samples N = 32 votes and
   trains on the first G = 16 (rewards over all 32). ours_*_n=g is the like
   for like row.
2. TRL feeds G copies of the prompt: the vision tower encodes the image G
   times and the prompt is prefilled G times, in generate and again in the
   reference and training forwards, with gradient checkpointing. ours_naive
   has the same shape of work (full rows, N in sampling, G in training) without
   checkpointing; ours_shared encodes and prefills the prompt once per pass.
3. TRL's loss is its default ("dapo": token-level, no dual clip) and it casts
   the LoRA weights of a 4-bit model to bf16; ours keeps them in fp32.
4. Sampling: TRL is given the tokens our sampler suppresses (special tokens but
   EOS, vocabulary rows past the tokenizer) as generation suppress_tokens, so
   both sample from the same distribution; TRL's own default suppresses only
   the image token, and with random weights it would sample ids past the
   tokenizer that ours never samples. (With random weights every answer
   differs, the rewards are equal and the advantages zero; neither side skips
   any work for that.)

usage: python bench/bench_trl.py --size {demo,tiny,3b,7b} [--precision auto|4bit|bf16|fp32]
       [--n 32] [--g 16] [--tokens 16] [--side 448] [--repeats 3] [--warmup 2] [--skip a,b] [--out FILE]
Needs trl==1.16.0 (bench/requirements.txt). Prints one JSON line per measurement and a summary.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench_step puts the repository root on sys.path
from bench_step import SIZES, Meter, bench_image, emit, model_path

from ttrv_core.config import TTRVConfig
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.step import train_step
from ttrv_core.method.rewards import compute_rewards
from ttrv_core.model.gradient_checkpointing import set_recompute
from ttrv_core.model.load_checks import check_config
from ttrv_core.model.loading import _load_kwargs, load_policy, resolve_precision
from ttrv_core.model.threads import set_threads_for
from ttrv_core.tasks.answers import extract_answer


def measure_ours(policy, item: Item, cfg: TTRVConfig, m: Meter, skip: set[str]) -> dict[str, float | None]:
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=policy.device).manual_seed(cfg.seed)
    out = {}
    for name, n, shared, ckpt in (("ours_shared", cfg.n_votes, True, "off"),
                                  ("ours_shared_n=g", cfg.n_train, True, "off"),
                                  ("ours_shared_mlp", cfg.n_votes, True, "mlp"),
                                  ("ours_shared_mlp_n=g", cfg.n_train, True, "mlp"),
                                  ("ours_shared_gc", cfg.n_votes, True, "layers"),
                                  ("ours_naive", cfg.n_votes, False, "off"),
                                  ("ours_naive_n=g", cfg.n_train, False, "off")):
        if name in skip or (name.endswith("n=g") and cfg.n_votes == cfg.n_train):
            continue
        c = cfg.with_(n_votes=n, shared_prefix=shared, gradient_checkpointing=ckpt)
        set_recompute(policy, ckpt)  # as engine.adapt does
        out[name] = m(name, lambda c=c: train_step(1, 1, [item], policy, opt, c, gen=gen), N=n)
    set_recompute(policy, "off")
    return out


def trl_reward(item: Item, cfg: TTRVConfig, lengths: list[float]):
    """Our reward (cfg.reward over the group) in TRL's reward-function form; appends each
    call's mean completion length (tokens, EOS included) to `lengths`."""
    def ttrv_reward(completions, completion_ids, **_):
        lengths.append(sum(map(len, completion_ids)) / len(completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        votes = [extract_answer(item.task, t, item.options) for t in texts]
        if len(votes) != cfg.n_train:  # one call must hold exactly one prompt's group
            raise RuntimeError(f"reward got {len(votes)} completions, expected one group of {cfg.n_train}")
        return compute_rewards(cfg.reward, votes, cfg.alpha)[0]
    return ttrv_reward


def measure_trl(path: str, prec: str, dev: torch.device, image, item: Item, cfg: TTRVConfig,
                suppress: list[int], steps: int, warmup: int, tag: dict, out: str | None) -> float | None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cuda = dev.type == "cuda"

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.peaks = [], []

        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
                self.peaks.append(torch.cuda.max_memory_allocated() / 2**30)
            self.times.append(time.perf_counter() - self.t)

    family = check_config(path, False)
    resident = round(torch.cuda.memory_allocated() / 2**30, 2) if cuda else None  # left over from ours: ~0
    t = time.perf_counter()
    base = AutoModelForImageTextToText.from_pretrained(path, **_load_kwargs(family, prec, dev))  # as load_policy
    if prec != "4bit":
        base.to(dev)
    processor = AutoProcessor.from_pretrained(path)
    t_load = time.perf_counter() - t
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": item.prompt}], "image": image}] * steps)
    timer, lengths = StepTimer(), []
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="ttrv_bench_trl_"), max_steps=steps, seed=cfg.seed,
        num_generations=cfg.n_train, per_device_train_batch_size=cfg.n_train, gradient_accumulation_steps=1,
        max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        beta=cfg.beta, epsilon=cfg.eps_clip, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.grad_clip, bf16=cuda, use_vllm=False,
        generation_kwargs={"suppress_tokens": suppress},
        logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = GRPOTrainer(
        model=base, reward_funcs=trl_reward(item, cfg, lengths), args=args, train_dataset=ds,
        processing_class=processor, callbacks=[timer],
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=family.lora_targets))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    try:
        trainer.train()
    except torch.OutOfMemoryError:
        emit(out, what="trl", error="out of memory", steps_done=len(timer.times), **tag)
        return None
    timed, peaks = timer.times[warmup:] or timer.times, timer.peaks[warmup:] or timer.peaks
    emit(out, what="trl", s=round(statistics.median(timed), 4), runs=[round(x, 4) for x in timer.times],
         warmup_steps=warmup, peak_gib=round(max(peaks), 2) if cuda else None,
         load_s=round(t_load, 1), resident_before_load_gib=resident, trainable_params=trainable,
         gradient_checkpointing=args.gradient_checkpointing, loss_type=args.loss_type,
         completion_mean_length=[round(x, 1) for x in lengths], **tag, N=cfg.n_train)
    return statistics.median(timed)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="demo", choices=["demo", *SIZES])
    ap.add_argument("--precision", default="auto", help="auto: 4-bit NF4 on CUDA, fp32 on CPU")
    ap.add_argument("--n", type=int, default=32, help="N votes sampled by our step")
    ap.add_argument("--g", type=int, default=16, help="G answers trained (TRL: num_generations)")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--repeats", type=int, default=3, help="timed steps of ours, after one warm-up")
    ap.add_argument("--warmup", type=int, default=2,
                    help="TRL steps not timed; trainer.train() runs warmup + repeats steps")
    ap.add_argument("--skip", default="", help="comma-separated: ours_shared, ours_shared_n=g, ours_naive, "
                                               "ours_naive_n=g, trl")
    ap.add_argument("--out")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    path, t_build = model_path(a.size, a.side, dev)
    prec = resolve_precision(a.precision, dev)
    policy = load_policy(path, prec, str(dev), lora_r=16, lora_alpha=32)
    set_threads_for(policy)  # process-wide, as the CLI does: one thread for the demo model
    tag = {"size": a.size, "precision": prec, "G": a.g, "L": a.tokens, "threads": torch.get_num_threads(),
           "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}
    emit(a.out, what="load", build_s=round(t_build, 1), params=sum(p.numel() for p in policy.base.parameters()),
         trainable_params=sum(p.numel() for p in policy.model.parameters() if p.requires_grad),
         torch=torch.__version__, transformers=transformers.__version__, **tag)

    image, text = bench_image(a.size, a.side)
    tmp = Path(tempfile.mkdtemp(prefix="ttrv_bench_trl_")) / "bench.png"
    image.save(tmp)
    item = Item("bench.png", tmp, text)
    cfg = TTRVConfig(model=path, n_votes=a.n, n_train=a.g, max_new_tokens=a.tokens, prompts_per_step=1)
    times = measure_ours(policy, item, cfg, Meter(dev, a.repeats, a.out, tag), skip)

    suppress = policy.suppress.nonzero().flatten().tolist()
    del policy
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    if "trl" not in skip:
        times["trl"] = measure_trl(path, prec, dev, image, item, cfg, suppress, a.warmup + a.repeats,
                                   a.warmup, tag, a.out)

    trl = times.get("trl")
    ratios = {f"trl/{k}": round(trl / v, 2) for k, v in times.items() if k != "trl" and v and trl}
    if times.get("ours_naive") and times.get("ours_shared"):
        ratios["ours_naive/ours_shared"] = round(times["ours_naive"] / times["ours_shared"], 2)
    emit(a.out, what="summary", s={k: None if v is None else round(v, 4) for k, v in times.items()},
         ratios=ratios, **tag)


if __name__ == "__main__":
    main()
