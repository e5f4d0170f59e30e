"""`GET /files/<key>?expires=&sig=`: signed, expiring downloads with HTTP Range (a `<video>` can seek)."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from vidgate.api.auth import gateway_of
from vidgate.errors import Gone, NotFound, PermissionDenied
from vidgate.storage import InvalidKey

router = APIRouter(tags=["files"])


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"], summary="Download a stored file")
def download(request: Request, key: str) -> FileResponse:
    gateway = gateway_of(request)
    verdict = gateway.signer.check(key, request.query_params.get("expires"), request.query_params.get("sig"))
    if verdict == "invalid":
        raise PermissionDenied("link_invalid")
    if verdict == "expired":
        raise Gone("link_expired")
    try:
        path = gateway.storage.local_path(key)
    except InvalidKey:
        raise PermissionDenied("link_invalid") from None
    if not path.is_file():
        raise NotFound()
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
