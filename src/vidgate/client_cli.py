"""`vidgate generate`: submit, follow with a progress bar, download. Uses the SDK only (no server code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from vidgate.sdk import APIStatusError, Client, Task, VidgateError

console = Console(stderr=True)
_IMAGE_FIELD = {"viduq3": "image_urls", "viduq3-mix": "image_urls", "pixverse-v6": "image_urls"}


def run_generate(**kwargs: Any) -> int:
    try:
        return _generate(**kwargs)
    except VidgateError as exc:
        console.print(f"[red]error:[/red] {exc}")
    except OSError as exc:
        console.print(f"[red]error:[/red] {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}")
    return 1


def _generate(
    *,
    base_url: str,
    api_key: str,
    model: str,
    prompt: str,
    images: list[str],
    params: dict[str, Any],
    wait: bool,
    output: Path | None,
    poll_interval: float | None = None,
) -> int:
    with Client(api_key=api_key, base_url=base_url) as client:
        body: dict[str, Any] = dict(params)
        if images:
            urls = [
                img if img.startswith(("http://", "https://")) else client.uploads.create(Path(img)).url
                for img in images
            ]
            body.setdefault(_IMAGE_FIELD.get(model, "image_urls"), urls)
        try:
            task = client.videos.create(model=model, prompt=prompt, **body)
        except APIStatusError as exc:
            console.print(f"[red]submit failed:[/red] {exc}")
            return 1
        console.print(f"task {task.id} submitted")
        print(task.id)
        if not wait:
            return 0
        task = _follow(client, task, poll_interval)
        if task.status != "completed":
            message = task.error.message if task.error else ""
            console.print(f"[red]task {task.status}:[/red] {message}")
            return 1
        target = client.videos.download(task, output or Path(f"{task.id}.mp4"))
        console.print(f"saved {target} ({target.stat().st_size} bytes, {task.actual_time or '?'} s)")
        return 0


def _follow(client: Client, task: Task, interval: float | None) -> Task:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar: TaskID = progress.add_task("pending", total=100)

        def show(current: Task) -> None:
            progress.update(bar, completed=current.progress, description=current.status)

        return client.tasks.wait(task, timeout=24 * 3600, poll_interval=interval, on_progress=show)
