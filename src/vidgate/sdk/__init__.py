"""The vidgate Python SDK. Imports only httpx and pydantic: never server code."""

from __future__ import annotations

from vidgate.sdk.async_client import AsyncClient
from vidgate.sdk.client import Client
from vidgate.sdk.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadGatewayError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    TaskFailedError,
    VidgateError,
    WaitTimeoutError,
)
from vidgate.sdk.pagination import AsyncTaskPage, TaskPage
from vidgate.sdk.types import (
    Balance,
    DeliveryAttempt,
    ResultVideo,
    SubmitResult,
    Task,
    TaskError,
    TaskResult,
    Upload,
    WebhookDelivery,
)
from vidgate.sdk.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncTaskPage",
    "AuthenticationError",
    "BadGatewayError",
    "BadRequestError",
    "Balance",
    "Client",
    "ConflictError",
    "DeliveryAttempt",
    "InternalServerError",
    "NotFoundError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ResultVideo",
    "SubmitResult",
    "Task",
    "TaskError",
    "TaskFailedError",
    "TaskPage",
    "TaskResult",
    "Upload",
    "VidgateError",
    "WaitTimeoutError",
    "WebhookDelivery",
    "WebhookVerificationError",
    "verify_webhook",
]
