"""Typed answers of the vidgate API (pydantic models, unknown fields kept, never rejected)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
DeliveryStatus = Literal["pending", "delivered", "failed"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class _Model(BaseModel):
    # Servers may add fields; an older SDK keeps them (`model_extra`) instead of failing.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResultVideo(_Model):
    url: list[str] = Field(default_factory=list)
    """Signed download links (no API key needed); empty once the files have expired."""
    expires_at: int | None = None
    """Unix seconds after which the links stop working."""
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    """Seconds."""
    fps: float | None = None
    has_audio: bool | None = None


class TaskResult(_Model):
    videos: list[ResultVideo] = Field(default_factory=list)
    thumbnail_url: str | None = None


class TaskError(_Model):
    code: str | int | None = None
    message: str = ""
    type: str | None = None
    param: str | None = None


class Task(_Model):
    """A generation task as `GET /v1/tasks/{id}` shows it."""

    id: str
    object: str | None = None
    """`generation.task` in the 2026-07-27 response shape."""
    status: TaskStatus
    progress: int = 0
    """0-100; 100 only when completed."""
    created: int | None = None
    """Unix seconds."""
    estimated_time: int | None = None
    """Seconds the task is expected to take."""
    cost: float | None = None
    model: str | None = None
    provider: str | None = None
    completed: int | None = None
    """Unix seconds at which the task finished (completed or cancelled)."""
    actual_time: int | None = None
    """Seconds from submit to completion."""
    result: TaskResult | None = None
    error: TaskError | None = None

    @property
    def finished(self) -> bool:
        """True once the task is completed, failed or cancelled."""
        return self.status in FINISHED

    @property
    def video_url(self) -> str | None:
        """The first video's first link, if the task completed and its files are still there."""
        if self.result is None or not self.result.videos or not self.result.videos[0].url:
            return None
        return self.result.videos[0].url[0]


class SubmitResult(_Model):
    """The legacy apimart submit answer (`data[0]`): only the id."""

    task_id: str
    status: str = "submitted"


class Upload(_Model):
    """`POST /v1/uploads/images`: a signed URL to pass as an image input (valid 72 h)."""

    url: str
    filename: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    created_at: int | None = None


class Balance(_Model):
    success: bool = True
    remain_balance: float
    """-1 when the key has no quota limit."""
    used_balance: float
    unlimited_quota: bool


class DeliveryAttempt(_Model):
    """One attempt at sending a webhook delivery."""

    attempt: int
    """1 for the first attempt, counting retries and redeliveries."""
    at: int
    """Unix seconds the attempt started."""
    duration_ms: int = 0
    status_code: int | None = None
    """The receiver's HTTP status; None when no answer came."""
    error: str | None = None
    """Why it did not count as delivered; None for a 2xx."""
    response: str | None = None
    """The start of the receiver's answer (200 characters)."""


class WebhookDelivery(_Model):
    """One event sent to a task's `callback_url`, as `GET /v1/tasks/{id}/deliveries` lists it."""

    id: str
    """The `webhook-id` header: the same on every attempt and redelivery of this event."""
    object: str | None = None
    """`webhook.delivery`."""
    task_id: str
    event: str
    """task.processing, task.completed, task.failed or task.cancelled."""
    url: str
    status: DeliveryStatus
    """pending: being tried (or due again at `next_attempt_at`); failed: given up."""
    created_at: int
    """Unix seconds of the event."""
    next_attempt_at: int | None = None
    delivered_at: int | None = None
    attempt_count: int = 0
    """Attempts started (one cut short by a server restart counts)."""
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
