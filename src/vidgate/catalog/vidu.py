"""Vidu Q3 reference-to-video: `viduq3` and `viduq3-mix` (apimart documentation)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from vidgate.catalog.base import HttpUrl, Prompt, Seed, VideoRequest

AspectRatio = Literal["16:9", "9:16", "4:3", "3:4", "1:1"]
ReferenceImages = Annotated[
    list[HttpUrl],
    Field(min_length=1, max_length=7, description="1-7 reference images (PNG/JPEG/WebP, >=128x128, 1:4-4:1)"),
]

_NOTES = """\
Reference-to-video: every image in `image_urls` is a subject or scene the video should contain; the
prompt describes motion and camera. Images are checked when the worker fetches them (PNG, JPEG or
WebP; at least 128x128; aspect ratio between 1:4 and 4:1; at most 50 MB each) before anything is
billed. The output carries an audio track, as the upstream does by default.
"""


class _ViduQ3Family(VideoRequest):
    modes: ClassVar[tuple[str, ...]] = ("reference",)
    notes: ClassVar[str] = _NOTES

    prompt: Prompt
    image_urls: ReferenceImages
    aspect_ratio: AspectRatio = "16:9"
    seed: Seed | None = None

    @property
    def mode(self) -> str:
        return "reference"

    def image_inputs(self) -> list[tuple[str, str]]:
        return [(f"image_urls[{i}]", url) for i, url in enumerate(self.image_urls)]

    def output_ratio(self) -> str | None:
        return self.aspect_ratio

    @property
    def has_audio(self) -> bool:
        return True


class ViduQ3(_ViduQ3Family):
    summary: ClassVar[str] = "Vidu Q3: 1-7 reference images to a 3-16 s video, 540p to 1080p"

    model: Literal["viduq3"]
    duration: Annotated[int, Field(ge=3, le=16, description="Seconds")] = 5
    resolution: Literal["540p", "720p", "1080p"] = "720p"


class ViduQ3Mix(_ViduQ3Family):
    summary: ClassVar[str] = "Vidu Q3 Mix: 1-7 reference images to a 1-16 s video, 720p or 1080p"

    model: Literal["viduq3-mix"]
    duration: Annotated[int, Field(ge=1, le=16, description="Seconds")] = 5
    resolution: Literal["720p", "1080p"] = "720p"
