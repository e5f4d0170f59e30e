"""The SDK's `verify_webhook`: the Standard Webhooks reference vector, several signatures, and
every way a webhook must be refused (wrong secret, altered body, stale or future timestamp,
missing headers). It imports no server code."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.webhook_receiver import hand_verify
from vidgate import WebhookVerificationError, verify_webhook
from vidgate.sdk.webhooks import sign_webhook

# The test vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIME = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + "c2VjcmV0LWJ5dGVzLWZvci10ZXN0aW5nLTAxMjM0NTY3"
BODY = b'{"type":"task.completed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"task_1"}}'


def signed(body: bytes = BODY, *, at: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_webhook(secret, "msg_1", stamp, body),
    }


def test_reference_vector() -> None:
    assert sign_webhook(VECTOR_SECRET, VECTOR_ID, VECTOR_TIME, VECTOR_BODY) == VECTOR_SIGNATURE
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIME)}
    headers["webhook-signature"] = VECTOR_SIGNATURE
    assert verify_webhook(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIME + 10) == {"test": 2432232314}
    assert hand_verify(VECTOR_SECRET, headers, VECTOR_BODY.encode())


def test_a_good_webhook_verifies_in_any_header_case_and_payload_type() -> None:
    headers = signed()
    assert verify_webhook(BODY, headers, SECRET) == json.loads(BODY)
    assert verify_webhook(BODY.decode(), {k.title(): v for k, v in headers.items()}, SECRET)["data"]
    assert hand_verify(SECRET, headers, BODY)
    # Several signatures (e.g. during a secret rotation, or other versions): one match suffices.
    other = sign_webhook("whsec_" + "b3RoZXI=", "msg_1", int(headers["webhook-timestamp"]), BODY)
    headers["webhook-signature"] = f"v1a,abcd {other} {headers['webhook-signature']}"
    assert verify_webhook(BODY, headers, SECRET)["type"] == "task.completed"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda h: h.update({"webhook-signature": "v1,AAAA"}), "no webhook-signature matches"),
        (lambda h: h.update({"webhook-signature": "v2," + h["webhook-signature"][3:]}), "matches"),
        (lambda h: h.update({"webhook-id": "msg_2"}), "matches"),
        (lambda h: h.pop("webhook-id"), "missing"),
        (lambda h: h.pop("webhook-signature"), "missing"),
        (lambda h: h.pop("webhook-timestamp"), "missing"),
        (lambda h: h.update({"webhook-timestamp": "soon"}), "whole number"),
    ],
)
def test_altered_headers_are_refused(change: object, says: str) -> None:
    headers = signed()
    change(headers)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError, match=says):
        verify_webhook(BODY, headers, SECRET)


def test_altered_body_wrong_secret_and_replays_are_refused() -> None:
    headers = signed()
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify_webhook(BODY.replace(b"task_1", b"task_2"), headers, SECRET)
    with pytest.raises(WebhookVerificationError, match="matches"):
        verify_webhook(BODY, headers, "whsec_" + "d3Jvbmc=")
    with pytest.raises(WebhookVerificationError, match="whsec_"):
        verify_webhook(BODY, headers, "whsec_not base64!")
    old = signed(at=int(time.time()) - 301)
    with pytest.raises(WebhookVerificationError, match="300 s"):
        verify_webhook(BODY, old, SECRET)
    assert verify_webhook(BODY, old, SECRET, tolerance=600)  # the caller may allow more
    with pytest.raises(WebhookVerificationError, match="away from now"):
        verify_webhook(BODY, signed(at=int(time.time()) + 400), SECRET)
    with pytest.raises(WebhookVerificationError, match="not JSON"):
        verify_webhook(b"not json", signed(b"not json"), SECRET)
    with pytest.raises(WebhookVerificationError, match="JSON object"):
        verify_webhook(b"[1]", signed(b"[1]"), SECRET)


def test_the_helper_imports_no_server_code() -> None:
    code = (
        "import sys; from vidgate import verify_webhook; import vidgate.sdk.webhooks; "
        "bad = sorted(m for m in sys.modules if m.startswith('vidgate') "
        "and not m.startswith('vidgate.sdk') and m != 'vidgate'); print(bad); assert not bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
