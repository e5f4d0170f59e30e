"""Headless Debian Chromium driven by Playwright, and a real `vidgate serve` for it to talk to.

No browser is downloaded: Playwright's Python package launches `/usr/bin/chromium` (Debian's
`chromium`, installed by `make browser-deps`). Without it the browser tests are skipped, unless
`CI` is set, where a missing browser is a failure rather than a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, make_server

CHROMIUM = Path(os.environ.get("VIDGATE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A slower x264 preset makes a 1080p render last a few seconds, so the page's once-a-second
    # poll sees the progress bar move before the task completes.
    srv = make_server(
        tmp_path_factory.mktemp("console"),
        VIDGATE_LOCAL_PRESET="medium",
        VIDGATE_ALLOW_PRIVATE_URLS="true",
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium with a fresh, empty profile (user-data dir), shared by the tests of a module."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: install Debian's chromium (`make browser-deps`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is missing: `pip install -e '.[dev]'`")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
            locale="en-US",
        )
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()
