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

from vidgate.api.auth import gateway_of
from vidgate.errors import Gone, NotFound, PermissionDenied
from vidgate.storage import InvalidKey, LocalStorage, content_type

router = APIRouter(tags=["files"])

_CACHE = {"Cache-Control": "private, max-age=3600"}


@router.api_route("/files/{key:path}", methods=["GET", "HEAD"], summary="Download a stored file")
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
