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
import gc
import importlib.util
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vidgate import catalog
from vidgate.catalog import VideoRequest
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.providers import Done, Provider, TaskContext
from vidgate.providers.local import request_seed
from vidgate.render import FPS, RenderCancelled
from vidgate.render.audio import synthesize
from vidgate.render.encode import EncoderSettings, VideoWriter
from vidgate.render.engine import save_thumbnail
from vidgate.render.sizes import output_size, snap_ratio
from vidgate.render.text import watermark
from vidgate.render.yuv import Planes, cover, flatten, rgb_array_to_yuv
from vidgate.status import Phase

log = logging.getLogger(__name__)

#: Mode -> (settings field naming its checkpoint, diffusers pipeline class).
MODES: dict[str, tuple[str, str]] = {
    "text": ("diffusers_t2v_model", "WanPipeline"),
    "image": ("diffusers_i2v_model", "WanImageToVideoPipeline"),
    "transition": ("diffusers_flf2v_model", "WanImageToVideoPipeline"),
    "reference": ("diffusers_vace_model", "WanVACEPipeline"),
    "fusion": ("diffusers_vace_model", "WanVACEPipeline"),
    "extend": ("diffusers_vace_model", "WanVACEPipeline"),
}
#: Share of the progress bar the denoising steps fill; the rest is decoding, resizing and encoding.
_DENOISE_SHARE = 0.9
#: Share of an extension's generated frames that carry the source's last frames.
_KNOWN_SHARE = 0.25


def _installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers", "transformers"))


def served_modes(settings: Settings) -> set[str]:
    return {mode for mode, (setting, _) in MODES.items() if getattr(settings, setting)}


def native_size(settings: Settings, ratio: float) -> tuple[int, int]:
    """(width, height), multiples of 16: the configured size (or its transpose) when the ratio is within
    10% of it, else the configured area at the requested ratio."""
    base_w, base_h = (int(v) for v in settings.diffusers_size.lower().split("x"))
    for w, h in ((base_w, base_h), (base_h, base_w)):
        if abs(math.log(ratio * h / w)) < 0.1:
            return w, h
    area = base_w * base_h
    height = max(16, round(math.sqrt(area / ratio) / 16) * 16)
    return max(16, round(height * ratio / 16) * 16), height


def native_frames(settings: Settings, seconds: float) -> int:
    """The 4k+1 frame count nearest `seconds` at the native fps, at most `diffusers_max_frames`."""
    cap = max(1, (settings.diffusers_max_frames - 1) // 4 * 4 + 1)
    wanted = round((seconds * settings.diffusers_fps - 1) / 4) * 4 + 1
    return max(5 if cap >= 5 else 1, min(cap, wanted))


def retime(count: int, target: int) -> list[int]:
    """For each of `target` output frames, the generated frame shown (nearest in time, ends aligned)."""
    if target <= 1 or count <= 1:
        return [0] * target
    return [round(i * (count - 1) / (target - 1)) for i in range(target)]


# --- resident pipelines and the per-device lock ----------------------------------------------------------

_pipelines: dict[tuple[str, str, str, str], Any] = {}
_load_lock = threading.Lock()
_device_locks: dict[str, threading.Lock] = {}


def device_lock(device: str) -> threading.Lock:
    with _load_lock:
        return _device_locks.setdefault(device, threading.Lock())


def resolve_device(settings: Settings) -> tuple[str, Any]:
    import torch

    device = settings.diffusers_device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = settings.diffusers_dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    return device, getattr(torch, name)


def load_pipeline(settings: Settings, mode: str) -> Any:
    """The resident pipeline of `mode`, loaded on first use (call under the device lock)."""
    import diffusers
    import torch

    setting, class_name = MODES[mode]
    source = str(getattr(settings, setting))
    device, dtype = resolve_device(settings)
    key = (class_name, source, device, str(dtype))
    pipe = _pipelines.get(key)
    if pipe is not None:
        return pipe
    started = time.perf_counter()
    local = Path(source).is_dir()
    # The Wan VAE stays in float32 (as the Wan model cards load it); the rest takes the dtype.
    vae_class: Any = diffusers.AutoencoderKLWan
    vae = vae_class.from_pretrained(source, subfolder="vae", dtype=torch.float32, local_files_only=local)
    pipe = getattr(diffusers, class_name).from_pretrained(
        source, vae=vae, dtype=dtype, local_files_only=local
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _pipelines[key] = pipe
    log.info(
        "diffusers: loaded %s from %s on %s in %.1f s",
        class_name,
        source,
        device,
        time.perf_counter() - started,
    )
    return pipe


def resident() -> dict[tuple[str, str, str, str], Any]:
    """The loaded pipelines, keyed by (class, checkpoint, device, dtype); for benchmarks and tests."""
    return _pipelines


# --- one generation ----------------------------------------------------------------------------------------


@dataclass
class Job:
    """What one generation needs, prepared on the event loop."""

    mode: str
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    gen_width: int
    gen_height: int
    gen_frames: int
    duration: int
    audio: bool
    watermark: bool
    images: list[Image.Image] = field(default_factory=list)
    known: list[Image.Image] = field(default_factory=list)


@dataclass
class Stats:
    """Timings of the last generation in this process (logged; read by bench/gpu_bench.py)."""

    load_s: float = 0.0
    step_s: list[float] = field(default_factory=list)
    generate_s: float = 0.0
    finish_s: float = 0.0


last_stats = Stats()


def mode_kwargs(job: Job) -> dict[str, Any]:
    size = (job.gen_width, job.gen_height)
    if job.mode in ("image", "transition"):
        kwargs: dict[str, Any] = {"image": cover(flatten(job.images[0]), *size)}
        if job.mode == "transition":
            kwargs["last_image"] = cover(flatten(job.images[-1]), *size)
        return kwargs
    if job.mode in ("reference", "fusion"):
        return {"reference_images": [flatten(image) for image in job.images]}
    if job.mode == "extend":
        blank = Image.new("RGB", size, (128, 128, 128))
        known = [cover(flatten(frame), *size) for frame in job.known]
        video = known + [blank] * (job.gen_frames - len(known))
        mask = [Image.new("L", size, 0)] * len(known) + [Image.new("L", size, 255)] * (
            job.gen_frames - len(known)
        )
        return {"video": video, "mask": mask}
    return {}


def generate(
    settings: Settings, job: Job, progress: Callable[[float], None], should_stop: Callable[[], bool]
) -> NDArray[np.float32]:
    """Run the pipeline under the device lock; frames as float32 (F, H, W, 3) in 0..1.

    Out of memory fails the task with `engine_out_of_memory`, any other engine error with
    `engine_failed`; either way the exception (and the tensors its traceback holds) is dropped and the
    CUDA cache emptied before the lock is released, so the next task finds the GPU free.
    """
    import torch

    device, _ = resolve_device(settings)
    lock = device_lock(device)
    while not lock.acquire(timeout=0.2):
        if should_stop():
            raise RenderCancelled("stopped while waiting for the GPU")
    try:
        replacement: BaseException
        try:
            return _generate_locked(settings, job, device, progress, should_stop)
        except torch.cuda.OutOfMemoryError as exc:
            log.warning("diffusers: out of memory: %s", str(exc).split("\n")[0])
            replacement = TaskFailure("engine_out_of_memory", type="server_error")
        except RenderCancelled as exc:
            replacement = RenderCancelled(str(exc))
        except TaskFailure as exc:
            replacement = exc
        except Exception as exc:
            log.exception("diffusers: %s generation failed", job.mode)
            detail = f"{type(exc).__name__}: {exc}"[:300]
            replacement = TaskFailure("engine_failed", type="server_error", detail=detail)
        # Outside the except blocks the failed call's frames are gone; free what they held.
        replacement.__traceback__ = None
        free_memory()
        raise replacement
    finally:
        lock.release()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _generate_locked(
    settings: Settings,
    job: Job,
    device: str,
    progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> NDArray[np.float32]:
    import torch

    global last_stats
    steps = settings.diffusers_steps
    stats = Stats()
    started = time.perf_counter()
    pipe = load_pipeline(settings, job.mode)
    stats.load_s = time.perf_counter() - started
    if should_stop():
        raise RenderCancelled("stopped before generation")
    marks = [time.perf_counter()]

    def on_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        marks.append(time.perf_counter())
        progress(_DENOISE_SHARE * (index + 1) / steps)
        if should_stop():
            raise RenderCancelled(f"stopped after {index + 1} of {steps} steps")
        return tensors

    output = pipe(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt or None,
        height=job.gen_height,
        width=job.gen_width,
        num_frames=job.gen_frames,
        num_inference_steps=steps,
        guidance_scale=settings.diffusers_guidance_scale,
        generator=torch.Generator(device=device).manual_seed(job.seed),
        output_type="np",
        callback_on_step_end=on_step,
        **mode_kwargs(job),
    )
    frames = np.asarray(output.frames[0], dtype=np.float32)
    # The first interval also holds prompt encoding and latent preparation.
    stats.step_s = [b - a for a, b in itertools.pairwise(marks)]
    stats.generate_s = time.perf_counter() - started - stats.load_s
    last_stats = stats
    return frames


def write_video(job: Job, frames: NDArray[np.float32], video: Path, thumb: Path, preset: str) -> int:
    """Resize to the exact output size, retime to 24 fps, encode like the CPU renderer; frames written."""
    rgb = np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    resized = [
        rgb_array_to_yuv(np.asarray(cover(Image.fromarray(frame), job.width, job.height))) for frame in rgb
    ]
    planes = Planes(job.width, job.height)
    mark = watermark(job.width, job.height) if job.watermark else None
    audio = synthesize(np.random.default_rng([job.seed, 7]), float(job.duration)) if job.audio else None
    settings = EncoderSettings(job.width, job.height, FPS, preset=preset)
    with VideoWriter(video, settings, audio) as writer:
        for index, source in enumerate(retime(len(resized), job.duration * FPS)):
            planes.load(resized[source])
            if mark is not None:
                mark.draw(planes)
            if index == 0:
                save_thumbnail(planes.array().copy(), thumb)
            writer.write(planes.array())
    return writer.frames


def read_last_frames(path: Path, count: int) -> list[Image.Image]:
    with av.open(str(path)) as container:
        tail = [Image.fromarray(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)][
            -count:
        ]
    if not tail:
        raise TaskFailure("extend_source_unavailable", param="extend_from_task_id")
    return tail


class DiffusersWanProvider(Provider, name="diffusers"):
    #: Rebuilt per deployment by `enabled()` from the configured modes.
    models: ClassVar[frozenset[str]] = frozenset()
    #: After a model's own upstream and the relays, before the CPU renderer.
    extends_any_video: ClassVar[bool] = True
    preference: ClassVar[int] = 50

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        modes = served_modes(settings)
        if not modes or not _installed():
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
            count = max(1, round(gen_frames * _KNOWN_SHARE))
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
        frames = await asyncio.to_thread(generate, self.settings, job, ctx.report_progress, ctx.should_stop)
        if mode == "extend":
            # The continuation only, as the CPU renderer and the upstreams return it.
            frames = frames[len(known) :]
        if ctx.should_stop():
            raise RenderCancelled("stopped after generation")
        video = ctx.workdir() / "video.mp4"
        thumb = ctx.workdir() / "thumbnail.jpg"
        started = time.perf_counter()
        written = await asyncio.to_thread(write_video, job, frames, video, thumb, self.settings.local_preset)
        last_stats.finish_s = time.perf_counter() - started
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
                last_stats.generate_s,
                float(np.mean(last_stats.step_s)) if last_stats.step_s else 0.0,
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
