"""PixVerse V6 (`pixverse-v6`): five modes chosen from the inputs, in a fixed order."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, model_validator

from vidgate.catalog.base import HttpUrl, Prompt, Seed, VideoRequest, rule

Size = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9"]
SIZES: tuple[str, ...] = ("16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9")

_NOTES = """\
The mode is the first match in this order:

1. `extend_from_task_id` set: **extension** of a completed `pixverse-v6` task of the same API key.
2. `img_references` (1-7 images): **fusion** of every reference into one video.
3. `first_frame_image` and `last_frame_image`: **transition** from the first frame to the last;
   `duration` must be 5 or 8. Giving one without the other is an error.
4. `image_urls`: **image-to-video** from the first image.
5. Otherwise: **text-to-video**.

Inputs that belong to a later mode than the one chosen are not used. `size` applies to
text-to-video and fusion only; image-driven modes follow the aspect ratio of the first image
(snapped to the nearest supported ratio) and extension follows its source video.
`generate_multi_clip_switch` is available for text- and image-to-video only. Images: PNG, JPEG or
WebP, at least 128x128, aspect ratio between 1:4 and 4:1, at most 20 MB each.

Served by PixVerse itself, prompts are limited to 2048 characters (PixVerse's own limit; a longer
prompt fails with `upstream_rejected`), and fusion puts any `@image1 `... mention the prompt
lacks in front of it, so PixVerse knows every reference.
"""


class PixverseV6(VideoRequest):
    summary: ClassVar[str] = (
        "PixVerse V6: text, image, first/last-frame transition, multi-reference fusion and extension; "
        "1-15 s, 360p to 1080p, optional audio"
    )
    modes: ClassVar[tuple[str, ...]] = ("extend", "fusion", "transition", "image", "text")
    image_max_bytes: ClassVar[int] = 20 * 1024 * 1024
    notes: ClassVar[str] = _NOTES

    model: Literal["pixverse-v6"]
    prompt: Prompt
    negative_prompt: Annotated[str, Field(max_length=2048, description="What to keep out of the video")] = ""
    duration: Annotated[int, Field(ge=1, le=15, description="Seconds")] = 5
    resolution: Literal["360p", "540p", "720p", "1080p"] = "540p"
    size: Size = Field("16:9", description="Aspect ratio; text-to-video and fusion only")
    seed: Seed | None = None
    audio: bool = Field(False, description="Generate a soundtrack")
    watermark: bool = Field(False, description="Draw a watermark in the bottom-right corner")
    motion_mode: Literal["normal"] = "normal"
    generate_multi_clip_switch: bool = Field(False, description="Several shots with cuts (text/image only)")
    extend_from_task_id: str | None = Field(None, description="A completed pixverse-v6 task to continue")
    img_references: Annotated[list[HttpUrl], Field(min_length=1, max_length=7)] | None = None
    first_frame_image: HttpUrl | None = None
    last_frame_image: HttpUrl | None = None
    image_urls: Annotated[list[HttpUrl], Field(min_length=1, max_length=7)] | None = None

    @property
    def mode(self) -> str:
        if self.extend_from_task_id is not None:
            return "extend"
        if self.img_references:
            return "fusion"
        if self.first_frame_image is not None and self.last_frame_image is not None:
            return "transition"
        if self.image_urls:
            return "image"
        return "text"

    @model_validator(mode="after")
    def _mode_rules(self) -> Self:
        mode = self.mode
        if mode not in ("extend", "fusion") and (self.first_frame_image is None) != (
            self.last_frame_image is None
        ):
            missing = "last_frame_image" if self.last_frame_image is None else "first_frame_image"
            raise rule("transition_pair", missing)
        if mode == "transition" and self.duration not in (5, 8):
            raise rule("transition_duration", "duration", actual=self.duration)
        if self.generate_multi_clip_switch and mode not in ("text", "image"):
            raise rule("multi_clip_mode", "generate_multi_clip_switch", mode=mode)
        if self.extend_from_task_id is not None and not self.extend_from_task_id.strip():
            raise rule("string_empty", "extend_from_task_id")
        return self

    def image_inputs(self) -> list[tuple[str, str]]:
        mode = self.mode
        if mode == "fusion" and self.img_references:
            return [(f"img_references[{i}]", url) for i, url in enumerate(self.img_references)]
        if mode == "transition" and self.first_frame_image and self.last_frame_image:
            return [
                ("first_frame_image", self.first_frame_image),
                ("last_frame_image", self.last_frame_image),
            ]
        if mode == "image" and self.image_urls:
            return [("image_urls[0]", self.image_urls[0])]
        return []

    def output_ratio(self) -> str | None:
        return self.size if self.mode in ("text", "fusion") else None

    @property
    def has_audio(self) -> bool:
        return self.audio

    @property
    def source_task_id(self) -> str | None:
        return self.extend_from_task_id

    def estimated_time(self) -> int:
        factor = {"360p": 0.5, "540p": 0.7, "720p": 1.0, "1080p": 1.5}[self.resolution]
        return int(20 + self.duration * 5 * factor + (10 if self.audio else 0))
