"""`S3Storage`: uploads and results in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, ...).

Configured by `VIDGATE_STORAGE_URL=s3://bucket/prefix` and `VIDGATE_S3_ENDPOINT_URL` (empty for
AWS itself), `VIDGATE_S3_REGION`, `VIDGATE_S3_ACCESS_KEY_ID`, `VIDGATE_S3_SECRET_ACCESS_KEY`.
Empty credentials fall back to the standard AWS chain (`AWS_*` variables, shared config files,
instance or task roles). The bucket must exist; vidgate never creates or configures it.

Result links are presigned GETs straight to the bucket: videos never pass through vidgate, and a
browser `<video>` plays and seeks them (S3 answers Range requests) without an API key.

Expiry: a presigned URL carries a duration counted from its signing, not an end time, so
`url(key, expires_at)` signs for `expires_at - now` seconds and the link dies when the local one
would. SigV4 caps that duration at 7 days: with `VIDGATE_RESULT_TTL_SECONDS` above 7 days a link
dies 7 days after it was signed though the object lives on, and polling the task again answers a
freshly signed one. Links signed with temporary credentials (STS, instance roles) also die with
those credentials. An expiry already passed gives `X-Amz-Expires=0`, which S3 refuses.

Upload URLs stay vidgate's HMAC-signed `/files/` URLs on this backend too (`api/files.py` streams
them from the bucket, Range included), and `own_key` recognises exactly those:
- a worker must trust a URL before it reads the bytes from storage instead of fetching them; an
  HMAC is checked locally and exactly, whereas trusting a presigned URL would mean re-deriving
  SigV4 with credentials that rotate, or trusting any URL that merely names our bucket;
- upload URLs must live their full 72 hours, longer than temporary credentials may;
- the same URL shape works on both backends, so clients and tests see no difference;
- uploads are small images read once or twice, so serving them through vidgate costs little,
  while results (large, watched many times) go straight from the bucket.
"""

from __future__ import annotations

import datetime
import email.utils
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from vidgate.storage import InvalidKey, check_key, content_type

if TYPE_CHECKING:
    from vidgate.config import Settings
    from vidgate.signing import Signer

#: The longest a SigV4 presigned URL may live.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: A link signed this recently is handed out again (signing costs ~0.3 ms; task lists sign many).
_LINK_REUSE_SECONDS = 60.0
_LINK_CACHE_SIZE = 8192
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"storage URL must be empty or s3://bucket/prefix, not {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket or "/" in bucket:
        raise ValueError(f"storage URL {url!r} names no bucket")
    if prefix:
        try:
            check_key(prefix)
        except InvalidKey:
            raise ValueError(f"storage URL {url!r} has an invalid prefix") from None
    return bucket, prefix


def make_client(settings: Settings, endpoint_url: str) -> Any:
    """A boto3 S3 client (thread-safe; one per process)."""
    config = Config(
        signature_version="s3v4",
        # S3-compatible servers on custom endpoints (MinIO, moto) want path-style URLs.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    credentials: dict[str, str] = {}
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key,
        }
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=settings.s3_region or None,
        config=config,
        **credentials,
    )


@dataclass
class ObjectStream:
    """One object (or a byte range of it) as `GET /files/...` relays it."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes] | None = None


def _error_code(exc: Any) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        scratch: Path,
        signer: Signer | None = None,
        presigner: Any = None,
    ) -> None:
        self.client = client
        #: Signs links; a client for the public endpoint where clients reach S3 by another name.
        self.presigner = presigner if presigner is not None else client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.signer = signer
        self._scratch = scratch
        self._links: dict[tuple[str, int], tuple[str, float]] = {}
        self._transfer = TransferConfig(multipart_threshold=64 * 2**20, max_concurrency=4)

    @classmethod
    def from_settings(cls, settings: Settings, signer: Signer | None = None) -> S3Storage:
        bucket, prefix = parse_storage_url(settings.storage_url)
        client = make_client(settings, settings.s3_endpoint_url)
        public = settings.s3_public_endpoint_url
        presigner = make_client(settings, public) if public else client
        return cls(
            client, bucket, prefix, scratch=settings.data_dir / "scratch", signer=signer, presigner=presigner
        )

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- the Storage protocol ----------------------------------------------------------------------

    def put_file(self, key: str, source: Path) -> int:
        self.client.upload_file(
            str(source),
            self.bucket,
            self.object_key(key),
            ExtraArgs={"ContentType": content_type(key)},
            Config=self._transfer,
        )
        return source.stat().st_size

    def put_bytes(self, key: str, data: bytes) -> int:
        self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=content_type(key)
        )
        return len(data)

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise FileNotFoundError(key) from None
            raise
        with response["Body"] as body:
            return bytes(body.read())

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.object_key(key)))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            return self._head(key) is not None
        except InvalidKey:
            return False

    def size(self, key: str) -> int | None:
        try:
            head = self._head(key)
        except InvalidKey:
            return None
        return None if head is None else int(head["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def url(self, key: str, expires_at: int, base_url: str) -> str:
        """A presigned GET that stops working at `expires_at` (see the module docstring)."""
        object_key = self.object_key(key)
        now = time.time()
        cached = self._links.get((key, expires_at))
        if cached is not None and now - cached[1] < _LINK_REUSE_SECONDS:
            return cached[0]
        seconds = max(0, min(MAX_PRESIGN_SECONDS, int(expires_at - int(now))))
        link = str(
            self.presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": object_key}, ExpiresIn=seconds
            )
        )
        if seconds > 0:
            if len(self._links) >= _LINK_CACHE_SIZE:
                self._links.clear()
            self._links[(key, expires_at)] = (link, now)
        return link

    def own_key(self, url: str) -> str | None:
        """Our signed `/files/` upload URLs (see the module docstring for why not presigned ones)."""
        return None if self.signer is None else self.signer.own_key(url)

    def local_file(self, key: str, workdir: Path) -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        target = workdir / f"{uuid.uuid4().hex[:12]}-{check_key(key).rsplit('/', 1)[-1]}"
        try:
            self.client.download_file(self.bucket, self.object_key(key), str(target), Config=self._transfer)
        except ClientError as exc:
            target.unlink(missing_ok=True)
            if _error_code(exc) in _MISSING:
                raise FileNotFoundError(key) from None
            raise
        return target

    def scratch_dir(self) -> Path:
        self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    # --- serving through /files ---------------------------------------------------------------------

    def open_stream(self, key: str, *, byte_range: str | None = None, head: bool = False) -> ObjectStream:
        """The object for `GET|HEAD /files/<key>`, S3 answering the Range header itself.
        FileNotFoundError when missing; status 416 (and no body) for a range past the end."""
        if head:
            meta = self._head(key)
            if meta is None:
                raise FileNotFoundError(key)
            return ObjectStream(200, _headers(key, meta))
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if byte_range:
            params["Range"] = byte_range
        try:
            response = self.client.get_object(**params)
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING:
                raise FileNotFoundError(key) from None
            if code == "InvalidRange":
                size = self.size(key)
                if size is None:
                    raise FileNotFoundError(key) from None
                return ObjectStream(416, {"content-range": f"bytes */{size}"})
            raise
        status = 206 if response.get("ContentRange") else 200
        return ObjectStream(status, _headers(key, response), _chunks(response["Body"]))


def _headers(key: str, meta: dict[str, Any]) -> dict[str, str]:
    headers = {
        "content-length": str(meta["ContentLength"]),
        "content-type": str(meta.get("ContentType") or content_type(key)),
        "accept-ranges": "bytes",
        "cache-control": "private, max-age=3600",
    }
    if meta.get("ContentRange"):
        headers["content-range"] = str(meta["ContentRange"])
    if meta.get("ETag"):
        headers["etag"] = str(meta["ETag"])
    if meta.get("LastModified") is not None:
        modified = meta["LastModified"].astimezone(datetime.UTC)
        headers["last-modified"] = email.utils.format_datetime(modified, usegmt=True)
    return headers


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(1 << 16)
    finally:
        body.close()
