"""Video items (issue 17): read with PyAV (Pillow for GIF), K frames sampled uniformly, through the
one data path; capped clips still run; the setting K and its public cap; a refusal for a family that
takes neither video nor several images; one short CLI run on the demo model with a video beside an image.
Bad video files are in test_bad_inputs.py; shared-prefix exactness on video prompts in test_shared_prefix.py.
"""
import csv
from pathlib import Path

import pytest
from PIL import Image

import video_files
from ttrv_core import video
from ttrv_core.compare import thumbnail
from ttrv_core.config import TTRVConfig
from ttrv_core.data import load_dataset
from ttrv_core.encode import VideoRefused, encode
from ttrv_core.video import Video, first_frame, load_video, sample_times


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
    from ttrv_core import menu
    from ttrv_core.sessions import CAPS, public_refusal
    model = sorted(menu.allowed())[0]
    assert public_refusal(model, TTRVConfig(video_frames=CAPS.video_frames), 8, None, menu.allowed()) is None
    said = public_refusal(model, TTRVConfig(video_frames=CAPS.video_frames + 1), 8, None, menu.allowed())
    assert said == f"this public Space allows video_frames up to {CAPS.video_frames}, got {CAPS.video_frames + 1}"


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
    from ttrv_core import form
    from ttrv_core.inputs import collect, load
    clip = video_files.clip(tmp_path / "up" / "a.mp4", n=4)
    with zipfile.ZipFile(tmp_path / "up" / "more.zip", "w") as z:
        z.writestr("set/b.webm", video_files.clip_bytes(".webm", n=4, codec="libvpx-vp9"))
    got = collect([clip, tmp_path / "up" / "more.zip"], tmp_path / "work")
    ds = load(got, "What happens?").dataset
    assert ds.problems == [] and sorted(i.id for i in ds.items) == ["a.mp4", "set/b.webm"]
    assert all(i.video for i in ds.items)
    assert {"video", ".mp4", ".webm", ".mov"} <= set(form.UPLOAD_TYPES)


def test_video_times_stay_fp32_in_a_bf16_model(tiny_models):
    """Qwen2.5-VL's seconds per temporal patch scale the video's positions: not cast to bf16 with the pixels."""
    import torch
    from ttrv_core.models import load_policy
    from ttrv_core.rollout import prepare_prompt
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
    code = ("from PIL import Image\nfrom ttrv_core.models import load_policy\n"
            "from ttrv_core.rollout import prepare_prompt\nfrom ttrv_core.video import Video\n"
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
