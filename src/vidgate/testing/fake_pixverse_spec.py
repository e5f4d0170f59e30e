"""What the real PixVerse API (v6) accepts and answers (research/upstream-apis.md §2): ErrCodes,
generate-body validation, the webhook signature (§2.9, partly a guess) and the fake's knobs."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import Field

from vidgate.testing.fake_common import BaseFakeConfig
from vidgate.testing.fake_faults import Fault
from vidgate.testing.fake_media import TIERS

# ErrCode -> ErrMsg. Numbers from PixVerse's China platform table (§2.7), "probable" internationally.
ERRCODES: dict[int, str] = {
    0: "success",
    400011: "Empty parameter",
    400012: "Invalid account",
    400013: "Invalid binding request: incorrect parameter type or value",
    400017: "Invalid parameter",
    400018: "Prompt exceeds 2048 characters",
    400019: "Negative prompt exceeds 2048 characters",
    400032: "Invalid image ID",
    500008: "Requested data not found",
    500020: "No permission for this operation",
    500030: "Image cannot exceed 20M or 4000px x 4000px",
    500031: "Failed to get image information",
    500032: "Invalid image format",
    500033: "Invalid image width or height",
    500041: "Image upload failed",
    500042: "Invalid image path",
    500044: "Reached the limit for concurrent generations",
    500054: "Content moderation failed: the image contains inappropriate content",
    500060: "Monthly effects quota reached",
    500063: "Pre-moderation failed for the input",
    500090: "Insufficient credits (fake: code is a guess)",
}

KINDS = ("text", "img", "transition", "fusion", "extend")
ASPECT_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "2:3", "3:2", "21:9")
STYLES = ("anime", "3d_animation", "clay", "comic", "cyberpunk", "none", "realistic")
# Credits per output second: INVENTED from third-party USD prices ($1 = 100 credits), §2.10.
CREDITS_PER_SECOND = {"360p": 3, "540p": 4, "720p": 9, "1080p": 18}
AUDIO_CREDIT_FACTOR = 1.3
MAX_INT32 = 2147483647


class PixErrorFault(Fault):
    """Answer with ErrCode `code` (default scope: the generate endpoints; add "upload")."""

    code: int = 500044
    message: str | None = None


class FinalStatusFault(Fault):
    """End a job (chosen at submit) with status 7 (moderation), 8 (failed) or 6 (deleted)."""

    status: Literal[6, 7, 8] = 8


class FakePixVerseConfig(BaseFakeConfig):
    """Knobs of the fake PixVerse (docs/fake-upstreams.md lists them with their defaults)."""

    api_key: str = "pixverse-test-key"
    concurrency: int = Field(default=5, ge=1, description="generations in flight; over it: ErrCode 500044")
    generation_base_s: float = Field(default=30.0, ge=0)
    generation_per_video_s: float = Field(default=8.0, ge=0, description="extra per second of output")
    error_http_status: int = Field(
        default=200, description="HTTP status sent with ErrCode != 0 (unconfirmed)"
    )
    replay_errors: bool = Field(default=False, description="also replay error answers for a reused trace id")
    trace_cache_size: int = Field(default=100_000, ge=1)
    credits_balance: int | None = Field(default=None, description="None = unlimited")
    insufficient_credits_errcode: int = Field(default=500090, description="GUESS: the real code is unknown")
    submit_errors: list[PixErrorFault] = Field(default_factory=list)
    final_status: list[FinalStatusFault] = Field(default_factory=list)
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_px: int = 4000
    webhook_url: str | None = None
    webhook_secret: str = "pixverse-webhook-secret"
    webhook_endpoints: list[str] = Field(default_factory=lambda: ["text", "img"])
    webhook_retry_delays_s: list[float] = Field(
        default_factory=lambda: [2.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]
    )
    webhook_sort_keys: bool = Field(default=True, description="GUESS: sort payload keys in the sign string")


class PixError(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or ERRCODES.get(code, "error"))
        self.code = code
        self.message = message or ERRCODES.get(code, "error")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _required(body: Mapping[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None or value == "":
        raise PixError(400011, f"{name} is empty")
    return value


def _int_field(body: Mapping[str, Any], name: str, low: int, high: int, required: bool = True) -> int | None:
    if not required and body.get(name) is None:
        return None
    value = _required(body, name)
    if not _is_int(value):
        raise PixError(400013, f"{name} must be an integer")
    if not low <= value <= high:
        raise PixError(400017, f"{name} must be between {low} and {high}")
    return int(value)


def _choice(
    body: Mapping[str, Any], name: str, allowed: tuple[str, ...], required: bool = True
) -> str | None:
    if not required and body.get(name) is None:
        return None
    value = _required(body, name)
    if not isinstance(value, str):
        raise PixError(400013, f"{name} must be a string")
    if value not in allowed:
        raise PixError(400017, f"{name} must be one of {list(allowed)}")
    return value


def _bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise PixError(400013, f"{name} must be a boolean")
    return value


def validate_generate(
    kind: str,
    body: Any,
    image_known: Callable[[int], bool],
    video_status: Callable[[int], int | None],
) -> dict[str, Any]:
    """The normalised job request for a v6 generate call, or PixError (§2.5)."""
    if not isinstance(body, dict):
        raise PixError(400013, "request body must be a JSON object")
    if _required(body, "model") != "v6":
        raise PixError(400017, "model must be v6 (the only model this fake emulates)")
    prompt = _required(body, "prompt")
    if not isinstance(prompt, str):
        raise PixError(400013, "prompt must be a string")
    if len(prompt) > 2048:
        raise PixError(400018)
    negative = body.get("negative_prompt", "")
    if not isinstance(negative, str):
        raise PixError(400013, "negative_prompt must be a string")
    if len(negative) > 2048:
        raise PixError(400019)
    out: dict[str, Any] = {
        "model": "v6",
        "prompt": prompt,
        "negative_prompt": negative,
        "duration": _int_field(body, "duration", 1, 15),
        "quality": _choice(body, "quality", tuple(TIERS)),
        "seed": _int_field(body, "seed", 0, MAX_INT32, required=False),
        "style": _choice(body, "style", STYLES, required=False) or "",
        "generate_audio_switch": _bool(body, "generate_audio_switch"),
        "generate_multi_clip_switch": _bool(body, "generate_multi_clip_switch"),
        "water_mark": _bool(body, "water_mark"),
    }
    _choice(body, "motion_mode", ("normal",), required=False)
    _choice(body, "thinking_type", ("enabled", "disabled", "auto"), required=False)
    if kind in ("transition", "extend") and out["generate_multi_clip_switch"]:
        raise PixError(400017, f"generate_multi_clip_switch is not supported by {kind}")

    def image_id(value: Any, name: str) -> int:
        if value is None or value == "":
            raise PixError(400011, f"{name} is empty")
        if not _is_int(value):
            raise PixError(400013, f"{name} must be an integer")
        if not image_known(value):
            raise PixError(400032, f"{name} {value} is not an uploaded image")
        return int(value)

    if kind in ("text", "fusion"):
        out["aspect_ratio"] = _choice(body, "aspect_ratio", ASPECT_RATIOS)
    if kind == "img":
        out["img_id"] = image_id(body.get("img_id"), "img_id")
    elif kind == "transition":
        out["first_frame_img"] = image_id(body.get("first_frame_img"), "first_frame_img")
        out["last_frame_img"] = image_id(body.get("last_frame_img"), "last_frame_img")
    elif kind == "fusion":
        out["image_references"] = _references(body, prompt, image_id)
    elif kind == "extend":
        out.update(_extend_source(body, video_status))
    return out


def _references(
    body: Mapping[str, Any], prompt: str, image_id: Callable[[Any, str], int]
) -> list[dict[str, Any]]:
    refs = _required(body, "image_references")
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise PixError(400013, "image_references must be an array of objects")
    if not 1 <= len(refs) <= 7:
        raise PixError(400017, "image_references must have between 1 and 7 items")
    out, names = [], set()
    for index, ref in enumerate(refs):
        kind = _choice(ref, "type", ("subject", "background"))
        name = _required(ref, "ref_name")
        if not isinstance(name, str):
            raise PixError(400013, f"image_references[{index}].ref_name must be a string")
        if name in names:
            raise PixError(400017, f"duplicate ref_name {name!r}")
        # The prompt must name each reference as `@ref_name` followed by a space (end of prompt allowed).
        if f"@{name} " not in prompt and not prompt.endswith(f"@{name}"):
            raise PixError(400017, f"prompt must reference @{name} followed by a space")
        names.add(name)
        img = image_id(ref.get("img_id"), f"image_references[{index}].img_id")
        out.append({"type": kind, "img_id": img, "ref_name": name})
    return out


def _extend_source(body: Mapping[str, Any], video_status: Callable[[int], int | None]) -> dict[str, Any]:
    source, media = body.get("source_video_id"), body.get("video_media_id")
    if source is None and media is None:
        raise PixError(400011, "source_video_id or video_media_id is required")
    if source is not None and media is not None:
        raise PixError(400017, "send only one of source_video_id and video_media_id")
    value: Any = source if source is not None else media
    if not _is_int(value):
        raise PixError(400013, "the source video id must be an integer")
    if media is not None:
        raise PixError(500008, "video_media_id not found (this fake has no media upload)")
    status = video_status(int(value))
    if status is None:
        raise PixError(500008, f"source_video_id {value} not found")
    if status != 1:
        raise PixError(400017, f"source_video_id {value} is not a finished video")
    return {"source_video_id": int(value)}


def credits_for(request: Mapping[str, Any]) -> int:
    per_second = CREDITS_PER_SECOND[request["quality"]]
    factor = AUDIO_CREDIT_FACTOR if request["generate_audio_switch"] else 1.0
    return round(per_second * int(request["duration"]) * factor)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def pixverse_webhook_sign_string(
    timestamp: str, nonce: str, payload: Mapping[str, Any], sort_keys: bool = True
) -> str:
    """`{timestamp}\\n{nonce}\\n{url_encoded_payload}` (§2.9). The key order (sorted here by default)
    and the encoding of booleans (`true`/`false`) are GUESSES: the official page is truncated there."""
    items = sorted(payload.items()) if sort_keys else list(payload.items())
    encoded = urlencode([(key, _form_value(value)) for key, value in items])
    return f"{timestamp}\n{nonce}\n{encoded}"


def pixverse_webhook_signature(
    timestamp: str, nonce: str, payload: Mapping[str, Any], secret: str, sort_keys: bool = True
) -> str:
    """Base64(HMAC-SHA256(secret, sign string)), the Webhook-Signature header."""
    message = pixverse_webhook_sign_string(timestamp, nonce, payload, sort_keys).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
