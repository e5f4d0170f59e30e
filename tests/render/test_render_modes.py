"""Each mode visibly does what it says, checked on decoded pixels."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
from PIL import Image

from vidgate.render import render
from vidgate.render.engine import iter_frames
from vidgate.render.modes import TextVideo, plan_shots
from vidgate.render.source import phase_shift
from vidgate.render.yuv import Planes, cover

from .probe import Frame, colour_share, decode_rgb, diff, spec, striped

RED, GREEN, BLUE = (225, 25, 30), (25, 200, 45), (30, 55, 225)
REFERENCE_COLOURS = [RED, GREEN, BLUE, (240, 215, 20), (200, 35, 200), (20, 205, 210), (250, 135, 5)]


def _render(tmp_path: Path, name: str, **overrides: object) -> list[Frame]:
    render(spec(**overrides), tmp_path / f"{name}.mp4", tmp_path / f"{name}.jpg")
    return decode_rgb(tmp_path / f"{name}.mp4")


def _rgb(frame: np.ndarray) -> Frame:
    """yuv420p array -> RGB, the same way a decoder would."""
    rgb = av.VideoFrame.from_ndarray(frame, format="yuv420p").to_ndarray(format="rgb24")
    return np.asarray(rgb, dtype=np.uint8)


def test_text_scene_moves_and_depends_on_the_prompt(tmp_path: Path) -> None:
    frames = _render(tmp_path, "a", duration=2)
    other = _render(tmp_path, "b", prompt="a red fox in deep snow at noon", duration=1)
    assert diff(frames[0], frames[-1]) > 3.0  # drift, shapes and sparkles move
    assert all(diff(a, b) > 0.05 for a, b in itertools.pairwise(frames))  # no frozen frames
    assert float(np.abs(frames[0].mean((0, 1)) - other[0].mean((0, 1))).max()) > 10.0  # another palette


def test_text_caption_is_drawn_in_the_lower_third() -> None:
    s = spec()
    video = TextVideo(s, plan_shots(s))
    placed = video.caption
    assert placed is not None
    with_caption, without = Planes(640, 360), Planes(640, 360)
    video.draw(5, with_caption)
    video.caption = None
    video.draw(5, without)
    a, b = _rgb(with_caption.array()), _rgb(without.array())
    box = (
        slice(placed.y, placed.y + placed.overlay.height),
        slice(placed.x, placed.x + placed.overlay.width),
    )
    assert placed.y > 360 * 0.6
    assert diff(a[box], b[box]) > 15.0
    assert float(np.mean(a[box].mean(-1) > 200)) > 0.03  # light text pixels
    assert diff(a[: placed.y], b[: placed.y]) == 0.0  # nothing else touched


def test_image_mode_starts_on_the_cover_cropped_image_then_moves(tmp_path: Path) -> None:
    source = striped(RED, (500, 500))  # square into 16:9: cover-crops top and bottom
    frames = _render(tmp_path, "v", mode="image", images=(source,), duration=2)
    expected = np.asarray(cover(source, 640, 360))
    assert diff(frames[0], expected) < 6.0
    assert diff(frames[-1], expected) > 12.0  # Ken Burns: zoomed/panned away
    # ...but it is the same picture: mean colour drifts only mildly.
    assert float(np.abs(frames[-1].mean((0, 1)) - frames[0].mean((0, 1))).max()) < 20.0
    steps = [diff(a, b) for a, b in itertools.pairwise(frames)]
    assert max(steps) < 12.0  # smooth motion, no cuts


def test_transition_goes_from_the_first_image_to_the_last(tmp_path: Path) -> None:
    first, last = striped(RED), striped(BLUE, (300, 500))
    frames = _render(tmp_path, "v", mode="transition", images=(first, last), duration=2)
    a, b = np.asarray(cover(first, 640, 360)), np.asarray(cover(last, 640, 360))
    assert diff(frames[0], a) < 6.0
    assert diff(frames[-1], b) < 6.0
    assert diff(frames[0], b) > 30.0
    mid = frames[len(frames) // 2].mean((0, 1))
    # Half way the red and blue channels are both partly present.
    assert 60 < mid[0] < 200 and 60 < mid[2] < 200
    reds = [f[..., 0].mean() for f in frames]
    assert all(x >= y - 2.0 for x, y in itertools.pairwise(reds))  # monotonic dissolve


def test_reference_mode_shows_every_reference(tmp_path: Path) -> None:
    images = tuple(Image.new("RGB", (320, 240), c) for c in REFERENCE_COLOURS)
    frames = _render(tmp_path, "v", mode="reference", model="viduq3", images=images, duration=2)
    for colour in REFERENCE_COLOURS:
        best = max(colour_share(f, colour) for f in frames)
        assert best > 0.15, colour  # each one shown large at some point
    last = frames[-1]
    assert all(colour_share(last, c) > 0.01 for c in REFERENCE_COLOURS)  # final collage has them all


def test_fusion_mode_shows_every_reference_together(tmp_path: Path) -> None:
    colours = REFERENCE_COLOURS[:4]
    images = tuple(striped(c) for c in colours)
    frames = _render(tmp_path, "v", mode="fusion", images=images, duration=1)
    for frame in (frames[0], frames[len(frames) // 2], frames[-1]):
        for colour in colours:
            assert colour_share(frame, colour) > 0.01, colour
    assert diff(frames[0], frames[-1]) > 1.0  # subjects move


def _panning_source(path: Path, frames: int = 24, speed: int = 3) -> Image.Image:
    """A 480x272 clip whose content pans right by `speed` px per frame; returns its last frame."""
    big = striped(GREEN, (480 + frames * speed, 272))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 480, 272, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            # Content moving right = the window sliding left over the big picture.
            x = frames * speed - i * speed
            frame = av.VideoFrame.from_ndarray(np.asarray(big.crop((x, 0, x + 480, 272))), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        *_, last = container.decode(video=0)
        return Image.fromarray(last.to_ndarray(format="rgb24"))


def test_extend_continues_from_the_last_frame_in_the_same_direction(tmp_path: Path) -> None:
    source = tmp_path / "source.mp4"
    last = _panning_source(source)
    frames = _render(tmp_path, "v", mode="extend", source_video=source, duration=1)
    assert len(frames) == 24
    assert diff(frames[0], np.asarray(cover(last, 640, 360))) < 6.0
    grey = [f.mean(-1).astype(np.float32) for f in frames]
    dx, _, _ = phase_shift(grey[0], grey[6])
    assert dx > 3.0  # the content keeps moving right


def test_extend_of_a_long_source_starts_from_its_very_last_frame(tmp_path: Path) -> None:
    # Over 3 s the reader seeks near the end instead of decoding everything: check it finds the end.
    source = tmp_path / "long.mp4"
    render(spec(duration=4, width=320, height=180, multi_clip=True), source, tmp_path / "long.jpg")
    tail = decode_rgb(source)[-48:]
    frames = _render(tmp_path, "v", mode="extend", source_video=source, width=320, height=180)
    assert diff(frames[0], tail[-1]) < 5.0
    distances = [diff(frames[0], f) for f in tail]
    assert int(np.argmin(distances)) == len(tail) - 1


def test_watermark_marks_the_bottom_right_corner_of_every_frame(tmp_path: Path) -> None:
    marked = _render(tmp_path, "m", watermark=True)
    plain = _render(tmp_path, "p", watermark=False)
    for a, b in zip(marked, plain, strict=True):
        assert diff(a[-40:, -160:], b[-40:, -160:]) > 8.0
        assert diff(a[:200, :320], b[:200, :320]) < 1.0


def test_multi_clip_has_hard_cuts_where_planned(tmp_path: Path) -> None:
    s = spec(duration=3, multi_clip=True)
    shots = plan_shots(s)
    assert 2 <= shots.count <= 3
    frames = _render(tmp_path, "v", duration=3, multi_clip=True)
    steps = [diff(a, b) for a, b in itertools.pairwise(frames)]
    cuts = [i + 1 for i, d in enumerate(steps) if d > 8 * float(np.median(steps)) and d > 8.0]
    assert cuts == list(shots.starts[1:])
    single = _render(tmp_path, "s", duration=3, multi_clip=False)
    single_steps = [diff(a, b) for a, b in itertools.pairwise(single)]
    assert max(single_steps) < 8.0


def test_multi_clip_image_cuts_to_new_framings(tmp_path: Path) -> None:
    s = spec(mode="image", images=(striped(RED),), duration=2, multi_clip=True)
    shots = plan_shots(s)
    frames = _render(tmp_path, "v", mode="image", images=(striped(RED),), duration=2, multi_clip=True)
    steps = [diff(a, b) for a, b in itertools.pairwise(frames)]
    for start in shots.starts[1:]:
        assert steps[start - 1] > 3 * float(np.median(steps))


def test_iter_frames_matches_the_rendered_video(tmp_path: Path) -> None:
    s = spec()
    first = next(iter_frames(s)).copy()
    frames = _render(tmp_path, "v")
    assert diff(_rgb(first), frames[0]) < 3.0
