"""Naive vs shared-prefix TTRV work, side by side in one process.

For one image prompt, N votes and G trained answers:
  sample_generate   HF generate(num_return_sequences=N): what peers do
  sample_naive      our decode loop over N full prompt rows (eager decode step)
  sample_shared_eager   our decode loop, prompt prefilled once, KV cache shared, eager decode step
  sample_shared     the same with the default decode step (static cache + CUDA graph on CUDA)
  prefill_shared    the prompt's forward alone (to split sampling into prefill + ms per decoded token)
  sample_shared_generate   HF generate's loop over the same shared cache
  sample_shared_no_lora    sample_shared with the adapter switched off (the LoRA layers' cost)
  train_naive_gc    one GRPO update (reference pass + loss + backward + AdamW) on G full rows,
                    gradient checkpointing on (how peers fit in memory)
  train_naive       the same without checkpointing (may run out of memory)
  train_shared      the same update on the shared prefix: prompt + G answers packed in one row,
                    the image encoded once inside it (a fresh prompt each time: nothing cached)
  train_shared_mlp  train_shared with each layer's MLP recomputed in backward (recompute.py)
  train_shared_layers   train_shared with whole layers recomputed in backward
  train_shared_cache   the same through the prompt's KV cache replicated G times
  ttrv_step         engine step on one prompt: sample N + update on G (shared path)

usage: python bench/bench_step.py --size {demo,tiny,3b,7b} [--precision 4bit|bf16|fp32]
       [--n 32] [--g 16] [--tokens 16] [--side 448] [--repeats 3] [--out FILE]
Random weights in the real shapes for 3b/7b (no hub); `demo` is the bundled model.
Prints one JSON line per measurement (median of --repeats, after a warm-up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ttrv_core.config import TTRVConfig  # noqa: E402
from ttrv_core.demos import by_key  # noqa: E402

DEMO = by_key("open")  # "demo" here: the open-answer digits model every recorded number used
from ttrv_core.method.grpo import group_advantages, update  # noqa: E402
from ttrv_core.model.gradient_checkpointing import set_recompute  # noqa: E402
from ttrv_core.model.loading import load_policy
from ttrv_core.model.threads import set_threads_for  # noqa: E402
from ttrv_core.sampling.prompt import Prompt, prepare_prompt
from ttrv_core.sampling.rollout import sample  # noqa: E402

# Qwen2.5-VL public config shapes (as in shared/reference/prefix_probe.py)
SIZES = {
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=151936),
                 vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=64,
                             fullatt_block_indexes=[1]), mrope=[2, 3, 3], tie=False),
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           fullatt_block_indexes=[7, 15, 23, 31]), mrope=[16, 24, 24], tie=True),
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31]), mrope=[16, 24, 24], tie=False),
}


def emit(out, **kw):
    line = json.dumps(kw)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def build_checkpoint(size: str, side: int, dev: str) -> Path:
    """Random weights in real shapes + the locally trained tokenizer, saved once."""
    from tiny import demo_builder
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )
    path = Path(f"/tmp/ttrv_bench_{size}_{side}")
    if (path / "config.json").exists():
        return path
    b = demo_builder()
    tok = b.build_tokenizer()
    ids = b.special_ids(tok)
    s = SIZES[size]
    cfg = Qwen2_5_VLConfig(
        text_config=dict(s["text"], rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=s["mrope"]),
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(s["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s["tie"])
    with torch.device(dev):
        model = Qwen2_5_VLForConditionalGeneration(cfg).to(torch.bfloat16 if dev == "cuda" else torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    model.save_pretrained(path)
    px = dict(min_pixels=side * side, max_pixels=side * side, patch_size=14, merge_size=2, temporal_patch_size=2)
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**px), video_processor=Qwen2VLVideoProcessor(**px),
                        tokenizer=tok, chat_template=b.CHAT_TEMPLATE).save_pretrained(path)
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    return path


def lm_weight_bytes(policy) -> int:
    """Bytes a decode step must read at least once: the language model's weights as
    stored (4-bit packed where quantized) and the output head, not the input embedding."""
    lm, head = policy.base.get_decoder(), policy.base.get_output_embeddings().weight
    emb = lm.get_input_embeddings().weight
    n = sum(p.numel() * p.element_size() for p in lm.parameters() if p is not emb)
    return n + head.numel() * head.element_size()


def model_path(size: str, side: int, dev: torch.device) -> tuple[str, float]:
    """The checkpoint to load (the bundled demo model, or random weights in a real shape)
    and the seconds building it took."""
    t = time.perf_counter()
    path = DEMO.model if size == "demo" else str(build_checkpoint(size, side, dev.type))
    return path, time.perf_counter() - t


def bench_image(size: str, side: int):
    """The prompt's image and question: a digit for the demo model, else a noise image."""
    from PIL import Image
    if size == "demo":
        return Image.open(DEMO.example_dir / "digit_0000.png").convert("RGB"), "Which digit is shown in the image?"
    return Image.effect_noise((side, side), 60).convert("RGB"), "Look at the given image and identify what it shows."


class Meter:
    def __init__(self, dev: torch.device, repeats: int, out: str | None, tag: dict):
        self.dev, self.repeats, self.out, self.tag = dev, repeats, out, tag

    def __call__(self, name: str, fn, **extra):
        cuda = self.dev.type == "cuda"
        try:
            fn()  # warm-up
            times, peak = [], None
            for _ in range(self.repeats):
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
                if cuda:
                    peak = max(peak or 0, torch.cuda.max_memory_allocated() / 2**30)
            emit(self.out, what=name, s=round(statistics.median(times), 4), runs=[round(x, 4) for x in times],
                 peak_gib=None if peak is None else round(peak, 2), **self.tag, **extra)
            return statistics.median(times)
        except torch.OutOfMemoryError:
            if cuda:
                torch.cuda.empty_cache()
            emit(self.out, what=name, error="out of memory", **self.tag, **extra)
            return None


def kept_decoder(policy, prompt, update_once, a, gen, dev, tag) -> None:
    """Issue 16 item 3: sample, update, sample again, with the static decoder freed before the
    update (keep=False) and kept through it (keep=True), alternating, `a.repeats` rounds. The next
    sampling call's time (on CUDA: records the graph again, or replays the kept one) and the
    update's peak memory (on CUDA) with and without the decoder held."""
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    draw = lambda: sample(policy, prompt, a.n, max_new_tokens=a.tokens, generator=gen, shared=True,  # noqa: E731
                          decode="static")  # the CUDA default; on a CPU the static cache without a graph
    rows = {False: [], True: []}
    for _ in range(a.repeats):
        for keep in (False, True):
            policy.decoders.release()
            policy.decoders.keep = keep
            draw()
            policy.decoders.end_sampling()
            kept_mib = policy.decoders.kept_bytes / 2**20
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            update_once()
            sync()
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            t = time.perf_counter()
            draw()
            sync()
            rows[keep].append((time.perf_counter() - t, peak, kept_mib))
    policy.decoders.release()
    policy.decoders.keep = None
    for keep, rs in rows.items():
        peaks = [r[1] for r in rs if r[1] is not None]
        emit(a.out, what="next_sample_kept" if keep else "next_sample_freed",
             s=round(statistics.median(r[0] for r in rs), 4), runs=[round(r[0], 4) for r in rs],
             update_peak_gib=round(max(peaks), 3) if peaks else None, kept_mib=round(rs[-1][2], 1), **tag)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="demo", choices=["demo", *SIZES])
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--g", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated measurements to skip")
    ap.add_argument("--out")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    path, t_build = model_path(a.size, a.side, dev)
    t = time.perf_counter()
    policy = load_policy(path, a.precision, str(dev), lora_r=16, lora_alpha=32)
    set_threads_for(policy)  # process-wide, as the CLI does: one thread for the demo model
    t_load = time.perf_counter() - t
    tag = dict(size=a.size, precision=a.precision, device=torch.cuda.get_device_name() if dev.type == "cuda" else
               "cpu", N=a.n, G=a.g, L=a.tokens)
    if dev.type == "cuda":
        tag["load_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    emit(a.out, what="load", build_s=round(t_build, 1), load_s=round(t_load, 1),
         params=sum(p.numel() for p in policy.base.parameters()), **tag)

    image, text = bench_image(a.size, a.side)
    from ttrv_core.tasks.prompts import build_prompt
    prompt = prepare_prompt(policy, image, build_prompt("open", text))
    tag["prompt_tokens"] = prompt.length
    m = Meter(dev, a.repeats, a.out, tag)
    gen = torch.Generator(device=dev).manual_seed(0)

    def gen_naive():
        with torch.no_grad():
            policy.model.generate(**prompt.inputs, do_sample=True, num_return_sequences=a.n, max_new_tokens=a.tokens,
                                  temperature=1.0, top_k=0, top_p=1.0)

    # the default decode step (a CUDA graph on CUDA) against the eager one: greedy rows, same prompt
    ro = {mode: sample(policy, prompt, 4, max_new_tokens=a.tokens, greedy_rows=4, decode=mode)
          for mode in ("eager", "auto")}
    te, ta = ro["eager"].tokens, ro["auto"].tokens
    same = (te == ta).all(0)                                        # per step, over the 4 greedy rows
    first = int((~same).nonzero()[0]) if not bool(same.all()) else None
    upto = slice(None) if first is None else slice(0, first + 1)   # up to and with the first divergence
    emit(a.out, what="decode_check", same_tokens=te.tolist() == ta.tolist(), first_divergent_step=first,
         max_logprob_diff=float((ro["eager"].logprobs - ro["auto"].logprobs).abs().max()),
         max_logprob_diff_until_divergence=float((ro["eager"].logprobs[:, upto] - ro["auto"].logprobs[:, upto])
                                                 .abs().max()),
         graph_failed=policy.decoders.no_graph, static_failed=policy.decoders.no_static, **tag)

    if "sample_generate" not in skip:
        m("sample_generate", gen_naive)
    if "sample_naive" not in skip:
        m("sample_naive", lambda: sample(policy, prompt, a.n, max_new_tokens=a.tokens, generator=gen, shared=False,
                                         decode="eager"))
    from ttrv_core.sampling.rollout import prefill
    with torch.no_grad():
        t_prefill = m("prefill_shared", lambda: prefill(policy, prompt, a.n, shared=True))
    floor_ms = lm_weight_bytes(policy) / 3.35e12 * 1e3 if dev.type == "cuda" else None  # H100 SXM HBM3
    for name, mode in (("sample_shared_eager", "eager"), ("sample_shared", "auto")):
        if name in skip:
            continue
        s = m(name, lambda mode=mode: sample(policy, prompt, a.n, max_new_tokens=a.tokens, generator=gen,
                                             shared=True, decode=mode))
        if s is not None and t_prefill is not None:  # every row decodes all L tokens with random weights
            emit(a.out, what=f"{name}_ms_per_token", ms=round((s - t_prefill) / (a.tokens - 1) * 1e3, 2),
                 floor_ms=None if floor_ms is None else round(floor_ms, 3), **tag)

    def shared_generate():
        """HF generate's own loop over the shared prefix (as shared/reference/prefix_probe.py does)."""
        from ttrv_core.sampling.rollout import prefill
        with torch.no_grad():
            ids = prompt.inputs["input_ids"]
            _, cache = prefill(policy, Prompt(
                {k: (v[:, :-1] if k in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
                     else v) for k, v in prompt.inputs.items()},
                prompt.positions[..., :-1], prompt.next_position), a.n, shared=True)
            cache.batch_repeat_interleave(a.n)
            full = ids.repeat(a.n, 1)
            extra = {k: v.repeat(a.n, *([1] * (v.dim() - 1))) for k, v in prompt.inputs.items()
                     if k in ("image_grid_thw", "mm_token_type_ids")}
            policy.model.generate(input_ids=full, attention_mask=torch.ones_like(full), past_key_values=cache,
                                  do_sample=True, max_new_tokens=a.tokens, temperature=1.0, top_k=0, top_p=1.0,
                                  **extra)

    if "sample_shared_generate" not in skip:
        m("sample_shared_generate", shared_generate)
    def switched(name, on, off):
        """sample_shared with the model changed: the kept decode graph was captured before, so it goes."""
        def run():
            policy.decoders.release()
            on()
            try:
                sample(policy, prompt, a.n, max_new_tokens=a.tokens, generator=gen, shared=True)
            finally:
                off()
                policy.decoders.release()
        m(name, run)

    if "sample_shared_no_lora" not in skip:  # what the LoRA layers cost per decoded token
        ctx = []
        switched("sample_shared_no_lora", lambda: ctx.append(policy.adapter_off()) or ctx[-1].__enter__(),
                 lambda: ctx.pop().__exit__(None, None, None))

    ro = sample(policy, prompt, a.n, max_new_tokens=a.tokens, generator=gen).take(a.g)
    policy.decoders.release()  # the end of sampling, as the engine does: training needs the memory
    tag["answer_tokens"] = int(ro.mask.sum())
    adv = group_advantages(torch.linspace(0, 1, a.g, device=dev))
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-5)

    def upd(shared):  # a fresh prompt each time: the update encodes the image itself, as a step's first use would
        return lambda: update(policy, opt, replace(prompt, _images=None), ro.tokens, ro.mask, ro.logprobs, adv,
                              temperature=1.0, eps_clip=0.2, dual_clip=3.0, beta=0.001, grad_clip=1.0, shared=shared)

    m("train_shared", upd(True))
    if "kept_decoder" not in skip:
        kept_decoder(policy, prompt, upd(True), a, gen, dev, tag)
    for mode in ("mlp", "layers"):  # gradient checkpointing of the packed row (recompute.py)
        if f"train_shared_{mode}" not in skip:
            set_recompute(policy, mode)
            m(f"train_shared_{mode}", upd(True))
            set_recompute(policy, "off")
    if "train_shared_cache" not in skip:  # the shared prefix through a G-fold replicated KV cache
        policy.pack_answers = False
        m("train_shared_cache", upd(True))
        policy.pack_answers = True
    if "train_naive_gc" not in skip:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.model.enable_input_require_grads()
        m("train_naive_gc", upd(False))
        policy.model.gradient_checkpointing_disable()
    if "train_naive" not in skip:
        m("train_naive", upd(False))

    from ttrv_core.inputs.dataset import Item
    from ttrv_core.method.step import train_step
    tmp = Path("/tmp/ttrv_bench_img.png")
    image.save(tmp)
    item = Item("bench.png", tmp, text)
    cfg = TTRVConfig(model=path, n_votes=a.n, n_train=a.g, max_new_tokens=a.tokens, prompts_per_step=1)
    m("ttrv_step", lambda: train_step(1, 1, [item], policy, opt, cfg, gen=gen))


if __name__ == "__main__":
    main()
