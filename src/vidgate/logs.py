"""Logging: plain text by default, one JSON object per line with `VIDGATE_LOG_FORMAT=json`.

Each JSON line carries `time, level, logger, message`, and `request_id` / `task_id` when known:
`RequestIds` (an ASGI middleware) sets the request id of every HTTP request and answers it in
`X-Request-Id`; the worker sets the task id around each tick. Both are context variables, so they
follow the work into threads (`asyncio.to_thread` and Starlette's thread pool copy the context).

Every record also passes `redact`: an API key (`vg_...`) or a bearer token that slipped into a
message is replaced before any handler sees it (defence in depth; nothing logs them on purpose).
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vidgate_request_id", default=None)
task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("vidgate_task_id", default=None)

#: An incoming X-Request-Id is kept when it looks like an id; anything else is replaced.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SECRETS = re.compile(r"(?i)(bearer\s+)[^\s\"',]+|\bvg_[A-Za-z0-9_-]{8,}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """`text` with bearer tokens and vidgate API keys replaced by `[redacted]`."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class RedactingFilter(logging.Filter):
    """Renders the message once, redacted, so no handler formats the raw arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as logging does
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid, tid = request_id.get(), task_id.get()
        if rid is not None:
            entry["request_id"] = rid
        if tid is not None:
            entry["task_id"] = tid
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def setup(fmt: str = "text", level: int = logging.INFO) -> None:
    """Configure the root logger for a vidgate process (`vidgate serve`, `worker`, `gc`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # One line per upstream request would drown everything else (and cost CPU at thousands a second).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if fmt.lower() == "json":
        # uvicorn's own loggers carry their own text handlers: send them through ours.
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers = []
            logger.propagate = True


def new_request_id() -> str:
    return secrets.token_hex(8)


class RequestIds:
    """Gives every HTTP request an id (the client's `X-Request-Id` when it is a sane token, else a
    new one), visible to logs through `request_id` and answered in `X-Request-Id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = bytes(value).decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
                break
        rid = rid or new_request_id()
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
