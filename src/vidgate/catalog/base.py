"""What every model class shares: strict parsing, field types, and errors that name field and rule.

A model class declares its fields with the types below; cross-field rules are `model_validator`s
that raise `rule(...)`. `parse()` turns any pydantic failure into an `InvalidRequest` whose `param`
is the field (`image_urls[2]`) and whose message states the rule that failed.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from vidgate.errors import InvalidRequest

SEED_MAX = 2_147_483_647


def rule(key: str, param: str, **params: Any) -> PydanticCustomError:
    """A failed rule; `key` is an i18n message key, `param` the field it concerns."""
    return PydanticCustomError(key, key, {"param": param, **params})


def _http_url(value: str) -> str:
    lowered = value.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")) or len(value) > 4096:
        raise PydanticCustomError("url_invalid", "url_invalid", {"actual": value[:200]})
    rest = value.split("://", 1)[1]
    if not rest or rest[0] in "/?#" or any(c.isspace() for c in value):
        raise PydanticCustomError("url_invalid", "url_invalid", {"actual": value[:200]})
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("string_empty", "string_empty", {})
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url), Field(json_schema_extra={"format": "uri"})]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX, description="Same seed and parameters give the same video")]


Prompt = Annotated[
    str,
    Field(min_length=1, max_length=5000, description="What happens in the video: subjects, motion, camera"),
    AfterValidator(_non_blank),
]


class VideoRequest(BaseModel):
    """Base of the per-model request classes; see `catalog.vidu` and `catalog.pixverse`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: One-line description for /v1/models and the docs.
    summary: ClassVar[str] = ""
    #: Modes in the order they are chosen.
    modes: ClassVar[tuple[str, ...]] = ()
    #: Image formats the model accepts (names as `images.sniff_format` returns them).
    image_formats: ClassVar[frozenset[str]] = frozenset({"jpeg", "png", "webp"})
    image_max_bytes: ClassVar[int] = 50 * 1024 * 1024
    #: Markdown notes appended to the generated parameter table in /v1/model-docs.
    notes: ClassVar[str] = ""

    model: str
    prompt: str

    @property
    def mode(self) -> str:
        raise NotImplementedError

    def image_inputs(self) -> list[tuple[str, str]]:
        """(param, url) pairs in the order the engine uses them."""
        return []

    def output_ratio(self) -> str | None:
        """The aspect ratio of the output, or None when it follows the first input image."""
        raise NotImplementedError

    @property
    def has_audio(self) -> bool:
        return False

    @property
    def source_task_id(self) -> str | None:
        """A task whose video this request builds on (extension), checked by the API at submit."""
        return None

    @property
    def clip_seconds(self) -> int:
        return int(getattr(self, "duration", 5))

    def estimated_time(self) -> int:
        """Seconds an upstream typically takes; providers may answer with their own figure."""
        resolution = str(getattr(self, "resolution", "720p"))
        factor = {"360p": 0.6, "540p": 0.8, "720p": 1.0, "1080p": 1.6}.get(resolution, 1.0)
        return math.ceil(30 + self.clip_seconds * 8 * factor)


# --- turning pydantic errors into the API's envelope ---------------------------------------------


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _constraints(cls: type[VideoRequest], field: str) -> dict[str, Any]:
    """min/max/choices of a field, looking through Optional and Annotated wrappers."""
    info = cls.model_fields.get(field)
    found: dict[str, Any] = {}
    if info is None:
        return found

    def visit(item: Any) -> None:
        if isinstance(item, annotated_types.Ge):
            found["min"] = item.ge
        elif isinstance(item, annotated_types.Le):
            found["max"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            found["min"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            found["max"] = item.max_length
        elif isinstance(item, FieldInfo):
            for meta in item.metadata:
                visit(meta)
        elif get_origin(item) is Literal:
            found["choices"] = ", ".join(str(a) for a in get_args(item))
        elif get_origin(item) is Annotated:
            for arg in get_args(item):
                visit(arg)
        else:
            for arg in get_args(item):
                visit(arg)

    for meta in info.metadata:
        visit(meta)
    visit(info.annotation)
    return found


def model_id(cls: type[VideoRequest]) -> str:
    return str(get_args(cls.model_fields["model"].annotation)[0])


def to_invalid_request(cls: type[VideoRequest], exc: ValidationError) -> InvalidRequest:
    """The first error, as the envelope shows it (one clear message beats a list)."""
    err: ErrorDetails = exc.errors(include_url=False)[0]
    kind, loc, ctx = err["type"], err["loc"], dict(err.get("ctx") or {})
    actual = err.get("input")
    param = str(ctx.pop("param", None) or _param(loc))
    field = str(loc[0]) if loc else param

    if kind == "missing":
        return InvalidRequest("field_required", param=param)
    if kind == "extra_forbidden":
        return InvalidRequest("field_unknown", param=param, model=model_id(cls))
    if kind in ("string_type",):
        return InvalidRequest("type_string", param=param)
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return InvalidRequest("type_integer", param=param)
    if kind == "bool_type":
        return InvalidRequest("type_boolean", param=param)
    if kind == "list_type":
        return InvalidRequest("type_array", param=param)
    if kind == "string_too_short":
        return InvalidRequest("string_empty", param=param)
    if kind == "string_too_long":
        return InvalidRequest(
            "string_too_long", param=param, max=ctx.get("max_length"), actual=len(str(actual))
        )
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = _constraints(cls, field)
        bounds.pop("choices", None)
        return InvalidRequest("number_range", param=param, actual=actual, **bounds)
    if kind in ("too_short", "too_long"):
        bounds = _constraints(cls, field)
        bounds.pop("choices", None)
        return InvalidRequest("array_length", param=param, actual=ctx.get("actual_length"), **bounds)
    if kind == "literal_error":
        choices = _constraints(cls, field).get("choices", ctx.get("expected"))
        return InvalidRequest("choice", param=param, choices=choices, actual=actual)
    if kind in ("model_type", "dict_type"):
        return InvalidRequest("invalid_json", detail="expected a JSON object")
    # Our own rules: the type is the i18n key, the context its fields.
    ctx.setdefault("actual", actual if not isinstance(actual, dict) else None)
    return InvalidRequest(kind, param=param, **ctx)
