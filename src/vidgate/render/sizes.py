"""Output sizes: the resolution tier names the short side; the long side follows the ratio.

720p 16:9 = 1280x720, 9:16 = 720x1280, 21:9 = 1680x720 (research/local-engines.md section 4.6).
Both sides are even, as yuv420p requires.
"""

from __future__ import annotations

from fractions import Fraction

TIERS: dict[str, int] = {"360p": 360, "540p": 540, "720p": 720, "1080p": 1080}

RATIOS: dict[str, Fraction] = {
    "16:9": Fraction(16, 9),
    "9:16": Fraction(9, 16),
    "4:3": Fraction(4, 3),
    "3:4": Fraction(3, 4),
    "1:1": Fraction(1, 1),
    "2:3": Fraction(2, 3),
    "3:2": Fraction(3, 2),
    "21:9": Fraction(21, 9),
}


def _even(value: Fraction | float) -> int:
    return max(2, round(value / 2) * 2)


def output_size(resolution: str, ratio: str) -> tuple[int, int]:
    """(width, height) for a tier such as "720p" and a ratio such as "16:9"."""
    short = TIERS[resolution]
    r = RATIOS[ratio]
    if r >= 1:
        return _even(short * r), short
    return short, _even(short / r)


def snap_ratio(width: int, height: int, allowed: tuple[str, ...] | None = None) -> str:
    """The allowed ratio nearest to width:height, compared on a log scale so 1:2 and 2:1 are symmetric."""
    import math

    candidates = allowed or tuple(RATIOS)
    target = math.log(width / height)
    return min(candidates, key=lambda name: abs(math.log(float(RATIOS[name])) - target))
