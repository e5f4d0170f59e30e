"""`vidu`: viduq3 and viduq3-mix on Vidu's official API (research/upstream-apis.md §1, §4.1, §5.1).

Submit is `POST /ent/v2/reference2video` with the checked images inlined as data URIs (Vidu cannot
fetch loopback, private or vidgate's own upload URLs) and our task id as `payload`. The payload is
how a create whose answer was lost is found again in `GET /ent/v2/tasks`, so one task never makes
two jobs. Polls read `GET /ent/v2/tasks/{id}/creations`; signed callbacks (§1.8) only wake a task.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from PIL import Image

from vidgate.catalog.vidu import ViduQ3, ViduQ3Mix
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.providers import TaskContext
from vidgate.providers._relay import (
    JobState,
    RelayProvider,
    UpstreamBusy,
    UpstreamJob,
    UpstreamUnavailable,
    retry_after_of,
)
from vidgate.status import Phase

LABEL = "Vidu"
CALLBACK_PATH = "/v1/callbacks/vidu"
#: upstream_state key: when a create went out whose answer we may not have seen. While it is set,
#: any further submit first looks for that job by payload.
SENT = "create_sent_at"

_MAX_BODY = 20 * 1024 * 1024  # Vidu's limit for the whole POST body (§1.7)
_BODY_HEADROOM = 256 * 1024  # prompt (<= 5000 chars, escaped) and the other fields
_JPEG_QUALITY = 92
_LIST_PAGE_SIZE = 100
_LIST_MAX_PAGES = 50
_CLOCK_SLACK_S = 900.0  # how far Vidu's `created_at` may sit from our clock
_NOT_FOUND_POLLS = 3  # consecutive failed polls ending in 404 before a job counts as gone
_CALLBACK_SKEW_S = 300.0

_POLICY = ("AuditSubmitIllegal", "TaskPromptPolicyViolation", "CreationPolicyViolation")
_IMAGE = ("ImageDownloadFailure", "ImageFormatInvalid", "PageSizeOutOfRange")
#: A refused create's reason (§1.6) -> (task error code, type); any other reason: upstream_rejected.
_REFUSALS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(_POLICY, ("content_policy_violation", "invalid_request_error")),
    **dict.fromkeys(_IMAGE, ("invalid_image", "invalid_request_error")),
    # The operator's account or key, not the client's balance: never a 402 for the client.
    "CreditInsufficient": ("upstream_quota_exceeded", "bad_gateway"),
    "Unauthorized": ("upstream_auth_failed", "bad_gateway"),
    "Forbidden": ("upstream_auth_failed", "bad_gateway"),
}
_BUSY = frozenset({"QuotaExceeded", "TooManyRequests", "SystemThrottling", "OperationInProcess"})
_STATES: dict[str, JobState] = {
    "created": "queued",
    "queueing": "queued",
    "queuing": "queued",  # an older doc's spelling (§1.5)
    "processing": "running",
    "success": "succeeded",
    "failed": "failed",
}
# Raised before any byte of the request left: nothing can have been accepted.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class ViduProvider(RelayProvider, name="vidu"):
    models: ClassVar[frozenset[str]] = frozenset({"viduq3", "viduq3-mix"})
    preference: ClassVar[int] = 10
    label: ClassVar[str] = LABEL

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return bool(settings.vidu_api_key)

    def in_flight_cap(self) -> int:
        return self.settings.vidu_max_in_flight

    # --- submit ------------------------------------------------------------------------------------

    async def submit(self, ctx: TaskContext) -> str:
        state = dict(ctx.upstream_state or {})
        if SENT in state:
            # An earlier create's answer was lost: find that job before making another.
            found = await self.recover(ctx)
            if found is not None:
                return found
            state = dict(ctx.upstream_state or {})
        images = await ctx.load_images()  # SSRF guard and Vidu's image rules, before any billing
        body = await asyncio.to_thread(self._create_body, ctx, images)
        sent_at = time.time()
        marked = {**state, "payload": ctx.task_id, SENT: sent_at}
        await ctx.checkpoint(Phase.SUBMITTING, upstream_state=marked)
        # `run` snoozes a busy task with ctx.upstream_state: keep the marker there only while the
        # create's outcome is unknown.
        ctx.upstream_state = state
        try:
            response = await self._call("POST", "/ent/v2/reference2video", json=body)
        except _NOT_SENT as exc:
            raise UpstreamUnavailable(_describe(exc)) from exc
        except httpx.HTTPError as exc:
            return await self._settle(ctx, marked, _describe(exc))
        status = response.status_code
        if status == 200:
            data = _json_object(response)
            if data is None or not data.get("task_id"):
                return await self._settle(ctx, marked, "create answered without a task id")
            if data.get("state") == "failed":
                raise _job_failure(str(data.get("err_code") or ""))
            return str(data["task_id"])
        reason, detail = _error_of(response)
        if status == 429 or reason in _BUSY:
            raise UpstreamBusy(detail, retry_after_of(response))
        if status in (502, 504, 499) or (status >= 500 and reason is None and status != 503):
            # A proxy's gateway error or a dropped request: the backend may have accepted it.
            return await self._settle(ctx, marked, detail)
        if status >= 500 or status == 404 or reason == "ModelUnavailable":
            raise UpstreamUnavailable(detail)  # nothing accepted; the next provider may serve it
        raise _submit_failure(reason or {401: "Unauthorized", 403: "Forbidden"}.get(status, ""), detail)

    def _create_body(self, ctx: TaskContext, images: Sequence[Image.Image]) -> dict[str, Any]:
        request = ctx.request
        if not isinstance(request, ViduQ3 | ViduQ3Mix):
            raise TypeError(f"vidu cannot serve {request.model}")
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": request.prompt,
            "images": data_uris(images, _MAX_BODY - _BODY_HEADROOM),
            "duration": request.duration,
            "resolution": request.resolution,
            "aspect_ratio": request.aspect_ratio,
            "payload": ctx.task_id,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if self.settings.vidu_callbacks and self.settings.public_url:
            body["callback_url"] = self.settings.public_url + CALLBACK_PATH
        return body

    async def _settle(self, ctx: TaskContext, marked: dict[str, Any], detail: str) -> str:
        """The create went out but its answer was lost: use the job if it exists, else report the
        upstream unavailable (nothing was accepted)."""
        ctx.upstream_state = marked
        found = await self._find_job(ctx, float(marked[SENT]))
        if found is None:
            raise UpstreamUnavailable(f"{detail}; no job was created")
        return found

    # --- recover -----------------------------------------------------------------------------------

    async def recover(self, ctx: TaskContext) -> str | None:
        state = dict(ctx.upstream_state or {})
        sent_at = float(state.get(SENT) or ctx.started_at or time.time() - 86_400)
        ctx.upstream_state = {**state, SENT: sent_at}  # a busy snooze must keep looking first
        found = await self._find_job(ctx, sent_at)
        if found is None:
            state.pop(SENT, None)
            ctx.upstream_state = state
        return found

    async def _find_job(self, ctx: TaskContext, sent_at: float) -> str | None:
        """The id of the job whose payload is this task's id, None if it surely does not exist."""
        try:
            found = await self._search(ctx.task_id, sent_at)
            wait = sent_at + min(5.0, self.settings.upstream_timeout_seconds) - time.time()
            if found is None and wait > 0:
                # A create that timed out may still be landing: look once more before saying no.
                await asyncio.sleep(wait)
                found = await self._search(ctx.task_id, sent_at)
        except (httpx.HTTPError, UpstreamUnavailable, UpstreamBusy) as exc:
            detail = f"cannot tell whether the create was accepted: {_describe(exc)}"[:200]
            if ctx.deadline_at is not None and time.time() >= ctx.deadline_at:
                raise TaskFailure(
                    "submit_interrupted", type="server_error", upstream=LABEL, detail=detail
                ) from exc
            raise UpstreamBusy(detail) from exc
        return found

    async def _search(self, payload: str, sent_at: float) -> str | None:
        since = datetime.fromtimestamp(sent_at - _CLOCK_SLACK_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        token, seen = "", set[str]()
        for _ in range(_LIST_MAX_PAGES):
            params = {"created_at.from": since}
            for prefix in ("pager", "paper"):  # Vidu's docs spell it `paper.*`; send both
                params[f"{prefix}.pagesz"] = str(_LIST_PAGE_SIZE)
                if token:
                    params[f"{prefix}.page_token"] = token
            response = await self._call("GET", "/ent/v2/tasks", params=params)
            _raise_for_status(response)
            data = _json_object(response)
            jobs = data.get("tasks") if data is not None else None
            if not isinstance(jobs, list):
                raise UpstreamUnavailable("malformed task list")
            for job in jobs:
                if isinstance(job, dict) and job.get("payload") == payload:
                    job_id = job.get("id") or job.get("task_id")
                    if not job_id:
                        raise UpstreamUnavailable("listed job without an id")
                    return str(job_id)
            token = str((data or {}).get("next_page_token") or "")
            if not token:
                return None
            if token in seen:
                raise UpstreamUnavailable("task list paging does not advance")
            seen.add(token)
        raise UpstreamUnavailable("too many recent jobs to search")

    # --- poll and cancel ---------------------------------------------------------------------------

    async def poll(self, ctx: TaskContext, upstream_id: str) -> UpstreamJob:
        response = await self._call("GET", f"/ent/v2/tasks/{quote(upstream_id, safe='')}/creations")
        if response.status_code == 404:
            # Right after a create the job may not be readable yet; `run` counts failed polls.
            failed_polls = int((ctx.upstream_state or {}).get("poll_errors", 0)) + 1
            reason = _error_of(response)[0] or "TaskNotFound"
            if failed_polls >= _NOT_FOUND_POLLS:
                raise TaskFailure("upstream_failed", type="server_error", upstream=LABEL, detail=reason)
            raise UpstreamBusy(f"{reason}: job {upstream_id}")
        _raise_for_status(response)
        data = _json_object(response)
        raw = data.get("state") if data is not None else None
        if data is None or not isinstance(raw, str):
            raise UpstreamUnavailable("malformed task answer")
        state = _STATES.get(raw, "unknown")
        if state == "succeeded":
            creations = data.get("creations")
            first = creations[0] if isinstance(creations, list) and creations else {}
            first = first if isinstance(first, dict) else {}
            return UpstreamJob(
                "succeeded", raw, video_url=_text(first.get("url")), cover_url=_text(first.get("cover_url"))
            )
        if state == "failed":
            code = str(data.get("err_code") or "")
            if code == "UserCancelled":
                return UpstreamJob("cancelled", raw)
            return UpstreamJob("failed", raw, failure=_job_failure(code))
        return UpstreamJob(state, raw)

    async def cancel(self, upstream_id: str) -> bool:
        try:
            response = await self._call(
                "POST", f"/ent/v2/tasks/{quote(upstream_id, safe='')}/cancel", json={"id": upstream_id}
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Token {self.settings.vidu_api_key}"}
        return await self.client().request(
            method, self.settings.vidu_base_url + path, headers=headers, **kwargs
        )

    # --- callbacks (§1.8) --------------------------------------------------------------------------

    @classmethod
    def verify_callback(
        cls,
        settings: Settings,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> tuple[str, str] | None:
        """(our task id, Vidu's job id) of a callback whose HMAC verifies, else None. The body is
        not signed, so it only names the task to wake; the worker polls for the outcome."""
        key = settings.vidu_api_key
        if not key or not _signature_ok(key, settings, method, path, query, headers):
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        payload = _text(data.get("payload")) if isinstance(data, dict) else None
        job_id = data.get("id") or data.get("task_id") if payload else None
        return (payload, str(job_id)) if payload and isinstance(job_id, str | int) else None


def _signature_ok(
    key: str, settings: Settings, method: str, path: str, query: str, headers: Sequence[tuple[str, str]]
) -> bool:
    seen: dict[str, list[str]] = {}
    for name, value in headers:
        seen.setdefault(name.lower(), []).append(value)

    def one(name: str) -> str | None:
        values = seen.get(name.lower(), [])
        return values[0] if len(values) == 1 else None  # a repeated header is ambiguous: refuse

    date, signature = one("date"), one("x-hmac-signature")
    names = [n.strip() for n in (one("x-hmac-signed-headers") or "").split(";") if n.strip()]
    if (
        (one("x-hmac-algorithm") or "").lower() != "hmac-sha256"
        or one("x-hmac-access-key") != "vidu"
        or not date
        or not signature
        or not names
        or not _fresh(date)
    ):
        return False
    lines = []
    for name in names:
        signed = one(name)
        if signed is None:
            return False
        lines.append(f"{name}:{signed}\n")
    # Behind a proxy that strips a prefix, Vidu signed the public callback URL's path, not ours.
    paths = {path or "/", urlsplit(settings.public_url).path + CALLBACK_PATH}
    matched = False
    for candidate in sorted(paths):
        text = "\n".join((method.upper(), candidate, query, "vidu", date)) + "\n" + "".join(lines)
        digest = hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
        matched |= hmac.compare_digest(base64.b64encode(digest), signature.encode())
    return matched


def _fresh(date: str) -> bool:
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return abs(when.timestamp() - time.time()) <= _CALLBACK_SKEW_S


# --- images -------------------------------------------------------------------------------------


def data_uris(images: Sequence[Image.Image], budget: int) -> list[str]:
    """JPEG data URIs sharing `budget` characters equally (a body limit), shrunk where needed."""
    share = budget // max(1, len(images))
    return [_data_uri(image, share) for image in images]


def _data_uri(image: Image.Image, limit: int) -> str:
    prefix = "data:image/jpeg;base64,"
    current = image
    while True:
        buffer = io.BytesIO()
        current.convert("RGB").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        uri = prefix + base64.b64encode(buffer.getvalue()).decode()
        width, height = current.size
        if len(uri) <= limit or min(width, height) <= 128:
            return uri
        # Shrink towards the budget, never below Vidu's 128 px minimum side.
        scale = max(min(0.9, math.sqrt(limit / len(uri))), 128 / min(width, height))
        current = image.resize((max(128, round(width * scale)), max(128, round(height * scale))))


# --- answers ------------------------------------------------------------------------------------


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    """Vidu's error `reason` (§1.6; None for a body without one) and a detail for messages."""
    data = _json_object(response) or {}
    reason = _text(data.get("reason"))
    detail = f"{reason or f'HTTP {response.status_code}'}: {_text(data.get('message')) or ''}"
    return reason, detail.strip(": ")[:200]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _raise_for_status(response: httpx.Response) -> None:
    """For reads (poll, list): busy or unavailable are retried; refused credentials fail."""
    status = response.status_code
    if status == 200:
        return
    reason, detail = _error_of(response)
    if status in (401, 403):
        raise TaskFailure("upstream_auth_failed", type="bad_gateway", upstream=LABEL, detail=detail)
    if status == 429 or reason in _BUSY:
        raise UpstreamBusy(detail, retry_after_of(response))
    raise UpstreamUnavailable(detail)


def _submit_failure(reason: str, detail: str) -> TaskFailure:
    code, type_ = _REFUSALS.get(reason, ("upstream_rejected", "invalid_request_error"))
    return TaskFailure(code, type=type_, upstream=LABEL, detail=detail)


def _job_failure(err_code: str) -> TaskFailure:
    if err_code in _POLICY:
        return TaskFailure(
            "content_policy_violation", type="invalid_request_error", upstream=LABEL, detail=err_code
        )
    return TaskFailure("upstream_failed", type="server_error", upstream=LABEL, detail=err_code or "failed")


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
