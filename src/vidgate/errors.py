"""API errors: each carries its HTTP status, apimart `type`, the offending `param` and a message key.

Messages are looked up in `i18n` when the response is rendered, so one error reads in the
caller's language (`?language=zh|en|ko|ja`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every error the API answers with the `{"error": {...}}` envelope."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_key: ClassVar[str] = "server_error"

    def __init__(
        self,
        message_key: str | None = None,
        /,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        self.key = message_key or self.default_key
        self.param = param
        self.params = params
        self.headers = headers or {}
        super().__init__(self.key)

    def message(self, language: str = "en") -> str:
        from vidgate import i18n

        return i18n.message(self.key, language, param=self.param, **self.params)


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    default_key = "invalid_request"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    default_key = "payload_too_large"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    default_key = "authentication"


class PaymentRequired(ApiError):
    status = 402
    type = "payment_required"
    default_key = "payment_required"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    default_key = "permission"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    default_key = "not_found"


class Conflict(ApiError):
    status = 409
    type = "invalid_request_error"
    default_key = "conflict"


class Gone(ApiError):
    status = 410
    type = "invalid_request_error"
    default_key = "link_expired"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    default_key = "rate_limited"


class ServerError(ApiError):
    status = 500
    type = "server_error"
    default_key = "server_error"


class BadGateway(ApiError):
    status = 502
    type = "bad_gateway"
    default_key = "bad_gateway"


class TaskFailure(Exception):
    """A reason a task failed, as stored in `task.error` (code, message key, type)."""

    def __init__(self, code: str, /, *, type: str = "invalid_request_error", **params: Any) -> None:
        self.code = code
        self.type = type
        self.params = params
        super().__init__(code)

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.type, "params": self.params}
