"""Planar YUV 4:2:0 frames and the few pixel operations the renderer needs.

Frames are produced directly as yuv420p (BT.601 matrix, limited range, and tagged that way in the
stream), so the encoder never converts colour and each per-frame step is a slice copy or a small
integer blend. Everything that needs floats happens once, when a layer is prepared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

U8 = NDArray[np.uint8]
I16 = NDArray[np.int16]
F32 = NDArray[np.float32]

#: Fixed-point alpha scale: 7 bits keeps `value * alpha` inside int16 (255 * 128 = 32640).
ALPHA_ONE = 128

# BT.601 limited-range matrix (what swscale assumes for untagged SD/HD streams, and what we tag).
_RGB_TO_Y = np.array([0.256788, 0.504129, 0.097906], dtype=np.float32)
_RGB_TO_U = np.array([-0.148223, -0.290993, 0.439216], dtype=np.float32)
_RGB_TO_V = np.array([0.439216, -0.367788, -0.071427], dtype=np.float32)


class Planes:
    """One reusable yuv420p frame: a flat buffer with Y, U and V plane views into it."""

    def __init__(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"frame size must be positive and even, got {width}x{height}")
        self.width = width
        self.height = height
        luma = width * height
        chroma = (width // 2) * (height // 2)
        self.buf: U8 = np.zeros(luma + 2 * chroma, dtype=np.uint8)
        self.y: U8 = self.buf[:luma].reshape(height, width)
        # U and V are adjacent in the buffer, so one (2, h/2, w/2) view lets blends treat both at once.
        self.uv: U8 = self.buf[luma:].reshape(2, height // 2, width // 2)
        self.u: U8 = self.uv[0]
        self.v: U8 = self.uv[1]

    def array(self) -> U8:
        """The frame in PyAV's yuv420p ndarray layout, shape (height * 3 / 2, width); a view."""
        return self.buf.reshape(self.height * 3 // 2, self.width)

    def load(self, image: YuvImage) -> None:
        np.copyto(self.y, image.y)
        np.copyto(self.u, image.u)
        np.copyto(self.v, image.v)


@dataclass(frozen=True)
class YuvImage:
    """A still picture in 4:2:0: full-size Y and half-size U, V planes (uint8)."""

    y: U8
    u: U8
    v: U8

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    def to_pil(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        return Image.fromarray(self.y), Image.fromarray(self.u), Image.fromarray(self.v)

    @staticmethod
    def from_pil(y: Image.Image, u: Image.Image, v: Image.Image) -> YuvImage:
        return YuvImage(
            np.asarray(y, dtype=np.uint8), np.asarray(u, dtype=np.uint8), np.asarray(v, dtype=np.uint8)
        )


def _half(plane: F32) -> F32:
    """2x2 box average (chroma siting is close enough for previews)."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    p = plane[:h, :w]
    out: F32 = (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) * np.float32(0.25)
    return out


def rgb_to_yuv_float(rgb: F32) -> tuple[F32, F32, F32]:
    """RGB floats in 0..255, shape (h, w, 3) with even h, w -> float Y (h, w), U and V (h/2, w/2)."""
    y: F32 = rgb @ _RGB_TO_Y + np.float32(16.0)
    small = np.stack([_half(rgb[..., c]) for c in range(3)], axis=-1)
    u: F32 = small @ _RGB_TO_U + np.float32(128.0)
    v: F32 = small @ _RGB_TO_V + np.float32(128.0)
    return y, u, v


def quantize(plane: F32, dither: F32 | None = None) -> U8:
    """Round to uint8; an optional dither field hides banding in smooth gradients."""
    if dither is not None:
        plane = plane + dither[: plane.shape[0], : plane.shape[1]]
    out: U8 = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
    return out


def rgb_array_to_yuv(rgb: NDArray[np.uint8] | F32) -> YuvImage:
    y, u, v = rgb_to_yuv_float(np.asarray(rgb, dtype=np.float32))
    return YuvImage(quantize(y), quantize(u), quantize(v))


def color_to_yuv(rgb: tuple[float, float, float] | NDArray[np.float32]) -> tuple[int, int, int]:
    """One RGB colour (0..255) as limited-range (Y, U, V) integers."""
    c = np.asarray(rgb, dtype=np.float32)
    return (
        round(float(c @ _RGB_TO_Y) + 16.0),
        round(float(c @ _RGB_TO_U) + 128.0),
        round(float(c @ _RGB_TO_V) + 128.0),
    )


#: What transparent parts of an input image are shown over (a neutral dark grey).
_MATTE = (24, 24, 28)


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over a dark matte (not whatever colour hides under it)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        matte = Image.new("RGBA", rgba.size, (*_MATTE, 255))
        return Image.alpha_composite(matte, rgba).convert("RGB")
    return image.convert("RGB")


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fill width x height and centre-crop the overflow (CSS `object-fit: cover`)."""
    rgb = flatten(image)
    if rgb.size == (width, height):
        return rgb
    return ImageOps.fit(rgb, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def image_to_yuv(image: Image.Image, width: int, height: int) -> YuvImage:
    return rgb_array_to_yuv(np.asarray(cover(image, width, height), dtype=np.uint8))


def alpha_to_fixed(alpha: F32) -> I16:
    out: I16 = np.rint(np.clip(alpha, 0.0, 1.0) * ALPHA_ONE).astype(np.int16)
    return out


class _PlaneBlend:
    """Premultiplied fixed-point blend: dst = dst * (1 - a) + src * a, with 7-bit alpha.

    `src` is one plane (h, w) or a stack of planes (n, h, w) sharing one (h, w) alpha.
    """

    def __init__(self, src: U8, alpha: I16) -> None:
        self.src = src.astype(np.int16)
        self.alpha = alpha
        self.pm: I16 = (self.src * alpha + ALPHA_ONE // 2).astype(np.int16)
        self.inv: I16 = (ALPHA_ONE - alpha).astype(np.int16)
        self.scratch: I16 = np.empty_like(self.pm)

    def apply(self, dst: U8, r0: int, r1: int, c0: int, c1: int, opacity: int = ALPHA_ONE) -> None:
        """Blend rows r0:r1, cols c0:c1 of this layer onto `dst` (same shape as that window)."""
        if opacity >= ALPHA_ONE:
            pm, inv = self.pm[..., r0:r1, c0:c1], self.inv[r0:r1, c0:c1]
        else:
            # A fading layer: scale alpha on the fly (only used by cards, not the hot text path).
            a = (self.alpha[r0:r1, c0:c1] * opacity) >> 7
            pm = self.src[..., r0:r1, c0:c1] * a + ALPHA_ONE // 2
            inv = ALPHA_ONE - a
        s = self.scratch[..., r0:r1, c0:c1]
        np.multiply(dst, inv, out=s)
        np.add(s, pm, out=s)
        np.right_shift(s, 7, out=s)
        np.copyto(dst, s, casting="unsafe")


class Overlay:
    """A pre-converted RGBA layer that can be blended onto a frame at any even position, cheaply.

    All float work (colour conversion, alpha scaling, premultiplying) happens here once; `blit` is
    four integer ufuncs per plane on the covered window only, with reused scratch buffers.
    """

    def __init__(self, image: YuvImage, alpha: F32) -> None:
        if image.width % 2 or image.height % 2:
            raise ValueError("overlay size must be even")
        self.width = image.width
        self.height = image.height
        a = alpha_to_fixed(alpha)
        a_chroma = alpha_to_fixed(_half(alpha.astype(np.float32)))
        self._y = _PlaneBlend(image.y, a)
        self._uv = _PlaneBlend(np.stack([image.u, image.v]), a_chroma)

    @staticmethod
    def from_rgba(rgba: Image.Image) -> Overlay:
        """From a Pillow RGBA image; odd sizes are padded with transparency to even."""
        w, h = rgba.size
        if w % 2 or h % 2:
            padded = Image.new("RGBA", (w + w % 2, h + h % 2), (0, 0, 0, 0))
            padded.paste(rgba, (0, 0))
            rgba = padded
        arr = np.asarray(rgba.convert("RGBA"), dtype=np.float32)
        alpha: F32 = arr[..., 3] * np.float32(1.0 / 255.0)
        return Overlay(rgb_array_to_yuv(arr[..., :3]), alpha)

    def blit(self, planes: Planes, x: int, y: int, opacity: float = 1.0) -> None:
        """Blend with the top-left corner at (x, y), rounded down to even; clipped to the frame."""
        x -= x % 2
        y -= y % 2
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + self.width, planes.width), min(y + self.height, planes.height)
        if x1 <= x0 or y1 <= y0 or opacity <= 0.0:
            return
        op = round(min(opacity, 1.0) * ALPHA_ONE)
        self._y.apply(planes.y[y0:y1, x0:x1], y0 - y, y1 - y, x0 - x, x1 - x, op)
        cy0, cy1, cx0, cx1 = y0 // 2, y1 // 2, x0 // 2, x1 // 2
        ry, rx = y // 2, x // 2
        self._uv.apply(planes.uv[:, cy0:cy1, cx0:cx1], cy0 - ry, cy1 - ry, cx0 - rx, cx1 - rx, op)


def even(value: float) -> int:
    """Round to the nearest even integer (4:2:0 chroma needs even offsets)."""
    return round(value / 2.0) * 2
