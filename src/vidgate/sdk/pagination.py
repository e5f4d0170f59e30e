"""Cursor pages of `GET /v1/tasks`: iterate a page to walk every task, page after page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from vidgate.sdk.types import Task


class _Page(BaseModel):
    model_config = ConfigDict(extra="allow")

    object: str = "list"
    data: list[Task]
    """The tasks on this page, newest first."""
    has_more: bool = False
    next_cursor: str | None = None
    """Pass as `cursor=` for the next page; None on the last page."""

    def has_next_page(self) -> bool:
        return self.has_more and self.next_cursor is not None


class TaskPage(_Page):
    """`for task in client.tasks.list():` yields every task, fetching further pages as needed."""

    _fetch: Callable[[str], TaskPage] | None = PrivateAttr(default=None)

    def next_page(self) -> TaskPage | None:
        if not self.has_next_page() or self._fetch is None or self.next_cursor is None:
            return None
        return self._fetch(self.next_cursor)

    def __iter__(self) -> Iterator[Task]:  # type: ignore[override]
        page: TaskPage | None = self
        while page is not None:
            yield from page.data
            page = page.next_page()


class AsyncTaskPage(_Page):
    """`async for task in await client.tasks.list():` yields every task across pages."""

    _fetch: Callable[[str], Awaitable[AsyncTaskPage]] | None = PrivateAttr(default=None)

    async def next_page(self) -> AsyncTaskPage | None:
        if not self.has_next_page() or self._fetch is None or self.next_cursor is None:
            return None
        return await self._fetch(self.next_cursor)

    async def __aiter__(self) -> AsyncIterator[Task]:
        page: AsyncTaskPage | None = self
        while page is not None:
            for item in page.data:
                yield item
            page = await page.next_page()


def parse_page(cls: type[Any], body: Any, fetch: Any) -> Any:
    page = cls.model_validate(body)
    page._fetch = fetch
    return page
