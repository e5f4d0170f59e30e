"""Fault-injection knobs shared by the fake upstreams.

A fault fires on the next `count` matching requests, and after that with `probability`. `endpoints`
limits it to some endpoint groups (names are listed per fake in docs/fake-upstreams.md); `None` means
the knob's default scope (every API endpoint for transport faults, the generate/submit endpoints for
provider error codes). Counts are consumed in place, so `GET /_fake/config` shows what is left.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MalformedMode = Literal["invalid_json", "missing_fields", "empty_body", "html"]


class Fault(BaseModel):
    """When a fault fires; subclasses say what it does."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=0, ge=0, description="fire on the next N matching requests")
    probability: float = Field(default=0.0, ge=0.0, le=1.0, description="then fire with this probability")
    endpoints: list[str] | None = Field(default=None, description="endpoint groups; None = knob default")

    def applies_to(self, endpoint: str, default_scope: Collection[str]) -> bool:
        scope = default_scope if self.endpoints is None else self.endpoints
        return endpoint in scope

    def fire(self, rng: random.Random) -> bool:
        if self.count > 0:
            self.count -= 1
            return True
        return self.probability > 0 and rng.random() < self.probability


class HttpFault(Fault):
    """Answer with a bare HTTP error (429 or 5xx) before the request reaches the API logic."""

    status: Literal[429, 500, 502, 503, 504] = 429


class SlowFault(Fault):
    """Hold the response for `delay_s` REAL seconds (not scaled: it exists to trip client timeouts).

    The request has already been processed when the delay starts, so a slow submit still creates
    the job, which is what makes a client timeout on submit dangerous.
    """

    delay_s: float = Field(default=2.0, ge=0.0)


class MalformedFault(Fault):
    """Garble a response after the request has been processed (a job is still created)."""

    mode: MalformedMode = "invalid_json"


F = TypeVar("F", bound=Fault)


def pick_fault(
    faults: Sequence[F], endpoint: str, default_scope: Collection[str], rng: random.Random
) -> F | None:
    """The first fault in `faults` that applies to `endpoint` and fires now."""
    for fault in faults:
        if fault.applies_to(endpoint, default_scope) and fault.fire(rng):
            return fault
    return None


@dataclass
class Reply:
    """A provider response before transport faults are applied to it.

    `essential` lists dotted paths (e.g. `Resp.video_id`) that the `missing_fields` mode removes.
    `cacheable` is read by the PixVerse trace-id replay cache.
    """

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    essential: tuple[str, ...] = ()
    cacheable: bool = True

    def encode(self) -> bytes:
        return json_bytes(self.body)


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def drop_paths(body: Any, paths: Sequence[str]) -> Any:
    """A deep copy of `body` without the dotted `paths` (missing segments are ignored)."""
    copy = json.loads(json_bytes(body))
    for path in paths:
        *parents, leaf = path.split(".")
        node = copy
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return copy


def malformed_body(reply: Reply, mode: MalformedMode) -> tuple[int, bytes, str]:
    """(status, body, content type) for a garbled version of `reply`."""
    if mode == "invalid_json":
        raw = reply.encode()
        # Cut mid-document: still starts like JSON, as a truncated proxy read would.
        return reply.status, raw[: max(1, len(raw) // 2)], "application/json"
    if mode == "missing_fields":
        return reply.status, json_bytes(drop_paths(reply.body, reply.essential)), "application/json"
    if mode == "empty_body":
        return reply.status, b"", "application/json"
    return 200, b"<html><body><h1>Service temporarily unavailable</h1></body></html>", "text/html"


def nginx_error_page(status: int) -> bytes:
    """The HTML an nginx front end returns for a bare HTTP error."""
    reason = {
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Temporarily Unavailable",
        504: "Gateway Time-out",
    }.get(status, "Error")
    title = f"{status} {reason}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()
