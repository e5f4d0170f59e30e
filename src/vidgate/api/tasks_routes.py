"""`GET /v1/tasks/{task_id}`: the hot polling path, one indexed query for auth and task together."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from vidgate import i18n, keys, tasks
from vidgate.api import views
from vidgate.api.auth import bearer_secret, gateway_of
from vidgate.api.responses import JsonResponse
from vidgate.api.videos import base_url
from vidgate.errors import AuthenticationFailed, InvalidRequest, NotFound

router = APIRouter(tags=["tasks"])


@router.get("/v1/tasks/{task_id}", summary="Query a task")
def get_task(
    request: Request,
    task_id: str,
    language: str | None = Query(None, description="Language of messages: en, zh, ko, ja"),
) -> JsonResponse:
    gateway = gateway_of(request)
    version = views.response_version(request.headers.get("x-apimart-response-version"))
    lang = "en"
    if language is not None:
        lang = i18n.normalize_language(language)
        if language.split("-")[0].split("_")[0].lower() not in i18n.LANGUAGES:
            raise InvalidRequest("language_invalid", param="language")
    secret = bearer_secret(request)
    row = tasks.get_for_key_hash(gateway.database, task_id, keys.hash_key(secret))
    if row is None:
        if keys.authenticate(gateway.database, secret) is None:
            raise AuthenticationFailed()
        # Another key's task and a missing task look the same: nothing leaks across keys.
        raise NotFound("task_not_found", param="task_id", task_id=task_id)
    data = views.task_view(
        row, signer=gateway.signer, base_url=base_url(gateway, request), language=lang, version=version
    )
    headers = {"X-APIMart-Response-Version": version} if version else None
    return JsonResponse({"code": 200, "data": data}, headers=headers)
