"""`GET /v1/tasks/{task_id}`: the hot polling path.

It is a plain Starlette endpoint registered ahead of its FastAPI twin: FastAPI's per-route
machinery (dependency and parameter resolution) costs several times what this handler does, and
polling is most of a gateway's traffic. The twin below is never matched; it only documents the
route in OpenAPI. Auth and task come from one indexed query.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request as StarletteRequest
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from vidgate import i18n, keys, tasks
from vidgate.api import Gateway, openapi_models, views
from vidgate.api import openapi_docs as docs
from vidgate.api.auth import SCOPE_KEY as RATE_LIMIT_DECISION
from vidgate.api.auth import LimitedPoll, RateLimitHeaders, current_key, gateway_of
from vidgate.api.errors import envelope, request_language
from vidgate.api.responses import JsonResponse
from vidgate.api.videos import base_url
from vidgate.errors import ApiError, AuthenticationFailed, InvalidRequest, NotFound
from vidgate.keys import ApiKey
from vidgate.status import Status

router = APIRouter(tags=["tasks"])


class PollEndpoint:
    """A bare ASGI endpoint: no Request/Response objects, headers read straight from the scope.

    Errors are raised as usual and leave through the app's exception handlers (the envelope).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        headers = dict(scope["headers"])
        task_id = scope["path_params"]["task_id"]
        version = views.response_version(_text(headers.get(b"x-apimart-response-version")))
        lang = i18n.normalize_language(_text(headers.get(b"accept-language")))
        if scope["query_string"]:
            language = parse_qs(scope["query_string"].decode("latin-1")).get("language", [None])[0]
            if language is not None:
                lang = i18n.normalize_language(language)
                if language.split("-")[0].split("_")[0].lower() not in i18n.LANGUAGES:
                    raise InvalidRequest("language_invalid", param="language")
        scheme, _, secret = (_text(headers.get(b"authorization")) or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationFailed()
        # SQLite answers this indexed read in microseconds, less than a thread-pool hop costs; a
        # network database is read from the pool so the event loop never waits on it.
        if gateway.database.is_sqlite:
            row = _lookup(gateway, task_id, secret.strip())
        else:
            row = await run_in_threadpool(_lookup, gateway, task_id, secret.strip())
        base = gateway.settings.public_url or _base_url(scope, headers)
        data = views.task_view(row, signer=gateway.signer, base_url=base, language=lang, version=version)
        body = orjson.dumps({"code": 200, "data": data})
        out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if version:
            out.append((b"x-apimart-response-version", version.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _base_url(scope: Scope, headers: dict[bytes, bytes]) -> str:
    host = _text(headers.get(b"host"))
    if not host:
        server = scope.get("server") or ("localhost", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"


def _lookup(gateway: Gateway, task_id: str, secret: str) -> Any:
    row = tasks.get_for_key_hash(gateway.database, task_id, keys.hash_key(secret))
    if row is None:
        if keys.authenticate(gateway.database, secret) is None:
            raise AuthenticationFailed()
        # Another key's task and a missing task look the same: nothing leaks across keys.
        raise NotFound("task_not_found", param="task_id", task_id=task_id)
    return row


fast_route = Route("/v1/tasks/{task_id}", PollEndpoint(), methods=["GET"])


@router.get(
    "/v1/tasks/{task_id}",
    summary="Query a task",
    description="Status, progress, cost and, once finished, the result or the error of one of your "
    "tasks. Poll every 1-3 s; another key's task is a 404.",
    response_model=None,
    responses=docs.ok(
        openapi_models.TaskResponse,
        'The task (with `"object": "generation.task"` in response version 2026-07-27)',
        headers=(*docs.RATE_LIMITED, "X-APIMart-Response-Version"),
    )
    | docs.errors(
        (400, "`language` is not en, zh, ko or ja, or `X-APIMart-Response-Version` is not a date"),
        401,
        (404, "No such task for this key"),
        429,
    ),
    openapi_extra=docs.extra(auth="key", headers=("X-APIMart-Response-Version",)),
)
async def get_task_documented(
    task_id: str,
    language: str | None = Query(None, description="Language of messages: en, zh, ko, ja"),
) -> dict[str, Any]:  # pragma: no cover - `fast_route` answers first
    """Status, progress, cost and, once finished, the result or the error of one of your tasks."""
    raise NotImplementedError


def _encode_cursor(row: Any) -> str:
    raw = orjson.dumps([row.created_at, row.id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        at, last_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(last_id, str) or not isinstance(at, int | float):
            raise ValueError(cursor)
        return float(at), last_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidRequest("cursor_invalid", param="cursor") from None


@router.get(
    "/v1/tasks",
    summary="List your tasks (vidgate extension)",
    responses=docs.ok(openapi_models.TaskList, "A page of tasks, newest first", headers=docs.RATE_LIMITED)
    | docs.errors((400, "A query parameter is invalid; `param` names it"), 401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def list_tasks(
    request: Request,
    key: ApiKey = Depends(current_key),
    limit: int = Query(20, ge=1, le=100, description="Page size, 1-100"),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page"),
    status: Status | None = Query(None, description="Only tasks in this status"),
    model: str | None = Query(None, description="Only tasks of this model"),
    created_after: float | None = Query(None, description="Unix seconds, inclusive"),
    created_before: float | None = Query(None, description="Unix seconds, exclusive"),
    language: str | None = Query(None),
) -> JsonResponse:
    """Newest first, keyset-paginated: pages stay stable while new tasks arrive."""
    gateway = gateway_of(request)
    after = _decode_cursor(cursor) if cursor else None
    rows = tasks.list_for_key(
        gateway.database,
        key.id,
        limit=limit + 1,
        after=after,
        status=status.value if status else None,
        model=model,
        created_after=created_after,
        created_before=created_before,
    )
    page, more = rows[:limit], len(rows) > limit
    lang = i18n.normalize_language(language)
    base = base_url(gateway, request)
    data = [views.task_view(r, signer=gateway.signer, base_url=base, language=lang) for r in page]
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "has_more": more,
            "next_cursor": _encode_cursor(page[-1]) if more and page else None,
        }
    )


@router.post(
    "/v1/tasks/{task_id}/cancel",
    summary="Cancel a task (vidgate extension)",
    responses=docs.ok(
        openapi_models.TaskResponse,
        "The task: cancelled, or still processing while its worker stops it",
        headers=docs.RATE_LIMITED,
    )
    | docs.errors(401, (404, "No such task for this key"), (409, "The task has already finished"), 429),
    openapi_extra=docs.extra(auth="key"),
)
def cancel_task(request: Request, task_id: str, key: ApiKey = Depends(current_key)) -> JsonResponse:
    """A pending task is cancelled at once; a running one is stopped by its worker (and at its
    upstream where the upstream allows it). A finished task is a 409."""
    gateway = gateway_of(request)
    row = tasks.request_cancel(gateway.database, task_id, key.id)
    gateway.wake_worker()
    data = views.task_view(row, signer=gateway.signer, base_url=base_url(gateway, request))
    return JsonResponse({"code": 200, "data": data})


_POLL_PATH = re.compile(r"^/v1/tasks/([^/]+)$")


class PollFastLane:
    """Middleware that answers `GET /v1/tasks/{id}` itself, ahead of FastAPI's exception and routing
    layers (most of a gateway's traffic is this one read). It sits inside the request-id and metrics
    middleware, so polls still get both; rate-limit headers and the error envelope it applies
    itself. Every other request passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.poll = LimitedPoll(PollEndpoint())
        self.poll_with_headers = RateLimitHeaders(self.poll)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            _POLL_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"task_id": match.group(1)}
        scope["route"] = fast_route  # what the router would have recorded (metrics label by it)
        gateway: Gateway = scope["app"].state.gateway
        try:
            await (self.poll if gateway.limiter is None else self.poll_with_headers)(scope, receive, send)
        except ApiError as exc:
            response = envelope(exc, request_language(StarletteRequest(scope)))
            decision = scope.get(RATE_LIMIT_DECISION)
            if decision is not None:  # a limited key's errors carry its X-RateLimit-* headers too
                response.raw_headers.extend(decision.raw_headers())
            await response(scope, receive, send)
