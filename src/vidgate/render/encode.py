"""The MP4 writer: H.264 (libx264, yuv420p) plus optional AAC, muxed by PyAV with faststart.

Frames arrive as yuv420p arrays, so no pixel-format conversion happens on the way to x264.
Audio (a precomputed float array) is encoded in step with the video so the muxer interleaves the
two streams as it goes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from vidgate.render.audio import CHANNELS, SAMPLE_RATE
from vidgate.render.yuv import F32, U8

#: AVCodecContext colour tags (libavutil enum values): BT.601 matrix, limited range, sRGB-ish primaries
#: and transfer. They match how the frames were converted, so players decode the colours we meant.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1
_AVCOL_PRI_BT709 = 1
_AVCOL_TRC_BT709 = 1

#: AAC-LC frame length; feeding whole frames keeps timestamps exact.
_AAC_FRAME = 1024
_AUDIO_BITRATE = 128_000


@dataclass(frozen=True)
class EncoderSettings:
    width: int
    height: int
    fps: int
    preset: str = "veryfast"
    crf: int = 23
    gop_seconds: int = 2


class VideoWriter:
    """Write yuv420p frames (and optionally a stereo float32 soundtrack) to an MP4 file.

    Use as a context manager; leaving the block normally finalises the file, leaving it with an
    exception only closes it (the caller deletes the partial file).
    """

    def __init__(self, path: Path, settings: EncoderSettings, audio: F32 | None = None) -> None:
        self.settings = settings
        self.frames = 0
        # movflags is a muxer (container) option; as a stream option it would be silently ignored.
        self._container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            video = self._container.add_stream("libx264", rate=settings.fps)
            video.width = settings.width
            video.height = settings.height
            video.pix_fmt = "yuv420p"
            video.time_base = Fraction(1, settings.fps)
            video.options = {"preset": settings.preset, "crf": str(settings.crf)}
            ctx = video.codec_context
            ctx.gop_size = settings.gop_seconds * settings.fps
            # thread_count 0 lets x264 pick its thread count; PyAV defaults thread_type to SLICE,
            # which would force x264's sliced threading, so ask for x264's own frame threading.
            ctx.thread_count = 0
            ctx.thread_type = "FRAME"
            ctx.colorspace = _AVCOL_SPC_SMPTE170M
            ctx.color_range = _AVCOL_RANGE_MPEG
            ctx.color_primaries = _AVCOL_PRI_BT709
            ctx.color_trc = _AVCOL_TRC_BT709
            self._video = video
            self._audio: av.AudioStream | None = None
            self._samples: F32 | None = None
            self._audio_pos = 0
            if audio is not None:
                if audio.ndim != 2 or audio.shape[0] != CHANNELS:
                    raise ValueError("audio must be float32 of shape (2, samples)")
                stream = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
                stream.bit_rate = _AUDIO_BITRATE
                stream.time_base = Fraction(1, SAMPLE_RATE)
                self._audio = stream
                self._samples = np.ascontiguousarray(audio, dtype=np.float32)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def write(self, frame: U8) -> None:
        """Encode one yuv420p frame (PyAV layout: shape (height * 3 / 2, width), uint8)."""
        vf = av.VideoFrame.from_ndarray(frame, format="yuv420p")
        vf.pts = self.frames
        for packet in self._video.encode(vf):
            self._container.mux(packet)
        self.frames += 1
        if self._samples is not None:
            self._write_audio(self.frames * SAMPLE_RATE // self.settings.fps)

    def _write_audio(self, until: int) -> None:
        assert self._samples is not None and self._audio is not None
        until = min(until, self._samples.shape[1])
        # Whole AAC frames only, except for the very end of the track.
        while self._audio_pos < until and (
            self._audio_pos + _AAC_FRAME <= until or until == self._samples.shape[1]
        ):
            end = min(self._audio_pos + _AAC_FRAME, self._samples.shape[1])
            chunk = np.ascontiguousarray(self._samples[:, self._audio_pos : end])
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate = SAMPLE_RATE
            af.pts = self._audio_pos
            af.time_base = Fraction(1, SAMPLE_RATE)
            for packet in self._audio.encode(af):
                self._container.mux(packet)
            self._audio_pos = end

    def finish(self) -> None:
        """Flush both encoders and write the trailer (faststart moves the index to the front)."""
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._samples is not None and self._audio is not None:
                self._write_audio(self._samples.shape[1])
                for packet in self._audio.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close without flushing; the file is left incomplete for the caller to delete."""
        # Nothing useful can be done about an error while closing a file that is about to be deleted.
        with contextlib.suppress(av.FFmpegError):
            self._container.close()
