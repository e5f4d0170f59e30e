"""`POST /v1/uploads/images`: store an image and answer a signed URL that generation requests accept.

The image goes to the configured storage backend (local directory or S3); the URL is vidgate's own
signed `/files/` URL on both, so workers recognise it and read the bytes from storage without HTTP
(`storage_s3` explains why uploads are not presigned S3 URLs). `vidgate gc` deletes the file and
its `uploads` row once the URL has expired.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from vidgate import db, ids, keys
from vidgate.api import Gateway, openapi_models
from vidgate.api import openapi_docs as docs
from vidgate.api.auth import current_key, gateway_of
from vidgate.api.responses import JsonResponse
from vidgate.api.videos import base_url
from vidgate.errors import InvalidRequest, PayloadTooLarge
from vidgate.images import describe_unknown, sniff_format

router = APIRouter(tags=["uploads"])

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "The image"}},
                "additionalProperties": False,
            }
        }
    },
}


@router.post(
    "/v1/uploads/images",
    summary="Upload a reference image",
    description="Stores a JPEG, PNG, WebP or GIF (detected from its content, at most 20 MB) and "
    "answers a signed URL, valid for 72 h, that every image parameter of a submit accepts.",
    responses=docs.ok(openapi_models.Upload, "The stored image and its URL", headers=docs.RATE_LIMITED)
    | docs.errors(
        (400, "No multipart field `file`, or not a JPEG, PNG, WebP or GIF"),
        401,
        (413, "The file is over 20 MB"),
        429,
    ),
    openapi_extra=docs.extra(auth="key", body=_UPLOAD_BODY),
)
async def upload_image(request: Request, key: keys.ApiKey = Depends(current_key)) -> JsonResponse:
    gateway = gateway_of(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:
        raise PayloadTooLarge("upload_too_large", param="file", limit_mb=MAX_UPLOAD_BYTES // 2**20)
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("upload_missing_file", param="file")
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    await form.close()
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge("upload_too_large", param="file", limit_mb=MAX_UPLOAD_BYTES // 2**20)
    detected = sniff_format(data)
    if detected not in _CONTENT_TYPES:
        raise InvalidRequest("upload_format", param="file", detected=describe_unknown(data))
    filename = upload.filename or f"image{_EXTENSIONS[detected]}"
    body = await run_in_threadpool(_store, gateway, key, filename, detected, data, base_url(gateway, request))
    return JsonResponse(body)


def _store(
    gateway: Gateway, key: keys.ApiKey, filename: str, fmt: str, data: bytes, base: str
) -> dict[str, Any]:
    upload_id = ids.new_id("upl")
    safe = _UNSAFE.sub("-", filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip(".-")[:80] or "image"
    storage_key = f"uploads/{upload_id}/{safe}"
    now = time.time()
    expires = int(now + gateway.settings.upload_ttl_seconds)
    # The row first: a file is never stored without the row that lets `vidgate gc` find it.
    with gateway.database.write() as conn:
        conn.execute(
            db.uploads.insert().values(
                id=upload_id,
                key_id=key.id,
                storage_key=storage_key,
                filename=filename[:255],
                content_type=_CONTENT_TYPES[fmt],
                bytes=len(data),
                created_at=now,
                expires_at=expires,
            )
        )
    try:
        gateway.storage.put_bytes(storage_key, data)
    except BaseException:
        with gateway.database.write() as conn:
            conn.execute(db.uploads.delete().where(db.uploads.c.id == upload_id))
        raise
    return {
        "url": gateway.signer.url(base, storage_key, expires),
        "filename": filename,
        "content_type": _CONTENT_TYPES[fmt],
        "bytes": len(data),
        "created_at": int(now),
    }
