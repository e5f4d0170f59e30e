"""`Client`: the synchronous SDK (`client.videos`, `client.tasks`, `client.uploads`, `client.balance`)."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Mapping
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
from vidgate.sdk.pagination import TaskPage, parse_page
from vidgate.sdk.types import Balance, SubmitResult, Task, Upload, WebhookDelivery

ProgressCallback = Callable[[Task], None]


class Client:
    """A vidgate API client. `api_key` and `base_url` fall back to `VIDGATE_API_KEY` and
    `VIDGATE_BASE_URL`; `max_retries` (default 2) applies to every call."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = Settings.resolve(api_key, base_url, timeout, max_retries, default_headers)
        self._http = http_client or httpx.Client(
            base_url=self._settings.base_url, headers=self._settings.headers(), follow_redirects=True
        )
        self._sleep: Callable[[float], None] = time.sleep

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    @cached_property
    def videos(self) -> Videos:
        return Videos(self)

    @cached_property
    def tasks(self) -> Tasks:
        return Tasks(self)

    @cached_property
    def uploads(self) -> Uploads:
        return Uploads(self)

    @cached_property
    def balance(self) -> Balances:
        return Balances(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, call: Call) -> Any:
        response = self._send(call)
        return decode(response)

    def _send(self, call: Call, *, stream: bool = False) -> httpx.Response:
        attempt = 0
        while True:
            request = call.build(self._http, self._settings)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt >= self._settings.max_retries or not retry_exception(call, exc):
                    raise transport_error(exc) from exc
                self._sleep(retry_delay(attempt, None))
                attempt += 1
                continue
            if attempt < self._settings.max_retries and retry_status(call, response):
                response.close()
                self._sleep(retry_delay(attempt, response.headers))
                attempt += 1
                continue
            return response


class Videos:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
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
        answer = _calls.submitted(self._client._request(call))
        if isinstance(answer, SubmitResult):  # a server that only speaks the legacy shape
            return self._client.tasks.retrieve(answer.task_id)
        return answer

    def create_and_wait(
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
        task = self.create(model=model, prompt=prompt, wait=hold, **params)
        left = max(0.0, timeout - (time.monotonic() - started))
        return self._client.tasks.wait(
            task, timeout=left, on_progress=on_progress, raise_on_failure=raise_on_failure
        )

    def download(self, task: Task | str, path: str | os.PathLike[str]) -> Path:
        """Stream a completed task's video to `path` (the signed link needs no API key)."""
        if isinstance(task, str):
            task = self._client.tasks.retrieve(task)
        url = _calls.download_url(task)
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        response = self._client._send(Call("GET", url, idempotent=True, auth=False), stream=True)
        try:
            if not response.is_success:
                response.read()
                decode(response)
            with partial.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise transport_error(exc) from exc
        finally:
            response.close()
        partial.replace(target)
        return target


class Tasks:
    def __init__(self, client: Client) -> None:
        self._client = client

    def retrieve(self, task_id: str, *, language: str | None = None) -> Task:
        return _calls.task(self._client._request(_calls.retrieve(task_id, language)))

    def list(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        status: str | None = None,
        model: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> TaskPage:
        """One page of your tasks, newest first; iterating it walks all pages."""

        def fetch(next_cursor: str) -> TaskPage:
            call = _calls.list_tasks(
                limit=limit,
                cursor=next_cursor,
                status=status,
                model=model,
                created_after=created_after,
                created_before=created_before,
            )
            page: TaskPage = parse_page(TaskPage, self._client._request(call), fetch)
            return page

        call = _calls.list_tasks(
            limit=limit,
            cursor=cursor,
            status=status,
            model=model,
            created_after=created_after,
            created_before=created_before,
        )
        first: TaskPage = parse_page(TaskPage, self._client._request(call), fetch)
        return first

    def cancel(self, task_id: str) -> Task:
        return _calls.task(self._client._request(_calls.cancel(task_id)))

    # `builtins.list`: in this class, `list` names the method above.
    def deliveries(self, task_id: str) -> builtins.list[WebhookDelivery]:
        """The task's webhook deliveries (one per event sent to its `callback_url`), oldest first,
        each with every attempt. Empty for a task without a callback."""
        return _calls.delivery_list(self._client._request(_calls.deliveries(task_id)))

    def redeliver(self, task_id: str, delivery_id: str) -> WebhookDelivery:
        """Send a delivery again now, with the same `webhook-id` and body; answers it as queued."""
        return _calls.delivery(self._client._request(_calls.redeliver(task_id, delivery_id)))

    def wait(
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
        current = task if isinstance(task, Task) else self.retrieve(task)
        deadline = time.monotonic() + timeout
        pause = 0.0
        while True:
            if on_progress is not None:
                on_progress(current)
            if current.finished:
                if raise_on_failure and current.status != "completed":
                    raise TaskFailedError(current)
                return current
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(current, timeout)
            pause = _calls.next_poll(poll_interval, pause)
            self._client._sleep(min(pause, left))
            current = self.retrieve(current.id)


class Uploads:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, file: _calls.FileInput, *, filename: str | None = None) -> Upload:
        """Upload a reference image (path, bytes or binary file; JPEG/PNG/WebP/GIF, at most 20 MB)."""
        return _calls.uploaded(self._client._request(_calls.upload(file, filename)))


class Balances:
    def __init__(self, client: Client) -> None:
        self._client = client

    def retrieve(self) -> Balance:
        return _calls.balance_of(self._client._request(_calls.balance()))
