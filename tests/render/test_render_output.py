"""The renderer's files: container, streams, timing, encoder settings, thumbnail, progress, cancel."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidgate.render import RenderCancelled, render
from vidgate.render.engine import THUMBNAIL_MAX_WIDTH, save_thumbnail
from vidgate.render.sizes import output_size

from .probe import decode_audio, decode_rgb, diff, probe, spec, top_level_boxes


def test_text_clip_is_h264_yuv420p_with_exact_size_rate_and_length(tmp_path: Path) -> None:
    s = spec(duration=3, audio=True)
    result = render(s, tmp_path / "v.mp4", tmp_path / "t.jpg")
    p = probe(tmp_path / "v.mp4")
    assert (p.codec, p.pix_fmt) == ("h264", "yuv420p")
    assert (p.width, p.height) == (640, 360)
    assert p.fps == 24.0
    assert p.frames == 72
    assert p.video_duration == pytest.approx(3.0, abs=1 / 24)
    assert result.frames == 72 and result.fps == 24 and result.duration == 3.0
    assert (result.width, result.height, result.has_audio) == (640, 360, True)


def test_audio_is_aac_stereo_48k_of_clip_length_and_audible(tmp_path: Path) -> None:
    render(spec(duration=2, audio=True), tmp_path / "v.mp4", tmp_path / "t.jpg")
    p = probe(tmp_path / "v.mp4")
    assert (p.audio_codec, p.audio_channels, p.audio_rate) == ("aac", 2, 48_000)
    assert p.audio_duration == pytest.approx(2.0, abs=0.03)
    # Decoders return whole 1024-sample AAC frames, so allow one frame of padding.
    assert 2 * 48_000 <= p.audio_samples <= 2 * 48_000 + 2048
    samples = decode_audio(tmp_path / "v.mp4")
    middle = samples[:, 40_000:56_000]
    rms = float(np.sqrt(np.mean(middle**2)))
    assert 0.02 < rms < 0.6
    # Fade in: the first few milliseconds are much quieter than the middle.
    assert float(np.sqrt(np.mean(samples[:, 1024:1500] ** 2))) < rms / 4
    assert not np.allclose(samples[0, 40_000:41_000], samples[1, 40_000:41_000])  # real stereo


def test_no_audio_stream_when_audio_is_off(tmp_path: Path) -> None:
    result = render(spec(audio=False), tmp_path / "v.mp4", tmp_path / "t.jpg")
    p = probe(tmp_path / "v.mp4")
    assert p.audio_codec is None and not result.has_audio


def test_moov_box_precedes_mdat_for_faststart(tmp_path: Path) -> None:
    render(spec(audio=True), tmp_path / "v.mp4", tmp_path / "t.jpg")
    boxes = top_level_boxes(tmp_path / "v.mp4")
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


def test_encoder_settings_are_written_by_x264(tmp_path: Path) -> None:
    render(spec(duration=3, crf=27), tmp_path / "v.mp4", tmp_path / "t.jpg")
    data = (tmp_path / "v.mp4").read_bytes()
    # x264 stores its option string in the stream; veryfast = subme 2, hex ME, 1 ref.
    for option in (b"crf=27.0", b"keyint=48", b"subme=2", b"me=hex", b"ref=1", b"sliced_threads=0"):
        assert option in data, option
    keys = probe(tmp_path / "v.mp4").keyframes
    assert keys[0] == 0 and len(keys) >= 2
    assert max(b - a for a, b in zip(keys, (*keys[1:], 72), strict=True)) <= 48


def test_preset_is_honoured(tmp_path: Path) -> None:
    render(spec(preset="ultrafast"), tmp_path / "v.mp4", tmp_path / "t.jpg")
    assert b"subme=0" in (tmp_path / "v.mp4").read_bytes()


def test_720p_landscape_size(tmp_path: Path) -> None:
    width, height = output_size("720p", "16:9")
    result = render(spec(width=width, height=height), tmp_path / "v.mp4", tmp_path / "t.jpg")
    p = probe(tmp_path / "v.mp4")
    assert (p.width, p.height, p.frames) == (1280, 720, 24)
    assert (result.width, result.height) == (1280, 720)
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.size == (1280, 720)


def test_portrait_size_with_height_not_divisible_by_four(tmp_path: Path) -> None:
    # 2:3 at 540p is 540x810: 810 / 2 is odd, which trips naive plane-layout code.
    width, height = output_size("540p", "2:3")
    render(spec(width=width, height=height, watermark=True), tmp_path / "v.mp4", tmp_path / "t.jpg")
    p = probe(tmp_path / "v.mp4")
    assert (p.width, p.height, p.frames) == (540, 810, 24)


def test_thumbnail_is_the_first_frame_as_jpeg(tmp_path: Path) -> None:
    render(spec(), tmp_path / "v.mp4", tmp_path / "t.jpg")
    first = decode_rgb(tmp_path / "v.mp4")[0]
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (640, 360)
        assert diff(np.asarray(thumb.convert("RGB")), first) < 4.0


def test_thumbnail_is_capped_at_1280_wide(tmp_path: Path) -> None:
    frame = np.full((1080 * 3 // 2, 2520), 128, dtype=np.uint8)
    save_thumbnail(frame, tmp_path / "t.jpg")
    with Image.open(tmp_path / "t.jpg") as thumb:
        assert thumb.size == (THUMBNAIL_MAX_WIDTH, 549) or thumb.size == (THUMBNAIL_MAX_WIDTH, 548)


def test_same_spec_gives_identical_frames_and_a_new_seed_changes_them(tmp_path: Path) -> None:
    render(spec(), tmp_path / "a.mp4", tmp_path / "a.jpg")
    render(spec(), tmp_path / "b.mp4", tmp_path / "b.jpg")
    render(spec(seed=43), tmp_path / "c.mp4", tmp_path / "c.jpg")
    a, b, c = (decode_rgb(tmp_path / f"{n}.mp4") for n in "abc")
    assert len(a) == len(b) == 24
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert diff(a[0], c[0]) > 10.0


def test_progress_rises_to_one(tmp_path: Path) -> None:
    seen: list[float] = []
    render(spec(duration=2), tmp_path / "v.mp4", tmp_path / "t.jpg", progress=seen.append)
    assert seen[-1] == 1.0
    assert all(0.0 < x <= 1.0 for x in seen)
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert len(seen) >= 48 // 12  # about every 12 frames


def test_should_stop_cancels_and_leaves_no_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("unrelated")
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(RenderCancelled):
        render(spec(duration=2), tmp_path / "v.mp4", tmp_path / "t.jpg", should_stop=stop)
    assert calls == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


def test_invalid_specs_are_rejected_before_any_file_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        render(spec(width=641), tmp_path / "v.mp4", tmp_path / "t.jpg")
    with pytest.raises(ValueError):
        render(
            spec(mode="transition", images=(Image.new("RGB", (8, 8)),)),
            tmp_path / "v.mp4",
            tmp_path / "t.jpg",
        )
    with pytest.raises(ValueError):
        render(spec(mode="extend"), tmp_path / "v.mp4", tmp_path / "t.jpg")
    assert list(tmp_path.iterdir()) == []
