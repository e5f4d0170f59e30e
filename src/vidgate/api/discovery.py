"""Discovery and account routes generated from the catalog: models, schemas, docs, balance, health."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from vidgate import catalog, keys
from vidgate.api import openapi_docs as docs
from vidgate.api import openapi_models as models
from vidgate.api.auth import current_key, gateway_of
from vidgate.api.responses import JsonResponse
from vidgate.api.videos import base_url
from vidgate.catalog.base import model_id
from vidgate.errors import InvalidRequest

router = APIRouter()
DOCS_TTL_SECONDS = 3600


@router.get(
    "/v1/models",
    tags=["discovery"],
    summary="List models",
    description="The catalog: every model with its modes and its route of providers.",
    responses=docs.ok(models.ModelList, "The models", headers=docs.RATE_LIMITED) | docs.errors(401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def list_models(request: Request, key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    gateway = gateway_of(request)
    data = []
    for name, cls in catalog.MODELS.items():
        data.append(
            {
                "id": name,
                "object": "model",
                "owned_by": "vidgate",
                "created": int(gateway.started_at),
                "type": "video",
                "operations": ["video_generation"],
                "description": cls.summary,
                "modes": list(cls.modes),
                "providers": gateway.router.route(name),
            }
        )
    return JsonResponse({"object": "list", "data": data})


@router.get(
    "/v1/model-schema",
    tags=["discovery"],
    summary="JSON Schema of a model's request",
    description="The JSON Schema that a submit body for the model must satisfy (the same one this "
    "document's submit body uses).",
    responses=docs.ok(models.ModelSchema, "The model's schema", headers=docs.RATE_LIMITED)
    | docs.errors((400, "`model` is missing or unknown, or `operation` is not video_generation"), 401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def model_schema(
    model: str = Query(..., description="Model id"),
    operation: str = Query("video_generation"),
    key: keys.ApiKey = Depends(current_key),
) -> JsonResponse:
    if operation != "video_generation":
        raise InvalidRequest("choice", param="operation", choices="video_generation", actual=operation)
    return JsonResponse(
        {
            "model": model_id(catalog.get(model)),
            "operation": operation,
            "input_schema": catalog.input_schema(model),
        }
    )


@router.get(
    "/v1/model-docs",
    tags=["discovery"],
    summary="A model's documentation",
    description="Markdown generated from the model's class: parameters, modes, notes. "
    "`format=markdown` answers the Markdown alone.",
    responses=docs.ok(
        models.ModelDocs,
        "The documentation (JSON), or with `format=markdown` the Markdown itself",
        headers=docs.RATE_LIMITED,
        content={"text/markdown": {"schema": {"type": "string"}}},
    )
    | docs.errors((400, "`model` is missing or unknown, or `format` is not json or markdown"), 401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def model_docs(
    request: Request,
    model: str = Query(..., description="Model id"),
    format: Literal["json", "markdown"] = Query("json"),
    key: keys.ApiKey = Depends(current_key),
) -> Response:
    gateway = gateway_of(request)
    markdown = catalog.documentation(model)
    if format == "markdown":
        return PlainTextResponse(markdown, media_type="text/markdown; charset=utf-8")
    doc_url = f"{base_url(gateway, request)}/v1/model-docs?model={model}"
    return JsonResponse(
        {
            "object": "model.documentation",
            "model": model,
            "doc_url": doc_url,
            "markdown_url": f"{doc_url}&format=markdown",
            "markdown": markdown,
            "fetched_at": int(gateway.started_at),
            "cache_ttl_seconds": DOCS_TTL_SECONDS,
            "stale": False,
        }
    )


def _balance(key: keys.ApiKey) -> dict[str, Any]:
    used = float(key.used)
    if key.balance is None:
        return {"success": True, "remain_balance": -1, "used_balance": used, "unlimited_quota": True}
    return {
        "success": True,
        "remain_balance": float(key.balance),
        "used_balance": used,
        "unlimited_quota": False,
    }


@router.get(
    "/v1/balance",
    tags=["balance"],
    summary="This key's balance",
    description="What the key has left and has spent; `remain_balance` is -1 for an unlimited key.",
    responses=docs.ok(models.Balance, "The balance", headers=docs.RATE_LIMITED) | docs.errors(401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def balance(key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    return JsonResponse(_balance(key))


@router.get(
    "/v1/user/balance",
    tags=["balance"],
    summary="The account's balance",
    description="apimart's account balance; here the calling key's, the same as `GET /v1/balance`.",
    responses=docs.ok(models.Balance, "The balance", headers=docs.RATE_LIMITED) | docs.errors(401, 429),
    openapi_extra=docs.extra(auth="key"),
)
def user_balance(key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    return JsonResponse(_balance(key))


@router.get(
    "/readyz",
    tags=["health"],
    summary="Ready to serve: database reachable and migrated",
    description="For readiness probes: send traffic while this answers 200.",
    responses=docs.ok(models.Ready, "Ready")
    | docs.ok(models.Unavailable, "The database is unreachable or not migrated", status=503)
    | docs.errors(),
)
def readyz(request: Request) -> JsonResponse:
    from vidgate import migrations

    gateway = gateway_of(request)
    try:
        revision = migrations.current_revision(gateway.database)
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    head = migrations.head_revision()
    if revision != head:
        return JsonResponse(
            {"status": "unavailable", "database": f"at {revision}, expected {head}"}, status_code=503
        )
    return JsonResponse({"status": "ready", "database": "ok", "revision": revision})


@router.get(
    "/healthz",
    tags=["health"],
    summary="Liveness and database reachability",
    description="For liveness probes: restart the process while this fails.",
    responses=docs.ok(models.Health, "Alive")
    | docs.ok(models.Unavailable, "The database is unreachable", status=503)
    | docs.errors(),
)
def healthz(request: Request) -> JsonResponse:
    gateway = gateway_of(request)
    try:
        with gateway.database.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JsonResponse({"status": "ok", "database": "ok", "worker": gateway.worker is not None})
