"""`vidgate generate`: submit, follow with a progress bar, download. Talks HTTP only (no server code)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)
_IMAGE_FIELD = {"viduq3": "image_urls", "viduq3-mix": "image_urls", "pixverse-v6": "image_urls"}


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        param = f" ({error['param']})" if error.get("param") else ""
        return f"{response.status_code} {error['type']}{param}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _upload(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as fh:
        response = client.post("/v1/uploads/images", files={"file": (path.name, fh)})
    if response.status_code != 200:
        raise ClientError(f"upload of {path} failed: {_error_text(response)}")
    return str(response.json()["url"])


class ClientError(Exception):
    """A failure worth one plain line to the user (no traceback)."""


def run_generate(**kwargs: Any) -> int:
    try:
        return _generate(**kwargs)
    except ClientError as exc:
        console.print(f"[red]error:[/red] {exc}")
    except OSError as exc:
        console.print(f"[red]error:[/red] {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}")
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach vidgate: {exc}")
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
    poll_interval: float = 1.0,
) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        body: dict[str, Any] = {"model": model, "prompt": prompt, **params}
        if images:
            urls = [
                img if img.startswith(("http://", "https://")) else _upload(client, Path(img))
                for img in images
            ]
            body.setdefault(_IMAGE_FIELD.get(model, "image_urls"), urls)
        response = client.post("/v1/videos/generations", json=body)
        if response.status_code != 200:
            console.print(f"[red]submit failed:[/red] {_error_text(response)}")
            return 1
        task_id = response.json()["data"][0]["task_id"]
        console.print(f"task {task_id} submitted")
        print(task_id)
        if not wait:
            return 0
        task = _follow(client, task_id, poll_interval)
        if task["status"] != "completed":
            error = task.get("error") or {}
            console.print(f"[red]task {task['status']}:[/red] {error.get('message', '')}")
            return 1
        url = task["result"]["videos"][0]["url"][0]
        target = output or Path(f"{task_id}.mp4")
        with client.stream("GET", url) as stream, target.open("wb") as fh:
            stream.raise_for_status()
            for chunk in stream.iter_bytes():
                fh.write(chunk)
        console.print(f"saved {target} ({target.stat().st_size} bytes, {task.get('actual_time', '?')} s)")
        return 0


def _follow(client: httpx.Client, task_id: str, interval: float) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("pending", total=100)
        while True:
            response = client.get(f"/v1/tasks/{task_id}")
            if response.status_code != 200:
                raise ClientError(f"polling {task_id} failed: {_error_text(response)}")
            task: dict[str, Any] = response.json()["data"]
            progress.update(bar, completed=task.get("progress", 0), description=task["status"])
            if task["status"] in ("completed", "failed", "cancelled"):
                return task
            time.sleep(interval)
