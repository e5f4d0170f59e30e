"""Real, tiny media for the fakes' result URLs: an H.264 MP4 of the right duration and aspect ratio,
and a JPEG cover.

Files are small (short side 90 px, 8 fps) so a test suite can download thousands of them; what the
fakes *report* (e.g. PixVerse `outputWidth`) follows the real short-side rule via `output_size()`.
Renders are cached by (duration, ratio, audio): there are only a few dozen distinct variants.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import threading
from fractions import Fraction

import av
import numpy as np
from PIL import Image

# The tier and ratio tables vidgate renders with (the fakes report the sizes upstreams do).
from vidgate.render.sizes import RATIOS as RATIOS
from vidgate.render.sizes import TIERS as TIERS

FPS = 8
SMALL_SHORT_SIDE = 90
AUDIO_RATE = 16000


def _even(value: float | Fraction) -> int:
    return max(2, round(value / 2) * 2)


def size_for(short_side: int, ratio: str) -> tuple[int, int]:
    """(width, height): `short_side` is the shorter edge, the other follows the ratio, both even."""
    r = RATIOS.get(ratio, RATIOS["16:9"])
    if r >= 1:
        return _even(short_side * r), _even(short_side)
    return _even(short_side), _even(short_side / r)


def output_size(quality: str, ratio: str) -> tuple[int, int]:
    """The size a provider reports for a tier: 720p 16:9 = 1280x720, 9:16 = 720x1280."""
    return size_for(TIERS[quality], ratio)


def nearest_ratio(width: int, height: int) -> str:
    """The named ratio closest to width:height on a log scale (image-driven outputs)."""
    target = math.log(width / height)
    return min(RATIOS, key=lambda name: abs(math.log(float(RATIOS[name])) - target))


def _frame(width: int, height: int, index: int) -> np.ndarray:
    # A moving gradient: real motion so decoders and thumbnailers see distinct frames.
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(1, width - 1) + index * 8) % 256
    img[..., 1] = yy * 255 // max(1, height - 1)
    img[..., 2] = (index * 16) % 256
    return img


def _render_mp4(duration_s: float, width: int, height: int, audio: bool) -> bytes:
    # +faststart rewrites the file, which PyAV cannot do on a BytesIO, hence the temp file.
    fd, path = tempfile.mkstemp(suffix=".mp4", prefix="vidgate-fake-")
    os.close(fd)
    try:
        with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = out.add_stream("libx264", rate=FPS)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"preset": "ultrafast", "crf": "35"}
            video.time_base = Fraction(1, FPS)
            sound = None
            if audio:
                sound = out.add_stream("aac", rate=AUDIO_RATE)
                sound.layout = "mono"
            for index in range(max(1, round(duration_s * FPS))):
                frame = av.VideoFrame.from_ndarray(_frame(width, height, index), format="rgb24")
                frame.pts = index
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            if sound is not None:
                total, pts = round(duration_s * AUDIO_RATE), 0
                while pts < total:
                    n = min(1024, total - pts)
                    chunk = av.AudioFrame.from_ndarray(
                        np.zeros((1, n), np.float32), format="fltp", layout="mono"
                    )
                    chunk.sample_rate, chunk.pts = AUDIO_RATE, pts
                    pts += n
                    out.mux(sound.encode(chunk))
                out.mux(sound.encode(None))
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


_cache: dict[tuple[object, ...], bytes] = {}
_cache_lock = threading.Lock()


def tiny_mp4(duration_s: float, ratio: str, audio: bool = False) -> bytes:
    """A real MP4 (H.264, AAC silence when `audio`) lasting `duration_s`, cached."""
    key = ("mp4", round(duration_s, 3), ratio, audio)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    width, height = size_for(SMALL_SHORT_SIDE, ratio)
    data = _render_mp4(duration_s, width, height, audio)
    with _cache_lock:
        return _cache.setdefault(key, data)


def tiny_jpeg(ratio: str) -> bytes:
    """A JPEG cover the size of the matching tiny MP4's frames, cached."""
    key = ("jpg", ratio)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    width, height = size_for(SMALL_SHORT_SIDE, ratio)
    buf = io.BytesIO()
    Image.fromarray(_frame(width, height, 0)).save(buf, format="JPEG", quality=70)
    with _cache_lock:
        return _cache.setdefault(key, buf.getvalue())
