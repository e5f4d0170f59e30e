"""`AsyncClient`: the asyncio twin of `Client`, with the same resources, every call awaited."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from vidgate.sdk import _calls
from vidgate.sdk._http import (
    Call,
    Settings,
    decode,
    retry_delay,
    retry_exception,
    retry_status,
    transport_error,
)
from vidgate.sdk.errors import TaskFailedError, WaitTimeoutError
from vidgate.sdk.pagination import AsyncTaskPage, parse_page
from vidgate.sdk.types import Balance, SubmitResult, Task, Upload, WebhookDelivery

ProgressCallback = Callable[[Task], Awaitable[None] | None]


class AsyncClient:
    """The asyncio vidgate client: the same resources as `Client`, every call awaited."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = Settings.resolve(api_key, base_url, timeout, max_retries, default_headers)
        self._http = http_client or httpx.AsyncClient(
            base_url=self._settings.base_url, headers=self._settings.headers(), follow_redirects=True
        )
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    @cached_property
    def videos(self) -> AsyncVideos:
        return AsyncVideos(self)

    @cached_property
    def tasks(self) -> AsyncTasks:
        return AsyncTasks(self)

    @cached_property
    def uploads(self) -> AsyncUploads:
        return AsyncUploads(self)

    @cached_property
    def balance(self) -> AsyncBalances:
        return AsyncBalances(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _request(self, call: Call) -> Any:
        response = await self._send(call)
        return decode(response)

    async def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = call.build(self._http, self._settings)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self._settings.max_retries or not retry_exception(call, exc):
                    raise transport_error(exc) from exc
                await self._sleep(retry_delay(attempt, None))
                attempt += 1
                continue
            if attempt < self._settings.max_retries and retry_status(call, response):
                await response.aclose()
                await self._sleep(retry_delay(attempt, response.headers))
                attempt += 1
                continue
            return response


class AsyncVideos:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        *,
        model: str,
        prompt: str | None = None,
        idempotency_key: str | None = None,
        wait: int | None = None,
        callback_url: str | None = None,
        **params: Any,
    ) -> Task:
        """Submit a generation; answers the task (pending, or finished when `wait` seconds sufficed).

        Every model parameter is a keyword (`duration=5`, `image_urls=[...]`). An `Idempotency-Key`
        is sent on every submit (a uuid4 unless you pass one) so retries never duplicate a task.
        `wait` (0-60) asks the server to hold the answer until the task finishes (`Prefer: wait`).
        `callback_url` receives signed webhooks of the task's state changes (`verify_webhook`)."""
        if callback_url is not None:
            params["callback_url"] = callback_url
        call = _calls.submit(model, prompt, params, idempotency_key=idempotency_key, wait=wait)
        answer = _calls.submitted(await self._client._request(call))
        if isinstance(answer, SubmitResult):  # a server that only speaks the legacy shape
            return await self._client.tasks.retrieve(answer.task_id)
        return answer

    async def create_and_wait(
        self,
        *,
        model: str,
        prompt: str | None = None,
        timeout: float = 600,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = False,
        **params: Any,
    ) -> Task:
        """`create` holding the submit up to 60 s (`Prefer: wait`), then `tasks.wait` for the rest."""
        hold = int(min(_calls.MAX_PREFER_WAIT, max(0, timeout)))
        started = time.monotonic()
        task = await self.create(model=model, prompt=prompt, wait=hold, **params)
        left = max(0.0, timeout - (time.monotonic() - started))
        return await self._client.tasks.wait(
            task, timeout=left, on_progress=on_progress, raise_on_failure=raise_on_failure
        )

    async def download(self, task: Task | str, path: str | os.PathLike[str]) -> Path:
        """Stream a completed task's video to `path` (the signed link needs no API key)."""
        if isinstance(task, str):
            task = await self._client.tasks.retrieve(task)
        url = _calls.download_url(task)
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        response = await self._client._send(Call("GET", url, idempotent=True, auth=False), stream=True)
        try:
            if not response.is_success:
                await response.aread()
                decode(response)
            with partial.open("wb") as fh:
                async for chunk in response.aiter_bytes():
                    fh.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise transport_error(exc) from exc
        finally:
            await response.aclose()
        partial.replace(target)
        return target


class AsyncTasks:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def retrieve(self, task_id: str, *, language: str | None = None) -> Task:
        return _calls.task(await self._client._request(_calls.retrieve(task_id, language)))

    async def list(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        status: str | None = None,
        model: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> AsyncTaskPage:
        """One page of your tasks, newest first; `async for` over it walks all pages."""

        async def fetch(next_cursor: str) -> AsyncTaskPage:
            call = _calls.list_tasks(
                limit=limit,
                cursor=next_cursor,
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
            )
            page: AsyncTaskPage = parse_page(AsyncTaskPage, await self._client._request(call), fetch)
            return page

        call = _calls.list_tasks(
            limit=limit,
            cursor=cursor,
            status=status,
            model=model,
            created_after=created_after,
            created_before=created_before,
        )
        first: AsyncTaskPage = parse_page(AsyncTaskPage, await self._client._request(call), fetch)
        return first

    async def cancel(self, task_id: str) -> Task:
        return _calls.task(await self._client._request(_calls.cancel(task_id)))

    # `builtins.list`: in this class, `list` names the method above.
    async def deliveries(self, task_id: str) -> builtins.list[WebhookDelivery]:
        """The task's webhook deliveries (one per event sent to its `callback_url`), oldest first,
        each with every attempt. Empty for a task without a callback."""
        return _calls.delivery_list(await self._client._request(_calls.deliveries(task_id)))

    async def redeliver(self, task_id: str, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, with the same `webhook-id` and body; answers it as queued."""
        return _calls.delivery(await self._client._request(_calls.redeliver(task_id, delivery_id)))

    async def wait(
        self,
        task: Task | str,
        *,
        timeout: float = 600,
        poll_interval: float | None = None,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = False,
    ) -> Task:
        """Poll until the task is completed, failed or cancelled and answer it.

        A failed or cancelled task is returned, not raised, unless `raise_on_failure` (then
        `TaskFailedError`). Past `timeout` seconds, `WaitTimeoutError` carries the last state."""
        current = task if isinstance(task, Task) else await self.retrieve(task)
        deadline = time.monotonic() + timeout
        pause = 0.0
        while True:
            if on_progress is not None:
                maybe = on_progress(current)
                if inspect.isawaitable(maybe):
                    await maybe
            if current.finished:
                if raise_on_failure and current.status != "completed":
                    raise TaskFailedError(current)
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(current, timeout)
            pause = _calls.next_poll(poll_interval, pause)
            await self._client._sleep(min(pause, left))
            current = await self.retrieve(current.id)


class AsyncUploads:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, file: _calls.FileInput, *, filename: str | None = None) -> Upload:
        """Upload a reference image (path, bytes or binary file; JPEG/PNG/WebP/GIF, at most 20 MB)."""
        return _calls.uploaded(await self._client._request(_calls.upload(file, filename)))


class AsyncBalances:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def retrieve(self) -> Balance:
        return _calls.balance_of(await self._client._request(_calls.balance()))
