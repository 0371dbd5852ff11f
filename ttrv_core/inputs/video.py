"""Video files (.mp4, .webm, .mov, animated .gif) as K frames sampled uniformly.

`load_video` returns a `Video`: K RGB frames taken at the middles of K equal slices of
the clip (frame i at t_i = (i + 0.5) * D / K, D the duration used), as TSN-style
uniform sampling does:
  1. Decoding is PyAV's (its wheel ships its own FFmpeg: no system tool is ever run).
     The container must probe as one of `CONTAINERS` (MP4/MOV, Matroska/WebM, GIF):
     a PNG or a text file renamed .mp4 is refused by what it is, not by its name.
  2. The first video stream is used, if its codec is one of `CODECS`; audio streams are ignored (a file with audio
     only is refused). Its size in the header goes through pixels.check_size before
     any frame is decoded; frames are downscaled to pixels.MAX_SIDE.
  3. A clip longer than MAX_SECONDS is sampled over its first MAX_SECONDS only, and
     `check_video` says so (a note: the item still runs). K is capped at MAX_FRAMES.
  4. Each target time is reached by a seek to the keyframe before it and decoding
     forward (the first frame at or after it), so a long clip costs K seeks, not a full
     decode. A stream whose header gives no duration yields its first K frames instead.
Animated GIFs are read with Pillow (frame durations from the file; 100 ms where absent).
A frame that cannot be decoded (a truncated file, a codec with no decoder in the
wheel) is an ImageError naming the reason; the data path turns it into a Problem, and so does a run
that reads a file which fails only then (sampling/prompt_cache.py: the item is left out, the run goes on).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ttrv_core.config import MAX_FRAMES
from ttrv_core.inputs.pixels import MAX_SIDE, ImageError, check_size, to_rgb

VIDEO_EXTS = {".mp4", ".webm", ".mov", ".m4v", ".mkv"}
"""Read with PyAV by content; animated .gif is a video too (see is_video)."""
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"}
"""FFmpeg demuxers allowed (by what the file probes as): every other is refused."""
CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "prores", "h263",
          "theora"}
"""Video codecs decoded (by codec id): what phones, cameras, screen recorders and browsers write.
FFmpeg has hundreds more; an upload is untrusted input, so the rare ones are refused, not decoded."""
MAX_SECONDS = 600.0
"""Longer clips are sampled over their first 10 minutes (and the user is told)."""
FRAMES = 8
"""K, frames sampled per video by default; TTRVConfig.video_frames sets it."""


@dataclass(frozen=True)
class Video:
    """K frames of one clip, in time order, and the times they were taken at."""
    frames: tuple[Image.Image, ...]
    times: tuple[float, ...]      # seconds from the start
    duration: float               # seconds of the clip (before the MAX_SECONDS cap)

    @property
    def fps(self) -> float:
        """Frames per second of the sampled frames (what Qwen's video processors read)."""
        span = self.times[-1] - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / span if span > 0 else 1.0


def sample_times(duration: float, k: int) -> list[float]:
    """Middles of k equal slices of [0, min(duration, MAX_SECONDS)).

    >>> sample_times(8.0, 4)
    [1.0, 3.0, 5.0, 7.0]
    >>> sample_times(3600.0, 2)
    [150.0, 450.0]
    """
    d = min(duration, MAX_SECONDS)
    return [(i + 0.5) * d / k for i in range(k)]


def is_video(path: Path) -> bool:
    """A video by name, or an animated GIF (a still GIF stays an image)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return True
    if ext != ".gif":
        return False
    try:
        with Image.open(path, formats=("GIF",)) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # noqa: BLE001 - a broken GIF is reported by the image path
        return False


def _fit(im: Image.Image) -> Image.Image:
    im = to_rgb(im)
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE))
    return im


def _gif(path: Path, k: int) -> Video:
    try:
        with Image.open(path, formats=("GIF",)) as im:
            check_size(*im.size)
            durations = []
            for i in range(im.n_frames):
                im.seek(i)
                durations.append(max(int(im.info.get("duration") or 100), 1) / 1000)
            starts = [sum(durations[:i]) for i in range(len(durations))]
            total = sum(durations)
            frames, times = [], []
            for t in sample_times(total, k):
                i = max(j for j, s in enumerate(starts) if s <= t)
                im.seek(i)
                frames.append(_fit(im.convert("RGBA")))
                times.append(starts[i])
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken GIFs
        raise ImageError(f"cannot read video: {_why(e)}") from None
    return Video(tuple(frames), tuple(times), total)


def _why(e: Exception) -> str:
    text = str(e).lower()
    if isinstance(e, EOFError) or any(w in text for w in ("truncat", "end of file", "moov atom", "eof")):
        return "the file is truncated (an incomplete download or copy?)"
    return f"the file is damaged ({type(e).__name__})"


def _open(path: Path):
    import av
    try:
        box = av.open(str(path), metadata_errors="ignore")
    except FileNotFoundError:
        raise ImageError("cannot read video: file not found (a broken link?)") from None
    except PermissionError:
        raise ImageError("cannot read video: permission denied") from None
    except av.FFmpegError as e:
        raise ImageError("cannot read video: not a video file, or a truncated or damaged one "
                         f"({type(e).__name__})") from None
    if box.format.name not in CONTAINERS:
        what = box.format.long_name or box.format.name
        box.close()
        raise ImageError(f"cannot read video: the file is {what}, not MP4, MOV, WebM or GIF")
    return box


def _duration(box, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if box.duration is not None:
        return box.duration / 1_000_000  # AV_TIME_BASE
    return 0.0


def load_video(path: Path, k: int = FRAMES) -> Video:
    """K frames sampled uniformly (module docstring). Raises ImageError."""
    path = Path(path)
    k = max(1, min(int(k), MAX_FRAMES))
    if path.suffix.lower() == ".gif":
        return _gif(path, k)
    import av
    with _open(path) as box:
        if not box.streams.video:
            kinds = sorted({s.type for s in box.streams})
            if kinds:
                raise ImageError(f"cannot read video: no video stream (it holds {', '.join(kinds)} only)")
            raise ImageError("cannot read video: it has no frames (no streams: empty, truncated or damaged)")
        stream = box.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None or not ctx.codec.is_decoder:
            name = ctx.name if ctx is not None else "unknown"
            raise ImageError(f"cannot read video: its codec ({name}) cannot be decoded here; "
                             "convert it to H.264 MP4 or VP9 WebM")
        if ctx.name not in CODECS:
            raise ImageError(f"cannot read video: its codec ({ctx.name}) is not one read here (H.264, HEVC, VP8, "
                             "VP9, AV1, MPEG-4, MJPEG, ProRes, ...); convert it to H.264 MP4 or VP9 WebM")
        check_size(ctx.width, ctx.height)
        duration = _duration(box, stream)
        frames, times = [], []
        try:
            for t in sample_times(duration, k) if duration > 0 else []:
                got = _frame_at(box, stream, t)
                if got is not None:
                    frames.append(_fit(got.to_image()))
                    times.append(float(got.time or 0.0))
            if not frames:  # no duration in the header, or the seeks found nothing: decode from the start
                box.seek(0)
                for f in box.decode(stream):
                    frames.append(_fit(f.to_image()))
                    times.append(float(f.time or 0.0))
                    if len(frames) >= k:
                        break
        except av.FFmpegError as e:
            raise ImageError(f"cannot read video: {_why(e)}") from None
        if not frames:
            raise ImageError("cannot read video: it has no frames (empty, or truncated before its first frame)")
    return Video(tuple(frames), tuple(times), duration)


def _frame_at(box, stream, t: float):
    """The first frame at or after t seconds (the last one decoded if the clip ends first)."""
    import av
    try:
        box.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError:  # a seek past the data that is there
        raise ImageError(f"cannot read video: the file is truncated (no data at {t:.1f} s of its stated "
                         f"{_duration(box, stream):.1f} s: an incomplete download or copy?)") from None
    last = None
    for f in box.decode(stream):
        last = f
        if f.time is None or f.time >= t - 1e-6:
            return f
    # the clip ended before t: fine within a frame or so of its end, else its data is missing
    step = 1 / float(stream.average_rate) if stream.average_rate else 1.0
    if last is None or (last.time is not None and last.time + max(2 * step, 1.0) < t):
        raise ImageError("cannot read video: the file is truncated (its frames end before its stated "
                         "duration: an incomplete download or copy?)")
    return last


def first_frame(path: Path) -> Image.Image:
    """The clip's first frame. Raises ImageError."""
    path = Path(path)
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path, formats=("GIF",)) as im:
                check_size(*im.size)
                return _fit(im.convert("RGBA"))  # frame 0: as opened
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for broken GIFs
            raise ImageError(f"cannot read video: {_why(e)}") from None
    import av
    with _open(path) as box:
        if not box.streams.video:
            raise ImageError("cannot read video: no video stream")
        try:
            for f in box.decode(box.streams.video[0]):
                return _fit(f.to_image())
        except av.FFmpegError as e:
            raise ImageError(f"cannot read video: {_why(e)}") from None
    raise ImageError("cannot read video: it has no frames")


def check_video(path: Path, k: int = FRAMES) -> tuple[str | None, str | None]:
    """(problem, note): problem is why the file cannot be used, note what was capped (it still runs).
    k: the frames the run will read (TTRVConfig.video_frames), read here at the same times: a clip cut
    short can give 8 frames and fail at 16, so a check at another count would not say."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file (0 bytes)", None
        v = load_video(path, k)
    except ImageError as e:
        return str(e), None
    except OSError:
        return "cannot read video: file not found (a broken link?)", None
    if v.duration > MAX_SECONDS:
        return None, (f"the clip is {_span(v.duration)} long; its frames are sampled "
                      f"from the first {_span(MAX_SECONDS)} only")
    return None, None


def _span(seconds: float) -> str:
    """
    >>> _span(75), _span(600), _span(5400)
    ('75 s', '10 minutes', '90 minutes')
    """
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"
