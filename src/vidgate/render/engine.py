"""`render`: spec in, finished MP4 and JPEG thumbnail out, with progress and cancellation.

Output goes to temporary files beside the targets and is moved into place only when complete, so
a cancelled or failed render never leaves a partial file at `video_path`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
from PIL import Image

from vidgate.render import ProgressCallback, RenderCancelled, RenderResult, RenderSpec, StopCheck
from vidgate.render.audio import synthesize
from vidgate.render.encode import EncoderSettings, VideoWriter
from vidgate.render.modes import build, rng_for, validate
from vidgate.render.text import watermark
from vidgate.render.yuv import U8, Planes

#: Progress is reported every this many frames (half a second of video at 24 fps).
PROGRESS_EVERY = 12
THUMBNAIL_MAX_WIDTH = 1280
_JPEG_QUALITY = 88


def encoder_settings(spec: RenderSpec) -> EncoderSettings:
    return EncoderSettings(spec.width, spec.height, spec.fps, preset=spec.preset, crf=spec.crf)


def iter_frames(spec: RenderSpec) -> Generator[U8, None, None]:
    """The clip's frames as yuv420p arrays of shape (height * 3 / 2, width).

    The same buffer is reused for every frame: copy a frame to keep it past the next iteration.
    """
    source = build(spec)
    planes = Planes(spec.width, spec.height)
    mark = watermark(spec.width, spec.height) if spec.watermark else None
    for index in range(spec.frame_count):
        source.draw(index, planes)
        if mark is not None:
            mark.draw(planes)
        yield planes.array()


def save_thumbnail(frame: U8, path: Path) -> None:
    """JPEG of a yuv420p frame, at most THUMBNAIL_MAX_WIDTH wide."""
    image = Image.fromarray(av.VideoFrame.from_ndarray(frame, format="yuv420p").to_ndarray(format="rgb24"))
    if image.width > THUMBNAIL_MAX_WIDTH:
        height = max(2, round(image.height * THUMBNAIL_MAX_WIDTH / image.width))
        image = image.resize((THUMBNAIL_MAX_WIDTH, height), Image.Resampling.BILINEAR)
    image.save(path, format="JPEG", quality=_JPEG_QUALITY)


def _temp_beside(target: Path, suffix: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(name)


def render(
    spec: RenderSpec,
    video_path: Path,
    thumbnail_path: Path,
    *,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> RenderResult:
    """Render `spec` to an MP4 at `video_path` and a JPEG of its first frame at `thumbnail_path`.

    `progress(fraction)` is called with increasing values as frames are encoded, ending at 1.0;
    `should_stop()` is checked between frames and makes the render raise RenderCancelled.
    Raises ValueError for a spec that cannot be rendered (see `modes.validate`).
    """
    validate(spec)
    video_path, thumbnail_path = Path(video_path), Path(thumbnail_path)
    frames = iter_frames(spec)
    audio = synthesize(rng_for(spec, "audio"), float(spec.duration)) if spec.audio else None
    total = spec.frame_count
    temps: list[Path] = []
    # The JPEG is encoded on a helper thread (Pillow releases the GIL while encoding), beside x264.
    thumbnailer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidgate-thumb")
    thumb: Future[None] | None = None
    try:
        tmp_video = _temp_beside(video_path, ".part.mp4")
        temps.append(tmp_video)
        tmp_thumb = _temp_beside(thumbnail_path, ".part.jpg")
        temps.append(tmp_thumb)
        with VideoWriter(tmp_video, encoder_settings(spec), audio) as writer:
            for index in range(total):
                if should_stop is not None and should_stop():
                    raise RenderCancelled(f"render stopped after {index} of {total} frames")
                frame = next(frames)
                if index == 0:
                    thumb = thumbnailer.submit(save_thumbnail, frame.copy(), tmp_thumb)
                writer.write(frame)
                done = index + 1
                if progress is not None and done % PROGRESS_EVERY == 0 and done < total:
                    progress(done / total)
        if thumb is not None:
            thumb.result()
        os.replace(tmp_video, video_path)
        os.replace(tmp_thumb, thumbnail_path)
    except BaseException:
        frames.close()
        thumbnailer.shutdown(wait=True, cancel_futures=True)
        for leftover in temps:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    thumbnailer.shutdown(wait=False)
    if progress is not None:
        progress(1.0)
    return RenderResult(
        width=spec.width,
        height=spec.height,
        frames=writer.frames,
        fps=spec.fps,
        duration=writer.frames / spec.fps,
        has_audio=audio is not None,
    )
