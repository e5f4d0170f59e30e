"""Reference images as cards over a scene: a sequence-then-collage (reference) and a drifting group (fusion).

Cards are converted to overlays once; per frame they are only positioned and blended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from vidgate.render.camera import smooth
from vidgate.render.yuv import Overlay, Planes, cover, even, flatten

#: Fraction of the clip spent showing references one by one before the collage (reference mode).
SEQUENCE_SHARE = 0.6
#: Fraction of a reference's slot spent fading in or out.
FADE_SHARE = 0.18


def _card(picture: Image.Image, radius: int, border: int, shadow: int, mask: str = "rounded") -> Overlay:
    """Picture with a light border, rounded (or oval) corners and a soft drop shadow, as an overlay."""
    w, h = picture.size
    full_w, full_h = w + 2 * border + 2 * shadow, h + 2 * border + 2 * shadow
    shape = Image.new("L", (w + 2 * border, h + 2 * border), 0)
    draw = ImageDraw.Draw(shape)
    box = (0, 0, shape.width - 1, shape.height - 1)
    if mask == "oval":
        draw.ellipse(box, fill=255)
    else:
        draw.rounded_rectangle(box, radius=radius + border, fill=255)
    framed = Image.new("RGBA", shape.size, (245, 245, 240, 255))
    inner = Image.new("L", (w, h), 0)
    inner_draw = ImageDraw.Draw(inner)
    if mask == "oval":
        inner_draw.ellipse((0, 0, w - 1, h - 1), fill=255)
    else:
        inner_draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=radius, fill=255)
    framed.paste(flatten(picture), (border, border), inner)
    framed.putalpha(shape)
    out = Image.new("RGBA", (full_w, full_h), (0, 0, 0, 0))
    if shadow:
        shade = Image.new("RGBA", (full_w, full_h), (0, 0, 0, 0))
        shade.paste((0, 0, 0, 150), (shadow + shadow // 2, shadow + shadow // 2), shape)
        out = Image.alpha_composite(out, shade.filter(ImageFilter.GaussianBlur(max(1, shadow // 2))))
    layer = Image.new("RGBA", (full_w, full_h), (0, 0, 0, 0))
    layer.paste(framed, (shadow, shadow))
    return Overlay.from_rgba(Image.alpha_composite(out, layer))


@dataclass(frozen=True)
class Slot:
    """A card and where its top-left corner sits (frame pixels)."""

    overlay: Overlay
    x: float
    y: float


def grid(
    count: int, width: int, height: int, region: tuple[float, float, float, float]
) -> list[tuple[float, float, int, int]]:
    """Cells (x, y, w, h) for `count` cards in `region` (fractions x0, y0, x1, y1), rows centred.

    The column count is chosen to make the cards as large as possible for near-4:3 cards.
    """
    rx0, ry0, rx1, ry1 = region[0] * width, region[1] * height, region[2] * width, region[3] * height
    rw, rh = rx1 - rx0, ry1 - ry0
    best: tuple[float, int] = (-1.0, 1)
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        cw, ch = rw / cols, rh / rows
        card_w = min(cw, ch * 4 / 3)
        if card_w * card_w * 3 / 4 > best[0]:
            best = (card_w * card_w * 3 / 4, cols)
    cols = best[1]
    rows = math.ceil(count / cols)
    cw, ch = rw / cols, rh / rows
    cells = []
    for n in range(count):
        row, col = divmod(n, cols)
        in_row = min(cols, count - row * cols)
        x = rx0 + (rw - in_row * cw) / 2 + col * cw
        cells.append((x, ry0 + row * ch, int(cw), int(ch)))
    return cells


def _cell_cards(
    pictures: Sequence[Image.Image],
    width: int,
    height: int,
    mask: str,
    region: tuple[float, float, float, float],
) -> list[Slot]:
    short = min(width, height)
    slots = []
    for picture, (x, y, cw, ch) in zip(pictures, grid(len(pictures), width, height, region), strict=True):
        gap = max(4, int(min(cw, ch) * 0.08))
        border = max(2, short // 180)
        shadow = max(2, short // 90)
        inner_w = max(8, even(cw - 2 * gap - 2 * border))
        inner_h = max(8, even(ch - 2 * gap - 2 * border))
        if mask == "oval":
            inner_w = inner_h = min(inner_w, inner_h)
        card = _card(cover(picture, inner_w, inner_h), max(2, short // 60), border, shadow, mask)
        slots.append(Slot(card, x + (cw - card.width) / 2, y + (ch - card.height) / 2))
    return slots


class ReferenceCards:
    """Vidu reference-to-video: each reference in turn, large, then all of them as a collage."""

    def __init__(self, pictures: Sequence[Image.Image], width: int, height: int, frames: int) -> None:
        self.width, self.height, self.frames = width, height, frames
        count = len(pictures)
        self.seq_frames = frames if count == 1 else round(frames * SEQUENCE_SHARE)
        if self.seq_frames < count:
            self.seq_frames = 0  # too short for one frame per reference: collage throughout
        short = min(width, height)
        self.big: list[Slot] = []
        for picture in pictures:
            fitted = ImageOps.contain(flatten(picture), (int(width * 0.62), int(height * 0.68)))
            fitted = fitted.resize((even(fitted.width), even(fitted.height)))
            card = _card(fitted, max(3, short // 40), max(2, short // 120), max(3, short // 60))
            self.big.append(Slot(card, (width - card.width) / 2, (height - card.height) / 2))
        self.collage = _cell_cards(pictures, width, height, "rounded", (0.05, 0.07, 0.95, 0.86))

    def draw(self, index: int, planes: Planes) -> None:
        count = len(self.big)
        if index < self.seq_frames:
            slot_len = self.seq_frames / count
            n = min(int(index / slot_len), count - 1)
            # Progress through the slot measured at frame centres, so even a one- or two-frame slot
            # has a frame at full opacity.
            u = (index - n * slot_len + 0.5) / slot_len
            fade_in = 1.0 if n == 0 else min(1.0, u / FADE_SHARE)
            fade_out = (
                1.0
                if (n == count - 1 and self.seq_frames == self.frames)
                else min(1.0, (1.0 - u) / FADE_SHARE)
            )
            slot = self.big[n]
            # A gentle slide across the slot gives each card its own motion.
            dx = (0.5 - u) * self.width * 0.05
            slot.overlay.blit(planes, int(slot.x + dx), int(slot.y), opacity=max(0.0, min(fade_in, fade_out)))
            return
        tail = self.frames - self.seq_frames
        u = (index - self.seq_frames + 1) / max(1.0, min(tail, 8.0))
        opacity = 1.0 if self.seq_frames == 0 else smooth(u)
        for slot in self.collage:
            slot.overlay.blit(planes, int(slot.x), int(slot.y), opacity=opacity)


class FusionCards:
    """PixVerse fusion: all references together as oval "subjects" that bob and draw together."""

    def __init__(
        self, pictures: Sequence[Image.Image], width: int, height: int, fps: int, rng: np.random.Generator
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.slots = _cell_cards(pictures, width, height, "oval", (0.06, 0.1, 0.94, 0.84))
        self.phase = [float(p) for p in rng.uniform(0, 2 * math.pi, len(self.slots))]
        self.freq = [float(f) for f in rng.uniform(0.25, 0.6, len(self.slots))]
        self.bob = min(width, height) * 0.02

    def draw(self, index: int, planes: Planes, progress: float) -> None:
        t = index / self.fps
        cx, cy = self.width / 2, self.height / 2
        pull = 0.12 * smooth(progress)
        for slot, phase, freq in zip(self.slots, self.phase, self.freq, strict=True):
            mx, my = slot.x + slot.overlay.width / 2, slot.y + slot.overlay.height / 2
            x = slot.x + (cx - mx) * pull
            y = slot.y + (cy - my) * pull + self.bob * math.sin(2 * math.pi * freq * t + phase)
            slot.overlay.blit(planes, int(x), int(y))
