"""The admin API under /admin: API keys, their limits and their money, over HTTP.

Every route needs `Authorization: Bearer <VIDGATE_ADMIN_TOKEN>` (compared in constant time; a
wrong or missing token is a 401). Without a token configured the router is not mounted at all, so
the whole /admin tree answers 404 like any unknown path.

    GET   /admin/keys                    all keys (never their secrets)
    POST  /admin/keys                    create; the only answer that ever shows the secret (201)
    GET   /admin/keys/{id}               one key
    PATCH /admin/keys/{id}               change limits; null clears one
    POST  /admin/keys/{id}/revoke        revoke (idempotent); its requests get 401 from then on
    POST  /admin/keys/{id}/top-up        add money {"amount": "10.5", "note": "..."}
    POST  /admin/keys/{id}/rotate-webhook-secret   a new webhook signing secret, shown once
    GET   /admin/keys/{id}/ledger        the key's ledger, newest first (?limit=&before=)

Bodies are JSON objects; an unknown field, a wrong type or a bad value is a 400 naming the field.
Limits: `expires_at` (UNIX seconds or ISO 8601) or `expires_in` ("30d", "12h", seconds),
`allowed_models` (model ids), `rpm` (requests per minute), `max_in_flight` (tasks pending or
processing at once); on create also `name` (required) and `balance` (an initial top-up; without
one the key is unlimited in money). Amounts are answered as decimal strings ("10.5") so that no
float rounding creeps into accounts; they are accepted as numbers or strings.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from vidgate import keys, ledger
from vidgate.api import openapi_docs as docs
from vidgate.api import openapi_models as models
from vidgate.api.auth import gateway_of, parse_bearer
from vidgate.api.responses import JsonResponse
from vidgate.errors import AuthenticationFailed, InvalidRequest, NotFound, PayloadTooLarge

MAX_BODY_BYTES = 64 * 1024
_LIMITS = ("expires_at", "expires_in", "allowed_models", "rpm", "max_in_flight")
_CREATE_FIELDS = frozenset({"name", "balance", *_LIMITS})
_UPDATE_FIELDS = frozenset(_LIMITS)
_TOP_UP_FIELDS = frozenset({"amount", "note"})


async def require_admin(request: Request) -> None:
    token = gateway_of(request).settings.admin_token
    given = parse_bearer(request.headers.get("authorization", "")) or ""
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise AuthenticationFailed("admin_token_invalid")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

# What the admin routes document (`api/openapi_docs.py`).
_ADMIN = docs.extra(auth="admin")
_TOKEN = (401, "Missing or wrong admin token")
_NO_KEY = (404, "No such key")
_BAD_BODY = (400, "The body is not a JSON object, or a field is unknown, of the wrong type or invalid")
_TOO_LARGE = (413, "The body is over 64 KiB")


def money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _time(value: float | None) -> int | None:
    return None if value is None else int(value)


def key_view(key: keys.ApiKey) -> dict[str, Any]:
    return {
        "object": "api_key",
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "status": key.state,
        "created_at": _time(key.created_at),
        "last_used_at": _time(key.last_used_at),
        "revoked_at": _time(key.revoked_at),
        "expires_at": _time(key.expires_at),
        "allowed_models": list(key.allowed_models) if key.allowed_models is not None else None,
        "rpm": key.rpm,
        "max_in_flight": key.max_in_flight,
        "unlimited_quota": key.balance is None,
        "balance": money(key.balance),
        "used": money(key.used),
    }


def entry_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "amount": money(Decimal(str(row.amount))),
        "balance_after": money(None if row.balance_after is None else Decimal(str(row.balance_after))),
        "task_id": row.task_id,
        "note": row.note,
        "created_at": _time(row.created_at),
    }


@contextmanager
def _as_bad_request() -> Iterator[None]:
    try:
        yield
    except keys.InvalidSetting as exc:
        raise InvalidRequest("param_invalid", param=exc.param, detail=exc.detail) from None


async def _body(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(limit=MAX_BODY_BYTES)
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("invalid_json", detail=str(exc).split(":")[0]) from None
    if not isinstance(body, dict):
        raise InvalidRequest("invalid_json", detail=f"got a JSON {type(body).__name__}")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidRequest("admin_field_unknown", param=unknown[0], fields=", ".join(sorted(fields)))
    return body


def _limits(body: dict[str, Any]) -> dict[str, Any]:
    """The limits a body sets (a present null clears one), expiry resolved to UNIX seconds."""
    limits: dict[str, Any] = {
        name: body[name] for name in ("allowed_models", "rpm", "max_in_flight") if name in body
    }
    if "expires_at" in body or "expires_in" in body:
        limits["expires_at"] = keys.expiry(
            expires_at=body.get("expires_at"), expires_in=body.get("expires_in")
        )
    return limits


def _existing(request: Request, key_id: str) -> keys.ApiKey:
    key = keys.get(gateway_of(request).database, key_id)
    if key is None:
        raise NotFound("key_not_found", param="key_id", key_id=key_id)
    return key


@router.get(
    "/keys",
    summary="List API keys",
    description="Every key with its limits and money; never a secret.",
    responses=docs.ok(models.ApiKeyList, "The keys") | docs.errors(_TOKEN),
    openapi_extra=_ADMIN,
)
def list_keys(request: Request) -> JsonResponse:
    data = [key_view(k) for k in keys.list_keys(gateway_of(request).database)]
    return JsonResponse({"object": "list", "data": data})


@router.post(
    "/keys",
    summary="Create an API key (its secret is shown in this answer only)",
    description="`name` is required; `balance` makes the key prepaid (without one it is unlimited in "
    "money). Answers the key with `secret` and `webhook_secret`, which no later answer shows.",
    status_code=201,
    responses=docs.ok(models.ApiKeyCreated, "The new key and its secrets", status=201)
    | docs.errors(_BAD_BODY, _TOKEN, _TOO_LARGE),
    openapi_extra=docs.extra(auth="admin", body=docs.json_body(models.KeyCreate)),
)
async def create_key(request: Request) -> JsonResponse:
    gateway = gateway_of(request)
    body = await _body(request, _CREATE_FIELDS)
    name = body.get("name")
    if name is None:
        raise InvalidRequest("field_required", param="name")
    with _as_bad_request():
        if not isinstance(name, str):
            raise keys.InvalidSetting("name", "must be a string")
        limits = _limits(body)
        key, secret = await run_in_threadpool(
            keys.create, gateway.database, name, balance=body.get("balance"), **limits
        )
    # The webhook signing secret (`whsec_...`) is shown here once too.
    webhook_secret = await run_in_threadpool(keys.webhook_secret, gateway.database, key.id)
    return JsonResponse(
        {**key_view(key), "secret": secret, "webhook_secret": webhook_secret}, status_code=201
    )


@router.get(
    "/keys/{key_id}",
    summary="One API key",
    description="The key with its limits and money; never its secret.",
    responses=docs.ok(models.ApiKeyObject, "The key") | docs.errors(_TOKEN, _NO_KEY),
    openapi_extra=_ADMIN,
)
def get_key(request: Request, key_id: str) -> JsonResponse:
    return JsonResponse(key_view(_existing(request, key_id)))


@router.patch(
    "/keys/{key_id}",
    summary="Change an API key's limits",
    description="Sets the limits the body names; a present `null` clears one.",
    responses=docs.ok(models.ApiKeyObject, "The key as changed")
    | docs.errors(_BAD_BODY, _TOKEN, _NO_KEY, _TOO_LARGE),
    openapi_extra=docs.extra(auth="admin", body=docs.json_body(models.KeyLimits)),
)
async def update_key(request: Request, key_id: str) -> JsonResponse:
    gateway = gateway_of(request)
    body = await _body(request, _UPDATE_FIELDS)
    with _as_bad_request():
        limits = _limits(body)
        key = await run_in_threadpool(keys.update, gateway.database, key_id, **limits)
    if key is None:
        raise NotFound("key_not_found", param="key_id", key_id=key_id)
    gateway.rpm_cache.clear()  # this process applies a new rpm at once, the others within seconds
    return JsonResponse(key_view(key))


@router.post(
    "/keys/{key_id}/revoke",
    summary="Revoke an API key",
    description="Idempotent; the key's requests are refused with 401 from now on.",
    responses=docs.ok(models.ApiKeyObject, "The revoked key") | docs.errors(_TOKEN, _NO_KEY),
    openapi_extra=_ADMIN,
)
def revoke_key(request: Request, key_id: str) -> JsonResponse:
    gateway = gateway_of(request)
    keys.revoke(gateway.database, key_id)
    gateway.rpm_cache.clear()
    return JsonResponse(key_view(_existing(request, key_id)))


@router.post(
    "/keys/{key_id}/rotate-webhook-secret",
    summary="Replace an API key's webhook signing secret",
    responses=docs.ok(models.ApiKeyWebhookSecret, "The key with its new `webhook_secret`")
    | docs.errors(_TOKEN, _NO_KEY),
    openapi_extra=_ADMIN,
)
def rotate_webhook_secret(request: Request, key_id: str) -> JsonResponse:
    """Answers the key with its new `webhook_secret` (shown in this answer only); webhooks are
    signed with it from now on, retries of earlier events included."""
    secret = keys.rotate_webhook_secret(gateway_of(request).database, key_id)
    if secret is None:
        raise NotFound("key_not_found", param="key_id", key_id=key_id)
    return JsonResponse({**key_view(_existing(request, key_id)), "webhook_secret": secret})


@router.post(
    "/keys/{key_id}/top-up",
    summary="Add money to an API key",
    description="A key without a balance becomes prepaid with this amount.",
    responses=docs.ok(models.ApiKeyObject, "The key with its new balance")
    | docs.errors(_BAD_BODY, _TOKEN, _NO_KEY, _TOO_LARGE),
    openapi_extra=docs.extra(auth="admin", body=docs.json_body(models.TopUp)),
)
async def top_up_key(request: Request, key_id: str) -> JsonResponse:
    gateway = gateway_of(request)
    body = await _body(request, _TOP_UP_FIELDS)
    if body.get("amount") is None:
        raise InvalidRequest("field_required", param="amount")
    note = body.get("note")
    with _as_bad_request():
        amount = keys.parse_amount(body["amount"], "amount")
        if note is not None and (not isinstance(note, str) or len(note) > 200):
            raise keys.InvalidSetting("note", "must be a string of at most 200 characters")
    try:
        await run_in_threadpool(ledger.top_up, gateway.database, key_id, amount, note=note)
    except KeyError:
        raise NotFound("key_not_found", param="key_id", key_id=key_id) from None
    return JsonResponse(key_view(_existing(request, key_id)))


@router.get(
    "/keys/{key_id}/ledger",
    summary="An API key's ledger, newest first",
    description="Top-ups, holds, captures and releases, in pages (`next_before`).",
    responses=docs.ok(models.Ledger, "A page of the ledger")
    | docs.errors((400, "`limit` or `before` is invalid"), _TOKEN, _NO_KEY),
    openapi_extra=_ADMIN,
)
def key_ledger(
    request: Request,
    key_id: str,
    limit: int = Query(100, ge=1, le=1000, description="Rows per page, 1-1000"),
    before: int | None = Query(None, ge=1, description="`next_before` of the previous page"),
) -> JsonResponse:
    key = _existing(request, key_id)
    rows = ledger.entries(gateway_of(request).database, key_id, limit=limit + 1, before=before)
    page, more = rows[:limit], len(rows) > limit
    return JsonResponse(
        {
            "object": "list",
            "key_id": key.id,
            "unlimited_quota": key.balance is None,
            "balance": money(key.balance),
            "used": money(key.used),
            "data": [entry_view(r) for r in page],
            "has_more": more,
            "next_before": page[-1].id if more else None,
        }
    )
