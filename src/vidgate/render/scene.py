"""The procedural text-to-video scene: palette, drifting background, moving shapes, sparkles.

Everything is prepared once per shot (a background canvas larger than the frame, pre-converted
sprite overlays, particle tables); drawing a frame is then a slice copy of the canvas at the camera
offset, a handful of small sprite blends and one vectorised scatter for the particles, which keeps
generation well under the encoder's per-frame cost.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vidgate.render.yuv import F32, U8, Overlay, Planes, YuvImage, even, quantize, rgb_to_yuv_float

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Palette:
    """Five colours (RGB 0..255): two background tones, two accents and a highlight."""

    deep: RGB
    mid: RGB
    accent: RGB
    accent2: RGB
    glow: RGB

    @staticmethod
    def generate(rng: np.random.Generator, hue: float | None = None) -> Palette:
        hue = float(rng.random()) if hue is None else hue
        scheme = float(rng.choice([0.08, 0.33, 0.5, 0.58]))  # analogous, triadic, complementary, split

        def hsv(h: float, s: float, v: float) -> RGB:
            r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
            return (r * 255.0, g * 255.0, b * 255.0)

        sat = 0.45 + 0.4 * float(rng.random())
        return Palette(
            deep=hsv(hue, sat + 0.1, 0.18 + 0.12 * float(rng.random())),
            mid=hsv(hue + 0.06, sat, 0.45 + 0.2 * float(rng.random())),
            accent=hsv(hue + scheme, 0.55 + 0.35 * float(rng.random()), 0.85),
            accent2=hsv(hue - scheme * 0.5, 0.5 + 0.3 * float(rng.random()), 0.9),
            glow=hsv(hue + scheme * 0.25, 0.25, 1.0),
        )


def _lerp(a: RGB, b: RGB, t: F32) -> F32:
    ca = np.asarray(a, dtype=np.float32)
    cb = np.asarray(b, dtype=np.float32)
    out: F32 = ca + (cb - ca) * t[..., None]
    return out


def _upscale(small: F32, width: int, height: int) -> F32:
    """Bicubic upscale of a float plane (smooth fields are computed small and enlarged)."""
    img = Image.fromarray(np.ascontiguousarray(small, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)


def background(rng: np.random.Generator, palette: Palette, width: int, height: int) -> YuvImage:
    """A gradient sky with glows, value-noise texture and a ridge silhouette; computed at 1/4 size."""
    sw, sh = max(8, width // 4), max(8, height // 4)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    u, v = xx / np.float32(sw - 1), yy / np.float32(sh - 1)
    angle = float(rng.uniform(-0.6, 0.6))
    t = np.clip(v * math.cos(angle) + (u - 0.5) * math.sin(angle), 0.0, 1.0).astype(np.float32)
    rgb = _lerp(palette.mid, palette.deep, t)
    for colour, strength in ((palette.accent, 0.55), (palette.glow, 0.35), (palette.accent2, 0.4)):
        cx, cy = float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.05, 0.6))
        radius = float(rng.uniform(0.18, 0.4))
        aspect = sw / sh
        d2 = ((u - cx) * aspect) ** 2 + (v - cy) ** 2
        g = (np.exp(-d2 / (2 * radius * radius)) * strength).astype(np.float32)
        rgb = rgb + (np.asarray(colour, dtype=np.float32) - rgb) * g[..., None]
    # Low-frequency value noise gives the sky some texture.
    grid = rng.random((6, 9)).astype(np.float32)
    noise = _upscale(grid, sw, sh)
    rgb = rgb * (0.9 + 0.2 * noise)[..., None]
    # A ridge line from summed sines, darker than the sky, anchored to the lower part of the canvas.
    base = float(rng.uniform(0.62, 0.8))
    ridge = np.full(sw, base, dtype=np.float32)
    for k in range(1, 5):
        ridge += np.float32(0.05 / k) * np.sin(
            u[0] * math.pi * (k * 1.7 + float(rng.random())) * 2 + rng.random() * 6
        )
    below = np.clip((v - ridge[None, :]) * sh / 3.0, 0.0, 1.0).astype(np.float32)
    ground = np.asarray(palette.deep, dtype=np.float32) * 0.55
    rgb = rgb + (ground - rgb) * below[..., None]
    rgb = np.clip(rgb, 0.0, 255.0).astype(np.float32)

    ys, us, vs = rgb_to_yuv_float(rgb[: sh // 2 * 2, : sw // 2 * 2])
    # Enlarging 8-bit planes with Pillow's bicubic filter is much cheaper than float maths at full
    # size, and the fields are smooth, so nothing is lost.
    bicubic = Image.Resampling.BICUBIC
    return YuvImage.from_pil(
        Image.fromarray(quantize(ys)).resize((width, height), bicubic),
        Image.fromarray(quantize(us)).resize((width // 2, height // 2), bicubic),
        Image.fromarray(quantize(vs)).resize((width // 2, height // 2), bicubic),
    )


def sprite(kind: str, size: int, colour: RGB, opacity: float) -> Overlay:
    """A soft orb, ring or diamond as an RGBA overlay (size even)."""
    size = max(4, even(size))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2.0
    r = np.hypot(xx - c, yy - c) / np.float32(size / 2.0)
    if kind == "ring":
        a = np.clip(1.0 - np.abs(r - 0.78) / 0.14, 0.0, 1.0) ** 1.5
    elif kind == "diamond":
        d = (np.abs(xx - c) + np.abs(yy - c)) / np.float32(size / 2.0)
        a = np.clip((1.0 - d) * 4.0, 0.0, 1.0)
    else:
        a = np.clip(1.0 - r, 0.0, 1.0) ** 1.6
    alpha = (a * opacity).astype(np.float32)
    # Brighter core: orbs read as light sources rather than flat discs.
    core = np.clip(1.0 - r * 1.6, 0.0, 1.0)[..., None]
    rgb = np.asarray(colour, dtype=np.float32) * (1.0 - 0.5 * core) + 255.0 * 0.5 * core
    rgb = rgb.astype(np.float32)
    y, u, v = rgb_to_yuv_float(rgb)
    return Overlay(YuvImage(quantize(y), quantize(u), quantize(v)), alpha)


@dataclass(frozen=True)
class _Mover:
    overlay: Overlay
    x0: float
    y0: float
    vx: float
    vy: float
    bob: float
    bob_freq: float
    phase: float


class Scene:
    """One shot of the procedural scene; `draw(i, planes)` renders frame i of the shot."""

    def __init__(
        self,
        rng: np.random.Generator,
        width: int,
        height: int,
        fps: int,
        *,
        busy: float = 1.0,
        hue: float | None = None,
    ) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.palette = Palette.generate(rng, hue)
        short = min(width, height)
        # The canvas is larger than the frame so the camera can drift across it.
        self.margin_x, self.margin_y = even(width * 0.06) + 2, even(height * 0.06) + 2
        self.canvas = background(rng, self.palette, width + 2 * self.margin_x, height + 2 * self.margin_y)
        self.drift = (
            float(rng.uniform(0.25, 0.45)) * (1 if rng.random() < 0.5 else -1),
            float(rng.uniform(0.15, 0.3)),
            float(rng.uniform(0, 2 * math.pi)),
            float(rng.uniform(0, 2 * math.pi)),
        )
        colours = (self.palette.accent, self.palette.accent2, self.palette.glow)
        self.movers: list[_Mover] = []
        for n in range(max(1, round((7 + int(rng.integers(0, 5))) * busy))):
            kind = str(rng.choice(["orb", "orb", "ring", "diamond"]))
            size = int(short * float(rng.uniform(0.07, 0.26)))
            speed = short * float(rng.uniform(0.02, 0.09))
            heading = float(rng.uniform(0, 2 * math.pi))
            self.movers.append(
                _Mover(
                    overlay=sprite(kind, size, colours[n % len(colours)], float(rng.uniform(0.45, 0.9))),
                    x0=float(rng.uniform(0, width)),
                    y0=float(rng.uniform(0, height * 0.85)),
                    vx=speed * math.cos(heading),
                    vy=speed * math.sin(heading) * 0.4,
                    bob=short * float(rng.uniform(0.005, 0.03)),
                    bob_freq=float(rng.uniform(0.3, 0.9)),
                    phase=float(rng.uniform(0, 2 * math.pi)),
                )
            )
        # Density scales with frame area so small previews are not cluttered.
        count = max(
            12, round((60 + int(rng.integers(0, 60))) * busy * math.sqrt(width * height / (1280 * 720)))
        )
        self.p_x = rng.uniform(2, width - 3, count)
        self.p_y = rng.uniform(2, height - 3, count)
        self.p_vx = rng.normal(0, short * 0.01, count)
        self.p_vy = -rng.uniform(short * 0.01, short * 0.05, count)
        self.p_level = rng.uniform(150, 235, count)
        self.p_freq = rng.uniform(1.0, 4.0, count)
        self.p_phase = rng.uniform(0, 2 * math.pi, count)
        big = rng.random(count) < 0.3
        # Each sparkle is 2x2 px, the bright ones 3x3 (as flat offsets into the Y plane).
        small_k = np.array([0, 1, width, width + 1])
        big_k = np.array([0, 1, 2, width, width + 1, width + 2, 2 * width, 2 * width + 1, 2 * width + 2])
        self._p_big = big
        self._k_small, self._k_big = small_k, big_k

    def camera(self, index: int) -> tuple[int, int]:
        """Canvas offset of the frame: a slow Lissajous drift, on even pixels."""
        t = index / self.fps
        sx, sy, px, py = self.drift
        ox = self.margin_x * (1.0 + math.sin(px + sx * t))
        oy = self.margin_y * (1.0 + math.sin(py + sy * t))
        return min(even(ox), 2 * self.margin_x), min(even(oy), 2 * self.margin_y)

    def draw(self, index: int, planes: Planes) -> None:
        ox, oy = self.camera(index)
        w, h = self.width, self.height
        c = self.canvas
        np.copyto(planes.y, c.y[oy : oy + h, ox : ox + w])
        np.copyto(planes.u, c.u[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2])
        np.copyto(planes.v, c.v[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2])
        t = index / self.fps
        for m in self.movers:
            span_x, span_y = w + m.overlay.width, h + m.overlay.height
            x = (m.x0 + m.vx * t + m.overlay.width) % span_x - m.overlay.width
            y = m.y0 + m.vy * t + m.bob * math.sin(m.bob_freq * t * 2 * math.pi + m.phase) + m.overlay.height
            y = y % span_y - m.overlay.height
            m.overlay.blit(planes, int(x), int(y))
        self._sparkles(t, planes.y)

    def _sparkles(self, t: float, y_plane: U8) -> None:
        w, h = self.width, self.height
        xs = ((self.p_x + self.p_vx * t) % (w - 4)).astype(np.int64) + 1
        ys = ((self.p_y + self.p_vy * t) % (h - 4)).astype(np.int64) + 1
        level = self.p_level * (0.55 + 0.45 * np.sin(self.p_freq * t + self.p_phase))
        base = ys * w + xs
        flat = y_plane.reshape(-1)
        for mask, kernel in ((~self._p_big, self._k_small), (self._p_big, self._k_big)):
            idx = (base[mask][:, None] + kernel[None, :]).reshape(-1)
            lv = np.repeat(level[mask], kernel.size).astype(np.uint8)
            flat[idx] = np.maximum(flat[idx], lv)
