"""A task's webhook deliveries (vidgate extension): the delivery log and redelivery.

    GET  /v1/tasks/{task_id}/deliveries                            every delivery, with its attempts
    POST /v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver    send one again now (same webhook-id)

Like every task route, another key's task is a 404 (`task_not_found`), never a 403.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from vidgate import tasks, webhooks
from vidgate.api import openapi_docs as docs
from vidgate.api.auth import current_key, gateway_of
from vidgate.api.responses import JsonResponse
from vidgate.errors import NotFound
from vidgate.keys import ApiKey

router = APIRouter(tags=["webhooks"])


class DeliveryAttempt(BaseModel):
    attempt: int = Field(description="1 for the first attempt, counting retries and redeliveries")
    at: int = Field(description="Unix seconds the attempt started")
    duration_ms: int
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came")
    error: str | None = Field(description="Why it did not count as delivered; null for a 2xx")
    response: str | None = Field(description="The start of the receiver's answer (200 characters)")


class Delivery(BaseModel):
    object: Literal["webhook.delivery"]
    id: str = Field(description="The `webhook-id` header: the same on every attempt of this event")
    task_id: str
    event: Literal["task.processing", "task.completed", "task.failed", "task.cancelled"]
    url: str = Field(description="The task's callback_url")
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending: being tried (or due again at next_attempt_at); failed: given up"
    )
    created_at: int = Field(description="Unix seconds of the event")
    next_attempt_at: int | None
    delivered_at: int | None
    attempt_count: int = Field(description="Attempts started (one cut short by a restart counts)")
    attempts: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    object: Literal["list"]
    data: list[Delivery]


class DeliveryResponse(BaseModel):
    code: Literal[200]
    data: Delivery


def _time(value: float | None) -> int | None:
    return None if value is None else int(value)


def delivery_view(row: Any, attempts: list[Any]) -> dict[str, Any]:
    return {
        "object": "webhook.delivery",
        "id": row.id,
        "task_id": row.task_id,
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "created_at": int(row.created_at),
        "next_attempt_at": _time(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": _time(row.delivered_at),
        "attempt_count": row.attempts,
        "attempts": [
            {
                "attempt": a.attempt,
                "at": int(a.at),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
                "response": a.response,
            }
            for a in attempts
        ],
    }


def _own_task(request: Request, task_id: str, key: ApiKey) -> None:
    if tasks.get(gateway_of(request).database, task_id, key.id) is None:
        raise NotFound("task_not_found", param="task_id", task_id=task_id)


@router.get(
    "/v1/tasks/{task_id}/deliveries",
    summary="A task's webhook deliveries and their attempts (vidgate extension)",
    responses=docs.ok(DeliveryList, "The task's deliveries, oldest first", headers=docs.RATE_LIMITED)
    | docs.errors(401, (404, "No such task for this key (another key's task included)"), 429),
    openapi_extra=docs.extra(auth="key"),
)
def list_deliveries(request: Request, task_id: str, key: ApiKey = Depends(current_key)) -> JsonResponse:
    """One delivery per event sent to the task's `callback_url`, oldest first, each with every
    attempt (time, HTTP status or error, duration). Empty for a task without a callback."""
    _own_task(request, task_id, key)
    found = webhooks.for_task(gateway_of(request).database, task_id)
    return JsonResponse({"object": "list", "data": [delivery_view(d, a) for d, a in found]})


@router.post(
    "/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver",
    summary="Send a webhook delivery again (vidgate extension)",
    responses=docs.ok(DeliveryResponse, "The delivery, queued again", headers=docs.RATE_LIMITED)
    | docs.errors(401, (404, "No such task for this key, or no such delivery of it"), 429),
    openapi_extra=docs.extra(auth="key"),
)
def redeliver(
    request: Request, task_id: str, delivery_id: str, key: ApiKey = Depends(current_key)
) -> JsonResponse:
    """Queues the delivery now with its `webhook-id` and body unchanged, whatever its status, and
    retries it on the usual schedule for a new retry window. Answers the delivery as queued."""
    _own_task(request, task_id, key)
    database = gateway_of(request).database
    if not webhooks.redeliver(database, task_id, delivery_id):
        raise NotFound("delivery_not_found", param="delivery_id", task_id=task_id, delivery_id=delivery_id)
    row, attempts = next((d, a) for d, a in webhooks.for_task(database, task_id) if d.id == delivery_id)
    return JsonResponse({"code": 200, "data": delivery_view(row, attempts)})
