"""The `diffusers` provider at real model size with random weights (needs a CUDA GPU).

Builds the Wan 2.1 T2V-1.3B transformer configuration and the Wan 2.1 VAE with random weights (the
UMT5 text encoder is cut to 2 layers with a small vocabulary: it runs once per video, outside the
denoising loop), saves the pipeline to a temporary directory and points VIDGATE_DIFFUSERS_T2V_MODEL
at it. Then, in one process, it generates 832x480, 81 frames (a pixverse-v6 540p 16:9 5 s request):

- through vidgate: POST /v1/videos/generations to an in-process API + worker, until completed;
- directly: the same resident pipeline object called with the same arguments;

and reports seconds per denoising step for both (first step left out: it includes prompt encoding),
the overhead (target <= 5%), peak GPU memory, the cold and warm time from submit to a decodable first
frame of the result (vidgate returns the whole MP4 when it completes, so that is completion plus
download plus decoding one frame). Skips with a message when no CUDA device is present.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

STEPS = int(os.environ.get("VIDGATE_BENCH_GPU_STEPS", "10"))
ROUNDS = 2
REQUEST = {
    "model": "pixverse-v6",
    "prompt": "a red boat on the sea at night",
    "duration": 5,
    "resolution": "540p",
    "size": "16:9",
    "seed": 1,
}

#: Wan2.1-T2V-1.3B transformer/config.json values.
WAN_1_3B: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}


def _build(target: Path) -> None:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    words = ["a", "the", "red", "boat", "on", "sea", "at", "night"]
    core = Tokenizer(
        models.WordLevel(
            {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(words)}, "<unk>"
        )
    )
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    torch.manual_seed(0)
    encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64)
    ).eval()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder.to(torch.bfloat16),
        vae=AutoencoderKLWan(),  # the class defaults are the Wan 2.1 VAE
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        transformer=WanTransformer3DModel(**WAN_1_3B).to(torch.bfloat16),
    )
    pipe.save_pretrained(target)


def _step_mean(steps: list[float]) -> float:
    tail = steps[1:] or steps
    return statistics.mean(tail)


def _direct(pipe: Any, settings: Any) -> tuple[float, int]:
    import torch

    marks = [time.perf_counter()]

    def on_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        marks.append(time.perf_counter())
        return tensors

    torch.cuda.reset_peak_memory_stats()
    pipe(
        prompt=REQUEST["prompt"],
        height=480,
        width=832,
        num_frames=81,
        num_inference_steps=settings.diffusers_steps,
        guidance_scale=settings.diffusers_guidance_scale,
        generator=torch.Generator(device="cuda").manual_seed(1),
        output_type="np",
        callback_on_step_end=on_step,
    )
    steps = [b - a for a, b in itertools.pairwise(marks)]
    return _step_mean(steps), int(torch.cuda.max_memory_allocated())


def _through_api(client: Any) -> float:
    """Seconds from submit to the first decoded frame of the finished video."""
    import av

    started = time.perf_counter()
    response = client.post("/v1/videos/generations", json=REQUEST)
    task_id = response.json()["data"][0]["task_id"]
    while True:
        data = client.get(f"/v1/tasks/{task_id}").json()["data"]
        if data["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.02)
    if data["status"] != "completed":
        raise RuntimeError(f"task did not complete: {data}")
    parts = urlsplit(data["result"]["videos"][0]["url"][0])
    body = client.get(f"{parts.path}?{parts.query}", headers={"Authorization": ""}).content
    with av.open(io.BytesIO(body)) as container:
        next(container.decode(video=0))
    return time.perf_counter() - started


def run() -> dict[str, object]:
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed (pip install 'vidgate[gpu]')"}
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the diffusers GPU benchmark needs one"}
    from fastapi.testclient import TestClient

    from vidgate import keys, migrations
    from vidgate.api import create_app
    from vidgate.config import Settings
    from vidgate.db import Database
    from vidgate.providers import _wan_engine as wan_engine

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="vidgate-gpu-bench-") as tmp:
        root = Path(tmp)
        built = time.perf_counter()
        _build(root / "wan-1.3b-random")
        build_s = time.perf_counter() - built
        settings = Settings(
            data_dir=root / "data",
            poll_interval_seconds=0.02,
            diffusers_t2v_model=str(root / "wan-1.3b-random"),
            diffusers_steps=STEPS,
            local_preset="veryfast",
        )
        settings.data_dir.mkdir(parents=True)
        database = Database(settings.effective_database_url)
        migrations.upgrade(database)
        secret = keys.create(database, "bench")[1]
        vidgate_steps: list[float] = []
        direct_steps: list[float] = []
        peaks: list[int] = []
        warm: list[float] = []
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {secret}"}) as client:
            cold = _through_api(client)
            load_s = wan_engine.last_stats.load_s
            pipe = next(iter(wan_engine.resident().values()))
            for _ in range(ROUNDS):
                torch.cuda.reset_peak_memory_stats()
                warm.append(_through_api(client))
                peaks.append(int(torch.cuda.max_memory_allocated()))
                vidgate_steps.append(_step_mean(wan_engine.last_stats.step_s))
                step, peak = _direct(pipe, settings)
                direct_steps.append(step)
                peaks.append(peak)
            finish_s = wan_engine.last_stats.finish_s
        database.dispose()
    ours, direct = min(vidgate_steps), min(direct_steps)
    overhead = ours / direct - 1.0
    return {
        "device": torch.cuda.get_device_name(0),
        "size": "832x480x81",
        "steps": STEPS,
        "direct_s_per_step": round(direct, 4),
        "vidgate_s_per_step": round(ours, 4),
        "overhead": round(overhead, 4),
        "target_overhead": 0.05,
        "pass": overhead <= 0.05,
        "peak_gpu_gib": round(max(peaks) / 2**30, 2),
        "load_s": round(load_s, 1),
        "first_frame_cold_s": round(cold, 2),
        "first_frame_warm_s": round(min(warm), 2),
        "resize_encode_s": round(finish_s, 2),
        "build_random_weights_s": round(build_s, 1),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
