"""A JSON response rendered by orjson (fast, and handles the types our rows hold)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


# A JSONResponse subclass so that FastAPI documents its routes' bodies as JSON (`api/openapi_docs`).
class JsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
