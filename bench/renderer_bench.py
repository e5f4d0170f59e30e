"""Renderer benchmark: `render` of a 5 s 720p 16:9 text clip against encoding its frames alone.

The baseline encodes the very same frames (pre-rendered into memory by `iter_frames`) through the
same writer and encoder settings, so `ratio` is the cost of frame generation, thumbnail and setup
on top of the encoder. Best of RUNS for each side, runs interleaved so machine noise hits both.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from vidgate.render import RenderSpec, render
from vidgate.render.encode import VideoWriter
from vidgate.render.engine import encoder_settings, iter_frames
from vidgate.render.yuv import U8

SPEC = RenderSpec(
    model="pixverse-v6",
    mode="text",
    prompt="A lighthouse on a rocky cliff at dusk, waves crashing below, slow cinematic drift",
    width=1280,
    height=720,
    duration=5,
    seed=20240601,
)
TARGET_RATIO = 1.3
TARGET_REALTIME_FACTOR = 4.0
RUNS = 3


def _time_render(workdir: Path) -> float:
    start = time.perf_counter()
    render(SPEC, workdir / "render.mp4", workdir / "render.jpg")
    return time.perf_counter() - start


def _time_encode(frames: list[U8], workdir: Path) -> float:
    start = time.perf_counter()
    with VideoWriter(workdir / "encode.mp4", encoder_settings(SPEC)) as writer:
        for frame in frames:
            writer.write(frame)
    return time.perf_counter() - start


def run() -> dict[str, float | str | bool]:
    with tempfile.TemporaryDirectory(prefix="vidgate-bench-") as tmp:
        workdir = Path(tmp)
        frames = [frame.copy() for frame in iter_frames(SPEC)]
        render_times: list[float] = []
        encode_times: list[float] = []
        for _ in range(RUNS):
            render_times.append(_time_render(workdir))
            encode_times.append(_time_encode(frames, workdir))
    render_s = min(render_times)
    encode_s = min(encode_times)
    ratio = render_s / encode_s
    realtime = SPEC.duration / render_s
    return {
        "clip": f"{SPEC.duration}s {SPEC.width}x{SPEC.height} {SPEC.mode} {SPEC.fps}fps",
        "encoder": f"libx264 {SPEC.preset} crf {SPEC.crf}",
        "frames": float(SPEC.frame_count),
        "render_s": round(render_s, 4),
        "encode_only_s": round(encode_s, 4),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "realtime_factor": round(realtime, 2),
        "target_realtime_factor": TARGET_REALTIME_FACTOR,
        "pass": ratio <= TARGET_RATIO and realtime >= TARGET_REALTIME_FACTOR,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(run(), indent=2) + "\n")
