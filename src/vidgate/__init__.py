"""vidgate: a self-hosted gateway for asynchronous AI video generation (apimart video API).

The Python SDK is importable from here (`from vidgate import Client, AsyncClient`). It is loaded on
first use, so `import vidgate` stays cheap for the server, and it never imports server code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from vidgate.sdk import (
        APIConnectionError as APIConnectionError,
    )
    from vidgate.sdk import (
        APIStatusError as APIStatusError,
    )
    from vidgate.sdk import (
        APITimeoutError as APITimeoutError,
    )
    from vidgate.sdk import (
        AsyncClient as AsyncClient,
    )
    from vidgate.sdk import (
        AsyncTaskPage as AsyncTaskPage,
    )
    from vidgate.sdk import (
        AuthenticationError as AuthenticationError,
    )
    from vidgate.sdk import (
        BadGatewayError as BadGatewayError,
    )
    from vidgate.sdk import (
        BadRequestError as BadRequestError,
    )
    from vidgate.sdk import (
        Balance as Balance,
    )
    from vidgate.sdk import (
        Client as Client,
    )
    from vidgate.sdk import (
        ConflictError as ConflictError,
    )
    from vidgate.sdk import (
        DeliveryAttempt as DeliveryAttempt,
    )
    from vidgate.sdk import (
        InternalServerError as InternalServerError,
    )
    from vidgate.sdk import (
        NotFoundError as NotFoundError,
    )
    from vidgate.sdk import (
        PaymentRequiredError as PaymentRequiredError,
    )
    from vidgate.sdk import (
        PermissionDeniedError as PermissionDeniedError,
    )
    from vidgate.sdk import (
        RateLimitError as RateLimitError,
    )
    from vidgate.sdk import (
        ResultVideo as ResultVideo,
    )
    from vidgate.sdk import (
        SubmitResult as SubmitResult,
    )
    from vidgate.sdk import (
        Task as Task,
    )
    from vidgate.sdk import (
        TaskError as TaskError,
    )
    from vidgate.sdk import (
        TaskFailedError as TaskFailedError,
    )
    from vidgate.sdk import (
        TaskPage as TaskPage,
    )
    from vidgate.sdk import (
        TaskResult as TaskResult,
    )
    from vidgate.sdk import (
        Upload as Upload,
    )
    from vidgate.sdk import (
        VidgateError as VidgateError,
    )
    from vidgate.sdk import (
        WaitTimeoutError as WaitTimeoutError,
    )
    from vidgate.sdk import (
        WebhookDelivery as WebhookDelivery,
    )
    from vidgate.sdk import (
        WebhookVerificationError as WebhookVerificationError,
    )
    from vidgate.sdk import (
        verify_webhook as verify_webhook,
    )

_SDK_NAMES = frozenset(
    {
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
    }
)

__all__ = ["__version__", *sorted(_SDK_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from vidgate import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'vidgate' has no attribute {name!r}")
