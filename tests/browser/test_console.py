"""The web console in a real browser: key, model, generated form, upload, submit, live progress,
playback, download, server validation errors, cancel, failures, phone-sized screen.

Screenshots of each step land in `test-artifacts/console/`.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS
from tests.conftest import png_bytes
from tests.e2e.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(240)]

DURATION = 15  # seconds of video asked for; at 1080p with preset "medium" the render takes seconds
FPS = 24


def until(page: Any, expression: str, timeout: float = 30_000) -> None:
    """Wait until a JS expression is true. As a function, not a string: the page's CSP forbids the
    eval Playwright would use for a bare expression (and that strictness is part of what is tested)."""
    try:
        page.wait_for_function(f"() => ({expression})", timeout=timeout)
    except Exception as exc:
        shot(page, "failure")
        state = page.evaluate("() => document.body.innerText")
        raise AssertionError(f"{expression} did not hold: {exc}\n--- page text ---\n{state}") from None


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_console(context: Any, server: Server, *, viewport: tuple[int, int] | None = None) -> Any:
    """A new tab on the console with the test key entered and accepted."""
    page = context.new_page()
    if viewport:
        page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    page.goto(server.base + "/")
    page.fill("#api-key", server.key)
    page.click("#save-key")
    until(page, "document.getElementById('key-status').textContent === 'Key accepted.'")
    return page


def pick_model(page: Any, model: str) -> None:
    page.select_option("#model", model)
    # The form is rebuilt from the model's schema; pixverse-v6 alone has `negative_prompt`.
    marker = '[data-name="negative_prompt"]' if model == "pixverse-v6" else '[data-name="aspect_ratio"]'
    page.wait_for_selector(marker)


def submit(page: Any) -> tuple[str, Any]:
    """Click Generate; the new task's id and its card (found by id: it must be the newest)."""
    before = page.locator("#tasks li.task").count()
    page.click("#submit")
    until(page, f"document.querySelectorAll('#tasks li.task').length > {before}")
    task_id = page.locator("#tasks li.task").first.get_attribute("data-id")
    assert task_id and task_id.startswith("task_"), task_id
    return task_id, page.locator(f'#tasks li.task[data-id="{task_id}"]')


def status_is(task_id: str, status: str) -> str:
    return f"document.querySelector('#tasks li[data-id=\"{task_id}\"]').dataset.status === '{status}'"


def test_generate_watch_play_download_and_validation(browser_context: Any, console_server: Server) -> None:
    requests: list[tuple[str, str | None]] = []
    csp_violations: list[str] = []
    page = browser_context.new_page()
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    page.on(
        "console",
        lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(console_server.base + "/")
    shot(page, "01-start")
    assert page.title() == "vidgate console"

    # The key: entered once, kept in localStorage, and the models load with it.
    page.fill("#api-key", console_server.key)
    page.click("#save-key")
    until(page, "document.getElementById('key-status').textContent === 'Key accepted.'")
    assert page.evaluate("localStorage.getItem('vidgate.apiKey')") == console_server.key
    assert page.locator("#model option").all_inner_texts() == ["viduq3", "viduq3-mix", "pixverse-v6"]
    # The balance is fetched on its own, after the key is accepted.
    until(page, "document.getElementById('balance').textContent === 'Balance: unlimited'")

    # The form comes from the JSON Schema: limits, enums, booleans, required markers.
    pick_model(page, "pixverse-v6")
    assert page.get_attribute("#f-duration", "min") == "1"
    assert page.get_attribute("#f-duration", "max") == "15"
    assert page.input_value("#f-duration") == "5"
    assert "1–15" in page.inner_text("#hint-duration")
    assert page.locator("#f-resolution option").all_inner_texts() == ["360p", "540p", "720p", "1080p"]
    assert page.input_value("#f-resolution") == "540p"
    assert page.get_attribute("#f-audio", "type") == "checkbox"
    assert page.locator('[data-name="prompt"] .req').count() == 1
    assert page.locator('[data-name="negative_prompt"] .req').count() == 0
    assert "at most 5000 characters" in page.inner_text("#hint-prompt")
    shot(page, "02-form")

    page.fill("#f-prompt", "a red kite over the sea at dawn")
    assert page.inner_text('[data-name="prompt"] .counter') == "31 / 5000"
    page.fill("#f-duration", str(DURATION))
    page.select_option("#f-resolution", "1080p")

    # A reference image: uploaded through /v1/uploads/images, its URL filled in, a thumbnail shown.
    page.set_input_files(
        "#u-image_urls",
        files=[
            {"name": "reference.png", "mimeType": "image/png", "buffer": png_bytes((200, 60, 30), (320, 240))}
        ],
    )
    until(page, "document.getElementById('f-image_urls').value.includes('/files/uploads/')")
    until(
        page,
        "(() => { const i = document.querySelector('[data-name=image_urls] .thumbs img');"
        " return i && i.complete && i.naturalWidth === 320; })()",
    )
    shot(page, "03-uploaded")

    # Submit; the task appears at once and the progress bar moves while the worker renders.
    task_id, task = submit(page)
    seen: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline:
        # Status and bar read in one go: read apart, a task finishing in between would show 100.
        status, raw = task.evaluate("li => [li.dataset.status, li.querySelector('progress').value]")
        if status not in ("pending", "processing"):
            break
        value = int(float(raw))
        if not seen or value != seen[-1]:
            seen.append(value)
            if value > 0 and len(seen) == 2:  # the visible part only: quick, so no update is missed
                page.screenshot(path=str(ARTIFACTS / "04-progress.png"))
        time.sleep(0.05)
    assert task.get_attribute("data-status") == "completed", task.inner_text()
    # Moved while running: two readings above zero, the later one higher (0 -> x alone is not enough).
    assert any(later > earlier > 0 for earlier, later in itertools.pairwise(seen)), seen
    assert all(0 <= v < 100 for v in seen), seen

    # Completed: the video plays in the page and lasts what was asked, within two frames.
    video = task.locator("video")
    video.wait_for()
    duration = video.evaluate(
        """v => new Promise((resolve, reject) => {
             if (v.readyState >= 1) return resolve(v.duration);
             v.addEventListener('loadedmetadata', () => resolve(v.duration));
             v.addEventListener('error', () => reject(new Error('media error ' + v.error.code)));
           })"""
    )
    assert abs(duration - DURATION) <= 2 / FPS, duration
    video.evaluate("v => { v.muted = true; return v.play(); }")
    until(page, "document.querySelector('#tasks li.task video').currentTime > 0.3", timeout=30_000)
    # Image-to-video follows the uploaded 4:3 reference: proof the upload was used.
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [1440, 1080]
    shot(page, "05-playing")

    # The download link hands over the MP4 itself.
    with page.expect_download() as info:
        task.locator("a.download").click()
    download = info.value
    assert download.suggested_filename == f"{task_id}.mp4"
    data = Path(download.path()).read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 10_000

    # A prompt over the documented limit: the counter warns, the server's message lands next to
    # the prompt field and in the banner.
    page.fill("#f-prompt", "x" * 5001)
    assert "over" in (page.get_attribute('[data-name="prompt"] .counter', "class") or "")
    page.click("#submit")
    until(page, "document.getElementById('err-prompt').textContent !== ''")
    message = "prompt must be at most 5000 characters (got 5001)"
    assert page.inner_text("#err-prompt") == message
    assert page.get_attribute("#f-prompt", "aria-invalid") == "true"
    assert message in page.inner_text("#banner")
    assert page.locator("#tasks li.task").count() == 1  # nothing was submitted
    shot(page, "06-validation-error")

    # The key and everything else went to this server only, with the key only on /v1 calls.
    for url, authorization in requests:
        assert url.startswith(console_server.base + "/"), url
        if authorization is not None:
            assert url.startswith(console_server.base + "/v1/"), url
    assert not csp_violations, csp_violations
    page.close()


def test_failed_task_reads_in_plain_words_and_cancel_works(
    browser_context: Any, console_server: Server
) -> None:
    page = open_console(browser_context, console_server)
    pick_model(page, "pixverse-v6")
    # An image URL nobody serves: the task fails when the worker fetches it.
    page.fill("#f-prompt", "a lighthouse")
    page.fill("#f-image_urls", "http://127.0.0.1:9/missing.png")
    task_id, task = submit(page)
    until(page, status_is(task_id, "failed"), timeout=60_000)
    error = task.locator(".task-error").inner_text()
    assert error.startswith("Failed: ") and "image_urls[0]" in error, error
    assert not task.locator(".cancel").is_visible()
    shot(page, "07-failed")

    # A long render, cancelled from its card.
    page.fill("#f-image_urls", "")
    page.fill("#f-duration", "15")
    page.select_option("#f-resolution", "1080p")
    task_id, task = submit(page)
    task.locator(".cancel").click()
    until(page, status_is(task_id, "cancelled"), timeout=60_000)
    assert not task.locator(".cancel").is_visible()
    shot(page, "08-cancelled")
    page.close()


def test_phone_screen_has_no_horizontal_scroll(browser_context: Any, console_server: Server) -> None:
    page = open_console(browser_context, console_server, viewport=(375, 667))
    pick_model(page, "pixverse-v6")
    page.wait_for_load_state("networkidle")  # the task list (videos of earlier tests) is drawn
    page.fill("#f-prompt", "y" * 300)  # long unbroken text must wrap, not widen the page
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    for selector in ("#f-prompt", "#submit", "#model", "#tasks"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, (selector, box)
    shot(page, "09-phone")
    page.close()


def test_forget_key_removes_it_from_the_browser(browser_context: Any, console_server: Server) -> None:
    page = open_console(browser_context, console_server)
    page.click("#forget-key")
    assert page.evaluate("localStorage.getItem('vidgate.apiKey')") is None
    assert page.input_value("#api-key") == ""
    assert page.locator("#tasks li.task").count() == 0
    assert page.is_disabled("#submit")
    # A reload starts without a key: nothing is fetched with one.
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.input_value("#api-key") == ""
    assert page.locator("#model option").count() == 0
    page.close()
