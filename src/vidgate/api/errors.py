"""Every error leaves as `{"error": {"code", "message", "type", "param"}}` with code = HTTP status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidgate import i18n
from vidgate.api.responses import JsonResponse
from vidgate.errors import ApiError, InvalidRequest, NotFound, ServerError

log = logging.getLogger("vidgate.api")


def request_language(request: Request) -> str:
    return i18n.normalize_language(
        request.query_params.get("language") or request.headers.get("accept-language")
    )


def envelope(error: ApiError, language: str, *, status: int | None = None) -> JsonResponse:
    code = status or error.status
    body: dict[str, object] = {"code": code, "message": error.message(language), "type": error.type}
    if error.param is not None:
        body["param"] = error.param
    return JsonResponse({"error": body}, status_code=code, headers=error.headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JsonResponse:
        return envelope(exc, request_language(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JsonResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
        param = ".".join(loc) or None
        if first.get("type") == "missing":
            return envelope(InvalidRequest("field_required", param=param), request_language(request))
        detail = str(first.get("msg", "invalid value"))
        return envelope(
            InvalidRequest("param_invalid", param=param, detail=detail), request_language(request)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        language = request_language(request)
        if exc.status_code == 404:
            err: ApiError = NotFound("route_not_found", method=request.method, path=request.url.path)
            return envelope(err, language)
        if exc.status_code == 405:
            err = InvalidRequest("method_not_allowed", method=request.method, path=request.url.path)
            return envelope(err, language, status=405)
        err = InvalidRequest("invalid_request")
        return envelope(err, language, status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope(ServerError(), request_language(request))
