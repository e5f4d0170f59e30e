"""Caption and watermark layers: drawn once with Pillow, then blended per frame as overlays."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from vidgate.render.yuv import Overlay, Planes, even

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

#: Text colour and the translucent box behind captions (RGBA).
_INK = (250, 250, 250, 255)
_BOX = (8, 8, 16, 120)
_SHADOW = (0, 0, 0, 170)
WATERMARK_TEXT = "vidgate"


@dataclass(frozen=True)
class Placed:
    """An overlay pinned to a frame position."""

    overlay: Overlay
    x: int
    y: int

    def draw(self, planes: Planes) -> None:
        self.overlay.blit(planes, self.x, self.y)


#: Fonts with CJK glyphs, tried (when installed) for prompts the bundled Latin font cannot draw.
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


def needs_cjk(text: str) -> bool:
    """True when text has CJK/Hangul/kana characters (U+2E80 and up, bar a few symbol blocks)."""
    return any(
        0x2E80 <= ord(ch) <= 0xD7FF or 0xF900 <= ord(ch) <= 0xFAFF or 0xFF00 <= ord(ch) <= 0xFFEF
        for ch in text
    )


@functools.lru_cache(maxsize=16)
def load_font(size: int, cjk: bool = False) -> Font:
    """Pillow's bundled font at `size` px (a bitmap fallback when FreeType is missing).

    With `cjk`, the first installed CJK font from CJK_FONTS is used instead, if there is one.
    """
    if cjk:
        for candidate in CJK_FONTS:
            try:
                return ImageFont.truetype(candidate, max(8, size))
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=max(8, size))
    except (TypeError, OSError):  # pragma: no cover - old Pillow or no FreeType
        return ImageFont.load_default()


def _text_width(font: Font, text: str) -> float:
    return float(font.getlength(text))


def wrap(text: str, font: Font, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; the last line is cut with an ellipsis when text remains.

    Text without spaces (e.g. Chinese) is broken wherever the line is full.
    """
    words = " ".join(text.split()).split(" ")
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(words) and len(lines) < max_lines:
        word = words[i]
        candidate = f"{current} {word}".strip()
        if _text_width(font, candidate) <= max_width:
            current = candidate
            i += 1
            continue
        if not current:
            # One word wider than the line: hard-cut it by characters.
            # Binary search for the longest prefix that fits (long unspaced prompts, e.g. Chinese).
            lo, hi = 1, len(word)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _text_width(font, word[:mid]) <= max_width:
                    lo = mid
                else:
                    hi = mid - 1
            cut = lo
            current = word[:cut]
            words[i] = word[cut:]
        lines.append(current)
        current = ""
    if current and len(lines) < max_lines:
        lines.append(current)
        current = ""
    if i < len(words) or current:
        last = lines[-1] if lines else ""
        while last and _text_width(font, last + "…") > max_width:
            last = last[:-1]
        if lines:
            lines[-1] = last.rstrip() + "…"
    return [line for line in lines if line]


def caption(prompt: str, width: int, height: int) -> Placed | None:
    """The prompt as a centred lower-third caption on a translucent rounded box."""
    text = " ".join(prompt.split())
    if not text:
        return None
    short = min(width, height)
    size = max(12, round(short * 0.045))
    font = load_font(size, needs_cjk(text))
    pad = max(6, size // 2)
    max_text_w = width * 0.80 - 2 * pad
    lines = wrap(text, font, max_text_w, max_lines=2)
    if not lines:
        return None
    line_h = round(size * 1.25)
    text_w = max(_text_width(font, line) for line in lines)
    box_w = min(width - 2, int(text_w) + 2 * pad)
    box_h = line_h * len(lines) + 2 * pad - (line_h - size)
    img = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=pad, fill=_BOX)
    shadow = max(1, size // 16)
    for n, line in enumerate(lines):
        lx = (box_w - _text_width(font, line)) / 2
        ly = pad + n * line_h
        draw.text((lx + shadow, ly + shadow), line, font=font, fill=_SHADOW)
        draw.text((lx, ly), line, font=font, fill=_INK)
    x = even((width - box_w) / 2)
    # Bottom margin leaves the corner strip free for the watermark.
    y = even(height * 0.88 - box_h)
    return Placed(Overlay.from_rgba(img), x, max(0, y))


def watermark(width: int, height: int) -> Placed:
    """A "vidgate" mark with a small play badge, bottom-right, semi-opaque with a soft shadow."""
    short = min(width, height)
    size = max(10, round(short * 0.038))
    font = load_font(size)
    margin = max(4, round(short * 0.025))
    badge = size
    gap = max(3, size // 3)
    text_w = int(_text_width(font, WATERMARK_TEXT)) + 1
    blur = max(1, size // 10)
    w = badge + gap + text_w + 4 * blur
    h = round(size * 1.3) + 4 * blur
    ink = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(ink)
    bx, by = 2 * blur, (h - badge) // 2
    draw.ellipse((bx, by, bx + badge - 1, by + badge - 1), fill=(255, 255, 255, 215))
    tri = badge * 0.28
    cx, cy = bx + badge / 2 + tri * 0.15, by + badge / 2
    draw.polygon(
        [(cx - tri * 0.8, cy - tri), (cx - tri * 0.8, cy + tri), (cx + tri, cy)], fill=(30, 30, 40, 230)
    )
    draw.text(
        (bx + badge + gap, (h - size) / 2 - size * 0.1), WATERMARK_TEXT, font=font, fill=(255, 255, 255, 215)
    )
    # A blurred dark copy underneath keeps the mark legible on bright frames.
    shadow = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    shadow.putalpha(ink.getchannel("A").point(lambda a: a * 140 // 255))
    shadow = shadow.filter(ImageFilter.GaussianBlur(blur))
    mark = Image.alpha_composite(shadow, ink)
    x = even(width - margin - w)
    y = even(height - margin - h)
    return Placed(Overlay.from_rgba(mark), max(0, x), max(0, y))
