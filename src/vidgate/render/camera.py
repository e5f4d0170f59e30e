"""A virtual camera over a still picture: zoom/pan paths (Ken Burns), colour drift, per-frame shots.

Image-driven modes (image, transition, extend) render by cropping a sub-pixel box out of the
source planes and resizing it to the frame with Pillow (C, bilinear); the identity box is a plain
copy, so frames that must equal the input (first frame, transition end points) are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from vidgate.render.yuv import Planes, YuvImage

View = tuple[float, float, float]
"""(zoom >= 1, centre x, centre y), the centre as a fraction of the source size."""

IDENTITY: View = (1.0, 0.5, 0.5)


def smooth(t: float) -> float:
    """Ease in and out (cosine), clamped to 0..1."""
    t = min(max(t, 0.0), 1.0)
    return 0.5 - 0.5 * math.cos(math.pi * t)


class Path(Protocol):
    def at(self, t: float) -> View:
        """The view at shot progress t in 0..1."""
        ...


@dataclass(frozen=True)
class Move:
    """Zoom and pan from `start` to `end`; eased unless it continues existing motion (extend)."""

    start: View
    end: View
    eased: bool = True

    def at(self, t: float) -> View:
        s = smooth(t) if self.eased else min(max(t, 0.0), 1.0)
        return (
            self.start[0] + (self.end[0] - self.start[0]) * s,
            self.start[1] + (self.end[1] - self.start[1]) * s,
            self.start[2] + (self.end[2] - self.start[2]) * s,
        )


@dataclass(frozen=True)
class Breathe:
    """A centred zoom that swells to 1 + amount mid-shot and returns: both end points are exact."""

    amount: float

    def at(self, t: float) -> View:
        return (1.0 + self.amount * math.sin(math.pi * min(max(t, 0.0), 1.0)), 0.5, 0.5)


@dataclass(frozen=True)
class Grade:
    """Colour offsets (Y, U, V levels): a constant tint plus a drift that ramps in from zero."""

    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    drift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def at(self, t: float) -> tuple[int, int, int]:
        ramp = smooth(t)
        return (
            round(self.tint[0] + self.drift[0] * ramp),
            round(self.tint[1] + self.drift[1] * ramp),
            round(self.tint[2] + self.drift[2] * ramp),
        )


NEUTRAL = Grade()


def _lut(offset: int) -> list[int]:
    return [min(255, max(0, i + offset)) for i in range(256)]


def crop_box(view: View, width: int, height: int) -> tuple[float, float, float, float]:
    """The source rectangle for a view, kept inside the picture."""
    zoom, cx, cy = view
    zoom = max(zoom, 1.0)
    bw, bh = width / zoom, height / zoom
    x0 = min(max(cx * width - bw / 2, 0.0), width - bw)
    y0 = min(max(cy * height - bh / 2, 0.0), height - bh)
    return (x0, y0, x0 + bw, y0 + bh)


def is_identity(view: View) -> bool:
    return abs(view[0] - 1.0) < 1e-6


class Still:
    """A picture prepared for the camera: Pillow planes (for resizing) and uint8 planes (for exact copies)."""

    def __init__(
        self, pil: tuple[Image.Image, Image.Image, Image.Image], image: YuvImage | None = None
    ) -> None:
        self.pil = pil
        self._image = image

    @staticmethod
    def of(image: YuvImage) -> Still:
        return Still(image.to_pil(), image)

    @property
    def size(self) -> tuple[int, int]:
        return self.pil[0].size

    @property
    def image(self) -> YuvImage:
        if self._image is None:
            self._image = YuvImage.from_pil(*self.pil)
        return self._image

    @staticmethod
    def blend(a: Still, b: Still, amount: float) -> Still:
        """Cross-dissolve of two same-size stills (exactly a at 0 and b at 1)."""
        if amount <= 0.0:
            return a
        if amount >= 1.0:
            return b
        y, u, v = (Image.blend(pa, pb, amount) for pa, pb in zip(a.pil, b.pil, strict=True))
        return Still((y, u, v))


def shoot(still: Still, view: View, grade: tuple[int, int, int], planes: Planes) -> None:
    """Render `still` through the camera `view` with colour offsets into `planes`."""
    w, h = planes.width, planes.height
    if is_identity(view) and still.size == (w, h):
        if grade == (0, 0, 0):
            planes.load(still.image)
            return
        layers = list(still.pil)
    else:
        x0, y0, x1, y1 = crop_box(view, *still.size)
        half = (x0 / 2, y0 / 2, x1 / 2, y1 / 2)
        bilinear = Image.Resampling.BILINEAR
        layers = [
            still.pil[0].resize((w, h), bilinear, box=(x0, y0, x1, y1)),
            still.pil[1].resize((w // 2, h // 2), bilinear, box=half),
            still.pil[2].resize((w // 2, h // 2), bilinear, box=half),
        ]
    for n, (layer, target) in enumerate(zip(layers, (planes.y, planes.u, planes.v), strict=True)):
        if grade[n]:
            layer = layer.point(_lut(grade[n]))
        np.copyto(target, np.asarray(layer, dtype=np.uint8))


def ken_burns(rng: np.random.Generator, *, start: View = IDENTITY, zoom: float | None = None) -> Move:
    """A slow push-in towards a seed-chosen point (the Ken Burns effect)."""
    target = zoom if zoom is not None else float(rng.uniform(1.1, 1.22))
    margin = 0.5 - 0.5 / target
    end = (target, 0.5 + float(rng.uniform(-margin, margin)), 0.5 + float(rng.uniform(-margin, margin)))
    return Move(start, end)


def colour_drift(rng: np.random.Generator, strength: float = 1.0) -> Grade:
    """A mild, seed-chosen warm/cool drift that starts neutral."""
    return Grade(
        drift=(
            float(rng.uniform(-3, 4)) * strength,
            float(rng.uniform(-6, 6)) * strength,
            float(rng.uniform(-6, 6)) * strength,
        )
    )


def shot_grade(rng: np.random.Generator) -> Grade:
    """A distinct constant look for a later shot of a multi-clip video."""
    return Grade(tint=(float(rng.uniform(-12, 10)), float(rng.uniform(-14, 14)), float(rng.uniform(-14, 14))))
