"""`diffusers`: the Wan family through diffusers on a local GPU (optional extra `vidgate[gpu]`).

Which checkpoint serves which mode is configuration (`VIDGATE_DIFFUSERS_{T2V,I2V,FLF2V,VACE}_MODEL`,
a hub id or a local directory):

- text -> `WanPipeline`; image -> `WanImageToVideoPipeline`; transition -> the same class with
  `last_image` (an FLF2V checkpoint); reference (viduq3), fusion and extend -> `WanVACEPipeline`
  (reference images; for extend, the source's last frames as known frames under a frame mask).
- The provider declares a model when at least one of its modes is configured (viduq3 and
  viduq3-mix need VACE). A request in a mode this deployment has no checkpoint for fails at once
  with `engine_mode_unavailable`, naming the setting; route such models elsewhere with
  VIDGATE_ROUTES when that is not wanted.

Pipelines load on first use and stay resident for the life of the worker process; one generation
runs at a time per device (a process-wide lock). The model generates at its native size (the
configured area, aspect nearest the request) and a frame count near the request's duration at its
native fps; the frames are then resized to the exact output size, retimed to 24 fps and encoded like
the CPU renderer's output (H.264 yuv420p, +faststart, AAC when asked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import ClassVar

import numpy as np
from PIL import Image

from vidgate import catalog
from vidgate.catalog import VideoRequest
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.providers import Done, Provider, TaskContext
from vidgate.providers import _wan_engine as engine
from vidgate.providers._wan_engine import (
    KNOWN_SHARE,
    MODES,
    Job,
    installed,
    native_frames,
    native_size,
    read_last_frames,
    served_modes,
    write_video,
)
from vidgate.providers.local import request_seed
from vidgate.render import FPS, RenderCancelled
from vidgate.render.sizes import output_size, snap_ratio
from vidgate.status import Phase

log = logging.getLogger(__name__)


class DiffusersWanProvider(Provider, name="diffusers"):
    #: Rebuilt per deployment by `enabled()` from the configured modes.
    models: ClassVar[frozenset[str]] = frozenset()
    #: After a model's own upstream and the relays, before the CPU renderer.
    extends_any_video: ClassVar[bool] = True
    preference: ClassVar[int] = 50

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        modes = served_modes(settings)
        if not modes or not installed():
            return False
        cls.models = frozenset(
            name for name, model in catalog.MODELS.items() if modes.intersection(model.modes)
        )
        return bool(cls.models)

    def estimated_time(self, request: VideoRequest) -> int:
        frames = native_frames(self.settings, request.clip_seconds)
        return max(5, math.ceil(self.settings.diffusers_steps * frames / 16) + 5)

    async def run(self, ctx: TaskContext) -> Done:
        request = ctx.request
        mode = request.mode
        setting, _ = MODES[mode]
        if mode not in served_modes(self.settings):
            raise TaskFailure(
                "engine_mode_unavailable",
                type="server_error",
                engine=self.name,
                mode=mode,
                setting=f"VIDGATE_{setting.upper()}",
            )
        ctx.set_phase(Phase.FETCHING_INPUTS)
        images = await ctx.load_images()
        ratio = request.output_ratio()
        known: list[Image.Image] = []
        if request.source_task_id is not None:
            source_path, source = await ctx.source_video(request.source_task_id)
            ratio = snap_ratio(int(source["width"]), int(source["height"]))
        if ratio is None:
            ratio = snap_ratio(*images[0].size) if images else "16:9"
        width, height = output_size(str(getattr(request, "resolution", "720p")), ratio)
        gen_w, gen_h = native_size(self.settings, width / height)
        gen_frames = native_frames(self.settings, request.clip_seconds)
        if request.source_task_id is not None:
            count = max(1, round(gen_frames * KNOWN_SHARE))
            known = await asyncio.to_thread(read_last_frames, source_path, count)
        seed = request_seed(request, ctx.task_id)
        job = Job(
            mode=mode,
            prompt=request.prompt,
            negative_prompt=str(getattr(request, "negative_prompt", "")),
            seed=seed,
            width=width,
            height=height,
            gen_width=gen_w,
            gen_height=gen_h,
            gen_frames=gen_frames,
            duration=request.clip_seconds,
            audio=request.has_audio,
            watermark=bool(getattr(request, "watermark", False)),
            images=images,
            known=known,
        )
        ctx.set_phase(Phase.RENDERING)
        frames = await asyncio.to_thread(
            engine.generate, self.settings, job, ctx.report_progress, ctx.should_stop
        )
        if mode == "extend":
            # The continuation only, as the CPU renderer and the upstreams return it.
            frames = frames[len(known) :]
        if ctx.should_stop():
            raise RenderCancelled("stopped after generation")
        video = ctx.workdir() / "video.mp4"
        thumb = ctx.workdir() / "thumbnail.jpg"
        started = time.perf_counter()
        written = await asyncio.to_thread(write_video, job, frames, video, thumb, self.settings.local_preset)
        engine.last_stats.finish_s = time.perf_counter() - started
        ctx.report_progress(1.0)
        ctx.set_phase(Phase.FINALIZING)
        video_key = f"results/{ctx.task_id}/video.mp4"
        thumb_key = f"results/{ctx.task_id}/thumbnail.jpg"
        size = ctx.store_file(video_key, video)
        ctx.store_file(thumb_key, thumb)
        with contextlib.suppress(Exception):
            log.info(
                "diffusers: %s %dx%dx%d in %.2f s (%.3f s/step), output %dx%d, %d frames",
                mode,
                gen_w,
                gen_h,
                gen_frames,
                engine.last_stats.generate_s,
                float(np.mean(engine.last_stats.step_s)) if engine.last_stats.step_s else 0.0,
                width,
                height,
                written,
            )
        return Done(
            {
                "video": video_key,
                "thumbnail": thumb_key,
                "width": width,
                "height": height,
                "fps": FPS,
                "frames": written,
                "duration": written / FPS,
                "has_audio": request.has_audio,
                "bytes": size,
                "seed": seed,
                "ratio": ratio,
            }
        )
