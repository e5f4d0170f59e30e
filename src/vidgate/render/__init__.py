"""The built-in CPU renderer: deterministic, honest preview videos as real H.264/AAC MP4 files.

`render(spec, video_path, thumbnail_path, progress=...)` is the whole public surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

Mode = Literal["text", "image", "transition", "reference", "fusion", "extend"]
FPS = 24


@dataclass(frozen=True)
class RenderSpec:
    """Everything the renderer needs; built by the local provider from a validated request."""

    model: str
    mode: Mode
    prompt: str
    width: int
    height: int
    duration: int
    seed: int
    audio: bool = False
    watermark: bool = False
    multi_clip: bool = False
    #: Decoded, validated input images in request order (references, or first/last frame).
    images: tuple[Image.Image, ...] = field(default=())
    #: For `extend`: the source MP4 whose last frame the continuation starts from.
    source_video: Path | None = None
    negative_prompt: str = ""
    fps: int = FPS
    preset: str = "veryfast"
    crf: int = 23

    @property
    def frame_count(self) -> int:
        return self.duration * self.fps


@dataclass(frozen=True)
class RenderResult:
    width: int
    height: int
    frames: int
    fps: int
    duration: float
    has_audio: bool


ProgressCallback = Callable[[float], None]
StopCheck = Callable[[], bool]


class RenderCancelled(Exception):
    """Raised when `should_stop()` turned true between frames."""


# Re-exported last: the engine imports the names defined above.
from vidgate.render.engine import render as render  # noqa: E402
