"""Video items: read with PyAV (Pillow for GIF), K frames sampled uniformly, through the
one data path; capped clips still run; the setting K and its public cap; a refusal for a family that
takes neither video nor several images; one short CLI run on the demo model with a video beside an image.
The data check reads the frames the run will read; a file that fails only when the run reads it (another
count of frames, or changed on disk since the check) is left out of the run, named, and the run goes on.
Bad video files are in test_bad_inputs.py; shared-prefix exactness on video prompts in test_shared_prefix.py.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import video_files
from PIL import Image

from ttrv_core.app.image_table import thumbnail
from ttrv_core.config import TTRVConfig
from ttrv_core.inputs import video
from ttrv_core.inputs.dataset import load_dataset
from ttrv_core.inputs.video import Video, first_frame, load_video, sample_times
from ttrv_core.sampling.model_inputs import VideoRefused, encode


@pytest.mark.parametrize("name,codec", [("a.mp4", "mpeg4"), ("a.mov", "libx264"), ("a.webm", "libvpx-vp9"),
                                        ("a.mkv", "mpeg4")])
def test_formats_give_k_uniform_frames(tmp_path, name, codec):
    """12 frames at 4 fps, frame i grey 20 i: K = 4 samples at the middles of 4 slices of 3 s."""
    p = video_files.clip(tmp_path / name, n=12, fps=4, codec=codec)
    v = load_video(p, 4)
    assert v.duration == pytest.approx(3.0) and v.times == pytest.approx((0.5, 1.25, 2.0, 2.75))
    greys = [f.getpixel((0, 0))[0] for f in v.frames]  # frames 2, 5, 8, 11: lossy codecs, within a few levels
    assert all(abs(g - 20 * i) <= 4 for g, i in zip(greys, (2, 5, 8, 11))), greys
    assert all(f.mode == "RGB" and f.size == (32, 24) for f in v.frames)
    assert first_frame(p).getpixel((0, 0))[0] <= 4


def test_animated_gif_by_frame_durations(tmp_path):
    p = tmp_path / "a.gif"
    p.write_bytes(video_files.gif_bytes(n=6))  # 6 frames x 100 ms, frame i red 40 i
    v = load_video(p, 3)
    assert v.duration == pytest.approx(0.6) and v.times == pytest.approx((0.0, 0.2, 0.5))
    assert [f.getpixel((0, 0))[0] for f in v.frames] == [0, 80, 200]
    assert first_frame(p).getpixel((0, 0)) == (0, 0, 0)


def test_k_is_capped_and_set_by_the_config():
    assert sample_times(10.0, 5) == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert TTRVConfig().video_frames == video.FRAMES == 8
    for bad in (0, video.MAX_FRAMES + 1):
        with pytest.raises(ValueError, match="video_frames must be 1 to"):
            TTRVConfig(video_frames=bad)


def test_public_space_caps_the_frames():
    from ttrv_core.app import model_menu
    from ttrv_core.app.sessions import CAPS, public_refusal
    model = sorted(model_menu.allowed())[0]
    assert public_refusal(model, TTRVConfig(video_frames=CAPS["video_frames"]), 8, None, model_menu.allowed()) is None
    said = public_refusal(model, TTRVConfig(video_frames=CAPS["video_frames"] + 1), 8, None, model_menu.allowed())
    assert said == f"this public Space allows video_frames up to {CAPS['video_frames']}, got {CAPS['video_frames'] + 1}"


def test_a_long_clip_is_capped_with_a_note_and_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "MAX_SECONDS", 2.0)
    d = tmp_path / "clips"
    video_files.clip(d / "long.mp4", n=20, fps=2)  # 10 s
    ds = load_dataset(d, question="What happens?")
    assert [i.id for i in ds.items] == ["long.mp4"]
    assert [str(p) for p in ds.problems] == [
        "long.mp4: the clip is 10 s long; its frames are sampled from the first 2 s only"]
    v = ds.items[0].image(4)
    assert v.duration == pytest.approx(10.0) and max(v.times) <= 2.0  # frames at or after 0.25, 0.75, ... s


def test_videos_and_images_in_one_folder(tmp_path):
    d = tmp_path / "mix"
    video_files.clip(d / "clip.mp4", n=8)
    (d / "anim.gif").write_bytes(video_files.gif_bytes())
    Image.new("RGB", (8, 8), "red").save(d / "still.gif")  # one frame: an image
    Image.new("RGB", (8, 8), "blue").save(d / "photo.png")
    ds = load_dataset(d, question="What is it?")
    assert ds.problems == []
    kinds = {i.id: i.video for i in ds.items}
    assert kinds == {"anim.gif": True, "clip.mp4": True, "photo.png": False, "still.gif": False}
    clip = next(i for i in ds.items if i.id == "clip.mp4")
    assert isinstance(clip.image(3), Video) and len(clip.image(3).frames) == 3
    assert thumbnail(clip).startswith('<img src="data:image/png;base64,')


def test_uploads_and_zips_take_videos(tmp_path):
    """Videos uploaded as files or inside a zip reach the dataset; the upload box lists their types."""
    import zipfile

    from ttrv_core.app import form_fields
    from ttrv_core.inputs import collect, load
    clip = video_files.clip(tmp_path / "up" / "a.mp4", n=4)
    with zipfile.ZipFile(tmp_path / "up" / "more.zip", "w") as z:
        z.writestr("set/b.webm", video_files.clip_bytes(".webm", n=4, codec="libvpx-vp9"))
    got = collect([clip, tmp_path / "up" / "more.zip"], tmp_path / "work")
    ds = load(got, "What happens?").dataset
    assert ds.problems == [] and sorted(i.id for i in ds.items) == ["a.mp4", "set/b.webm"]
    assert all(i.video for i in ds.items)
    assert {"video", ".mp4", ".webm", ".mov"} <= set(form_fields.UPLOAD_TYPES)


def test_video_times_stay_fp32_in_a_bf16_model(tiny_models):
    """Qwen2.5-VL's seconds per temporal patch scale the video's positions: not cast to bf16 with the pixels."""
    import torch

    from ttrv_core.model.loading import load_policy
    from ttrv_core.sampling.prompt import prepare_prompt
    pol = load_policy(str(tiny_models["qwen2_5_vl"]), precision="bf16", device="cpu")
    frames = tuple(Image.new("RGB", (56, 56), (30 * i, 0, 0)) for i in range(4))
    p = prepare_prompt(pol, Video(frames, (0.0, 1 / 3, 2 / 3, 1.0), 4 / 3), "What happens?")
    assert p.inputs["pixel_values_videos"].dtype == torch.bfloat16
    assert p.inputs["second_per_grid_ts"].dtype == torch.float32
    assert p.positions.shape[0] == 3 and p.next_position < p.inputs["input_ids"].shape[1]  # 3D: video tokens share t


def test_qwen3_vl_videos_take_the_reference_per_frame_cap_without_a_warning(tiny_models):
    """transformers' Qwen3-VL video processor leaves frames uncapped and warns unless told: the load tells it
    to cap them as the reference (qwen-vl-utils) does. A fresh process: the warning is printed once a process."""
    import subprocess
    import sys
    code = ("from PIL import Image\nfrom ttrv_core.model.loading import load_policy\n"
            "from ttrv_core.sampling.prompt import prepare_prompt\nfrom ttrv_core.inputs.video import Video\n"
            f"pol = load_policy({str(tiny_models['qwen3_vl'])!r}, precision='fp32', device='cpu')\n"
            "frames = tuple(Image.new('RGB', (56, 56), (30 * i, 0, 0)) for i in range(4))\n"
            "p = prepare_prompt(pol, Video(frames, (0.0, 1 / 3, 2 / 3, 1.0), 4 / 3), 'What happens?')\n"
            "print('CAP', pol.processor.video_processor.cap_pixels_per_frame, 'pixel_values_videos' in p.inputs)\n")
    got = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert "CAP True True" in got.stdout, got.stderr[-2000:]
    assert "cap_pixels_per_frame" not in got.stderr

def test_a_family_that_takes_no_video_is_refused_with_a_message():
    v = Video((Image.new("RGB", (8, 8)),) * 2, (0.0, 0.5), 1.0)
    with pytest.raises(VideoRefused, match="takes neither videos nor several images"):
        encode(None, v, "What?", video_as="")


def test_cli_runs_a_video_beside_an_image(tmp_path, capsys):
    """The demo model (a Qwen2.5-VL) takes the clip as a video: one short run, both items evaluated."""
    from ttrv_core.cli import main
    d = tmp_path / "set"
    video_files.clip(d / "clip.webm", n=8, codec="libvpx-vp9", size=(56, 56))
    Image.new("RGB", (56, 56), "white").save(d / "still.png")
    (d / "broken.mov").write_bytes(b"not a video")
    out = tmp_path / "run"
    rc = main(["--images", str(d), "--question", "Which digit is shown in the image?", "--out", str(out),
               "--steps", "1", "--votes", "4", "--train", "2", "--prompts-per-step", "2", "--eval-votes", "2",
               "--max-new-tokens", "2", "--video-frames", "4"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "broken.mov: cannot read video: not a video file" in err
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        assert {r["item"] for r in csv.DictReader(f)} == {"clip.webm", "still.png"}


TRUNCATED = ("cannot read video: the file is truncated (its frames end before its stated duration: an incomplete "
             "download or copy?)")


@pytest.fixture
def cut_clip(tmp_path):
    """A VP9 .webm of 400 frames at 4 fps cut to 95% of its bytes: it gives 8 frames, not 16."""
    whole = video_files.clip(tmp_path / "whole.webm", n=400, fps=4, codec="libvpx-vp9")
    return video_files.cut(whole, 0.95, tmp_path / "set" / "cut.webm")


def test_the_data_check_reads_the_frames_the_run_will_read(cut_clip):
    from ttrv_core.inputs import collect, load
    d = cut_clip.parent
    assert [i.id for i in load_dataset(d, "What happens?").items] == ["cut.webm"]   # 8 frames: it reads
    for ds in (load_dataset(d, "What happens?", frames=16), load(collect(d, d), "What happens?", frames=16).dataset):
        assert ds.items == [] and [str(p) for p in ds.problems] == [f"cut.webm: {TRUNCATED}"]


def test_a_file_that_fails_when_the_run_reads_it_is_left_out_and_the_run_goes_on(cut_clip, tiny_models):
    """Checked at 8 frames and read by the run at 16; and an image truncated on disk after the check: both
    are left out, named, and the run trains on and evaluates the other items to its end."""
    from ttrv_core.events import EvalResult, RunEnd, RunStart, StepEvent
    from ttrv_core.method.engine import adapt
    from ttrv_core.model.loading import load_policy
    d = cut_clip.parent
    video_files.clip(d / "good.webm", n=8, codec="libvpx-vp9", size=(56, 56))
    noise = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    Image.fromarray(noise).save(d / "photo.png")
    Image.new("RGB", (56, 56), "white").save(d / "still.png")
    ds = load_dataset(d, "What happens?")                     # the check at 8 frames: every file reads
    assert [i.id for i in ds.items] == ["cut.webm", "good.webm", "photo.png", "still.png"] and ds.problems == []
    video_files.cut(d / "photo.png", 0.5)                     # changed on disk after the check
    cfg = TTRVConfig(model="x", video_frames=16, n_votes=4, n_train=2, max_new_tokens=2, prompts_per_step=1,
                     max_steps=4, eval_batch=2, seed=0)
    policy = load_policy(str(tiny_models["qwen2_5_vl"]), "fp32", "cpu", lora_r=4, lora_alpha=8)
    events = list(adapt(cfg, policy, ds.items))
    start, end = events[0], events[-1]
    assert isinstance(start, RunStart) and start.total_steps == 4
    assert isinstance(end, RunEnd) and not end.stopped        # complete: nothing left to resume
    assert end.problems == [f"cut.webm: {TRUNCATED}; left out of the run",
                            "photo.png: cannot read image: the file is truncated (an incomplete download or copy?); "
                            "left out of the run"]
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert [e.phase for e in evals] == ["before", "after"]
    assert all([x.item_id for x in e.items] == ["good.webm", "still.png"] for e in evals)
    steps = [e for e in events if isinstance(e, StepEvent)]  # one item a step: the two left out are skipped
    assert sorted(s.items[0].item_id for s in steps) == ["good.webm", "still.png"]


def test_cli_with_more_frames_than_a_clip_gives_completes(cut_clip, capsys):
    """`--video-frames 16` on the clip that gives 8: the run completes, the clip named (by the data check
    where it reads 16 frames, else by the run) and the other item evaluated."""
    from ttrv_core.cli import main
    d = cut_clip.parent
    Image.new("RGB", (56, 56), "white").save(d / "still.png")
    out = d.parent / "run"
    rc = main(["--images", str(d), "--question", "Which digit is shown in the image?", "--out", str(out),
               "--steps", "1", "--votes", "4", "--train", "2", "--prompts-per-step", "1", "--eval-votes", "2",
               "--max-new-tokens", "2", "--video-frames", "16"])
    err = capsys.readouterr().err
    assert rc == 0, err
    end = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert end["type"] == "run_end" and not end["stopped"]
    # the CLI's data check reads the 16 frames the run reads: the clip is named before the run and
    # never enters it (problems.txt, which also takes what a run leaves out: RunEnd.problems)
    assert not [p for p in end["problems"] if p.startswith("cut.webm")]
    assert f"cut.webm: {TRUNCATED}" in (out / "problems.txt").read_text()
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        got = {r["item"]: r["after_greedy"] for r in csv.DictReader(f)}
    assert got.get("still.png") is not None and not got.get("cut.webm")
