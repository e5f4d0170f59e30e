"""Tiny random-weight Wan pipelines (text-to-video, image-to-video, VACE), built entirely in code.

The component sizes follow diffusers' own fast tests (research/local-engines.md section 2); the
text encoder and its tokenizer are built from code as well, so nothing touches a model hub. Each
builder saves the pipeline with `save_pretrained`, and vidgate loads it back from that directory
with its real loading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

TEXT_DIM = 32
_WORDS = [
    "a",
    "the",
    "of",
    "and",
    "in",
    "on",
    "with",
    "to",
    "boat",
    "cat",
    "dog",
    "sea",
    "sky",
    "city",
    "night",
    "rain",
    "red",
    "blue",
    "green",
    "light",
]

_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": TEXT_DIM,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}


def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with T5's special tokens (pad 0, eos 1, unk 2)."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(_WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=16
    )


def text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    return UMT5EncoderModel(config).eval()


def _common() -> dict[str, Any]:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    tok = tokenizer()
    torch.manual_seed(0)
    return {
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "tokenizer": tok,
        "text_encoder": text_encoder(len(tok)),
    }


def text_to_video() -> WanPipeline:
    parts = _common()
    torch.manual_seed(0)
    return WanPipeline(transformer=WanTransformer3DModel(**_TRANSFORMER), **parts)


def image_to_video(*, last_frame: bool = False) -> WanImageToVideoPipeline:
    """Wan I2V; with `last_frame`, the FLF2V variant (positional embedding for two images)."""
    parts = _common()
    size = 4 if last_frame else 32
    extra: dict[str, Any] = {"pos_embed_seq_len": 2 * (4 * 4 + 1)} if last_frame else {}
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**{**_TRANSFORMER, "in_channels": 36, "image_dim": 4, **extra})
    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=size,
            intermediate_size=16,
            patch_size=1,
        )
    ).eval()
    processor = CLIPImageProcessor(crop_size=size, size=size)
    return WanImageToVideoPipeline(
        transformer=transformer, image_encoder=encoder, image_processor=processor, **parts
    )


def vace() -> WanVACEPipeline:
    parts = _common()
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        **{**_TRANSFORMER, "num_layers": 3, "vace_layers": [0, 2], "vace_in_channels": 96}
    )
    return WanVACEPipeline(transformer=transformer, **parts)


def save_all(root: Path) -> dict[str, Path]:
    """Save every tiny pipeline under `root`; returns {mode setting suffix: directory}."""
    built = {
        "t2v": text_to_video(),
        "i2v": image_to_video(),
        "flf2v": image_to_video(last_frame=True),
        "vace": vace(),
    }
    out: dict[str, Path] = {}
    for name, pipe in built.items():
        target = root / name
        pipe.save_pretrained(target)
        out[name] = target
    return out
