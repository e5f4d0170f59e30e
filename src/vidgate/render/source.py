"""Reading the video an `extend` request continues: its last frame and the motion leading into it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vidgate.render.yuv import F32

#: Width of the grey thumbnails the motion estimate works on (enough for a global pan).
_PROBE_WIDTH = 256
#: How many frames back the motion is measured over (a longer baseline resolves slow pans).
_LOOKBACK = 4


@dataclass(frozen=True)
class Tail:
    """The end of a source video: its last frame (RGB) and the content motion in px per frame."""

    last: Image.Image
    velocity: tuple[float, float]


def phase_shift(a: F32, b: F32) -> tuple[float, float, float]:
    """Global translation (dx, dy) with b(x) ~ a(x - d), by phase correlation; also the peak strength.

    The peak strength (0..1) says how much of the picture agrees with the shift; near zero means
    "no clear global motion".
    """
    h, w = a.shape
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fa = np.fft.rfft2((a - a.mean()) * window)
    fb = np.fft.rfft2((b - b.mean()) * window)
    cross = np.conj(fa) * fb
    cross /= np.abs(cross) + 1e-9
    corr = np.fft.irfft2(cross, s=(h, w))
    py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = float(corr[py, px])

    def refine(c_minus: float, c0: float, c_plus: float) -> float:
        # Parabola through the peak and its neighbours gives a sub-pixel offset.
        denom = c_minus - 2 * c0 + c_plus
        return 0.0 if abs(denom) < 1e-12 else 0.5 * (c_minus - c_plus) / denom

    dx = px + refine(float(corr[py, px - 1]), peak, float(corr[py, (px + 1) % w]))
    dy = py + refine(float(corr[py - 1, px]), peak, float(corr[(py + 1) % h, px]))
    if dx > w / 2:
        dx -= w
    if dy > h / 2:
        dy -= h
    return float(dx), float(dy), peak


def _grey(frame: av.VideoFrame) -> F32:
    height = max(8, round(frame.height * _PROBE_WIDTH / frame.width))
    small = frame.reformat(width=_PROBE_WIDTH, height=height, format="gray")
    out: F32 = small.to_ndarray().astype(np.float32)
    return out


def _decode_tail(container: av.container.InputContainer, keep: int) -> deque[av.VideoFrame]:
    stream = container.streams.video[0]
    frames: deque[av.VideoFrame] = deque(maxlen=keep)
    for frame in container.decode(stream):
        frames.append(frame)
    return frames


def read_tail(path: Path) -> Tail:
    """Decode the end of `path`; raise ValueError when it has no decodable video frames."""
    keep = _LOOKBACK + 1
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("source video has no video stream")
            frames: deque[av.VideoFrame] = deque()
            duration = container.duration  # microseconds (AV_TIME_BASE), may be None
            if duration is not None and duration > 3_000_000:
                # Only the last couple of seconds matter: seek to the keyframe before them.
                container.seek(duration - 2_500_000, backward=True, any_frame=False)
                frames = _decode_tail(container, keep)
            if len(frames) < keep:
                container.seek(0)
                frames = _decode_tail(container, keep)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode source video: {exc}") from exc
    if not frames:
        raise ValueError("source video has no frames")
    last = frames[-1]
    velocity = (0.0, 0.0)
    if len(frames) >= 2:
        first = frames[0]
        span = len(frames) - 1
        dx, dy, peak = phase_shift(_grey(first), _grey(last))
        if peak > 0.05:
            scale = last.width / _PROBE_WIDTH
            velocity = (dx * scale / span, dy * scale / span)
    return Tail(last=Image.fromarray(last.to_ndarray(format="rgb24")), velocity=velocity)
