"""The soundtrack: a seed-derived ambient pad (a slowly breathing chord) over soft filtered noise.

Computed once as a float32 stereo array of exactly `duration * SAMPLE_RATE` samples; the writer
encodes it to AAC in step with the video frames.
"""

from __future__ import annotations

import math

import numpy as np

from vidgate.render.yuv import F32

SAMPLE_RATE = 48_000
CHANNELS = 2

#: Chord shapes in semitones above the root (minor, major, sus2, minor 7, major 7, add9).
_CHORDS: tuple[tuple[int, ...], ...] = (
    (0, 3, 7, 12),
    (0, 4, 7, 12),
    (0, 2, 7, 12),
    (0, 3, 7, 10),
    (0, 4, 7, 11),
    (0, 4, 7, 14),
)
#: Peak level of the final mix (about -6 dBFS): loud enough to hear, far from clipping.
_PEAK = 0.5


def _midi_hz(note: float) -> float:
    return float(440.0 * 2.0 ** ((note - 69.0) / 12.0))


def _lowpass_noise(rng: np.random.Generator, n: int, width: int) -> F32:
    """White noise smoothed by a moving average (a cheap low-pass: "air" rather than hiss)."""
    white = rng.standard_normal(n + width).astype(np.float32)
    csum = np.cumsum(white, dtype=np.float64)
    smooth = (csum[width:] - csum[:-width]) / width
    out: F32 = smooth[:n].astype(np.float32)
    return out


def synthesize(rng: np.random.Generator, duration_s: float, sample_rate: int = SAMPLE_RATE) -> F32:
    """Stereo ambient pad, shape (2, round(duration_s * sample_rate)), float32 in [-1, 1]."""
    n = round(duration_s * sample_rate)
    out: F32 = np.zeros((CHANNELS, n), dtype=np.float32)
    if n == 0:
        return out
    t = np.arange(n, dtype=np.float64) / sample_rate
    root = 45 + int(rng.integers(0, 12))  # A2..G#3
    chord = _CHORDS[int(rng.integers(0, len(_CHORDS)))]
    notes = [root + step for step in chord] + [root + 12 + chord[1 + int(rng.integers(0, len(chord) - 1))]]
    for k, note in enumerate(notes):
        freq = _midi_hz(note)
        pan = 0.5 + 0.35 * math.sin(k * 2.1 + float(rng.random()))
        # Each voice breathes on its own slow LFO so the chord shimmers rather than drones.
        lfo_rate = float(rng.uniform(0.05, 0.25))
        lfo = 0.6 + 0.4 * np.sin(2 * math.pi * lfo_rate * t + float(rng.uniform(0, 2 * math.pi)))
        level = 1.0 / (1.0 + 0.35 * k)
        detune = float(rng.uniform(0.15, 0.45))  # Hz: two slightly detuned oscillators beat slowly
        voice = np.sin(2 * math.pi * freq * t) + np.sin(
            2 * math.pi * (freq + detune) * t + float(rng.random())
        )
        voice += 0.25 * np.sin(2 * math.pi * freq * 2.0 * t)  # a soft octave partial
        voice *= lfo * level
        out[0] += (voice * math.cos(pan * math.pi / 2)).astype(np.float32)
        out[1] += (voice * math.sin(pan * math.pi / 2)).astype(np.float32)
    peak = float(np.max(np.abs(out))) or 1.0
    out *= np.float32(_PEAK * 0.85 / peak)
    noise_level = np.float32(_PEAK * 0.06)
    for ch in range(CHANNELS):
        noise = _lowpass_noise(rng, n, width=24)
        noise /= np.float32(float(np.std(noise)) or 1.0)
        out[ch] += noise * noise_level
    # Raised-cosine fades: no click at either end.
    fade = min(n // 4, round(0.6 * sample_rate))
    if fade > 0:
        ramp = (0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, fade))).astype(np.float32)
        out[:, :fade] *= ramp
        out[:, n - fade :] *= ramp[::-1]
    np.clip(out, -1.0, 1.0, out=out)
    return out
