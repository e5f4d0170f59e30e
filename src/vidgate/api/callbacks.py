"""`POST /v1/callbacks/{provider}`: upstream callbacks, a fast path beside polling.

A callback only wakes the task: the worker then polls the upstream at once. Its body is never
trusted for the outcome (Vidu's signature does not even cover the body). A callback whose
signature does not verify is refused and changes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from vidgate import tasks
from vidgate.api import openapi_docs as docs
from vidgate.api.auth import gateway_of
from vidgate.api.openapi_models import CallbackReceived
from vidgate.api.responses import JsonResponse
from vidgate.errors import AuthenticationFailed, NotFound

router = APIRouter(tags=["callbacks"])


@router.post(
    "/v1/callbacks/{provider}",
    summary="Receive an upstream's job-state callback",
    description="Called by an upstream (Vidu: `VIDGATE_VIDU_CALLBACKS=true`), not by clients. No API "
    "key: the request must carry the upstream's signature. A verified callback makes the task poll "
    "its upstream at once; the body is never trusted for the outcome.",
    responses=docs.ok(CallbackReceived, "Verified; the task will poll its upstream now")
    | docs.errors(
        (401, "The signature does not verify"),
        (404, "No enabled provider of that name takes callbacks"),
    ),
    openapi_extra=docs.extra(
        body={
            "description": "The upstream's own callback body",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    ),
)
async def receive_callback(request: Request, provider: str) -> JsonResponse:
    gateway = gateway_of(request)
    cls = gateway.router.enabled.get(provider)
    verify = getattr(cls, "verify_callback", None) if cls is not None else None
    if cls is None or verify is None:
        raise NotFound("route_not_found", method=request.method, path=request.url.path)
    body = await request.body()
    found = verify(
        gateway.settings,
        request.method,
        request.url.path,
        request.url.query,
        list(request.headers.items()),
        body,
    )
    if found is None:
        raise AuthenticationFailed("callback_signature")
    task_id, upstream_id = found
    woke = await run_in_threadpool(
        tasks.poke, gateway.database, task_id, provider=provider, upstream_id=upstream_id
    )
    if woke:
        gateway.wake_worker()
    return JsonResponse({"received": True})
