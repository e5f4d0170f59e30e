"""`GET /files/<key>?expires=&sig=`: signed, expiring downloads with HTTP Range (a `<video>` can seek).

The signature is checked first (a tampered link is a 403, an expired one a 410), then the file is
served from the storage backend: from disk on local storage; relayed from the bucket on S3 (which
answers the Range header itself). On S3 this route serves upload URLs; results link to the bucket.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.responses import Response, StreamingResponse

from vidgate.api import openapi_docs as docs
from vidgate.api.auth import gateway_of
from vidgate.errors import Gone, NotFound, PermissionDenied
from vidgate.storage import InvalidKey, LocalStorage, content_type

router = APIRouter(tags=["files"])

_CACHE = {"Cache-Control": "private, max-age=3600"}

_BINARY = {
    kind: {"schema": {"type": "string", "format": "binary"}}
    for kind in ("video/mp4", "image/jpeg", "image/png", "image/webp", "image/gif")
}
_SIGNED_LINK = docs.extra(
    parameters=[
        {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
        {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
    ]
)
_LINK_ERRORS = docs.errors(
    (403, "The signature does not match the path and expiry"),
    (404, "The link is valid but the file is gone"),
    (410, "The link has expired"),
)


@router.get(
    "/files/{key:path}",
    summary="Download a stored file",
    response_class=Response,
    description="Serves an upload, a result video or a thumbnail through the signed URL another "
    "route handed out. No API key: the URL plays in a browser `<video>`. Honours `Range`.",
    responses=docs.ok(None, "The file", content=_BINARY)
    | docs.ok(None, "The requested byte range (`Range`)", status=206, content=_BINARY)
    | {416: {"description": "The range lies beyond the end of the file (plain, no JSON body)"}}
    | _LINK_ERRORS,
    openapi_extra=_SIGNED_LINK,
)
@router.head(
    "/files/{key:path}",
    summary="A stored file's headers",
    response_class=Response,
    description="What `GET` would answer, without the body.",
    responses=docs.ok(None, "The file's headers") | _LINK_ERRORS,
    openapi_extra=_SIGNED_LINK,
)
async def download(request: Request, key: str) -> Response:
    gateway = gateway_of(request)
    verdict = gateway.signer.check(key, request.query_params.get("expires"), request.query_params.get("sig"))
    if verdict == "invalid":
        raise PermissionDenied("link_invalid")
    if verdict == "expired":
        raise Gone("link_expired")
    storage = gateway.storage
    try:
        if isinstance(storage, LocalStorage):
            path = storage.local_path(key)
            if not path.is_file():
                raise NotFound()
            return FileResponse(path, media_type=content_type(key), headers=_CACHE)
        return await run_in_threadpool(_relay, storage, key, request)
    except InvalidKey:
        raise PermissionDenied("link_invalid") from None
    except FileNotFoundError:
        raise NotFound() from None


def _relay(storage: object, key: str, request: Request) -> Response:
    from vidgate.storage_s3 import S3Storage

    assert isinstance(storage, S3Storage)
    head = request.method == "HEAD"
    stream = storage.open_stream(key, byte_range=request.headers.get("range"), head=head)
    if stream.chunks is None:
        return Response(status_code=stream.status, headers=stream.headers)
    return StreamingResponse(stream.chunks, status_code=stream.status, headers=stream.headers)
