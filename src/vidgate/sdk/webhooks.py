"""Verify (and make) vidgate's webhook signatures: the Standard Webhooks scheme
(https://www.standardwebhooks.com/).

Each webhook carries three headers: `webhook-id` (the same across retries of one event),
`webhook-timestamp` (UNIX seconds of this attempt) and `webhook-signature`, one or more
space-separated `v1,<base64>` values, each an HMAC-SHA256 of `"{id}.{timestamp}.{body}"` keyed
with the base64 part of the key's `whsec_...` secret. Standard library only: no server code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from vidgate.sdk.errors import VidgateError

SECRET_PREFIX = "whsec_"
#: Seconds a webhook's timestamp may be away from this machine's clock (Standard Webhooks: 5 min).
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(VidgateError):
    """The webhook is not authentic (or is stale, or lacks its headers): do not act on it."""


def _key(secret: str | bytes) -> bytes:
    """The HMAC key: the base64 after `whsec_` (a bare base64 secret, or raw bytes, work too)."""
    if isinstance(secret, bytes):
        return secret
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ secret (base64 after whsec_)") from None


def _bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def sign_webhook(secret: str | bytes, msg_id: str, timestamp: int, payload: bytes | str) -> str:
    """The `webhook-signature` value (`v1,<base64>`) for this id, timestamp and body."""
    content = f"{msg_id}.{timestamp}.".encode() + _bytes(payload)
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook and answer its parsed JSON body; raise WebhookVerificationError otherwise.

    `payload` must be the raw request body, byte for byte (not re-serialized JSON). `headers` may
    be any mapping (names are matched case-insensitively). A timestamp more than `tolerance`
    seconds from now is refused, which stops replays of old deliveries.
    """
    lowered = {str(k).lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance} s away from now")
    expected = sign_webhook(secret, msg_id, timestamp, payload).split(",", 1)[1].encode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        # Other versions (e.g. v1a, asymmetric) are skipped, not failed: a sender may add them.
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            break
    else:
        raise WebhookVerificationError("no webhook-signature matches: wrong secret or altered body")
    try:
        body = json.loads(_bytes(payload))
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return body
