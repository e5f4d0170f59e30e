"""What `/openapi.json` says beyond what FastAPI infers: responses, errors, auth, headers, bodies.

Route decorators use three helpers:
- `ok(Model, "what it is", headers=...)`: the success response;
- `errors(400, 401, (404, "why here"), ...)`: the `{"error": {...}}` envelope for each status, with
  the `type` and an example taken from the `ApiError` classes (500 is added: any route can fail);
- `extra(auth="key" | "admin", headers=..., body=...)` for `openapi_extra`: the security scheme,
  request headers and, for handlers that read the raw request, the request body.

`install(app)` finishes the generated document once: the catalog's model schemas (the submit body
is a `oneOf` over them), security schemes, shared headers and parameters, tag descriptions, and no
`422` (validation errors leave as `400` in the envelope, `api/errors.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from vidgate import catalog, webhooks
from vidgate.api import openapi_models
from vidgate.api.openapi_models import ErrorEnvelope
from vidgate.errors import (
    ApiError,
    AuthenticationFailed,
    BadGateway,
    Conflict,
    Gone,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    PermissionDenied,
    RateLimited,
    ServerError,
)

API_KEY = "apiKey"
ADMIN_TOKEN = "adminToken"
_SCHEMAS = "#/components/schemas/"

TAGS: list[dict[str, str]] = [
    {"name": "videos", "description": "Submit video generations (apimart-compatible)."},
    {"name": "tasks", "description": "Query, list and cancel your tasks."},
    {"name": "webhooks", "description": "Signed callbacks to your `callback_url` (vidgate extension)."},
    {"name": "uploads", "description": "Store reference images and get URLs the models accept."},
    {"name": "files", "description": "Signed, expiring downloads of uploads and results; no key needed."},
    {"name": "discovery", "description": "Models, their request schemas and documentation."},
    {"name": "balance", "description": "The calling key's money."},
    {"name": "admin", "description": "API keys, limits and top-ups; needs `VIDGATE_ADMIN_TOKEN`."},
    {"name": "callbacks", "description": "Where upstream providers report job states (signed)."},
    {"name": "health", "description": "Probes for load balancers and orchestrators; no key needed."},
]

#: Paths left out of the document on purpose, and why (tests/test_openapi.py holds every other
#: route to being documented).
HIDDEN: dict[str, str] = {
    "/openapi.json": "this document itself",
    "/docs": "Swagger UI, a page for people that renders this document",
    "/redoc": "ReDoc, a page for people that renders this document",
    "/docs/assets": "the scripts and styles of /docs and /redoc (fastapi-offline's copies)",
    "/docs/assets/swagger-init.js": "the script that starts Swagger UI on /docs",
    "/metrics": "Prometheus text for scrapers (VIDGATE_METRICS), its own token; see docs/operations.md",
    "/": "the web console, a page for people (VIDGATE_CONSOLE)",
    "/console/{name}": "the web console's scripts and styles",
}

# --- errors ----------------------------------------------------------------------------------------

#: Status -> an example error of the class that answers it, and when it happens.
_ERRORS: dict[int, tuple[ApiError, str]] = {
    400: (
        InvalidRequest("field_required", param="prompt"),
        "A body field, query parameter or header failed validation; `param` names it",
    ),
    401: (AuthenticationFailed(), "Missing, unknown, revoked or expired credentials"),
    402: (PaymentRequired(), "The key's prepaid balance cannot cover the task's quoted cost"),
    403: (PermissionDenied(), "Not allowed with these credentials"),
    404: (NotFound(), "Not found (another key's task is not found either)"),
    409: (Conflict(), "The request conflicts with the current state"),
    410: (Gone(), "The signed link has expired"),
    413: (PayloadTooLarge(limit=1048576), "The body is too large"),
    429: (RateLimited(), "Over the key's requests per minute or tasks in flight; see `Retry-After`"),
    500: (ServerError(), "An unexpected error, logged by the server; any route can answer it"),
    502: (BadGateway(), "No upstream or provider can serve the request here"),
}

_RATE_LIMIT = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
#: Response headers of a key with an rpm (`ratelimit.py`), for `ok(..., headers=RATE_LIMITED)`.
RATE_LIMITED: tuple[str, ...] = _RATE_LIMIT

_RESPONSE_HEADERS: dict[str, dict[str, Any]] = {
    "X-RateLimit-Limit": {"description": "The key's requests per minute (keys with an rpm only)"},
    "X-RateLimit-Remaining": {"description": "Requests that may be sent at once now"},
    "X-RateLimit-Reset": {"description": "Seconds until the full budget is back"},
    "Retry-After": {"description": "Seconds to wait before the next request"},
    "Idempotency-Replayed": {"description": "`true` when the answer replays an earlier submit"},
    "Preference-Applied": {"description": "`wait=N` when `Prefer: wait=N` was honoured"},
    "X-APIMart-Response-Version": {"description": "The response version answered, when one was asked"},
}
_HEADER_TYPES = {"X-RateLimit-Limit": "integer", "X-RateLimit-Remaining": "integer"}
_HEADER_TYPES |= {"X-RateLimit-Reset": "integer", "Retry-After": "integer"}


def _header_refs(names: Sequence[str]) -> dict[str, Any]:
    for name in names:
        if name not in _RESPONSE_HEADERS:
            raise KeyError(f"undocumented response header {name}")
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def errors(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses (and 500): the envelope, an example, and when.

    A `(status, text)` pair replaces the generic explanation with one for the route."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in (*statuses, 500):
        status, why = item if isinstance(item, tuple) else (item, None)
        if status in out and why is None:
            continue
        example, generic = _ERRORS[status]
        body: dict[str, Any] = {"code": status, "message": example.message(), "type": example.type}
        if example.param is not None:
            body["param"] = example.param
        response: dict[str, Any] = {
            "model": ErrorEnvelope,
            "description": f"`{example.type}`: {why or generic}",
            "content": {"application/json": {"example": {"error": body}}},
        }
        if status == 429:
            response["headers"] = _header_refs(("Retry-After", *_RATE_LIMIT))
        out[status] = response
    return out


def ok(
    model: type[BaseModel] | None,
    description: str,
    *,
    status: int = 200,
    headers: Sequence[str] = (),
    content: dict[str, Any] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a success: its model (JSON) or its `content`, and its headers."""
    response: dict[str, Any] = {"description": description}
    if model is not None:
        response["model"] = model
    if content is not None:
        response["content"] = content
    if headers:
        response["headers"] = _header_refs(headers)
    return {status: response}


# --- request side ----------------------------------------------------------------------------------

_PARAMETERS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "Retry-safe submits: the same key and body replay the first task "
        "(`Idempotency-Replayed: true`); the same key with another body is a 409",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,191}$"},
    },
    "Prefer": {
        "name": "Prefer",
        "in": "header",
        "description": "`wait=N` (0-60, vidgate extension): hold the submit up to N seconds and "
        "answer with the task, finished or not",
        "schema": {"type": "string"},
    },
    "X-APIMart-Response-Version": {
        "name": "X-APIMart-Response-Version",
        "in": "header",
        "description": "A date; `2026-07-27` or later selects the newer task shape "
        '(`"object": "generation.task"`). Not a date: 400',
        "schema": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
    },
}


def _parameter_key(name: str) -> str:
    return name.replace("-", "")


def extra(
    *,
    auth: Literal["key", "admin"] | None = None,
    headers: Sequence[str] = (),
    parameters: Sequence[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`openapi_extra=` for a route: who may call it, request headers, extra parameters, body."""
    out: dict[str, Any] = {}
    if auth is not None:
        out["security"] = [{API_KEY if auth == "key" else ADMIN_TOKEN: []}]
    refs = [{"$ref": f"#/components/parameters/{_parameter_key(h)}"} for h in headers]
    if refs or parameters:
        out["parameters"] = [*refs, *parameters]
    if body is not None:
        out["requestBody"] = body
    return out


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """A JSON request body of `model` (for routes that read the raw request)."""
    content = {"application/json": {"schema": {"$ref": _SCHEMAS + model.__name__}}}
    return {"required": required, "content": content}


#: Fields the submit body takes besides the model's own (vidgate extensions): a generic
#: comparison with `/v1/model-schema` drops the properties marked `x-vidgate-extension`.
SUBMIT_EXTENSIONS: dict[str, dict[str, Any]] = {
    webhooks.PARAM: {
        "type": "string",
        "format": "uri",
        "maxLength": webhooks.MAX_URL_LENGTH,
        "description": "vidgate extension: an http(s) URL that receives signed webhooks as the task "
        "changes state (task.processing, task.completed, task.failed, task.cancelled)",
        "x-vidgate-extension": True,
    }
}

#: The submit body: one model's parameters, chosen by `model` (schemas from the catalog).
SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [{"$ref": _SCHEMAS + name} for name in catalog.MODELS],
                "discriminator": {
                    "propertyName": "model",
                    "mapping": {name: _SCHEMAS + name for name in catalog.MODELS},
                },
            }
        }
    },
}


def model_component(name: str) -> dict[str, Any]:
    """The catalog's JSON Schema of a model (as `/v1/model-schema` answers it), plus the submit
    extension fields."""
    schema = catalog.input_schema(name)
    if "$defs" in schema:  # local refs would point into this document's root: hoist them first
        raise ValueError(f"the schema of {name} has $defs, which openapi_docs does not hoist yet")
    schema["properties"] = {**schema.get("properties", {}), **SUBMIT_EXTENSIONS}
    return schema


# --- the finishing pass ----------------------------------------------------------------------------

_CONVENTIONS = """\
Every `/v1` route but the upstream callbacks needs `Authorization: Bearer <API key>`; `/admin` needs
the admin token. Every error answers `{"error": {"code", "message", "type", "param"}}` with `code`
equal to the HTTP status and `param` naming the field at fault; validation failures are `400`.
Messages follow `?language=en|zh|ko|ja` (or `Accept-Language`). Timestamps are Unix seconds."""


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Adds what route decorators refer to but FastAPI does not generate; drops the 422s."""
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in catalog.MODELS:
        schemas[name] = model_component(name)
    paths = json.dumps(spec.get("paths", {}))
    bodies = [m for m in openapi_models.REQUEST_BODIES if f'"{_SCHEMAS}{m.__name__}"' in paths]
    if bodies:
        _, found = models_json_schema([(m, "validation") for m in bodies], ref_template=_SCHEMAS + "{model}")
        schemas.update(found.get("$defs", {}))
    operations = [op for item in spec.get("paths", {}).values() for op in item.values()]
    # Only what the operations use: without an admin token the document says nothing of /admin.
    used = {name for op in operations for need in op.get("security", ()) for name in need}
    schemes = {
        API_KEY: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`vg_...`), from `vidgate keys create` or the admin API",
        },
        ADMIN_TOKEN: {"type": "http", "scheme": "bearer", "description": "`VIDGATE_ADMIN_TOKEN`"},
    }
    components["securitySchemes"] = {name: doc for name, doc in schemes.items() if name in used}
    components["headers"] = {
        name: {**doc, "schema": {"type": _HEADER_TYPES.get(name, "string")}}
        for name, doc in _RESPONSE_HEADERS.items()
    }
    components["parameters"] = {_parameter_key(name): doc for name, doc in _PARAMETERS.items()}
    for operation in operations:
        operation.get("responses", {}).pop("422", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    info = spec.setdefault("info", {})
    info["description"] = f"{info.get('description', '')}\n\n{_CONVENTIONS}".strip()
    tagged = {tag for op in operations for tag in op.get("tags", ())}
    known = [tag for tag in TAGS if tag["name"] in tagged]
    spec["tags"] = known + [{"name": t} for t in sorted(tagged - {t["name"] for t in known})]
    return spec


def install(app: FastAPI) -> None:
    """Makes `app.openapi()` answer the finished document. FastAPI caches what it generates (and
    generates anew when routes change); each new document is finished once."""
    generate = app.openapi
    finished: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        spec = generate()
        if not finished or finished[0] is not spec:
            finished[:] = [complete(spec)]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
