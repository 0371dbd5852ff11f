"""Small video files made here with PyAV (no downloads), for the video tests."""
from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np


def clip(path: Path, n: int = 12, size=(32, 24), fps: int = 4, codec: str = "mpeg4", fmt: str | None = None,
         audio: bool = False, video: bool = True) -> Path:
    """A clip whose frame i is filled with grey level 20 * i (so a frame's time is readable from it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as box:
        if video:
            s = box.add_stream(codec, rate=fps)
            s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        if audio:
            a = box.add_stream("aac" if path.suffix != ".webm" else "libvorbis", rate=8000)
        box.start_encoding()  # the header, even with no frames
        if video:
            for i in range(n):
                arr = np.full((size[1], size[0], 3), min(20 * i, 255), np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    box.mux(p)
            for p in s.encode():
                box.mux(p)
        if audio:
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for _ in range(4):
                for p in a.encode(frame):
                    box.mux(p)
            for p in a.encode():
                box.mux(p)
    return path


def clip_bytes(suffix: str = ".mp4", **kw) -> bytes:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return clip(Path(d) / f"c{suffix}", **kw).read_bytes()


def gif_bytes(n: int = 6, size=(16, 12)) -> bytes:
    from PIL import Image
    frames = [Image.new("RGB", size, (min(40 * i, 255), 0, 0)) for i in range(n)]
    f = io.BytesIO()
    frames[0].save(f, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return f.getvalue()


def cut(path: Path, share: float, to: Path | None = None) -> Path:
    """The file cut to `share` of its bytes, as an incomplete download or copy leaves it; written to
    `to` (default: in place)."""
    data = Path(path).read_bytes()
    to = Path(to or path)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_bytes(data[:int(len(data) * share)])
    return to
