"""SDK exceptions: one class per API error type, plus transport and task failures.

`VidgateError` is the base of everything the SDK raises. An HTTP error answer becomes an
`APIStatusError` subclass chosen from the envelope's `type` (then the status), carrying
`status`, `type`, `param`, `message`, `code` and the response `headers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidgate.sdk.types import Task


class VidgateError(Exception):
    """Base of every exception the SDK raises."""


class APIConnectionError(VidgateError):
    """The server could not be reached, or the connection broke before an answer came."""

    def __init__(self, message: str = "Connection error") -> None:
        self.message = message
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    """The request timed out."""

    def __init__(self, message: str = "Request timed out") -> None:
        super().__init__(message)


class APIStatusError(VidgateError):
    """The server answered with an error envelope `{"error": {code, message, type, param}}`."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        param: str | None = None,
        code: Any = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> None:
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = f" ({self.param})" if self.param else ""
        return f"{self.status} {self.type or 'error'}{where}: {self.message}"


class BadRequestError(APIStatusError):
    """`invalid_request_error`: 400, 409, 413 and other refused requests."""


class ConflictError(BadRequestError):
    """409: an Idempotency-Key reused with another body, or cancelling a finished task."""


class AuthenticationError(APIStatusError):
    """401 `authentication_error`: missing or invalid API key."""


class PaymentRequiredError(APIStatusError):
    """402 `payment_required`: the key's balance does not cover the task."""


class PermissionDeniedError(APIStatusError):
    """403 `permission_error`: the key may not use this model or route."""


class NotFoundError(APIStatusError):
    """404 `not_found_error`: no such task (or another key's task)."""


class RateLimitError(APIStatusError):
    """429 `rate_limit_error`; `retry_after` is the server's hint in seconds, if it sent one."""

    @property
    def retry_after(self) -> float | None:
        from vidgate.sdk._http import parse_retry_after

        return parse_retry_after(self.headers)


class InternalServerError(APIStatusError):
    """500 (and other 5xx) `server_error`."""


class BadGatewayError(APIStatusError):
    """502 `bad_gateway`: no upstream provider could take the request."""


class TaskFailedError(VidgateError):
    """`tasks.wait(..., raise_on_failure=True)` saw the task end failed or cancelled."""

    def __init__(self, task: Task) -> None:
        self.task = task
        error = task.error
        detail = f": {error.message}" if error is not None else ""
        super().__init__(f"task {task.id} {task.status}{detail}")


class WaitTimeoutError(VidgateError, TimeoutError):
    """`tasks.wait` gave up before the task finished; `task` is the last state seen."""

    def __init__(self, task: Task, timeout: float) -> None:
        self.task = task
        super().__init__(f"task {task.id} still {task.status} after {timeout:g} s")


_BY_TYPE: dict[str, type[APIStatusError]] = {
    "authentication_error": AuthenticationError,
    "payment_required": PaymentRequiredError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "rate_limit_error": RateLimitError,
    "server_error": InternalServerError,
    "bad_gateway": BadGatewayError,
}
_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    429: RateLimitError,
    502: BadGatewayError,
}


def error_class(status: int, type_: str | None) -> type[APIStatusError]:
    """The exception for an error answer: by `type` first, then by status."""
    if status == 409:
        return ConflictError
    if type_ in _BY_TYPE:
        return _BY_TYPE[type_]
    if type_ == "invalid_request_error":
        return BadRequestError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return InternalServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIStatusError


def status_error(status: int, body: Any, headers: Mapping[str, str], text: str = "") -> APIStatusError:
    """Build the exception from an error answer's status, parsed body and headers."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    type_ = error.get("type") if isinstance(error.get("type"), str) else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    message = str(error.get("message") or text[:200] or f"HTTP {status}")
    cls = error_class(status, type_)
    return cls(
        message, status=status, type=type_, param=param, code=error.get("code"), headers=headers, body=body
    )
