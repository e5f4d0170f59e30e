"""Discovery and account routes generated from the catalog: models, schemas, docs, balance, health."""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response

from vidgate import catalog, keys
from vidgate.api.auth import current_key, gateway_of
from vidgate.api.responses import JsonResponse
from vidgate.api.videos import base_url
from vidgate.catalog.base import model_id
from vidgate.errors import InvalidRequest

router = APIRouter()
DOCS_TTL_SECONDS = 3600


@router.get("/v1/models", tags=["discovery"], summary="List models")
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


@router.get("/v1/model-schema", tags=["discovery"], summary="JSON Schema of a model's request")
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


@router.get("/v1/model-docs", tags=["discovery"], summary="A model's documentation")
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


@router.get("/v1/balance", tags=["account"], summary="This key's balance")
def balance(key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    return JsonResponse(_balance(key))


@router.get("/v1/user/balance", tags=["account"], summary="The account's balance")
def user_balance(key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    return JsonResponse(_balance(key))


@router.get("/readyz", tags=["operations"], summary="Ready to serve: database reachable and migrated")
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


@router.get("/healthz", tags=["operations"], summary="Liveness and database reachability")
def healthz(request: Request) -> JsonResponse:
    gateway = gateway_of(request)
    try:
        with gateway.database.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JsonResponse({"status": "ok", "database": "ok", "worker": gateway.worker is not None})
