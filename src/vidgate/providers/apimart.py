"""`apimart`: relay any model to an apimart-compatible gateway (apimart itself, or another vidgate).

The request body is sent as validated; the upstream fetches the image URLs itself. Every submit
carries `Idempotency-Key: <our task id>`, so a retry or a recovery after a crash replays the
upstream's original task instead of creating (and billing) a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from vidgate import catalog
from vidgate.config import Settings
from vidgate.errors import TaskFailure
from vidgate.providers import Done, TaskContext
from vidgate.providers._relay import (
    JobState,
    RelayProvider,
    UpstreamBusy,
    UpstreamJob,
    UpstreamUnavailable,
    retry_after_of,
)
from vidgate.status import Phase

#: apimart task status -> relay job state ("submitted" only appears in submit answers).
_STATES: dict[str, JobState] = {
    "submitted": "queued",
    "pending": "queued",
    "processing": "running",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
#: Errors that never reached the upstream: nothing can have been accepted.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
#: Consecutive poll errors, the last a 404, after which the upstream surely lost the task (a 404
#: right after submit can be a replica that has not seen the task yet).
_NOT_FOUND_LIMIT = 3
#: A failed upstream task whose error code is one of ours keeps its meaning for our client.
_IMAGE_CODES = frozenset(
    {
        "invalid_image",
        "image_fetch_failed",
        "image_url_refused",
        "image_too_many_pixels",
        "image_too_large",
        "inputs_too_large",
        "image_format",
        "image_too_small",
        "image_aspect",
        "image_unreadable",
    }
)


@dataclass(frozen=True)
class _Job(UpstreamJob):
    """An upstream job with the progress apimart reports (0-100)."""

    progress: int | None = None


class ApimartProvider(RelayProvider, name="apimart"):
    models: ClassVar[frozenset[str]] = frozenset(catalog.MODELS)
    #: After a model's own upstream, before `local`.
    preference: ClassVar[int] = 20
    label: ClassVar[str] = "apimart"

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        return bool(settings.apimart_api_key)

    def in_flight_cap(self) -> int:
        return self.settings.apimart_max_in_flight

    def _url(self, path: str) -> str:
        return f"{self.settings.apimart_base_url}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.apimart_api_key}", "Accept": "application/json"}

    # --- submit -------------------------------------------------------------------------------------

    async def submit(self, ctx: TaskContext) -> str:
        body = await self._relayed_body(ctx)
        state = {**(ctx.upstream_state or {}), "idempotency_key": ctx.task_id}
        await ctx.checkpoint(Phase.SUBMITTING, upstream_state=state)
        return await self._create(ctx, body)

    async def recover(self, ctx: TaskContext) -> str:
        # The interrupted submit may have been accepted: replay it with the same key, and never
        # move the task to another provider (that could run it twice).
        ctx.upstream_state = {**(ctx.upstream_state or {}), "maybe_accepted": True}
        return await self._create(ctx, await self._relayed_body(ctx))

    async def _relayed_body(self, ctx: TaskContext) -> dict[str, Any]:
        body = ctx.request.model_dump(mode="json", exclude_none=True)
        source_id = ctx.request.source_task_id
        if source_id is not None:
            # The upstream knows the source by its own id, which our result keeps server-side.
            _, result = await ctx.source_video(source_id)
            upstream_id = result.get("upstream_id")
            if result.get("relay") != self.name or not upstream_id:
                served_by = result.get("relay") or ("another upstream" if upstream_id else "local")
                raise TaskFailure(
                    "extend_source_provider",
                    param="extend_from_task_id",
                    provider=served_by,
                    upstream=self.label,
                )
            body["extend_from_task_id"] = upstream_id
        return body

    async def _create(self, ctx: TaskContext, body: dict[str, Any]) -> str:
        state = ctx.upstream_state or {}
        key = str(state.get("idempotency_key") or ctx.task_id)
        headers = {**self._headers(), "Idempotency-Key": key}
        try:
            response = await self.client().post(
                self._url("/v1/videos/generations"), json=body, headers=headers
            )
        except _NOT_SENT as exc:
            raise self._unreachable(ctx, _describe(exc)) from exc
        except httpx.HTTPError as exc:
            # Sent but unanswered (timeout, dropped connection): it may have been accepted, and
            # the same key replays it, so retry here rather than anywhere else.
            ctx.upstream_state = {**state, "maybe_accepted": True}
            raise UpstreamBusy(f"no answer to the submit: {_describe(exc)}") from exc
        if response.status_code >= 500:
            raise self._unreachable(ctx, f"HTTP {response.status_code}: {_message(response)}")
        if response.status_code in (404, 405):
            # Not an apimart-compatible endpoint (a wrong base URL): nothing was accepted here.
            raise self._unreachable(ctx, f"HTTP {response.status_code} at {response.request.url.path}")
        if response.status_code >= 400:
            raise self._rejected(response)
        upstream_id = _task_id(_json(response))
        if upstream_id is None:
            raise TaskFailure(
                "upstream_failed", type="bad_gateway", upstream=self.label, detail="no task id in the answer"
            )
        return upstream_id

    def _unreachable(self, ctx: TaskContext, detail: str) -> Exception:
        """Unavailable (try the next provider) unless an earlier attempt may have been accepted."""
        if (ctx.upstream_state or {}).get("maybe_accepted"):
            return UpstreamBusy(detail)
        return UpstreamUnavailable(detail)

    def _rejected(self, response: httpx.Response) -> Exception:
        status = response.status_code
        if status == 429:
            return UpstreamBusy(f"HTTP 429: {_message(response)}", retry_after=retry_after_of(response))
        if status in (401, 403):
            # An operator problem: our client sees a gateway error, never our credentials' status.
            return TaskFailure("upstream_auth_failed", type="bad_gateway", upstream=self.label)
        if status == 402:
            return TaskFailure("upstream_quota_exceeded", type="bad_gateway", upstream=self.label)
        params: dict[str, Any] = {"upstream": self.label, "detail": _message(response)}
        param = _error(response).get("param")
        if isinstance(param, str) and param:
            params["param"] = param
        return TaskFailure("upstream_rejected", type="invalid_request_error", **params)

    # --- poll and cancel ----------------------------------------------------------------------------

    async def poll(self, ctx: TaskContext, upstream_id: str) -> UpstreamJob:
        url = self._url(f"/v1/tasks/{quote(upstream_id, safe='')}")
        response = await self.client().get(url, headers=self._headers())
        status = response.status_code
        if status in (401, 403):
            raise TaskFailure("upstream_auth_failed", type="bad_gateway", upstream=self.label)
        if status in (400, 404):
            errors = int((ctx.upstream_state or {}).get("poll_errors", 0)) + 1
            if errors >= _NOT_FOUND_LIMIT:
                raise TaskFailure(
                    "upstream_failed",
                    type="bad_gateway",
                    upstream=self.label,
                    detail=f"the task is unknown upstream (HTTP {status}: {_message(response)})",
                )
        if status == 429:
            raise UpstreamBusy("HTTP 429", retry_after=retry_after_of(response))
        if status != 200:
            raise UpstreamUnavailable(f"HTTP {status}: {_message(response)}")
        data = _json(response).get("data")
        if not isinstance(data, dict):
            raise UpstreamUnavailable("the task answer carries no data object")
        return self._job(data)

    def _job(self, data: dict[str, Any]) -> UpstreamJob:
        raw = str(data.get("status", ""))
        state = _STATES.get(raw, "unknown")
        if state == "succeeded":
            result = _obj(data.get("result"))
            videos = result.get("videos")
            url = _obj(videos[0]).get("url") if isinstance(videos, list) and videos else None
            # The docs show a list of URLs; older answers a plain string.
            if isinstance(url, list):
                url = url[0] if url else None
            thumb = result.get("thumbnail_url")
            return _Job(
                state,
                raw,
                video_url=url if isinstance(url, str) else None,
                cover_url=thumb if isinstance(thumb, str) else None,
            )
        if state == "failed":
            return _Job(state, raw, failure=self._failure(_obj(data.get("error"))))
        progress = data.get("progress")
        return _Job(state, raw, progress=progress if type(progress) is int else None)

    def _failure(self, error: dict[str, Any]) -> TaskFailure:
        code = error.get("code")
        detail = str(error.get("message") or error.get("type") or "failed")[:500]
        if code == "content_policy_violation":
            return TaskFailure("content_policy_violation", type="invalid_request_error", upstream=self.label)
        if code in _IMAGE_CODES:
            return TaskFailure(
                "invalid_image", type="invalid_request_error", upstream=self.label, detail=detail
            )
        return TaskFailure("upstream_failed", type="server_error", upstream=self.label, detail=detail)

    def progress_of(self, ctx: TaskContext, job: UpstreamJob) -> int:
        if isinstance(job, _Job) and job.progress:
            return max(1, min(99, job.progress))
        return super().progress_of(ctx, job)

    async def cancel(self, upstream_id: str) -> bool:
        url = self._url(f"/v1/tasks/{quote(upstream_id, safe='')}/cancel")
        response = await self.client().post(url, headers=self._headers())
        if response.is_success:
            return True
        if response.status_code in (404, 405, 409):
            return False  # no cancel route (apimart documents none), or the task already ended
        raise UpstreamUnavailable(f"HTTP {response.status_code}: {_message(response)}")

    async def _rehost(self, ctx: TaskContext, job: UpstreamJob) -> Done:
        done = await super()._rehost(ctx, job)
        # Marks whose id `upstream_id` is, so an extension is sent only where the source lives.
        return Done({**done.result, "relay": self.name})


# --- the upstream's wire format ---------------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        return _obj(response.json())
    except ValueError:
        return {}


def _error(response: httpx.Response) -> dict[str, Any]:
    return _obj(_json(response).get("error"))


def _message(response: httpx.Response) -> str:
    message = _error(response).get("message")
    if isinstance(message, str) and message:
        return message[:500]
    return response.text[:200] or response.reason_phrase


def _task_id(body: dict[str, Any]) -> str | None:
    """The task id of either submit answer: legacy `data: [{task_id}]`, or `data: {id}`."""
    data = body.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]
    if not isinstance(data, dict):
        return None
    value = data.get("task_id") or data.get("id")
    return value if isinstance(value, str) and value else None


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
