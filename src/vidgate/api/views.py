"""Task rows as the apimart wire shows them, in both response versions.

Legacy (default): submit answers `{"code":200,"data":[{"status":"submitted","task_id":...}]}`.
With `X-APIMart-Response-Version: 2026-07-27` (or later), submit and query answer one task object
with `"object": "generation.task"`.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

from vidgate import i18n, tasks
from vidgate.errors import InvalidRequest
from vidgate.signing import Signer

RESPONSE_VERSION = "2026-07-27"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def response_version(header: str | None) -> str | None:
    """The contract version the caller asked for: None (legacy) or RESPONSE_VERSION."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    if not _DATE.match(value):
        raise InvalidRequest("response_version_invalid", param="X-APIMart-Response-Version")
    return RESPONSE_VERSION if value >= RESPONSE_VERSION else None


def _number(value: Any) -> float | int:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value if isinstance(value, int | float) else 0


#: The time-based estimate stops here; only the engine's own figure goes beyond.
_ESTIMATE_CAP = 95


def progress_of(row: Any, now: float) -> int:
    """The engine's figure (stored, never decreasing) or elapsed time over the estimate, whichever
    is further: both only grow, so what a client sees never goes back. 100 only when completed."""
    status = row.status
    if status == "completed":
        return 100
    stored = int(row.progress)
    if status != "processing" or row.started_at is None or not row.estimated_time:
        return min(99, stored)
    estimate = min(_ESTIMATE_CAP, int(100 * (now - row.started_at) / max(1, row.estimated_time)))
    return min(99, max(stored, estimate))


def error_of(error: dict[str, Any], language: str) -> dict[str, Any]:
    params = dict(error.get("params") or {})
    code = str(error.get("code", "server_error"))
    body: dict[str, Any] = {
        "code": code,
        "message": i18n.message(code, language, **params),
        "type": error.get("type", "server_error"),
    }
    if params.get("param"):
        body["param"] = params["param"]
    return body


_VIDEO_FACTS = ("width", "height", "duration", "fps", "has_audio")


def task_view(
    row: Any, *, signer: Signer, base_url: str, language: str = "en", version: str | None = None
) -> dict[str, Any]:
    """The task as the wire shows it. Runs on every poll, so it compares plain strings.

    Result links come from the storage backend (`Signer.link`). Once `expires_at` has passed the
    files are gone (`vidgate gc`): the video shows `"url": []` and no thumbnail, its facts stay."""
    status = row.status
    now = time.time()
    data: dict[str, Any] = {"object": "generation.task"} if version is not None else {}
    data["id"] = row.id
    data["model"] = row.model
    data["status"] = status
    data["progress"] = progress_of(row, now)
    data["created"] = int(row.created_at)
    data["estimated_time"] = int(row.estimated_time)
    data["cost"] = _number(row.cost)
    data["provider"] = row.provider
    if status == "completed":
        result = tasks.decode_json(row.result) or {}
        expires = int(row.expires_at)
        live = expires >= now
        video: dict[str, Any] = {
            "url": [signer.link(base_url, result["video"], expires)] if live else [],
            "expires_at": expires,
        }
        for name in _VIDEO_FACTS:
            if name in result:
                video[name] = result[name]
        data["completed"] = int(row.completed_at)
        data["actual_time"] = max(0, round(row.completed_at - row.created_at))
        data["result"] = {"videos": [video]}
        if live and result.get("thumbnail"):
            data["result"]["thumbnail_url"] = signer.link(base_url, result["thumbnail"], expires)
    elif status == "failed":
        data["error"] = error_of(tasks.decode_json(row.error) or {}, language)
    elif status == "cancelled" and row.completed_at is not None:
        data["completed"] = int(row.completed_at)
    return data


def submitted_view(row: Any, *, signer: Signer, base_url: str, version: str | None) -> Any:
    if version is None:
        return [{"status": "submitted", "task_id": row.id}]
    return task_view(row, signer=signer, base_url=base_url, version=version)
