"""Identifiers: `task_<ULID>` as apimart issues them, and prefixed ULIDs for our other rows."""

from __future__ import annotations

import re

from ulid import ULID

TASK_ID_RE = re.compile(r"^task_[0-9A-HJKMNP-TV-Z]{26}$")


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"


def new_task_id() -> str:
    return new_id("task")


def is_task_id(value: str) -> bool:
    return bool(TASK_ID_RE.match(value))
