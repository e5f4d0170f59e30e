"""Pydantic models of what the API answers, for `/openapi.json` only.

Handlers build their bodies as plain dicts (orjson, no validation on the hot path); these classes
describe those dicts so that clients can generate code from the spec. `tests/test_openapi.py`
validates real answers against the schemas generated from them, so they cannot drift unseen.

A field that the wire leaves out (rather than sending `null`) is declared with `absent()`: not
required, and its schema has no `null`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from vidgate.errors import ApiError
from vidgate.status import Status


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent(description: str) -> Any:
    """A field that is left out of the body when it has no value (never `null`)."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


def error_types() -> list[str]:
    """Every `error.type` the API answers with, read from the `ApiError` classes."""
    found = {ApiError.type}
    pending = list(ApiError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls.type)
        pending.extend(cls.__subclasses__())
    return sorted(found)


def _type_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = error_types()


class ErrorBody(BaseModel):
    code: int = Field(description="The HTTP status of the response, repeated")
    message: str = Field(description="Human-readable, in the language asked for (`?language=`)")
    type: str = Field(description="The error class", json_schema_extra=_type_enum)
    param: str | SkipJsonSchema[None] = absent(
        "The field, header or query parameter at fault; left out when no single one is"
    )


class ErrorEnvelope(BaseModel):
    """Every error response of the API."""

    error: ErrorBody


# --- tasks -----------------------------------------------------------------------------------------


class SubmittedTask(BaseModel):
    status: Literal["submitted"]
    task_id: str = Field(description="`task_` and a ULID")


class TaskVideo(BaseModel):
    url: list[str] = Field(description="The signed download URL; `[]` once `expires_at` has passed")
    expires_at: int = Field(description="Unix seconds after which the URLs stop working")
    width: int | SkipJsonSchema[None] = absent("Pixels")
    height: int | SkipJsonSchema[None] = absent("Pixels")
    duration: float | SkipJsonSchema[None] = absent("Seconds")
    fps: float | SkipJsonSchema[None] = absent("Frames per second")
    has_audio: bool | SkipJsonSchema[None] = absent("Whether the video has a soundtrack")


class TaskResult(BaseModel):
    videos: list[TaskVideo]
    thumbnail_url: str | SkipJsonSchema[None] = absent("A JPEG of the first frame, while the video lives")


class TaskError(BaseModel):
    code: str = Field(description="A task error code (see docs/api.md), e.g. `image_too_small`")
    message: str
    type: str
    param: str | SkipJsonSchema[None] = absent("The input at fault, when one is")


class Task(BaseModel):
    """A task as `GET /v1/tasks/{task_id}` shows it."""

    object: Literal["generation.task"] | SkipJsonSchema[None] = absent(
        "Present with `X-APIMart-Response-Version: 2026-07-27` (or later)"
    )
    id: str
    model: str
    status: Status
    progress: int = Field(ge=0, le=100, description="100 exactly when completed")
    created: int = Field(description="Submit time, Unix seconds")
    estimated_time: int = Field(description="Seconds the task is expected to take")
    cost: float = Field(description="Quoted at submit; charged once completed; 0 if failed or cancelled")
    provider: str = Field(description="What serves the task: local, vidu, pixverse, apimart, ...")
    completed: int | SkipJsonSchema[None] = absent("Finish time (completed or cancelled)")
    actual_time: int | SkipJsonSchema[None] = absent("Seconds from submit to completion")
    result: TaskResult | SkipJsonSchema[None] = absent("Once completed")
    error: TaskError | SkipJsonSchema[None] = absent("Once failed")


class SubmitResponse(BaseModel):
    code: Literal[200]
    data: list[SubmittedTask] | Task = Field(
        description="Legacy: a one-item list. With `X-APIMart-Response-Version: 2026-07-27` or "
        "`Prefer: wait=N`: the task object"
    )


class TaskResponse(BaseModel):
    code: Literal[200]
    data: Task


class TaskList(BaseModel):
    object: Literal["list"]
    data: list[Task]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


# --- uploads, discovery, balance -------------------------------------------------------------------


class Upload(BaseModel):
    url: str = Field(description="Signed URL that every image parameter accepts")
    filename: str
    content_type: str = Field(description="Detected from the content: image/jpeg, png, webp or gif")
    bytes: int
    created_at: int


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"]
    owned_by: str
    created: int
    type: Literal["video"]
    operations: list[str]
    description: str
    modes: list[str] = Field(description="In the order a request's mode is chosen")
    providers: list[str] = Field(description="The model's route, first choice first")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelInfo]


class ModelSchema(BaseModel):
    model: str
    operation: Literal["video_generation"]
    input_schema: dict[str, Any] = Field(description="The JSON Schema of the model's request body")


class ModelDocs(BaseModel):
    object: Literal["model.documentation"]
    model: str
    doc_url: str
    markdown_url: str
    markdown: str
    fetched_at: int
    cache_ttl_seconds: int
    stale: bool


class Balance(BaseModel):
    success: bool
    remain_balance: float = Field(description="-1 when the key is unlimited")
    used_balance: float
    unlimited_quota: bool


# --- health and callbacks --------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    worker: bool = Field(description="false for `vidgate serve --no-worker`")


class Ready(BaseModel):
    status: Literal["ready"]
    database: Literal["ok"]
    revision: str = Field(description="The database schema revision")


class Unavailable(BaseModel):
    status: Literal["unavailable"]
    database: str = Field(description="`unreachable`, or which revision it is at and should be at")


class CallbackReceived(BaseModel):
    received: Literal[True]


# --- admin -----------------------------------------------------------------------------------------

_MONEY = 'A decimal string, e.g. "10.5"'


class ApiKeyObject(BaseModel):
    object: Literal["api_key"]
    id: str
    name: str
    prefix: str = Field(description="The first characters of the secret, to recognise it")
    status: Literal["active", "revoked", "expired"]
    created_at: int
    last_used_at: int | None
    revoked_at: int | None
    expires_at: int | None
    allowed_models: list[str] | None = Field(description="null: every model")
    rpm: int | None = Field(description="Requests per minute; null: no limit")
    max_in_flight: int | None = Field(description="Tasks pending or processing at once; null: no limit")
    unlimited_quota: bool
    balance: str | None = Field(description=f"{_MONEY}; null when unlimited")
    used: str | None = Field(description=_MONEY)


class ApiKeyWebhookSecret(ApiKeyObject):
    webhook_secret: str = Field(description="`whsec_...`, the key's webhook signing secret; shown once")


class ApiKeyCreated(ApiKeyWebhookSecret):
    secret: str = Field(description="The API key itself; this answer is the only one that shows it")


class ApiKeyList(BaseModel):
    object: Literal["list"]
    data: list[ApiKeyObject]


class LedgerEntry(BaseModel):
    id: int
    kind: Literal["topup", "hold", "capture", "release"]
    amount: str = Field(description=_MONEY)
    balance_after: str | None = Field(description=_MONEY)
    task_id: str | None
    note: str | None
    created_at: int


class Ledger(BaseModel):
    object: Literal["list"]
    key_id: str
    unlimited_quota: bool
    balance: str | None
    used: str | None
    data: list[LedgerEntry]
    has_more: bool
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last")


# Request bodies of the admin routes (their handlers read raw JSON and check it themselves).

_Expiry = int | float | str
_Amount = float | str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyLimits(_Body):
    """Limits of a key; on update a present `null` clears one."""

    expires_at: _Expiry | None = Field(None, description="Unix seconds or ISO 8601, in the future")
    expires_in: _Expiry | None = Field(None, description="A duration: `30d`, `12h`, `90m` or seconds")
    allowed_models: list[str] | None = Field(None, min_length=1, description="Model ids; null: all")
    rpm: int | None = Field(None, ge=1, description="Requests per minute")
    max_in_flight: int | None = Field(None, ge=1, description="Tasks pending or processing at once")


class KeyCreate(KeyLimits):
    name: str = Field(min_length=1, max_length=200)
    balance: _Amount | None = Field(None, description="An initial top-up; without one, unlimited")


class TopUp(_Body):
    amount: _Amount = Field(description="More than 0, at most 6 decimals")
    note: str | None = Field(None, max_length=200)


#: Models that no route names in `responses=` but the spec refers to (request bodies).
REQUEST_BODIES: tuple[type[BaseModel], ...] = (KeyCreate, KeyLimits, TopUp)
