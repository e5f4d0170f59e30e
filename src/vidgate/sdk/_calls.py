"""Each API operation described once as a `Call`, and its answer parsed once: both clients share these."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO, Any

from vidgate.sdk._http import RESPONSE_VERSION, Call, data_of
from vidgate.sdk.types import Balance, SubmitResult, Task, Upload, WebhookDelivery

MAX_PREFER_WAIT = 60
FileInput = str | os.PathLike[str] | bytes | IO[bytes]


def submit(
    model: str,
    prompt: str | None,
    params: dict[str, Any],
    *,
    idempotency_key: str | None,
    wait: int | None,
) -> Call:
    body: dict[str, Any] = {"model": model, **params}
    if prompt is not None:
        body["prompt"] = prompt
    headers = {
        # The newer response shape answers the whole task object, not only its id.
        "X-APIMart-Response-Version": RESPONSE_VERSION,
        # A fresh key per call makes the submit safe to retry: a retry replays, never duplicates.
        "Idempotency-Key": idempotency_key or f"vidgate-sdk-{uuid.uuid4()}",
    }
    timeout: float | None = None
    if wait is not None:
        if not 0 <= wait <= MAX_PREFER_WAIT:
            raise ValueError(f"wait must be 0-{MAX_PREFER_WAIT} seconds, got {wait}")
        headers["Prefer"] = f"wait={wait}"
        timeout = wait + 30.0
    return Call(
        "POST", "/v1/videos/generations", idempotent=True, json=body, headers=headers, timeout=timeout
    )


def submitted(body: Any) -> Task | SubmitResult:
    """A task object (2026-07-27 shape, or any `Prefer: wait` answer) or the legacy id-only list."""
    data = data_of(body)
    if isinstance(data, list):
        return SubmitResult.model_validate(data[0])
    return Task.model_validate(data)


def retrieve(task_id: str, language: str | None) -> Call:
    return Call("GET", f"/v1/tasks/{task_id}", idempotent=True, params={"language": language})


def task(body: Any) -> Task:
    return Task.model_validate(data_of(body))


def list_tasks(
    *,
    limit: int | None,
    cursor: str | None,
    status: str | None,
    model: str | None,
    created_after: float | None,
    created_before: float | None,
) -> Call:
    params = {
        "limit": limit,
        "cursor": cursor,
        "status": status,
        "model": model,
        "created_after": created_after,
        "created_before": created_before,
    }
    return Call("GET", "/v1/tasks", idempotent=True, params=params)


def cancel(task_id: str) -> Call:
    return Call("POST", f"/v1/tasks/{task_id}/cancel", idempotent=True)


def deliveries(task_id: str) -> Call:
    return Call("GET", f"/v1/tasks/{task_id}/deliveries", idempotent=True)


def delivery_list(body: Any) -> list[WebhookDelivery]:
    """`{"object": "list", "data": [...]}`: all of them at once, not a cursor page (a task has few)."""
    return [WebhookDelivery.model_validate(item) for item in body["data"]]


def redeliver(task_id: str, delivery_id: str) -> Call:
    # Safe to retry: queuing it twice sends the same webhook-id, which receivers dedupe on.
    return Call("POST", f"/v1/tasks/{task_id}/deliveries/{delivery_id}/redeliver", idempotent=True)


def delivery(body: Any) -> WebhookDelivery:
    return WebhookDelivery.model_validate(data_of(body))


def upload(file: FileInput, filename: str | None) -> Call:
    if isinstance(file, bytes):
        content, name = file, filename or "image"
    elif isinstance(file, str | os.PathLike):
        path = Path(file)
        content, name = path.read_bytes(), filename or path.name
    else:
        content = file.read()
        name = filename or Path(str(getattr(file, "name", "image"))).name
    # Read into memory (uploads are at most 20 MB) so a 429 retry can send it again.
    return Call("POST", "/v1/uploads/images", idempotent=False, files={"file": (name, content)})


def uploaded(body: Any) -> Upload:
    return Upload.model_validate(data_of(body))


def balance() -> Call:
    return Call("GET", "/v1/balance", idempotent=True)


def balance_of(body: Any) -> Balance:
    return Balance.model_validate(data_of(body))


def download_url(task: Task) -> str:
    from vidgate.sdk.errors import VidgateError

    if task.status != "completed":
        raise VidgateError(f"task {task.id} is {task.status}, not completed: nothing to download")
    url = task.video_url
    if url is None:
        raise VidgateError(f"task {task.id} has no video link (its files expired)")
    return url


def next_poll(interval: float | None, previous: float) -> float:
    """Polling pace for `tasks.wait`: the caller's fixed interval, else 0.5 s growing to 3 s."""
    if interval is not None:
        return interval
    return min(3.0, max(0.5, previous * 1.5))
