"""`local`: the built-in CPU renderer serves every model with real, honest preview videos."""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any, ClassVar

from vidgate import catalog, render
from vidgate.catalog import VideoRequest
from vidgate.providers import Done, Provider, TaskContext
from vidgate.render.sizes import output_size, snap_ratio
from vidgate.status import Phase

#: Frames of 1280x720 the renderer encodes per second on a small 2-core machine (measured by bench).
_PIXEL_FRAMES_PER_SECOND = 1280 * 720 * 100


class LocalProvider(Provider, name="local"):
    models: ClassVar[frozenset[str]] = frozenset(catalog.MODELS)
    extends_any_video: ClassVar[bool] = True
    preference: ClassVar[int] = 100

    def max_concurrency(self) -> int:
        return self.settings.local_concurrency

    def estimated_time(self, request: VideoRequest) -> int:
        ratio = request.output_ratio() or "16:9"
        width, height = output_size(str(getattr(request, "resolution", "720p")), ratio)
        frames = request.clip_seconds * render.FPS
        return max(2, math.ceil(frames * width * height / _PIXEL_FRAMES_PER_SECOND) + 1)

    async def run(self, ctx: TaskContext) -> Done:
        request = ctx.request
        ctx.set_phase(Phase.FETCHING_INPUTS)
        images = await ctx.load_images()
        source_path = None
        ratio = request.output_ratio()
        if request.source_task_id is not None:
            source_path, source_result = await ctx.source_video(request.source_task_id)
            ratio = snap_ratio(int(source_result["width"]), int(source_result["height"]))
        if ratio is None:
            ratio = snap_ratio(*images[0].size) if images else "16:9"
        resolution = str(getattr(request, "resolution", "720p"))
        width, height = output_size(resolution, ratio)
        seed = request_seed(request, ctx.task_id)
        spec = render.RenderSpec(
            model=request.model,
            mode=request.mode,  # type: ignore[arg-type]
            prompt=request.prompt,
            width=width,
            height=height,
            duration=request.clip_seconds,
            seed=seed,
            audio=request.has_audio,
            watermark=bool(getattr(request, "watermark", False)),
            multi_clip=bool(getattr(request, "generate_multi_clip_switch", False)),
            images=tuple(images),
            source_video=source_path,
            negative_prompt=str(getattr(request, "negative_prompt", "")),
            preset=self.settings.local_preset,
        )
        ctx.set_phase(Phase.RENDERING)
        video = ctx.workdir() / "video.mp4"
        thumb = ctx.workdir() / "thumbnail.jpg"
        result = await asyncio.to_thread(
            render.render, spec, video, thumb, progress=ctx.report_progress, should_stop=ctx.should_stop
        )
        ctx.set_phase(Phase.FINALIZING)
        video_key = f"results/{ctx.task_id}/video.mp4"
        thumb_key = f"results/{ctx.task_id}/thumbnail.jpg"
        size = ctx.store_file(video_key, video)
        ctx.store_file(thumb_key, thumb)
        facts: dict[str, Any] = {
            "video": video_key,
            "thumbnail": thumb_key,
            "width": result.width,
            "height": result.height,
            "fps": result.fps,
            "frames": result.frames,
            "duration": result.duration,
            "has_audio": result.has_audio,
            "bytes": size,
            "seed": seed,
            "ratio": ratio,
        }
        return Done(facts)


def request_seed(request: VideoRequest, task_id: str) -> int:
    """The request's seed, or one derived from the task id (random per task, stable on retry)."""
    seed = getattr(request, "seed", None)
    if isinstance(seed, int):
        return seed
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big") & 0x7FFFFFFF
