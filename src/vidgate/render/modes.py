"""Frame sources, one per mode, and the multi-clip shot plan.

A source draws frame `index` of the clip into a reusable `Planes` buffer. All randomness comes from
generators seeded by a hash of the request (model, prompt, seed and a purpose label), so the same
spec always gives the same frames and a different seed gives different ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vidgate.render import RenderSpec
from vidgate.render.camera import (
    IDENTITY,
    NEUTRAL,
    Breathe,
    Grade,
    Move,
    Path,
    Still,
    colour_drift,
    ken_burns,
    shoot,
    shot_grade,
    smooth,
)
from vidgate.render.cards import FusionCards, ReferenceCards
from vidgate.render.scene import Scene
from vidgate.render.source import read_tail
from vidgate.render.text import Placed, caption
from vidgate.render.yuv import Planes, image_to_yuv

MAX_REFERENCES = 7


class FrameSource(Protocol):
    def draw(self, index: int, planes: Planes) -> None:
        """Render frame `index` (0-based, whole clip) into `planes`."""
        ...


def rng_for(spec: RenderSpec, *purpose: object) -> np.random.Generator:
    """A generator seeded from the request's model, prompt and seed plus a purpose label."""
    material = "\x1f".join([spec.model, spec.prompt, str(spec.seed), *map(str, purpose)])
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class Shots:
    """Shot boundaries: `starts[k]` is the first frame of shot k; one shot unless multi-clip."""

    starts: tuple[int, ...]
    frames: int

    def locate(self, index: int) -> tuple[int, int, float]:
        """(shot, frame within the shot, progress 0..1 within the shot)."""
        k = 0
        while k + 1 < len(self.starts) and index >= self.starts[k + 1]:
            k += 1
        start = self.starts[k]
        end = self.starts[k + 1] if k + 1 < len(self.starts) else self.frames
        local = index - start
        return k, local, local / max(end - start - 1, 1)

    @property
    def count(self) -> int:
        return len(self.starts)


def plan_shots(spec: RenderSpec) -> Shots:
    """One shot, or for multi-clip 2-3 shots of roughly equal length (seeded jitter)."""
    frames = spec.frame_count
    if not spec.multi_clip or frames < 4:
        return Shots((0,), frames)
    rng = rng_for(spec, "shots")
    count = 3 if frames >= 3 * spec.fps and rng.random() < 0.6 else 2
    length = frames / count
    starts = [0]
    for k in range(1, count):
        jitter = float(rng.uniform(-0.15, 0.15)) * length
        starts.append(round(k * length + jitter))
    return Shots(tuple(starts), frames)


def validate(spec: RenderSpec) -> None:
    """Raise ValueError for a spec the renderer cannot honour."""
    if spec.width <= 0 or spec.height <= 0 or spec.width % 2 or spec.height % 2:
        raise ValueError(f"width and height must be positive and even, got {spec.width}x{spec.height}")
    if spec.duration < 1 or spec.fps < 1:
        raise ValueError("duration and fps must be at least 1")
    need = {"image": 1, "transition": 2, "reference": 1, "fusion": 1}.get(spec.mode, 0)
    if len(spec.images) < need:
        raise ValueError(f"mode {spec.mode!r} needs at least {need} image(s), got {len(spec.images)}")
    if spec.mode in ("reference", "fusion") and len(spec.images) > MAX_REFERENCES:
        raise ValueError(f"mode {spec.mode!r} takes at most {MAX_REFERENCES} reference images")
    if spec.mode == "extend" and spec.source_video is None:
        raise ValueError("mode 'extend' needs source_video")
    if spec.mode not in ("text", "image", "transition", "reference", "fusion", "extend"):
        raise ValueError(f"unknown mode {spec.mode!r}")


class TextVideo:
    """Text-to-video: the procedural scene (a new palette and camera per shot) under the caption."""

    def __init__(self, spec: RenderSpec, shots: Shots) -> None:
        self.shots = shots
        base_hue = float(rng_for(spec, "hue").random())
        # Later shots rotate the hue by about a third of the wheel so every cut is a visible change.
        self.scenes = [
            Scene(
                rng_for(spec, "scene", k), spec.width, spec.height, spec.fps, hue=(base_hue + 0.37 * k) % 1.0
            )
            for k in range(shots.count)
        ]
        self.caption: Placed | None = caption(spec.prompt, spec.width, spec.height)

    def draw(self, index: int, planes: Planes) -> None:
        k, local, _ = self.shots.locate(index)
        self.scenes[k].draw(local, planes)
        if self.caption is not None:
            self.caption.draw(planes)


def _cut_paths(rng: np.random.Generator, count: int, *, end_at_identity: bool) -> list[tuple[Path, Grade]]:
    """Camera paths and looks for shots 1.. of a multi-clip video: a closer framing elsewhere each time."""
    out: list[tuple[Path, Grade]] = []
    for k in range(1, count):
        zoom = float(rng.uniform(1.3, 1.6))
        margin = 0.5 - 0.5 / zoom
        start = (zoom, 0.5 + float(rng.uniform(-margin, margin)), 0.5 + float(rng.uniform(-margin, margin)))
        if end_at_identity and k == count - 1:
            out.append((Move(start, IDENTITY), NEUTRAL))
            continue
        end = (zoom * 0.9, 0.5 + float(rng.uniform(-margin, margin)) * 0.8, 0.5)
        out.append((Move(start, end), shot_grade(rng)))
    return out


class StillVideo:
    """Image, transition and extend: a camera moving over a picture (or a dissolve of two)."""

    def __init__(
        self, shots: Shots, first: Still, last: Still | None, paths: list[tuple[Path, Grade]]
    ) -> None:
        self.shots = shots
        self.first = first
        self.last = last
        self.paths = paths

    def draw(self, index: int, planes: Planes) -> None:
        k, _, t = self.shots.locate(index)
        path, grade = self.paths[k]
        still = self.first
        if self.last is not None:
            # Eased cross-dissolve over the whole clip, independent of shot cuts.
            still = Still.blend(self.first, self.last, smooth(index / max(self.shots.frames - 1, 1)))
        shoot(still, path.at(t), grade.at(t), planes)


def image_video(spec: RenderSpec, shots: Shots) -> StillVideo:
    rng = rng_for(spec, "camera")
    still = Still.of(image_to_yuv(spec.images[0], spec.width, spec.height))
    paths: list[tuple[Path, Grade]] = [(ken_burns(rng), colour_drift(rng))]
    paths += _cut_paths(rng, shots.count, end_at_identity=False)
    return StillVideo(shots, still, None, paths)


def transition_video(spec: RenderSpec, shots: Shots) -> StillVideo:
    rng = rng_for(spec, "camera")
    first = Still.of(image_to_yuv(spec.images[0], spec.width, spec.height))
    last = Still.of(image_to_yuv(spec.images[1], spec.width, spec.height))
    paths: list[tuple[Path, Grade]]
    if shots.count == 1:
        paths = [(Breathe(float(rng.uniform(0.04, 0.08))), NEUTRAL)]
    else:
        # First shot starts on the exact first image, last shot ends on the exact last image.
        paths = [(ken_burns(rng), NEUTRAL), *_cut_paths(rng, shots.count, end_at_identity=True)]
    return StillVideo(shots, first, last, paths)


def extend_video(spec: RenderSpec, shots: Shots) -> StillVideo:
    assert spec.source_video is not None
    tail = read_tail(spec.source_video)
    src_w, src_h = tail.last.size
    scale = max(spec.width / src_w, spec.height / src_h)
    vx, vy = tail.velocity[0] * scale, tail.velocity[1] * scale
    frames = shots.starts[1] if shots.count > 1 else shots.frames
    # The content kept moving by (vx, vy) px per frame, so the camera travels the other way; the zoom
    # grows just enough to leave room for that travel (and always a little, for a gentle push-in).
    travel = max(abs(vx) * frames / spec.width, abs(vy) * frames / spec.height)
    travel = min(travel, 0.15)
    zoom = 1.0 + max(0.08, 2.0 * travel / (1.0 - 2.0 * travel) * 1.1)
    end = (zoom, 0.5 - vx * frames / spec.width, 0.5 - vy * frames / spec.height)
    still = Still.of(image_to_yuv(tail.last, spec.width, spec.height))
    paths: list[tuple[Path, Grade]] = [(Move(IDENTITY, end, eased=False), NEUTRAL)]
    paths += _cut_paths(rng_for(spec, "camera"), shots.count, end_at_identity=False)
    return StillVideo(shots, still, None, paths)


class CardsVideo:
    """Reference and fusion: the prompt's scene (calmer, a new palette per shot) behind the references."""

    def __init__(self, spec: RenderSpec, shots: Shots) -> None:
        self.shots = shots
        self.frames = spec.frame_count
        base_hue = float(rng_for(spec, "hue").random())
        self.scenes = [
            Scene(
                rng_for(spec, "scene", k),
                spec.width,
                spec.height,
                spec.fps,
                busy=0.5,
                hue=(base_hue + 0.37 * k) % 1.0,
            )
            for k in range(shots.count)
        ]
        pictures = list(spec.images[:MAX_REFERENCES])
        self.reference: ReferenceCards | None = None
        self.fusion: FusionCards | None = None
        if spec.mode == "fusion":
            self.fusion = FusionCards(pictures, spec.width, spec.height, spec.fps, rng_for(spec, "fusion"))
        else:
            self.reference = ReferenceCards(pictures, spec.width, spec.height, self.frames)

    def draw(self, index: int, planes: Planes) -> None:
        k, local, _ = self.shots.locate(index)
        self.scenes[k].draw(local, planes)
        if self.fusion is not None:
            self.fusion.draw(index, planes, index / max(self.frames - 1, 1))
        elif self.reference is not None:
            self.reference.draw(index, planes)


def build(spec: RenderSpec) -> FrameSource:
    """The frame source for `spec` (validated first)."""
    validate(spec)
    shots = plan_shots(spec)
    if spec.mode == "text":
        return TextVideo(spec, shots)
    if spec.mode == "image":
        return image_video(spec, shots)
    if spec.mode == "transition":
        return transition_video(spec, shots)
    if spec.mode == "extend":
        return extend_video(spec, shots)
    return CardsVideo(spec, shots)
