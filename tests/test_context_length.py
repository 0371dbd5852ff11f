"""A prompt is never longer than the model's context (its text config's max_position_embeddings) less
the answer's max_new_tokens (prompt_cache.Prompts):
  - a video is read at fewer frames, the most that fit, and a note says so, once per item;
  - an image, or a video too long at one frame, is left out of the run with a Problem naming the
    file, the prompt's length and the limit; the run goes on with the other items, to its end.
LLaVA-shaped tiny model: 17 tokens a frame, so 64 frames (1,123 tokens) are over its 1,024, as 8 frames
of 576 image tokens are over LLaVA-1.5's 4,096. A copy of a tiny model with a smaller limit stands
for a short context.
"""
import json
import shutil

import pytest
import video_files
from PIL import Image

from ttrv_core.config import TTRVConfig
from ttrv_core.events import EvalResult, RunEnd, StepEvent
from ttrv_core.inputs.dataset import Item
from ttrv_core.method.engine import adapt
from ttrv_core.model.loading import load_policy
from ttrv_core.sampling.prompt import prepare_prompt
from ttrv_core.sampling.prompt_cache import Dropped, Prompts, context_length

pytestmark = pytest.mark.usefixtures("one_thread")


def limited(folder, to, limit: int):
    """A copy of a tiny model whose language model takes `limit` tokens."""
    shutil.copytree(folder, to)
    cfg = json.loads((to / "config.json").read_text())
    cfg["text_config"]["max_position_embeddings"] = limit
    (to / "config.json").write_text(json.dumps(cfg))
    return to


@pytest.fixture
def clip(tmp_path):
    return Item("clip.webm", video_files.clip(tmp_path / "clip.webm", n=80, codec="libvpx-vp9"), "What happens?")


def test_many_frames_are_cut_to_the_most_that_fit(tiny_models, clip):
    pol = load_policy(str(tiny_models["llava"]), "fp32", "cpu")
    assert context_length(pol) == 1024
    one, two = (prepare_prompt(pol, clip.image(k), clip.prompt).length for k in (1, 2))
    per_frame, text = two - one, 2 * one - two          # 17 image tokens a frame, 35 others
    most = (1024 - 4 - text) // per_frame                # 57 frames
    prompts = Prompts(pol, 64, max_new_tokens=4)
    p = prompts(clip)
    assert p.length == prepare_prompt(pol, clip.image(most), clip.prompt).length == text + per_frame * most
    assert prepare_prompt(pol, clip.image(most + 1), clip.prompt).length + 4 > 1024     # one more would not fit
    assert [str(x) for x in prompts.problems] == [
        f"clip.webm: at 64 frames its prompt is {text + 64 * per_frame:,} tokens and its answer up to 4 more: over "
        f"the model's context of 1,024 tokens; read at {most} frames instead ({p.length:,} tokens)"]
    assert most == 57 and p.length == 1004
    prompts.clear()
    assert prompts(clip).length == p.length and len(prompts.problems) == 1      # said once
    assert Prompts(pol, 32, max_new_tokens=4)(clip).length == text + 32 * per_frame   # 32 frames fit: as asked


def test_a_video_in_temporal_patches_is_cut_too(tiny_models, tmp_path, clip):
    """Qwen2.5-VL takes a video as patches of 2 frames (20 tokens each here): 8 frames in a context of 80
    with 4 answer tokens: 4 frames (2 patches); 5 would make 3 patches, too many."""
    pol = load_policy(str(limited(tiny_models["qwen2_5_vl"], tmp_path / "short", 80)), "fp32", "cpu")
    at = {k: prepare_prompt(pol, clip.image(k), clip.prompt).length for k in (4, 5, 8)}
    assert at[4] + 4 <= 80 < at[5] + 4
    prompts = Prompts(pol, 8, max_new_tokens=4)
    assert prompts(clip).length == at[4]
    assert [str(x) for x in prompts.problems] == [
        f"clip.webm: at 8 frames its prompt is {at[8]} tokens and its answer up to 4 more: over the model's "
        f"context of 80 tokens; read at 4 frames instead ({at[4]} tokens)"]


def test_a_prompt_over_the_context_is_left_out_and_the_run_goes_on(tiny_models, tmp_path, clip):
    """A context of 60 tokens, 4 for the answer: a video fits at 1 frame, an image with a short question
    fits, one with a long question does not: it is refused, named, and the others run to the end."""
    pol = load_policy(str(limited(tiny_models["llava"], tmp_path / "short", 60)), "fp32", "cpu", lora_r=4,
                      lora_alpha=8)
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "long.png")
    long = "Which colour fills this picture from one edge to the other? Answer with one word, the colour's name."
    items = [clip, Item("long.png", tmp_path / "long.png", long), Item("red.png", tmp_path / "red.png", "What is it?")]
    length = {it.id: prepare_prompt(pol, it.image(1), it.prompt).length for it in items}
    at8 = prepare_prompt(pol, clip.image(8), clip.prompt).length
    assert length["clip.webm"] + 4 <= 60 and length["red.png"] + 4 <= 60 < length["long.png"] + 4
    with pytest.raises(Dropped, match=f"long.png: its prompt is {length['long.png']} tokens"):
        Prompts(pol, 8, max_new_tokens=4)(items[1])
    cfg = TTRVConfig(model="x", n_votes=4, n_train=2, max_new_tokens=4, prompts_per_step=1, max_steps=3,
                     eval_batch=2, seed=1)
    events = list(adapt(cfg, pol, items))
    end = events[-1]
    assert isinstance(end, RunEnd) and not end.stopped
    assert end.problems == [
        f"clip.webm: at 8 frames its prompt is {at8} tokens and its answer up to 4 more: over the model's context "
        f"of 60 tokens; read at 1 frame instead ({length['clip.webm']} tokens)",
        f"long.png: its prompt is {length['long.png']} tokens and its answer up to 4 more: over the model's "
        "context of 60 tokens; left out of the run"]
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert [e.phase for e in evals] == ["before", "after"]
    assert all([x.item_id for x in e.items] == ["clip.webm", "red.png"] for e in evals)
    steps = [e for e in events if isinstance(e, StepEvent)]   # 3 steps of one item each: long.png's is skipped
    assert len(steps) == 2 and {s.items[0].item_id for s in steps} == {"clip.webm", "red.png"}
