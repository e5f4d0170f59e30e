"""What the real Vidu API accepts and answers (research/upstream-apis.md §1): the error table, the
reference2video validation rules, the callback signature (§1.8) and the fake's knobs."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError
from pydantic import Field, field_validator

from vidgate.testing.fake_common import BaseFakeConfig
from vidgate.testing.fake_faults import Fault

# reason -> HTTP status, from the official error table (§1.6).
ERRORS: dict[str, int] = {
    "BadRequest": 400,
    "FieldLacking": 400,
    "FieldUnwanted": 400,
    "FieldItemCountOutOfRange": 400,
    "FieldInvalid": 400,
    "PageSizeOutOfRange": 400,
    "ImageDownloadFailure": 400,
    "ImageFormatInvalid": 400,
    "OperationInProcess": 400,
    "TaskPromptPolicyViolation": 400,
    "AuditSubmitIllegal": 400,
    "CreationPolicyViolation": 400,
    "CreditInsufficient": 400,
    "ModelUnavailable": 400,
    "UserCancelled": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "TaskNotFound": 404,
    "CreationNotFound": 404,
    "NotFound": 404,
    "Conflict": 409,
    "QuotaExceeded": 429,
    "TooManyRequests": 429,
    "SystemThrottling": 429,
    "Canceled": 499,
    "InternalServiceFailure": 500,
}

MESSAGES: dict[str, str] = {
    "CreditInsufficient": "credit insufficient",
    "QuotaExceeded": "exceeded concurrency limit, please contact sales",
    "TooManyRequests": "request rate too high",
    "SystemThrottling": "system throttling, please retry later",
    "AuditSubmitIllegal": "the input failed the content safety review",
    "TaskPromptPolicyViolation": "the prompt failed the content safety review",
    "CreationPolicyViolation": "the generated content failed the content safety review",
    "InternalServiceFailure": "internal service failure, please retry",
    "Unauthorized": "unauthorized",
}

MODELS = ("viduq3", "viduq3-mix")
DURATIONS = {"viduq3": (3, 16), "viduq3-mix": (1, 16)}
RESOLUTIONS = {"viduq3": ("540p", "720p", "1080p"), "viduq3-mix": ("720p", "1080p")}
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "3:4", "4:3", "auto")
MIX_STRICT_RATIOS = ("16:9", "9:16", "1:1", "auto")
MODEL_VERSION = {"viduq3": "q3", "viduq3-mix": "q3-mix"}  # the list endpoint's `model_versions` names
# Credits per output second: INVENTED (the official price list was not readable, §1.9).
CREDITS_PER_SECOND = {
    ("viduq3", "540p"): 8,
    ("viduq3", "720p"): 16,
    ("viduq3", "1080p"): 20,
    ("viduq3-mix", "720p"): 20,
    ("viduq3-mix", "1080p"): 25,
}
_DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.*)$", re.DOTALL)
_ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}


class ViduErrorFault(Fault):
    """Answer (or end a task) with Vidu error `code`, e.g. `CreditInsufficient`."""

    code: str = "InternalServiceFailure"
    message: str | None = None

    @field_validator("code")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ERRORS:
            raise ValueError(f"unknown Vidu error code {value!r}; known: {sorted(ERRORS)}")
        return value


class FakeViduConfig(BaseFakeConfig):
    """Knobs of the fake Vidu (docs/fake-upstreams.md lists them with their defaults)."""

    api_key: str = "vidu-test-key"
    concurrency: int = Field(default=5, ge=1, description="tasks processing at once per organisation")
    queueing_spelling: Literal["queueing", "queuing"] = "queueing"
    created_s: float = Field(default=1.0, ge=0, description="time in `created` before `queueing`")
    queueing_s: float = Field(default=2.0, ge=0, description="minimum time in `queueing`")
    processing_base_s: float = Field(default=60.0, ge=0)
    processing_per_video_s: float = Field(default=15.0, ge=0, description="extra per second of output")
    failure_at: float = Field(
        default=1.0, gt=0, le=1, description="fraction of processing before a doomed task fails"
    )
    max_active_tasks: int | None = Field(
        default=None, ge=1, description="over this, submits get 429 QuotaExceeded"
    )
    credits_balance: int | None = Field(default=None, description="None = unlimited")
    submit_errors: list[ViduErrorFault] = Field(default_factory=list)
    task_failures: list[ViduErrorFault] = Field(default_factory=list)
    strict_mix_aspect_ratios: bool = False
    validate_images: bool = True
    fetch_images: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    callback_states: list[Literal["queueing", "processing", "success", "failed"]] = Field(
        default_factory=lambda: ["processing", "success", "failed"]  # type: ignore[arg-type]
    )
    callback_retries: int = Field(default=3, ge=0, description="retries for success/failed callbacks")
    callback_retry_delay_s: float = Field(default=5.0, ge=0)


class ViduError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def image_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of an image, or ViduError ImageFormatInvalid."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format), img.width, img.height
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ViduError("ImageFormatInvalid", "image format is invalid") from exc


def check_image(data: bytes, index: int) -> tuple[int, int]:
    """Apply §1.3 image rules: png/jpeg/webp, at least 128x128, ratio within 1:4..4:1, <=50 MB."""
    if len(data) > 50 * 1024 * 1024:
        raise ViduError("PageSizeOutOfRange", f"images[{index}] exceeds 50MB")
    fmt, width, height = image_info(data)
    if fmt not in _ALLOWED_FORMATS:
        raise ViduError("ImageFormatInvalid", f"images[{index}] must be png, jpeg, jpg or webp")
    if width < 128 or height < 128 or not 0.25 <= width / height <= 4:
        raise ViduError(
            "PageSizeOutOfRange", f"images[{index}] must be >=128x128 with a ratio within 1:4 and 4:1"
        )
    return width, height


def decode_data_uri(uri: str, index: int) -> bytes | None:
    """The bytes of a `data:image/...;base64,` URI, None for an http(s) URL."""
    if uri.startswith(("http://", "https://")):
        return None
    match = _DATA_URI.match(uri)
    if match is None:
        raise ViduError("FieldInvalid", f"images[{index}] must be a URL or a data:image/...;base64, URI")
    try:
        return base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ViduError("ImageFormatInvalid", f"images[{index}] is not valid base64") from exc


def validate_reference2video(body: Any, cfg: FakeViduConfig) -> dict[str, Any]:
    """The normalised task request, or ViduError naming the offending field."""
    if not isinstance(body, dict):
        raise ViduError("BadRequest", "request body must be a JSON object")
    model = body.get("model")
    if model in (None, ""):
        raise ViduError("FieldLacking", "field model is required")
    if model not in MODELS:
        raise ViduError(
            "FieldInvalid", f"field model is invalid: {model!r} (this endpoint: viduq3, viduq3-mix)"
        )
    if "subjects" in body:
        raise ViduError("FieldUnwanted", "field subjects is not supported (subject mode is not emulated)")
    images = body.get("images")
    if images is None:
        raise ViduError("FieldLacking", "field images is required")
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise ViduError("FieldInvalid", "field images must be an array of strings")
    if not 1 <= len(images) <= 7:
        raise ViduError("FieldItemCountOutOfRange", "field images must have between 1 and 7 items")
    prompt = body.get("prompt")
    if prompt in (None, ""):
        raise ViduError("FieldLacking", "field prompt is required")
    if not isinstance(prompt, str) or len(prompt) > 5000:
        raise ViduError("FieldInvalid", "field prompt must be a string of at most 5000 characters")
    out: dict[str, Any] = {"model": model, "images": images, "prompt": prompt}

    duration = body.get("duration", 5)
    low, high = DURATIONS[model]
    if not _is_int(duration) or not low <= duration <= high:
        raise ViduError("FieldInvalid", f"field duration must be an integer in [{low}, {high}] for {model}")
    resolution = body.get("resolution", "720p")
    if resolution not in RESOLUTIONS[model]:
        raise ViduError(
            "FieldInvalid", f"field resolution must be one of {list(RESOLUTIONS[model])} for {model}"
        )
    ratios = MIX_STRICT_RATIOS if model == "viduq3-mix" and cfg.strict_mix_aspect_ratios else ASPECT_RATIOS
    aspect_ratio = body.get("aspect_ratio", "16:9")
    if aspect_ratio not in ratios:
        raise ViduError("FieldInvalid", f"field aspect_ratio must be one of {list(ratios)}")
    seed = body.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= 2147483647:
        raise ViduError("FieldInvalid", "field seed must be an integer in [0, 2147483647]")
    out.update(duration=duration, resolution=resolution, aspect_ratio=aspect_ratio, seed=seed)

    for name, default in (("audio", True), ("bgm", False), ("watermark", False), ("off_peak", False)):
        value = body.get(name, default)
        if not isinstance(value, bool):
            raise ViduError("FieldInvalid", f"field {name} must be a boolean")
        out[name] = value
    choices = {
        "audio_type": ("all", "speech_only", "sound_effect_only"),
        "movement_amplitude": ("auto", "small", "medium", "large"),
    }
    for name, allowed in choices.items():
        value = body.get(name, allowed[0])
        if value not in allowed:
            raise ViduError("FieldInvalid", f"field {name} must be one of {list(allowed)}")
        out[name] = value
    wm_position = body.get("wm_position", 3)
    if not _is_int(wm_position) or not 1 <= wm_position <= 4:
        raise ViduError("FieldInvalid", "field wm_position must be 1, 2, 3 or 4")
    out["wm_position"] = wm_position
    for name, limit in (
        ("payload", 1_048_576),
        ("wm_url", 2048),
        ("meta_data", 1_048_576),
        ("callback_url", 2048),
        ("client_request_id", 256),
    ):
        value = body.get(name, "")
        if not isinstance(value, str) or len(value) > limit:
            raise ViduError("FieldInvalid", f"field {name} must be a string of at most {limit} characters")
        out[name] = value
    callback = out["callback_url"]
    if callback and urlsplit(callback).scheme not in ("http", "https"):
        raise ViduError("FieldInvalid", "field callback_url must be an http(s) URL")
    return out


def credits_for(request: Mapping[str, Any]) -> int:
    return int(CREDITS_PER_SECOND[(request["model"], request["resolution"])] * request["duration"])


def vidu_signing_string(method: str, url: str, date: str, headers: list[tuple[str, str]]) -> str:
    """The §1.8 signing string: METHOD, path ("/" if empty), raw query, `vidu`, Date, then one
    `Name:Value` line per signed header in X-HMAC-SIGNED-HEADERS order; ends with a newline."""
    parts = urlsplit(url)
    lines = [method.upper(), parts.path or "/", parts.query, "vidu", date]
    return "\n".join(lines) + "\n" + "".join(f"{name}:{value}\n" for name, value in headers)


def vidu_signature(method: str, url: str, date: str, headers: list[tuple[str, str]], key: str) -> str:
    """base64(HMAC-SHA256(key = API token, msg = signing string)), exactly as §1.8 describes.

    Note that §1.8 signs neither the body nor its digest: a callback body can be altered without
    breaking the signature, so receivers should re-query the task rather than trust the body.
    """
    message = vidu_signing_string(method, url, date, headers).encode()
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def verify_vidu_callback(method: str, url: str, headers: Mapping[str, str], key: str) -> bool:
    """Check a received callback's X-HMAC-SIGNATURE (`headers` may be case-insensitive)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    names = [n for n in lowered.get("x-hmac-signed-headers", "").split(";") if n]
    if (
        not names
        or lowered.get("x-hmac-access-key") != "vidu"
        or lowered.get("x-hmac-algorithm") != "hmac-sha256"
    ):
        return False
    if any(n.lower() not in lowered for n in names) or "date" not in lowered:
        return False
    signed = [(n, lowered[n.lower()]) for n in names]
    expected = vidu_signature(method, url, lowered["date"], signed, key)
    return hmac.compare_digest(expected, lowered.get("x-hmac-signature", ""))
