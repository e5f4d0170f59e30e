"""Helpers for renderer tests: probing and decoding MP4 files with PyAV, building input images."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from vidgate.render import RenderSpec

Frame = NDArray[np.uint8]


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: int
    video_duration: float
    audio_codec: str | None
    audio_channels: int
    audio_rate: int
    audio_duration: float
    audio_samples: int
    keyframes: tuple[int, ...]


def probe(path: Path) -> Probe:
    """Stream facts, counted by actually decoding every frame and sample."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = 0
        keyframes = []
        for frame in container.decode(video):
            if frame.key_frame:
                keyframes.append(frames)
            frames += 1
        v_duration = -1.0
        if video.duration is not None and video.time_base is not None:
            v_duration = float(video.duration * video.time_base)
        audio_codec, channels, rate, a_duration, samples = None, 0, 0, 0.0, 0
        if container.streams.audio:
            audio = container.streams.audio[0]
            audio_codec = audio.codec_context.name
            channels = audio.codec_context.channels
            rate = audio.codec_context.sample_rate
            if audio.duration is not None and audio.time_base is not None:
                a_duration = float(audio.duration * audio.time_base)
            container.seek(0)
            for aframe in container.decode(audio):
                samples += aframe.samples
        return Probe(
            codec=video.codec_context.name,
            pix_fmt=str(video.codec_context.pix_fmt),
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=float(video.average_rate or 0),
            frames=frames,
            video_duration=v_duration,
            audio_codec=audio_codec,
            audio_channels=channels,
            audio_rate=rate,
            audio_duration=a_duration,
            audio_samples=samples,
            keyframes=tuple(keyframes),
        )


def decode_rgb(path: Path) -> list[Frame]:
    with av.open(str(path)) as container:
        return [np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8) for f in container.decode(video=0)]


def decode_audio(path: Path) -> NDArray[np.float32]:
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.concatenate(chunks, axis=1).astype(np.float32)


def top_level_boxes(path: Path) -> list[str]:
    """MP4 top-level box types in file order."""
    data = path.read_bytes()
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return boxes


def diff(a: Frame, b: Frame) -> float:
    """Mean absolute difference of two frames (0..255)."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def colour_share(frame: Frame, colour: tuple[int, int, int], tolerance: float = 40.0) -> float:
    """Fraction of pixels within `tolerance` (Euclidean RGB) of `colour` (sampled every 2nd pixel)."""
    sample = frame[::2, ::2].astype(np.float32) - np.asarray(colour, dtype=np.float32)
    dist = np.sqrt((sample * sample).sum(-1))
    return float(np.mean(dist < tolerance))


def striped(colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A solid colour with white diagonal stripes and a dark disc: texture for motion checks."""
    img = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(img)
    w, h = size
    for k in range(-h, w, 36):
        draw.line((k, 0, k + h, h), fill=(255, 255, 255), width=4)
    draw.ellipse((w // 3, h // 3, 2 * w // 3, 2 * h // 3), fill=(15, 15, 15))
    return img


def spec(**overrides: object) -> RenderSpec:
    """A small, fast spec (360p, 1 s text) with overrides."""
    base: dict[str, object] = {
        "model": "pixverse-v6",
        "mode": "text",
        "prompt": "a paper boat drifting down a rainy street",
        "width": 640,
        "height": 360,
        "duration": 1,
        "seed": 42,
    }
    base.update(overrides)
    return RenderSpec(**base)  # type: ignore[arg-type]
