"""The Wan engine behind the `diffusers` provider: resident pipelines, the per-device lock, one
generation with progress and cancellation between steps, and the output resized, retimed and encoded
like the CPU renderer's. Imports torch and diffusers only when a generation runs.
"""

from __future__ import annotations

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
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.render import FPS, RenderCancelled
from vidgate.render.audio import synthesize
from vidgate.render.encode import EncoderSettings, VideoWriter
from vidgate.render.engine import save_thumbnail
from vidgate.render.text import watermark
from vidgate.render.yuv import Planes, cover, flatten, rgb_array_to_yuv

log = logging.getLogger("vidgate.providers.diffusers_wan")

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
KNOWN_SHARE = 0.25


def installed() -> bool:
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
