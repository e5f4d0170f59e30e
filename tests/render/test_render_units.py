"""Building blocks of the renderer: colour maths, blending, text layout, audio, motion, shot plans."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest
from PIL import Image

from vidgate.render.audio import SAMPLE_RATE, synthesize
from vidgate.render.camera import Breathe, Move, crop_box
from vidgate.render.cards import grid
from vidgate.render.modes import plan_shots, rng_for
from vidgate.render.source import phase_shift
from vidgate.render.text import caption, load_font, needs_cjk, wrap
from vidgate.render.yuv import Overlay, Planes, flatten, image_to_yuv, rgb_array_to_yuv

from .probe import spec


def test_rgb_to_yuv_matches_what_decoders_convert_back() -> None:
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 4x4 flat blocks
    planes = Planes(32, 32)
    planes.load(rgb_array_to_yuv(rgb))
    back = av.VideoFrame.from_ndarray(planes.array(), format="yuv420p").to_ndarray(format="rgb24")
    assert float(np.abs(back.astype(int) - rgb.astype(int)).max()) <= 4


def test_planes_layout_matches_pyav_for_heights_not_divisible_by_four() -> None:
    rng = np.random.default_rng(1)
    planes = Planes(10, 6)  # chroma planes 5x3: their rows do not line up with luma rows
    planes.buf[:] = rng.integers(0, 256, planes.buf.size, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(planes.array(), format="yuv420p")
    assert np.array_equal(frame.to_ndarray(), planes.array())
    u = np.frombuffer(bytes(frame.planes[1]), np.uint8).reshape(3, -1)[:, :5]
    assert np.array_equal(u, planes.u)


def test_overlay_blend_matches_float_alpha_compositing() -> None:
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 250
    rgba[..., 3] = np.linspace(0, 255, 12).astype(np.uint8)[None, :]
    overlay = Overlay.from_rgba(Image.fromarray(rgba, "RGBA"))
    planes = Planes(20, 20)
    planes.y[:], planes.u[:], planes.v[:] = 50, 128, 128
    overlay.blit(planes, 4, 6)
    red_y = 16 + 0.256788 * 250
    alpha = rgba[0, :, 3] / 255.0
    expected = 50 * (1 - alpha) + red_y * alpha
    assert np.abs(planes.y[6, 4:16] - expected).max() <= 1.0
    assert (planes.y[:6] == 50).all() and (planes.y[16:] == 50).all()


def test_overlay_is_clipped_at_frame_edges() -> None:
    overlay = Overlay.from_rgba(Image.new("RGBA", (8, 8), (255, 255, 255, 255)))
    planes = Planes(10, 10)
    overlay.blit(planes, -4, 6)  # half off the left, partly off the bottom
    assert planes.y[6:, :4].min() > 200 and planes.y[:6].max() == 0 and planes.y[:, 4:].max() == 0
    overlay.blit(planes, 40, 40)  # fully outside: no error


def test_cover_crop_fills_the_frame() -> None:
    img = Image.new("RGB", (100, 400), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # the top quarter is cropped away for a 16:9 frame
    yuv = image_to_yuv(img, 64, 36)
    assert (yuv.width, yuv.height) == (64, 36)
    assert int(yuv.v.max()) < 128  # all blue (V ~ 110); any red row would push V towards 240


def test_wrap_keeps_lines_within_width_and_ellipsises_overflow() -> None:
    font = load_font(16)
    lines = wrap("word " * 200, font, 200, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 200 for line in lines)
    assert wrap("short", font, 200, max_lines=2) == ["short"]
    long_word = wrap("x" * 300, font, 100, max_lines=2)
    assert all(font.getlength(line) <= 100 for line in long_word)


def test_grid_places_every_card_inside_the_region() -> None:
    for count in range(1, 8):
        cells = grid(count, 1280, 720, (0.05, 0.1, 0.95, 0.9))
        assert len(cells) == count
        for x, y, w, h in cells:
            assert x >= 63 and x + w <= 1217 and y >= 71 and y + h <= 649


def test_audio_is_exact_length_deterministic_and_seeded() -> None:
    a = synthesize(rng_for(spec(), "audio"), 3.0)
    b = synthesize(rng_for(spec(), "audio"), 3.0)
    c = synthesize(rng_for(spec(seed=7), "audio"), 3.0)
    assert a.shape == (2, 3 * SAMPLE_RATE) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert float(np.abs(a).max()) <= 1.0
    assert abs(float(a[:, 0].max())) < 1e-3 and abs(float(a[:, -1].max())) < 1e-3  # faded ends


def test_phase_shift_finds_a_translation() -> None:
    rng = np.random.default_rng(3)
    base = np.asarray(
        Image.fromarray(rng.integers(0, 255, (40, 60), dtype=np.uint8)).resize((240, 160)), np.float32
    )
    moved = np.roll(base, (4, -7), axis=(0, 1))
    dx, dy, peak = phase_shift(base, moved)
    assert dx == pytest.approx(-7, abs=0.6) and dy == pytest.approx(4, abs=0.6) and peak > 0.2


def test_camera_paths_start_and_end_where_asked() -> None:
    assert Breathe(0.1).at(0.0) == (1.0, 0.5, 0.5)
    assert Breathe(0.1).at(1.0)[0] == pytest.approx(1.0)
    assert Breathe(0.1).at(0.5)[0] == pytest.approx(1.1)
    move = Move((1.0, 0.5, 0.5), (1.2, 0.3, 0.6))
    assert move.at(0.0) == (1.0, 0.5, 0.5) and move.at(1.0) == pytest.approx((1.2, 0.3, 0.6))
    x0, y0, x1, y1 = crop_box((2.0, 0.0, 1.0), 100, 50)  # asks for a corner beyond the edge
    assert (x0, y0, x1, y1) == (0.0, 25.0, 50.0, 50.0)


def test_shot_plan_is_deterministic_and_sane() -> None:
    assert plan_shots(spec(duration=5)).starts == (0,)
    for seed in range(20):
        s = spec(duration=5, multi_clip=True, seed=seed)
        shots = plan_shots(s)
        assert shots == plan_shots(s)
        assert 2 <= shots.count <= 3 and shots.starts[0] == 0
        bounds = [*shots.starts, s.frame_count]
        assert all(b - a >= 24 for a, b in itertools.pairwise(bounds))


def test_transparent_inputs_are_flattened_onto_a_dark_matte() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 255, 255, 0))  # invisible white
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    flat = np.asarray(flatten(rgba))
    assert flat[0, 0].tolist() == [255, 0, 0]
    assert flat[3, 3].max() < 40


def test_long_unspaced_prompts_wrap_and_cjk_is_detected() -> None:
    assert needs_cjk("一只猫") and needs_cjk("ねこ") and not needs_cjk("café déjà vu")
    font = load_font(16)
    lines = wrap("abc" * 400, font, 150, max_lines=2)
    assert len(lines) == 2 and lines[1].endswith("…")
    placed = caption("一只猫在霓虹浪上冲浪" * 100, 640, 360)
    assert placed is not None and placed.overlay.width <= 640 and placed.x >= 0
