"""`POST /v1/videos/generations`: validate against the catalog, route, enqueue."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from vidgate import catalog, keys, tasks, webhooks
from vidgate.api import Gateway, openapi_models, views
from vidgate.api import openapi_docs as docs
from vidgate.api.auth import current_key, gateway_of
from vidgate.api.errors import request_language
from vidgate.api.responses import JsonResponse
from vidgate.errors import BadGateway, InvalidRequest, PayloadTooLarge, PermissionDenied
from vidgate.status import Status

router = APIRouter(tags=["videos"])

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,191}$")
MAX_BODY_BYTES = 1024 * 1024
#: `Prefer: wait=N` holds a submit at most this long (vidgate extension, RFC 7240).
MAX_PREFER_WAIT = 60
_HOLD_POLL_SECONDS = 0.2
_FINISHED = frozenset({"completed", "failed", "cancelled"})


def base_url(gateway: Gateway, request: Request) -> str:
    """VIDGATE_PUBLIC_URL, else scheme and Host of the request (cheap: this runs on every poll)."""
    if gateway.settings.public_url:
        return gateway.settings.public_url
    scope = request.scope
    host = request.headers.get("host")
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"


@router.post(
    "/v1/videos/generations",
    summary="Submit a video generation task",
    description="Validates the body against the model's schema, quotes and holds its cost, and queues "
    "the task. Answers at once with the task id, or with `Prefer: wait=N` holds until the task "
    "finishes or N seconds pass and answers the task itself.",
    responses=docs.ok(
        openapi_models.SubmitResponse,
        "The task was accepted (or replayed, with `Idempotency-Key`)",
        headers=(
            *docs.RATE_LIMITED,
            "Idempotency-Replayed",
            "Preference-Applied",
            "X-APIMart-Response-Version",
        ),
    )
    | docs.errors(
        400,
        401,
        (402, "The key's prepaid balance cannot cover the task's quoted cost"),
        (403, "This key may not use the model"),
        (409, "`Idempotency-Key` already used with a different body"),
        (413, "The body is over 1 MiB"),
        (429, "Over the key's requests per minute, or its maximum of tasks in flight"),
        (502, "No enabled provider serves the model here"),
    ),
    openapi_extra=docs.extra(
        auth="key",
        headers=("Idempotency-Key", "Prefer", "X-APIMart-Response-Version"),
        body=docs.SUBMIT_BODY,
    ),
)
async def submit(request: Request) -> JsonResponse:
    gateway = gateway_of(request)
    version = views.response_version(request.headers.get("x-apimart-response-version"))
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise InvalidRequest("idempotency_key_invalid", param="Idempotency-Key")
    wait = prefer_wait(request.headers.get("prefer"))
    raw = await read_capped(request, MAX_BODY_BYTES)
    # Authentication and enqueue share one trip to the thread pool (each trip costs).
    row, replayed = await run_in_threadpool(_authenticate_and_enqueue, gateway, request, raw, idempotency_key)
    if not replayed:
        gateway.wake_worker()
    headers = {"Idempotency-Replayed": "true"} if replayed else {}
    if wait is not None:
        # A held submit always answers the whole task (the 2026-07-27 `data` object, whatever the
        # version header): a caller who waits wants the outcome, which the legacy id-only list lacks.
        row = await _hold(gateway, request, row, wait)
        headers["Preference-Applied"] = f"wait={wait}"
        headers["X-APIMart-Response-Version"] = views.RESPONSE_VERSION
        data = views.task_view(
            row,
            signer=gateway.signer,
            base_url=base_url(gateway, request),
            language=request_language(request),
            version=views.RESPONSE_VERSION,
        )
        return JsonResponse({"code": 200, "data": data}, headers=headers)
    if version is not None:
        headers["X-APIMart-Response-Version"] = version
    data = views.submitted_view(
        row, signer=gateway.signer, base_url=base_url(gateway, request), version=version
    )
    return JsonResponse({"code": 200, "data": data}, headers=headers)


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (by Content-Length or
    while streaming): an oversized body is never buffered whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def prefer_wait(header: str | None) -> int | None:
    """N of a `Prefer: wait=N` header (0-60), None without one; other preferences are ignored."""
    if header is None:
        return None
    for part in header.split(","):
        token, _, value = part.split(";")[0].strip().partition("=")
        if token.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not (value.isascii() and value.isdigit() and len(value) <= 3) or int(value) > MAX_PREFER_WAIT:
            raise InvalidRequest("prefer_wait_invalid", param="Prefer", limit=MAX_PREFER_WAIT)
        return int(value)
    return None


async def _hold(gateway: Gateway, request: Request, row: Any, seconds: int) -> Any:
    """Re-read the task until it finishes, `seconds` pass or the caller hangs up (event loop free)."""
    deadline = time.monotonic() + seconds
    while row.status not in _FINISHED:
        left = deadline - time.monotonic()
        if left <= 0 or await request.is_disconnected():
            break
        await asyncio.sleep(min(_HOLD_POLL_SECONDS, left))
        if gateway.database.is_sqlite:  # an indexed read is cheaper than a thread-pool hop
            fresh = tasks.get(gateway.database, row.id)
        else:
            fresh = await run_in_threadpool(tasks.get, gateway.database, row.id)
        row = fresh if fresh is not None else row
    return row


def _authenticate_and_enqueue(
    gateway: Gateway, request: Request, raw: bytes, idempotency_key: str | None
) -> tuple[Any, bool]:
    key = current_key(request)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("invalid_json", detail=str(exc).split(":")[0]) from None
    # `callback_url` (signed webhooks) is ours, not a model field; the hash still covers it.
    fields, callback = webhooks.split_callback(body)
    parsed = catalog.parse(fields)
    callback_url = webhooks.check_callback_url(callback, allow_private=gateway.settings.allow_private_urls)
    return _enqueue(gateway, key, parsed, body, idempotency_key, callback_url)


def _enqueue(
    gateway: Gateway,
    key: keys.ApiKey,
    parsed: catalog.VideoRequest,
    body: dict[str, Any],
    idem: str | None,
    callback_url: str | None = None,
) -> tuple[Any, bool]:
    if not key.may_use(parsed.model):
        raise PermissionDenied("model_not_allowed", param="model", model=parsed.model)
    provider_name = gateway.router.pick(parsed.model)
    if provider_name is None:
        raise BadGateway("no_provider", param="model", model=parsed.model)
    if parsed.source_task_id is not None:
        _check_extension_source(gateway, key, parsed.source_task_id, provider_name)
    provider_cls = gateway.router.enabled[provider_name]
    estimate = provider_cls(gateway.settings).estimated_time(parsed)
    return tasks.create(
        gateway.database,
        key_id=key.id,
        request=parsed,
        body=body,
        provider=provider_name,
        estimated_time=estimate,
        idempotency_key=idem,
        deadline_seconds=gateway.settings.task_deadline_seconds,
        cost=gateway.prices.quote(provider_name, parsed),
        max_in_flight=key.max_in_flight,
        callback_url=callback_url,
    )


def _check_extension_source(gateway: Gateway, key: keys.ApiKey, source_id: str, provider: str) -> None:
    source = tasks.get(gateway.database, source_id, key.id)
    param = "extend_from_task_id"
    if source is None:
        raise InvalidRequest("extend_source_missing", param=param, actual=source_id)
    if source.model != "pixverse-v6":
        raise InvalidRequest("extend_source_model", param=param, model=source.model)
    if source.status != Status.COMPLETED:
        raise InvalidRequest("extend_source_state", param=param, status=source.status)
    # An upstream extends only videos it made itself; an engine extends any stored video.
    serving = gateway.router.enabled.get(provider)
    if not (serving is not None and serving.extends_any_video) and source.provider != provider:
        raise InvalidRequest(
            "extend_source_provider", param=param, provider=source.provider, upstream=provider
        )
